"""Forward + BPTT of one layer: numbarnn vs the plain-NumPy reference vs PyTorch, interleaved.

    python benchmarks/bench_kernels.py [--repeats 15] [--quick]

Every repeat times each implementation once, in turn, so machine noise hits all alike;
the table shows medians, the spread (interquartile range as % of the median) and ratios
(> 1 means numbarnn is faster). PyTorch is optional: without it its columns say so.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import naive  # noqa: E402  (the NumPy reference the tests use)

from numbarnn.cells import LSTM, RNN  # noqa: E402
from numbarnn.models import RecurrentModel  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

CASES = [
    # name, cell, input size, hidden, batch, T, dtype
    ("rnn course-size", RNN, 27, 100, 1, 25, "float64"),
    ("lstm large", LSTM, 65, 512, 64, 50, "float32"),
]
QUICK = [("rnn tiny", RNN, 5, 8, 1, 4, "float64"), ("lstm tiny", LSTM, 5, 8, 2, 4, "float32")]


def numbarnn_step(model, x, d_out, state):
    def run():
        model.forward(x, state)
        model.backward(d_out)
    return run


def numpy_step(cell, params, x, d_out, state):
    fwd, bwd = {"rnn": (naive.rnn_forward, naive.rnn_backward),
                "lstm": (naive.lstm_forward, naive.lstm_backward)}[cell.name]
    p = [params[k] for k in ("W_x", "W_h", "b_x", "b_h")]

    def run():
        fwd(x, *p, *state)
        bwd(x, *p, *state, d_out)
    return run


def torch_step(cell, params, x, d_out, state, dtype):
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    module = getattr(torch.nn, cell.torch_module)(x.shape[2], state[0].shape[1], dtype=tdtype)
    with torch.no_grad():
        for ours, theirs in (("W_x", "weight_ih_l0"), ("W_h", "weight_hh_l0"), ("b_x", "bias_ih_l0"),
                             ("b_h", "bias_hh_l0")):
            getattr(module, theirs).copy_(torch.from_numpy(params[ours]))
    xt, dt = torch.from_numpy(x), torch.from_numpy(d_out)
    st = [torch.from_numpy(s[None]) for s in state]
    st = st[0] if len(st) == 1 else tuple(st)

    def run():
        module.zero_grad(set_to_none=True)
        out, _ = module(xt, st)
        out.backward(dt)
    return run


def measure(runs: dict, repeats: int) -> dict:
    for run in runs.values():  # warm up: compile, allocate, fill caches
        run()
        run()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: np.array(t) for name, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    args = parser.parse_args(argv)
    if torch is not None:
        torch.set_num_threads(2)
    print(f"numpy {np.__version__}, torch {torch.__version__ if torch else 'not installed (pip install numbarnn[torch])'}")
    header = f"{'case':20} {'impl':9} {'median ms':>10} {'spread':>7} {'numbarnn speed-up':>18}"
    print(header)
    print("-" * len(header))
    for name, cell, X, H, B, T, dtype in (QUICK if args.quick else CASES):
        rng = np.random.default_rng(0)
        model = RecurrentModel(cell, X, H, dtype=dtype, seed=0)
        x = rng.normal(size=(T, B, X)).astype(dtype)
        d_out = rng.normal(size=(T, B, H)).astype(dtype)
        state = [np.zeros((B, H), dtype) for _ in range(cell.states)]
        runs = {"numbarnn": numbarnn_step(model, x, d_out, state[0] if len(state) == 1 else tuple(state)),
                "numpy": numpy_step(cell, model.params, x, d_out, state)}
        if torch is not None:
            runs["pytorch"] = torch_step(cell, model.params, x, d_out, state, dtype)
        times = measure(runs, args.repeats)
        ours = np.median(times["numbarnn"])
        label = f"{name} f{dtype[-2:]}"
        for impl, t in times.items():
            med = np.median(t)
            spread = (np.percentile(t, 75) - np.percentile(t, 25)) / med * 100
            ratio = "" if impl == "numbarnn" else f"{med / ours:17.1f}x"
            print(f"{label:20} {impl:9} {med * 1e3:10.3f} {spread:6.0f}% {ratio:>18}")
            label = ""
        if torch is None:
            print(f"{'':20} {'pytorch':9} {'not installed':>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
