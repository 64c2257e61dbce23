"""Data-parallel training over MPI (numbarnn.distributed): ranks give one process's weights.

The runs are tests/distributed_worker.py under ``mpiexec`` (the ``mpi`` extra: mpi4py and the
``mpich`` wheel); they skip, saying why, where mpi4py or mpiexec is missing. The reference runs
in this process, first, so the ranks find the kernels compiled in the cache.
"""
import importlib.util
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import checkout
import distributed_worker as worker
import numbarnn
import numbarnn.data
from numbarnn.distributed import _RowsRng, launched_ranks, mpiexec_path, split_rows

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(worker.__file__).resolve()


MPI_MISSING = ("mpi4py is not installed (pip install 'numbarnn[mpi]')" if importlib.util.find_spec("mpi4py") is None
               else "no mpiexec next to this Python or on PATH (pip install 'numbarnn[mpi]')" if mpiexec_path() is None
               else None)
needs_mpi = pytest.mark.skipif(MPI_MISSING is not None, reason=f"needs MPI: {MPI_MISSING}")

# One thread a rank (the ranks share the cores), the checkout first on the path.
ENV = dict(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", MKL_NUM_THREADS="1")


def mpirun(n, *args, timeout=240):
    """``mpiexec -n n python args...`` in its own process group (killed whole on a timeout)."""
    process = subprocess.Popen([mpiexec_path(), "-n", str(n), *map(str, args)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=checkout.env(**ENV), cwd=ROOT,
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"mpiexec -n {n} {' '.join(map(str, args))} hung for {timeout} s:\n{out[-2000:]}\n{err[-2000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def ranks_run(n, *args):
    result = mpirun(n, sys.executable, WORKER, *args, "--distributed")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Each scenario's 40 steps in one process (no MPI), in this process."""
    folder = tmp_path_factory.mktemp("one-process")
    out = {}
    for name in ("names", "stream"):
        worker.run(name, folder / f"{name}.npz")
        out[name] = dict(np.load(folder / f"{name}.npz"))
    return out


def assert_same_run(result, expected, ranks):
    """Weights (float64) to 1e-9, every step's loss and the last validation loss alike; every rank
    ended with the same weights, bit for bit."""
    assert int(result["ranks"]) == ranks and int(result["step"]) == 40
    assert bool(result["same"]), "the ranks ended with different weights"
    np.testing.assert_allclose(result["weights"], expected["weights"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(result["losses"], expected["losses"], rtol=1e-10)
    np.testing.assert_allclose(result["val_loss"], expected["val_loss"], rtol=1e-10)


@needs_mpi
@pytest.mark.parametrize("name", ["names", "stream"])
def test_ranks_give_the_weights_of_one_process_and_resume_under_another_count(name, reference, tmp_path):
    """40 float64 steps: under mpiexec -n 2 (saving a checkpoint at step 20), then from that
    checkpoint under -n 3 and in one process, the weights equal one process's to 1e-9.

    names: two LSTM layers with dropout (masks drawn per rank), clip by global norm (it must
    see the global gradient), masks, batches of 2 rows for 3 ranks (an empty share) and
    validation with early stopping's state. stream: the fused step, carried state (gathered
    into the checkpoint, split again on resume), clip by value, a one-row carried validation."""
    first, checkpoint = tmp_path / "two.npz", tmp_path / "at20.ckpt"
    ranks_run(2, name, first, "--save", checkpoint, "--save-at", 20)
    assert_same_run(np.load(first), reference[name], 2)
    assert numbarnn.load(checkpoint).step == 20
    resumed = tmp_path / "three.npz"
    ranks_run(3, name, resumed, "--resume", checkpoint, "--steps", 20)
    assert_same_run(np.load(resumed), reference[name], 3)
    single = tmp_path / "one.npz"
    worker.run(name, single, steps=20, resume=checkpoint)
    assert_same_run(np.load(single), reference[name], 1)


@needs_mpi
@pytest.mark.parametrize("how", ["raise", "kill"])
def test_a_failing_rank_ends_the_job_and_the_last_checkpoint_loads(how, reference, tmp_path):
    """Rank 1 raises (or dies by SIGKILL) at step 13: the job ends, not hangs, with rank 1's
    message, and the checkpoint of step 10 loads."""
    checkpoint = tmp_path / "run.ckpt"
    result = mpirun(2, sys.executable, WORKER, "names", tmp_path / "out.npz", "--distributed", "--save", checkpoint,
                    "--fail-rank", 1, "--fail-at", 13, "--fail-how", how, timeout=120)
    assert result.returncode != 0
    if how == "raise":
        last = [line for line in result.stderr.splitlines() if line.startswith("numbarnn: rank")]
        assert len(last) == 1 and last[0].startswith("numbarnn: rank 1 of 2: failed with CallbackError"), result.stderr
        assert "planted failure at step 13" in last[0] and last[0].endswith("ending the job (MPI_Abort)")
    assert numbarnn.load(checkpoint).step == 10
    assert not (tmp_path / "out.npz").exists()


@needs_mpi
@pytest.mark.parametrize("name", ["names", "stream"])
def test_ctrl_c_saves_what_rank_0_holds_and_ends_the_job(name, reference, tmp_path):
    """Ctrl-C (KeyboardInterrupt on every rank at step 13, as mpiexec passes it on) ends the job
    with status 130 and no hang. names: rank 0 holds the whole run and saves step 13; stream:
    the carried state is spread over the ranks, so the checkpoint of step 10 is kept."""
    checkpoint = tmp_path / "run.ckpt"
    result = mpirun(2, sys.executable, WORKER, name, tmp_path / "out.npz", "--distributed", "--save", checkpoint,
                    "--fail-rank", -1, "--fail-at", 13, "--fail-how", "interrupt", timeout=120)
    assert result.returncode == 130, result.stdout[-2000:] + result.stderr[-2000:]
    assert numbarnn.load(checkpoint).step == (13 if name == "names" else 10)
    assert not (tmp_path / "out.npz").exists()


@needs_mpi
def test_mpiexec_numbarnn_train(reference, tmp_path):
    """`mpiexec -n 2 numbarnn train` trains data-parallel: rank 0 alone prints; the checkpoint
    resumes in one process. A usage error ends every rank at once (no hang), status 2."""
    out = tmp_path / "dinos.ckpt"
    command = [sys.executable, "-m", "numbarnn", "train", "--steps", "6", "--hidden", "4", "--batch", "6",
               "--eval-every", "3", "--sample-every", "0", "--no-progress", "--out", out]
    result = mpirun(2, *command)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("data-parallel over 2 MPI ranks") == 1
    assert result.stdout.count("validation loss") == 2 and result.stdout.count("checkpoint saved to") == 1
    assert numbarnn.load(out).step == 6
    bad = mpirun(2, *command, "--lr", "0", timeout=120)
    assert bad.returncode == 2, bad.stdout[-2000:] + bad.stderr[-2000:]
    assert "--lr must be a positive finite number" in bad.stderr


def slurm_script() -> str:
    """The Slurm batch script of docs/scaling.md, as printed there."""
    text = (ROOT / "docs" / "scaling.md").read_text(encoding="utf-8")
    scripts = re.findall(r"```bash\n(#!/bin/bash\n#SBATCH.*?)```", text, flags=re.S)
    assert len(scripts) == 1, "docs/scaling.md should show one Slurm batch script"
    return scripts[0]


@needs_mpi
@pytest.mark.skipif(not (Path(sys.prefix) / "bin" / "activate").exists(), reason="needs a virtual environment")
def test_the_slurm_script_of_the_docs_runs(reference, tmp_path):
    """docs/scaling.md's batch script, run as written by bash on two local ranks (what
    SLURM_NTASKS says) with a tiny model: it trains, then (the checkpoint there) resumes."""
    script = tmp_path / "train.sbatch"
    script.write_text(slurm_script())
    names = tmp_path / "names.txt"
    names.write_text("\n".join(numbarnn.data.dinosaur_names()[:60]) + "\n")
    env = checkout.env(**ENV, VENV=sys.prefix, DATA=str(names), CKPT=str(tmp_path / "run.ckpt"), STEPS="3",
                       BATCH="4", HIDDEN="4", SLURM_NTASKS="2", SLURM_SUBMIT_DIR=str(tmp_path))
    for steps in (3, 6):
        result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=240,
                                cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert result.stdout.count("data-parallel over 2 MPI ranks") == 1
        assert numbarnn.load(tmp_path / "run.ckpt").step == steps


def test_one_process_never_imports_mpi4py(tmp_path):
    """Without a launcher (or under one that started one process) nothing changes: training,
    from the command line or Python, imports no MPI. Asked for in a lone process (MPI's
    singleton, where mpi4py is installed), make_trainer(distributed="mpi") is the plain trainer."""
    code = ("import importlib.util, os, sys, numbarnn, numbarnn.distributed\n"
            "from numbarnn.cli import main\n"
            "for size in (None, '1'):  # no launcher; a launcher that started one process\n"
            "    if size: os.environ['PMI_SIZE'] = size\n"
            f"    assert main(['train', '--steps', '2', '--hidden', '4', '--batch', '4', '--sample-every', '0', "
            f"'--no-progress', '--out', {str(tmp_path / 'x.ckpt')!r}]) == 0\n"
            "numbarnn.make_trainer(vocab_size=3, hidden_size=2).train_step([[0, 1]], [[1, 2]])\n"
            "assert 'mpi4py' not in sys.modules, 'mpi4py was imported'\n"
            "if importlib.util.find_spec('mpi4py') is not None:\n"
            "    t = numbarnn.make_trainer(vocab_size=3, hidden_size=2, seed=0, distributed='mpi')\n"
            "    assert t.distributed is None and t.backend.reduce_gradients is None\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env=checkout.env(**ENV))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


@needs_mpi
def test_the_scaling_benchmark_runs(reference):
    """benchmarks/mpi_scaling.py at tiny sizes: its table and its model print (no timing is checked)."""
    script = ROOT / "benchmarks" / "mpi_scaling.py"
    measured = subprocess.run([sys.executable, str(script), "--quick", "--cases", "mid"], capture_output=True,
                              text=True, timeout=300, env=checkout.env())
    assert measured.returncode == 0, measured.stdout[-2000:] + measured.stderr[-2000:]
    rows = [line.split()[:2] for line in measured.stdout.splitlines() if line.startswith("mid ")]
    assert rows == [["mid", "1x1"], ["mid", "1x2"], ["mid", "2x1"], ["mid", "cpu"]], measured.stdout
    assert "efficiency" in measured.stdout and "Allreduce of" in measured.stdout
    model = subprocess.run([sys.executable, str(script), "--model", "--quick"], capture_output=True, text=True,
                           timeout=300, env=checkout.env())
    assert model.returncode == 0, model.stderr[-2000:]
    assert "10 Gbit/s" in model.stdout and "100 Gbit/s" in model.stdout and "speed-up" in model.stdout


def test_bad_distributed_value_is_refused():
    with pytest.raises(ValueError, match="distributed must be None or 'mpi', got 'nccl'"):
        numbarnn.make_trainer(vocab_size=3, hidden_size=2, distributed="nccl")


def test_rows_split_evenly_and_dropout_draws_do_not_depend_on_the_split():
    assert [split_rows(7, 3, r) for r in range(3)] == [(0, 2), (2, 4), (4, 7)]
    assert [split_rows(2, 3, r) for r in range(3)] == [(0, 0), (0, 1), (1, 2)]
    assert launched_ranks({"OMPI_COMM_WORLD_SIZE": "3"}) == 3 and launched_ranks({"PMI_SIZE": ""}) == 1
    whole = np.random.default_rng(4).random((3, 7, 2))
    for size in (2, 3, 7):
        parts = []
        for rank in range(size):
            lo, hi = split_rows(7, size, rank)
            parts.append(_RowsRng(np.random.default_rng(4), 7, lo, hi).random((3, hi - lo, 2)))
        np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)
