"""Data-parallel training over MPI on this machine, and a model of it on a cluster.

    python benchmarks/mpi_scaling.py [--cases mid large] [--repeats 5] [--steps 8] [--quick]
    python benchmarks/mpi_scaling.py --model [--quick]      # the projection of docs/scaling.md

Needs the ``mpi`` extra (mpi4py and the ``mpich`` wheel: ``mpiexec`` next to this Python).

**Measured** (the default): one training step of the suite's ``mid`` (LSTM V65 H128, global
batch 32, T50) and ``large`` (H512, global batch 64) cases, Adam, clip by norm 5, float32, run
three ways, each in fresh processes:

    1x1   one process, 1 thread (Numba and BLAS)
    1x2   one process, 2 threads: what one process does with this machine's 2 cores
    2x1   mpiexec -n 2, 1 thread a rank: each rank half the batch, one Allreduce a step

Each repeat runs the three in turn (the order rotating), each timing ``--steps`` steps after
2 warm-up steps; the table shows medians over the repeats of each run's median step. For 2x1 it
also shows the time in the step's ``Allreduce`` (on rank 0; it includes waiting for the other
rank to finish its half) and its share of the step, and the ``Allreduce`` alone (both ranks
entering together, after a barrier): the cost of moving the gradient. Parallel efficiency is
1x1 / (2 x 2x1). The machine is shared: the spread (interquartile range / median) is shown,
and a last line per case estimates the efficiency from CPU times, which other processes
disturb far less than the wall clock: the computation's CPU time per step of 1x1 and of a 2x1
rank (the step's less the Allreduce's), and the Allreduce alone.

**Model** (``--model``): the single-thread step time at per-rank batches 64, 32, ..., 1 for the
large case and for the default ``numbarnn train`` model (LSTM H128 on the 27 characters of
the dinosaur names, batch 32, T 20, a typical padded name), then the speed-up at 1 to 64 ranks
of a ring ``Allreduce`` (see docs/scaling.md for the formula and the network figures).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CASES = {"mid": dict(V=65, H=128, B=32, T=50), "large": dict(V=65, H=512, B=64, T=50),
         "default": dict(V=27, H=128, B=32, T=20)}
QUICK = {"mid": dict(V=11, H=16, B=4, T=6), "large": dict(V=11, H=32, B=8, T=6), "default": dict(V=11, H=16, B=4, T=6)}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
# Networks of the model: (name, latency alpha in s, bandwidth beta in bytes/s). Latencies are
# typical MPI small-message figures: TCP over 10 Gbit/s Ethernet, RDMA over 100 Gbit/s.
NETWORKS = (("10 Gbit/s", 20e-6, 10e9 / 8), ("100 Gbit/s", 2e-6, 100e9 / 8))
RANKS = (1, 2, 4, 8, 16, 32, 64)


def log(message):
    print(f"[mpi_scaling {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- a child: one configuration, timed -----------------------------------------------------------

def make_run(size, threads, distributed):
    """``(trainer, step function)`` for the case's sizes: random tokens, the suite's optimizer."""
    import numbarnn

    numbarnn.set_threads(threads)
    V, H, B, T = size["V"], size["H"], size["B"], size["T"]
    data = np.random.default_rng(0).integers(0, V, size=(B, T + 1))
    inputs, targets = np.ascontiguousarray(data[:, :-1]), np.ascontiguousarray(data[:, 1:])
    trainer = numbarnn.make_trainer("lstm", vocab_size=V, hidden_size=H, dtype="float32", seed=0, optimizer="adam",
                                    lr=1e-3, clip=5.0, clip_mode="norm", distributed="mpi" if distributed else None)
    return trainer, lambda: trainer.train_step(inputs, targets)


def child(args):
    size = json.loads(args.child)
    trainer, step = make_run(size, args.threads, args.distributed)
    parallel = trainer.distributed
    reduce_cpu = []
    if parallel is not None:  # the CPU time spent in the Allreduce (MPICH polls: waiting costs CPU too)
        def timed_reduce(*reduce_args, reduce=trainer.backend.reduce_gradients):
            start = time.process_time()
            try:
                return reduce(*reduce_args)
            finally:
                reduce_cpu.append(time.process_time() - start)

        trainer.backend.reduce_gradients = timed_reduce
    for _ in range(2):
        step()
    times, cpu = [], []
    before = parallel.allreduce_seconds if parallel else 0.0
    reduce_cpu.clear()
    for _ in range(args.steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu - (reduce_cpu[-1] if reduce_cpu else 0.0))
    # The step's CPU time less the Allreduce's: the computation, which other processes on a shared
    # machine slow down far less than the wall clock (a 1-thread process's CPU time is its work).
    result = {"step": statistics.median(times), "compute_cpu": statistics.median(cpu),
              "params": int(trainer.model.flat_params.size)}
    if parallel is not None:
        result["allreduce_in_step"] = (parallel.allreduce_seconds - before) / args.steps
        buffer = np.zeros(trainer.model.flat_params.size + 1, np.float32)
        alone = []
        for _ in range(max(5, args.steps)):
            parallel.comm.Barrier()
            start = time.perf_counter()
            parallel.comm.Allreduce(parallel.MPI.IN_PLACE, buffer, op=parallel.MPI.SUM)
            alone.append(time.perf_counter() - start)
        result["allreduce_alone"] = statistics.median(alone)
        if not parallel.is_root:
            return 0
    print(json.dumps(result), flush=True)
    return 0


def run_config(config, size, steps):
    """One configuration in fresh processes; its child's result dict."""
    ranks, threads = {"1x1": (1, 1), "1x2": (1, 2), "2x1": (2, 1)}[config]
    env = dict(os.environ, **{name: str(threads) for name in THREAD_VARIABLES})
    command = [sys.executable, __file__, "--child", json.dumps(size), "--threads", str(threads), "--steps", str(steps)]
    if ranks > 1:
        from numbarnn.distributed import mpiexec_path
        command = [mpiexec_path(), "-n", str(ranks), *command, "--distributed"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1200)
    if result.returncode != 0:
        raise RuntimeError(f"{config} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def spread(values):
    q1, _, q3 = np.percentile(values, [25, 50, 75])
    return 100 * (q3 - q1) / np.median(values)


def measured(cases, repeats, steps, sizes):
    configs = ["1x1", "1x2", "2x1"]
    print(f"data-parallel training, measured: {os.cpu_count()} cores (shared machine), median of {repeats} runs of "
          f"{steps} steps each")
    print(f"{'case':8s} {'run':4s} {'step ms':>9s} {'spread':>7s} {'tokens/s':>10s}   notes")
    for case in cases:
        size = sizes[case]
        runs = {config: [] for config in configs}
        for r in range(repeats):
            order = configs[r % 3:] + configs[:r % 3]
            for config in order:
                runs[config].append(run_config(config, size, steps))
            log(f"{case}: repeat {r + 1}/{repeats} done")
        tokens = size["B"] * size["T"]
        step = {config: statistics.median(x["step"] for x in runs[config]) for config in configs}
        label = f"LSTM H{size['H']} B{size['B']}"
        for config in configs:
            times = [x["step"] for x in runs[config]]
            note = ""
            if config == "1x2":
                note = f"{step['1x1'] / step['1x2']:.2f}x 1x1"
            if config == "2x1":
                in_step = statistics.median(x["allreduce_in_step"] for x in runs[config])
                alone = statistics.median(x["allreduce_alone"] for x in runs[config])
                mb = 4 * (runs[config][0]["params"] + 1) / 1e6
                note = (f"{step['1x1'] / step['2x1']:.2f}x 1x1, {step['1x2'] / step['2x1']:.2f}x 1x2; efficiency "
                        f"{step['1x1'] / (2 * step['2x1']):.2f}; Allreduce of {mb:.1f} MB: {1e3 * in_step:.2f} ms in "
                        f"the step ({100 * in_step / step['2x1']:.1f}%), {1e3 * alone:.2f} ms alone")
                # From CPU times: what the two ranks would take on cores of their own.
                one = statistics.median(x["compute_cpu"] for x in runs["1x1"])
                half = statistics.median(x["compute_cpu"] for x in runs["2x1"])
                cpu_note = (f"CPU time of the computation: 1x1 {1e3 * one:.2f} ms, a 2x1 rank {1e3 * half:.2f} ms "
                            f"({half / one:.2f} of it); with the Allreduce alone: efficiency "
                            f"{one / (2 * (half + alone)):.2f} on cores of their own")
            print(f"{case:8s} {config:4s} {1e3 * step[config]:9.2f} {spread(times):6.0f}% "
                  f"{tokens / step[config]:10,.0f}   {label}{'; ' + note if note else ''}", flush=True)
        print(f"{case:8s} {'cpu':4s} {'':9s} {'':7s} {'':10s}   {cpu_note}", flush=True)


# ---- the model -------------------------------------------------------------------------------------

def ring_allreduce(p, nbytes, alpha, beta):
    """Seconds of a ring Allreduce of ``nbytes`` over ``p`` ranks: a reduce-scatter and an
    all-gather, each p - 1 steps moving nbytes / p (latency alpha, bandwidth beta)."""
    if p == 1:
        return 0.0
    return 2 * (p - 1) * alpha + 2 * (p - 1) / p * nbytes / beta


def model(sizes, repeats):
    """Single-thread step times at each per-rank batch, then the projected speed-ups."""
    import numbarnn  # noqa: F401  (set_threads below, in make_run)

    for case in ("large", "default"):
        size = sizes[case]
        B = size["B"]
        batches = [b for b in (64, 32, 16, 8, 4, 2, 1) if b <= B]
        runs = {b: make_run(dict(size, B=b), 1, False) for b in batches}
        samples = {b: [] for b in batches}
        for r in range(2 + repeats):  # interleaved: what other processes do hits every batch alike
            for b in batches:
                start = time.perf_counter()
                runs[b][1]()
                if r >= 2:  # after 2 warm-up steps
                    samples[b].append(time.perf_counter() - start)
        compute = {b: statistics.median(samples[b]) for b in batches}
        params = runs[B][0].model.flat_params.size
        nbytes = 4 * (params + 1)
        print(f"\n{case}: LSTM V{size['V']} H{size['H']}, global batch {B}, T {size['T']}, float32; {params:,} "
              f"parameters, an Allreduce of {nbytes / 1e6:.2f} MB a step")
        print("single-thread step (ms) at per-rank batch b: "
              + ", ".join(f"b={b}: {1e3 * t:.2f}" for b, t in compute.items()))
        header = f"{'ranks':>5s} {'b':>3s} {'compute ms':>10s}"
        for name, _, _ in NETWORKS:
            header += f" | {name:>10s}: {'comm ms':>8s} {'speed-up':>8s} {'effic.':>6s}"
        print(header)
        for p in RANKS:
            if B % p:
                continue
            b = B // p
            line = f"{p:5d} {b:3d} {1e3 * compute[b]:10.2f}"
            for name, alpha, beta in NETWORKS:
                comm = ring_allreduce(p, nbytes, alpha, beta)
                speedup = compute[B] / (compute[b] + comm)
                flag = " <" if comm > compute[b] else "  "
                line += f" | {'':>10s}  {1e3 * comm:8.2f} {speedup:8.2f} {speedup / p:6.2f}{flag}"
            print(line, flush=True)
        # Weak scaling: B rows on every rank (the global batch grows with the ranks).
        print(f"with {B} rows on every rank (a global batch of {B} x ranks), efficiency t_comp({B}) / "
              f"(t_comp({B}) + t_ring): " + "; ".join(
                  f"{name}: " + ", ".join(f"{p}: {compute[B] / (compute[B] + ring_allreduce(p, nbytes, alpha, beta)):.2f}"
                                          for p in RANKS[1:]) for name, alpha, beta in NETWORKS))
    print("\n'<': communication takes longer than the rank's computation (it dominates). One rank a core, one "
          "thread a rank; the global batch is fixed (strong scaling), so 64 ranks of the default model's batch 32 "
          "cannot be: each rank needs a row.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=("mid", "large"), default=["mid", "large"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat, 2 steps (a smoke test)")
    parser.add_argument("--model", action="store_true", help="the cluster projection of docs/scaling.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    sizes = QUICK if args.quick else CASES
    repeats, steps = (1, 2) if args.quick else (args.repeats, args.steps)
    if args.model:
        model(sizes, max(3, steps))
        return 0
    from numbarnn.distributed import mpiexec_path
    if mpiexec_path() is None:
        print("needs mpiexec: pip install 'numbarnn[mpi]'", file=sys.stderr)
        return 2
    measured(args.cases, repeats, steps, sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
