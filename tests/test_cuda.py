"""device="cuda" without a GPU: the simulator suite in its own process, lazy imports, clear errors."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import checkout
import numbarnn.cuda as nc
from numbarnn.cuda import CudaUnavailableError

ROOT = Path(__file__).resolve().parents[1]


def _has_cuda_target() -> bool:
    if importlib.util.find_spec("numba_cuda") is not None:
        return True
    try:
        return importlib.util.find_spec("numba.cuda") is not None
    except ImportError:
        return False


# The simulator runs every GPU thread in Python on one core: the folder runs as two processes
# side by side, each about half of it (measured: the trainer tests and the CLI moves against
# the kernels, the docstring examples and the stacked layers). A file listed nowhere joins the
# first shard, so a new test file is never left out.
SIM_SHARDS = (("test_trainer.py", "test_cli_device.py"), ("test_kernels.py", "test_doctests.py", "test_stacked.py"))


def sim_shards() -> list:
    files = sorted(p.name for p in (ROOT / "tests" / "cuda_sim").glob("test_*.py"))
    listed = {name for shard in SIM_SHARDS for name in shard}
    shards = [[name for name in shard if name in files] for shard in SIM_SHARDS]
    shards[0] += [name for name in files if name not in listed]
    return [shard for shard in shards if shard]


def test_every_simulator_test_file_is_in_a_shard():
    files = sorted(p.name for p in (ROOT / "tests" / "cuda_sim").glob("test_*.py"))
    assert sorted(name for shard in sim_shards() for name in shard) == files


# The simulator shards, one process each (a BackgroundRuns: the root conftest.py starts them
# as soon as the session has collected test_cuda_kernels_on_the_simulator).
SIMULATOR_RUNS = checkout.BackgroundRuns(lambda: [subprocess.Popen(
    [sys.executable, "-m", "pytest", *[str(ROOT / "tests" / "cuda_sim" / name) for name in shard], "-q",
     "-p", "no:cacheprovider", "-o", "addopts=", "-W", "ignore::DeprecationWarning"],
    cwd=ROOT, env=checkout.env(NUMBA_ENABLE_CUDASIM="1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    text=True) for shard in sim_shards()])


@pytest.mark.skipif(not _has_cuda_target(), reason="neither numba-cuda nor numba's built-in CUDA target (simulator)")
def test_cuda_kernels_on_the_simulator():
    """tests/cuda_sim: every CUDA kernel against the CPU kernels, and training steps giving
    the CPU's losses, on numba's CUDA simulator (NUMBA_ENABLE_CUDASIM must be set before
    numba is imported, hence separate processes)."""
    runs = SIMULATOR_RUNS.start()
    try:
        outputs = [run.communicate(timeout=1500)[0] for run in runs]
    finally:
        SIMULATOR_RUNS.stop()
    for run, output in zip(runs, outputs):
        tail = output[-6000:]
        assert run.returncode == 0, tail
        assert " passed" in output and " failed" not in output and "skipped" not in output, tail


def _modules_after(code: str) -> set:
    env = checkout.env({k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"})
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True)
    return set(out.stdout.split())


def test_importing_numbarnn_never_imports_cuda():
    for code in ("import numbarnn", "import numbarnn.cuda; numbarnn.get_cell('lstm').cuda_pointwise",
                 "import numbarnn; numbarnn.list_cells(); numbarnn.get_cell('gru')"):
        modules = _modules_after(code)
        assert "numbarnn" in modules
        cuda_modules = sorted(m for m in modules if m == "numba.cuda" or m.startswith(("numba.cuda.", "numba_cuda")))
        assert not cuda_modules, (code, cuda_modules[:5])


@pytest.fixture
def real_machine(monkeypatch):
    """Probe as on a real machine (not the simulator), each probe replaceable."""
    monkeypatch.setattr(nc, "simulator", lambda: False)
    return monkeypatch


def test_missing_package_is_named(real_machine):
    real_machine.setattr(nc, "_has_package", lambda: False)
    assert nc.available() is False
    with pytest.raises(CudaUnavailableError, match="numba-cuda package.*not installed") as info:
        nc.require()
    assert info.value.missing == "package"
    assert 'pip install "numbarnn[cuda]"' in str(info.value)


def test_missing_driver_is_named(real_machine):
    real_machine.setattr(nc, "_has_package", lambda: True)
    real_machine.setattr(nc, "_driver_error", lambda: "CUDA driver library cannot be found.")
    with pytest.raises(CudaUnavailableError, match="no usable NVIDIA driver") as info:
        nc.require()
    assert info.value.missing == "driver"


@pytest.mark.parametrize("driver_error, count", [("Error at driver init: Call to cuInit results in "
                                                  "CUDA_ERROR_NO_DEVICE (100)", 0), (None, 0)])
def test_missing_gpu_is_named(real_machine, driver_error, count):
    real_machine.setattr(nc, "_has_package", lambda: True)
    real_machine.setattr(nc, "_driver_error", lambda: driver_error)
    real_machine.setattr(nc, "_gpu_count", lambda: count)
    with pytest.raises(CudaUnavailableError, match="found no GPU") as info:
        nc.require()
    assert info.value.missing == "gpu"


def test_everything_present_is_available(real_machine):
    real_machine.setattr(nc, "_has_package", lambda: True)
    real_machine.setattr(nc, "_driver_error", lambda: None)
    real_machine.setattr(nc, "_gpu_count", lambda: 1)
    assert nc.available() is True
    nc.require()


def test_asking_for_cuda_on_this_machine_raises_or_works():
    reason = nc.unavailable_reason()
    if reason is None:
        pytest.skip("a GPU (or the simulator) is available here")
    assert reason[0] in ("package", "driver", "gpu")
    from numbarnn.cuda.trainer import make_cuda_trainer

    with pytest.raises(CudaUnavailableError):
        make_cuda_trainer("lstm", "softmax_cross_entropy", "adam", "top_p", vocab_size=5, hidden_size=4)


def test_config_update_checks_before_changing():
    before = nc.config.gemm_tile
    with pytest.raises(ValueError):
        nc.config.update(gemm_tile=(4, 4, 2, 3, 2))
    assert nc.config.gemm_tile == before


def test_no_cuda_kernel_hard_codes_fastmath():
    """fastmath stays off: losses, optimizers and the NaN guard depend on IEEE semantics."""
    sources = list((ROOT / "numbarnn" / "cuda").glob("*.py"))
    sources += list((ROOT / "plugins").glob("*/*/cuda.py"))
    assert sources
    for path in sources:
        text = path.read_text().replace(" ", "")
        assert "fastmath=True" not in text and "fastmath=" not in text, f"{path} sets fastmath"
