"""The device check: one run on a real NVIDIA GPU says whether device="cuda" is right and how fast.

    python benchmarks/gpu_check.py                 # on a GPU machine: full sizes, under 5 minutes
    python benchmarks/gpu_check.py --sim --quick   # anywhere: CUDA simulator, tiny sizes (plumbing check)

In one run it

1. compares outputs and gradients of every registered cell with a CUDA pair against the
   CPU kernels in float64, and prints the relative error per cell (float64 and float32
   on the device, both against CPU float64); and the same for layer stacks: bidirectional
   layers over padded sequences, an embedding, the classify and regress heads;
2. times an LSTM training step (forward, BPTT, clip, Adam) at hidden 1024, batch 64,
   T 100, float32, for each loop strategy, against PyTorch's cuDNN LSTM doing the same
   step on the same GPU; and the same at batch 1 and 4;
3. runs the ``gpu``-marked tests (``tests/test_gpu.py``; they skip on the simulator),
   last, so a slow compile there cannot cost the numbers above;
4. prints one table last.

Targets (from the issue): within 2x of cuDNN at batch 64, ahead of it at batch 1 to 4.
Timings are medians over repeats after a warm-up that pays the compilation.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sim", action="store_true", help="run on numba's CUDA simulator (no GPU needed)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per case")
    parser.add_argument("--skip-tests", action="store_true", help="do not run the gpu-marked tests")
    parser.add_argument("--sweep", action="store_true",
                        help="after the tests, time other step-kernel shapes at each batch size")
    parser.add_argument("--tests-timeout", type=float, default=240, help="seconds allowed for the gpu-marked tests")
    return parser.parse_args(argv)


ARGS = parse_args()
if ARGS.sim:  # must be set before numba is imported
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import numbarnn  # noqa: E402
import numbarnn.cuda as nc  # noqa: E402

ROWS = []  # (section, item, value) for the final table


def row(section, item, value):
    ROWS.append((section, item, value))
    print(f"  {item}: {value}", flush=True)


def run_gpu_tests():
    started = time.perf_counter()
    env = dict(os.environ)
    try:
        result = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "tests" / "test_gpu.py"), "-q", "-m", "gpu",
                                 "-p", "no:cacheprovider", "-o", "addopts="],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=ARGS.tests_timeout)
    except subprocess.TimeoutExpired as expired:
        # Report what finished (pytest -q prints a dot or letter per test) and go on to the table.
        done = (expired.stdout or b"")
        done = done.decode(errors="replace") if isinstance(done, bytes) else done
        print(done[-4000:])
        row("tests", "gpu-marked tests", f"timed out after {ARGS.tests_timeout:.0f} s: {done.strip()[:80]!r}")
        return
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else "(no output)"
    if result.returncode not in (0, 5):
        print(result.stdout[-4000:], result.stderr[-2000:])
    row("tests", "gpu-marked tests", f"{summary.strip('= ')} ({time.perf_counter() - started:.0f} s)")


def rel_err(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(np.abs(expected).max(), 1e-300)
    return float(np.abs(actual - expected).max() / scale)


def check_cells(sizes):
    from numbarnn.cuda.trainer import make_cuda_model

    V, H, T, B = sizes
    for name in numbarnn.list_cells():
        cell = numbarnn.get_cell(name)
        if not cell.cuda_pointwise:
            row("accuracy", f"{name}", "no CUDA pair (CPU only)")
            continue
        x = np.random.default_rng(0).integers(-1, V, size=(T, B))
        cpu = numbarnn.make_model(name, vocab_size=V, hidden_size=H, dtype="float64", seed=0)
        out_c, _ = cpu.forward(x)
        d = np.random.default_rng(1).normal(size=out_c.shape)
        grads_c = cpu.backward(d)
        for dtype in ("float64", "float32"):
            label = f"{name} {dtype} vs CPU float64 (outputs / gradients)"
            try:
                gpu = make_cuda_model(name, vocab_size=V, hidden_size=H, dtype=dtype, seed=0)
                gpu.load_params(cpu.params)
                out_g, _ = gpu.forward(x)
                grads_g = gpu.backward(d)
            except Exception as error:  # noqa: BLE001 - report, go on to the other cells and the timings
                traceback.print_exc()
                row("accuracy", label, f"failed: {type(error).__name__}: {error}"[:160])
                continue
            grad_err = max(rel_err(grads_g[k], grads_c[k]) for k in grads_c)
            row("accuracy", label, f"{rel_err(out_g, out_c):.1e} / {grad_err:.1e}")


MODELS = (  # the layer stacks beyond the plain language model (issue 15)
    ("lstm", dict(task="classify", embedding=16, num_classes=10, bidirectional=True, layers=2)),
    ("gru", dict(task="regress", input_size=8, output_size=3, bidirectional=True, layers=2)),
    ("lstm", dict(embedding=16, layers=2)),
)


def check_models(sizes):
    """Bidirectional layers over padded sequences, embeddings and the two heads against the CPU."""
    from numbarnn.cuda.model import CudaSequenceModel

    V, H, T, B = sizes
    rng = np.random.default_rng(2)
    for cell, options in MODELS:
        label = f"{cell} {' '.join(f'{k}={v}' for k, v in options.items())} float64 (outputs / gradients)"
        if cell not in numbarnn.list_cells() or not numbarnn.get_cell(cell).cuda_pointwise:
            row("accuracy", label, "cell not installed or CPU only")
            continue
        try:
            extra = {} if "input_size" in options else {"vocab_size": V}
            cpu = numbarnn.make_model(cell, hidden_size=H, dtype="float64", seed=0, **extra, **options)
            x = rng.integers(-1, V, (T, B)) if cpu.index_input else rng.normal(size=(T, B, cpu.input_size))
            lengths = rng.integers(1, T + 1, B)
            lengths[0] = T
            kw = {} if cpu.task == "lm" else {"lengths": lengths}
            out_c, _ = cpu.forward(x, **kw)
            d = rng.normal(size=out_c.shape)
            grads_c = cpu.backward(d)
            gpu = CudaSequenceModel(cpu)
            out_g, _ = gpu.forward(x, **kw)
            grads_g = gpu.backward(d)
        except Exception as error:  # noqa: BLE001 - report, go on
            traceback.print_exc()
            row("accuracy", label, f"failed: {type(error).__name__}: {error}"[:160])
            continue
        grad_err = max(rel_err(grads_g[k], grads_c[k]) for k in grads_c)
        row("accuracy", label, f"{rel_err(out_g, out_c):.1e} / {grad_err:.1e}")


def median_time(fn, repeats, sync):
    fn()  # warm-up: compilation, buffer allocation
    fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def time_numbarnn(V, H, B, T, loop, repeats, step_kernel="auto"):
    from numba import cuda

    from numbarnn.cuda.trainer import make_cuda_trainer

    nc.config.update(step_kernel=step_kernel)

    trainer = make_cuda_trainer("lstm", "softmax_cross_entropy", "adam", "categorical", vocab_size=V,
                                hidden_size=H, lr=1e-3, clip=5.0, dtype="float32", seed=0, loop=loop)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, V, size=(B, T)), rng.integers(0, V, size=(B, T))
    return median_time(lambda: trainer.train_step(x, y), repeats, cuda.synchronize)


def torch_step(V, H, B, T, repeats):
    """(seconds, device label) of the same step in PyTorch, or (None, reason)."""
    try:
        import torch
    except ImportError:
        return None, "PyTorch not installed"
    on_gpu = torch.cuda.is_available() and not ARGS.sim
    if not on_gpu and not ARGS.sim:
        return None, "PyTorch has no CUDA here (a CPU build?)"
    device = torch.device("cuda" if on_gpu else "cpu")
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(V, H).to(device)
    head = torch.nn.Linear(H, V).to(device)
    params = list(lstm.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    rng = np.random.default_rng(0)
    x = torch.nn.functional.one_hot(torch.tensor(rng.integers(0, V, size=(T, B))), V).float().to(device)
    y = torch.tensor(rng.integers(0, V, size=(T * B,))).to(device)

    def step():
        opt.zero_grad(set_to_none=True)
        out, _ = lstm(x)
        loss = torch.nn.functional.cross_entropy(head(out).reshape(T * B, V), y, reduction="sum") / B
        loss.backward()
        torch.nn.utils.clip_grad_value_(params, 5.0)
        opt.step()
        return loss.item()  # one copy back, as numbarnn's

    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    label = f"cuDNN {torch.backends.cudnn.version()}" if on_gpu else "PyTorch CPU (simulator run)"
    return median_time(step, repeats, sync), label


def time_steps(cases, repeats):
    for (V, H, B, T) in cases:
        label = f"LSTM step V{V} H{H} B{B} T{T} float32"
        ours = {}
        for kind in ("tiled", "rowdot"):
            for loop in ("launch", "persistent"):
                name = f"{kind}/{loop}"
                try:
                    ours[name] = time_numbarnn(V, H, B, T, loop, repeats, kind)
                    row("speed", f"{label}, numbarnn {name}", f"{ours[name] * 1e3:.2f} ms")
                except Exception as error:  # noqa: BLE001 - report and go on (e.g. no cooperative launch)
                    traceback.print_exc()
                    row("speed", f"{label}, numbarnn {name}", f"failed: {type(error).__name__}: {error}"[:160])
        try:  # the defaults, as a user gets them: step_kernel="auto", loop="auto"
            ours["auto/auto"] = time_numbarnn(V, H, B, T, "auto", repeats, "auto")
            row("speed", f"{label}, numbarnn auto/auto (defaults)", f"{ours['auto/auto'] * 1e3:.2f} ms")
        except Exception as error:  # noqa: BLE001
            traceback.print_exc()
            row("speed", f"{label}, numbarnn auto/auto (defaults)", f"failed: {type(error).__name__}: {error}"[:160])
        nc.config.update(step_kernel="auto")
        seconds, where = torch_step(V, H, B, T, repeats)
        if seconds is None:
            row("speed", f"{label}, PyTorch", where)
            continue
        row("speed", f"{label}, {where}", f"{seconds * 1e3:.2f} ms")
        if ours:
            best_loop = min(ours, key=ours.get)
            row("speed", f"{label}, best numbarnn / PyTorch", f"{ours[best_loop] / seconds:.2f}x ({best_loop})")


SWEEP = {  # config changes around the defaults, per batch size: tiled tiles and rowdot shapes
    64: [dict(step_kernel="tiled", step_tile=(32, 16, 16, 2)), dict(step_kernel="tiled", step_tile=(32, 32, 16, 4)),
         dict(step_kernel="rowdot", rowdot_batch=4), dict(step_kernel="rowdot", rowdot_batch=16)],
    4: [dict(step_kernel="rowdot", rowdot_warps=4), dict(step_kernel="rowdot", rowdot_warps=16)],
    1: [dict(step_kernel="rowdot", rowdot_warps=4), dict(step_kernel="rowdot", rowdot_warps=16)],
    2: [dict(step_kernel="rowdot", rowdot_warps=2)],  # --quick on the simulator: plumbing only
}


def sweep_configs(cases, repeats):
    defaults = {name: getattr(nc.config, name) for name in ("step_kernel", "step_tile", "rowdot_batch", "rowdot_warps")}
    for (V, H, B, T) in cases:
        for changes in SWEEP.get(B, []):
            nc.config.update(**changes)
            kind = changes["step_kernel"]
            for loop in ("launch", "persistent"):
                label = f"LSTM step V{V} H{H} B{B} T{T} {changes} loop={loop}"
                try:
                    row("sweep", label, f"{time_numbarnn(V, H, B, T, loop, repeats, kind) * 1e3:.2f} ms")
                except Exception as error:  # noqa: BLE001
                    row("sweep", label, f"failed: {type(error).__name__}: {error}"[:120])
            nc.config.update(**defaults)


def print_table():
    print()
    print("=" * 100)
    width = max(len(item) for _, item, _ in ROWS) if ROWS else 10
    print(f"{'section':<9} {'check':<{width}}  result")
    print(f"{'-' * 9} {'-' * width}  {'-' * 30}")
    for section, item, value in ROWS:
        print(f"{section:<9} {item:<{width}}  {value}")
    print("=" * 100)


def main():
    started = time.perf_counter()
    if ARGS.sim:
        # Tiny launch shapes, as the simulator tests use, so tiny sizes still span several blocks.
        nc.config.update(threads=4, max_blocks=3, gemm_tile=(8, 8, 4, 2, 2), step_tile=(2, 4, 4, 1), reduce_threads=4)
    nc.require()
    import numba

    versions = f"numba {numba.__version__}"
    try:
        from importlib.metadata import version

        versions += f", numba-cuda {version('numba-cuda')}"
    except Exception:  # noqa: BLE001
        versions += ", numba-cuda not installed (numba's built-in target)"
    if nc.simulator():
        device = "CUDA simulator"
    else:
        from numba import cuda

        device = cuda.get_current_device().name
        device = device.decode() if isinstance(device, bytes) else str(device)
    row("setup", "device", device)
    row("setup", "versions", versions)
    row("setup", "launch config", f"{nc.config}")

    print("\n[1/3] outputs and gradients against CPU float64", flush=True)
    check_cells((7, 6, 3, 2) if ARGS.quick else (65, 128, 20, 8))
    check_models((7, 3, 3, 2) if ARGS.quick else (65, 128, 20, 8))

    print("\n[2/3] training step timings", flush=True)
    repeats = ARGS.repeats or (1 if ARGS.quick else 5)
    if ARGS.quick:
        cases = [(7, 6, 2, 3), (7, 6, 1, 3)]
    else:
        cases = [(65, 1024, 64, 100), (65, 1024, 4, 100), (65, 1024, 1, 100)]
    time_steps(cases, repeats)

    print("\n[3/3] gpu tests", flush=True)
    if ARGS.skip_tests:
        row("tests", "gpu-marked tests", "skipped (--skip-tests)")
    else:
        run_gpu_tests()
    if ARGS.sweep:
        print("\n[+] step-tile sweep", flush=True)
        sweep_configs([(7, 6, 2, 3)] if ARGS.quick else cases, repeats)
    row("setup", "total time", f"{time.perf_counter() - started:.0f} s")
    print_table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
