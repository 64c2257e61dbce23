"""The benchmark suite: numbarnn vs the plain-NumPy reference vs PyTorch CPU, one table.

    python benchmarks/suite.py [--repeats N] [--quick] [--only CASE ...] [--no-torch]

Cases (sizes in FULL and QUICK below; each target is printed next to its ratio):

    course    RNN V27 H50/H100 B1 T25, SGD 0.01, clip 5 by value, f64  >= 10x PyTorch and the course's NumPy
    mid       LSTM V65 H128 B32 T50, Adam, clip-norm 5, f32            >= 1.5x PyTorch
    large     LSTM V65 H512 B64 T50, same                              >= 1x PyTorch, >= 70% of f32 matmul peak
    generate  2,000 chars, B1, categorical, LSTM H128/H512 f32         >= 10x / >= 2x a PyTorch sampling loop
    plugin    GRU plugin at the mid sizes                              per-gate time within 10% of the LSTM's
    owncells  IndRNN, layer-normalised LSTM plugins at the mid sizes   >= 5x the cell as a PyTorch loop;
              (cells with parameters of their own)                     >= 1.0x / 1.5x the cell in JAX (scan,
                                                                       jit); LN-LSTM per gate <= 1.5x LSTM's
    digits    scikit-learn's digits, 8 rows of 8 pixels, LSTM H64 B64,   >= 1.5x PyTorch per epoch
              classify, one call = one epoch, 15 epochs
    bilstm    bidirectional LSTM H256 B32 T50, regress X32 O8, f32     >= 1.0x PyTorch
              (numbarnn: 1 BLAS thread, the two directions on the 2 cores)
    embedding LM with embedding V65 E64 H128 B32 T50 vs one-hot V65    embedding no slower per token
    start-up  fresh process, warm cache: import, make_trainer, step    <= 1.5 s beyond `python -c pass`;
              (and with a cold NUMBA_CACHE_DIR)                        cold: aim <= 20 s
    memory    peak-RSS increase of large-case steps, own subprocess    <= PyTorch's
    scaling   LSTM f32 B32: T 25/100/400 at H256, H 64..1024 at T50    time linear in T; where numbarnn stops leading

Every implementation gets the same thread count (2 BLAS threads,
``torch.set_num_threads(2)``), dtype, sizes, optimizer and data, starts from the same
weights, and is timed interleaved: each repeat times every implementation once, in turn
(the order rotates every repeat), so machine noise hits all alike. The table shows medians,
the spread (interquartile range as % of the median) and the ratio reference time / numbarnn
time (> 1: numbarnn is faster), with each target and whether it is met. Before timing, the
first two training steps of every implementation must give the same loss (same math); a
mismatch, or an error in any case, makes the exit status 1. No timing decides the exit status.

``--quick`` runs every case at tiny sizes with 2 repeats (a smoke test). PyTorch is
optional: without it only the numbarnn and NumPy columns are shown, and the table says so.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))
import reference  # noqa: E402  (plain-NumPy training step and sampling loop)

THREADS = 2
THREAD_ENV = {name: str(THREADS) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                              "NUMBA_NUM_THREADS")}
CASE_NAMES = ("course", "mid", "large", "generate", "plugin", "owncells", "digits", "bilstm", "embedding", "start-up",
              "memory", "scaling")
TORCH_MODULES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}

torch = None  # imported in main() unless --no-torch; the memory children import only what they need


def log(message):
    print(f"[suite {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- sizes ----------------------------------------------------------------------------------------

FULL = dict(
    course=dict(V=27, hiddens=(50, 100), T=25, repeats=15),
    mid=dict(V=65, H=128, B=32, T=50, repeats=11),
    large=dict(V=65, H=512, B=64, T=50, repeats=7),
    generate=dict(V=65, hiddens=(128, 512), length=2000, repeats=5),
    plugin=dict(V=65, H=128, B=32, T=50, repeats=9),
    owncells=dict(V=65, H=128, B=32, T=50, repeats=7),
    digits=dict(H=64, B=64, n_train=1437, repeats=15),       # 15 timed epochs of the 1,437 training digits
    bilstm=dict(H=256, B=32, T=50, X=32, O=8, repeats=9),
    embedding=dict(V=65, E=64, H=128, B=32, T=50, repeats=9),
    startup=dict(V=27, H=128, repeats=4, cold=1),
    memory=dict(V=65, H=512, B=64, T=50, steps=3),
    scaling=dict(V=65, B=32, H_for_T=256, Ts=(25, 100, 400), T_for_H=50, Hs=(64, 128, 256, 512, 1024),
                 repeats=5),   # 3 repeats for the two biggest variants
)
QUICK = dict(
    course=dict(V=27, hiddens=(8,), T=6, repeats=2),
    mid=dict(V=11, H=8, B=4, T=6, repeats=2),
    large=dict(V=11, H=16, B=4, T=6, repeats=2),
    generate=dict(V=11, hiddens=(8, 16), length=20, repeats=2),
    plugin=dict(V=11, H=8, B=4, T=6, repeats=2),
    owncells=dict(V=7, H=4, B=2, T=5, repeats=2),
    digits=dict(H=8, B=16, n_train=48, repeats=2),
    bilstm=dict(H=8, B=4, T=6, X=3, O=2, repeats=2),
    embedding=dict(V=11, E=4, H=8, B=4, T=6, repeats=2),
    startup=dict(V=27, H=8, repeats=1, cold=0, prewarm=False),   # no cold compile: a minute of CI for a smoke test
    memory=dict(V=11, H=16, B=4, T=6, steps=3),
    scaling=dict(V=11, B=4, H_for_T=8, Ts=(2, 4), T_for_H=4, Hs=(4,), repeats=2),
)


# ---- the table ------------------------------------------------------------------------------------

@dataclass
class Row:
    case: str
    variant: str
    impl: str
    value: Optional[float] = None      # seconds unless unit says otherwise
    unit: str = "s"
    spread: Optional[float] = None     # IQR % of the median
    ratio: Optional[float] = None      # reference / numbarnn (> 1: numbarnn faster or smaller)
    target: str = ""
    met: Optional[bool] = None
    note: str = ""


def fmt_value(value, unit):
    if value is None:
        return "-"
    if unit == "s":
        if value >= 1.0:
            return f"{value:.3g} s"
        if value >= 1e-3:
            return f"{value * 1e3:.3g} ms"
        return f"{value * 1e6:.3g} us"
    if unit == "%":
        return f"{value:.0f} %"
    return f"{value:.3g} {unit}".strip()


def print_table(rows):
    cols = [("case", 9), ("variant", 14), ("impl", 16), ("median", 11), ("spread", 7),
            ("speed-up", 9), ("target", 16), ("met", 4)]
    header = " ".join(f"{name:<{w}}" if i < 3 else f"{name:>{w}}" for i, (name, w) in enumerate(cols)) + "  note"
    print(header)
    print("-" * (len(header) + 40))
    previous = None
    for r in rows:
        if previous is not None and r.case != previous:
            print()
        previous = r.case
        spread = "-" if r.spread is None else f"{r.spread:.0f}%"
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}x"
        met = "" if r.met is None else ("yes" if r.met else "NO")
        print(f"{r.case:<9} {r.variant:<14} {r.impl:<16} {fmt_value(r.value, r.unit):>11} {spread:>7} "
              f"{ratio:>9} {r.target:>16} {met:>4}  {r.note}".rstrip())


# ---- timing ---------------------------------------------------------------------------------------

# min_sample: each timed sample repeats the call until the sample has lasted this long (beats
# timer resolution and per-call jitter on sub-millisecond steps; a slow call runs once); gap:
# idle time before every sample, long enough for the previous implementation's spinning BLAS /
# OpenMP worker threads to park (OpenBLAS spins about 0.1 s after a call) so they do not steal
# a core from the next one; extra_warmup: how many more warm-up calls a slow starter may get.
# retries/retry_budget_s: a sample during which other processes used more than a quarter of a
# CPU (read from /proc/stat against this process's own CPU time) is retaken, at most
# ``retries`` times, after a pause, while the case's retry budget lasts; samples longer than
# retry_max_sample_s are not retaken (under load they are almost always disturbed again).
TIMING = {"min_sample": 0.1, "gap": 0.15, "extra_warmup": 4, "retries": 2, "retry_budget_s": 20.0,
          "retry_max_sample_s": 1.0}
DISTURBED = {}   # {"note": what other processes did to the latest measure()'s samples}
REPEAT_STATS = {"repeats": 0, "disturbed": 0, "kept_disturbed": 0}   # over the whole run
_RETRY_SPENT = [0.0]
_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_ticks():
    """(busy ticks of the whole machine, ticks of this process and its waited-for children), or None."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:9]]
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    busy = sum(values) - values[3] - values[4]          # all but idle and iowait
    mine = sum(int(v) for v in fields[11:15])           # utime, stime, cutime, cstime
    return busy, mine


def others_busy(before, after, elapsed):
    """True when other processes used more than a quarter of a CPU between the two readings."""
    if before is None or after is None:
        return False
    others = (after[0] - before[0]) - (after[1] - before[1])
    return others > max(3, 0.25 * elapsed * _HZ)


def measure(runs: dict, repeats: int, warmup: int = 2, calibrate: bool = True, adaptive: bool = True):
    """Interleaved timing. Returns (per-call times {name: array}, warm-up results {name: [results]}).

    Each implementation runs at least ``warmup`` times first (compilation, allocation,
    caches), and (with ``adaptive``) on, up to ``warmup + extra_warmup`` calls, until a call is within 1.3x of
    the fastest earlier warm-up call: PyTorch's first few calls of a new module can be far
    slower than its steady state. Then every repeat takes one sample of each implementation
    (with ``calibrate``, the call repeated until the sample has lasted ``min_sample``; the
    time per call is recorded), the order rotating by one every repeat so no implementation
    always follows the same neighbour. A garbage collection and a short idle gap precede
    every sample, outside the timed region. A sample disturbed by other processes is retaken
    (see TIMING); a repeat in which any implementation's sample stayed disturbed is dropped
    for all implementations (so they are always compared over the same repeats) when at least
    3 undisturbed repeats remain; ``DISTURBED["note"]`` says what happened.
    """
    results = {}
    for name, run in runs.items():
        results[name], fastest = [], math.inf
        for i in range(warmup + (TIMING["extra_warmup"] if adaptive else 0)):
            start = time.perf_counter()
            result = run()
            elapsed = time.perf_counter() - start
            if i < 2:
                results[name].append(result)   # the first two results (losses) for the parity check
            if i + 1 >= warmup and (not adaptive or (i >= 1 and elapsed <= 1.3 * fastest)):
                break
            fastest = min(fastest, elapsed)
    min_sample = TIMING["min_sample"] if calibrate else 0.0
    times = {name: [] for name in runs}
    disturbed = {name: [] for name in runs}
    retried = {name: 0 for name in runs}
    names = list(runs)
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            run = runs[name]
            for attempt in range(TIMING["retries"] + 1):
                gc.collect()
                time.sleep(TIMING["gap"])
                before = cpu_ticks()
                calls, start = 0, time.perf_counter()
                while True:
                    run()
                    calls += 1
                    elapsed = time.perf_counter() - start
                    if elapsed >= min_sample:
                        break
                busy = others_busy(before, cpu_ticks(), elapsed)
                if (not busy or attempt == TIMING["retries"] or elapsed > TIMING["retry_max_sample_s"]
                        or _RETRY_SPENT[0] > TIMING["retry_budget_s"]):
                    break
                retried[name] += 1
                pause = 0.5
                time.sleep(pause)
                _RETRY_SPENT[0] += elapsed + pause + TIMING["gap"]
            times[name].append(elapsed / calls)
            disturbed[name].append(busy)
    DISTURBED.clear()
    bad = np.array([any(disturbed[name][r] for name in names) for r in range(repeats)], dtype=bool)
    keep = ~bad if bad.any() and (~bad).sum() >= 3 else np.ones(repeats, dtype=bool)
    REPEAT_STATS["repeats"] += repeats
    REPEAT_STATS["disturbed"] += int(bad.sum())
    REPEAT_STATS["kept_disturbed"] += int((bad & keep).sum())
    parts = []
    if bad.any():
        parts.append(f"{bad.sum()} of {repeats} repeats disturbed by other processes, "
                     + ("dropped" if not keep.all() else "kept"))
    if sum(retried.values()):
        parts.append(f"{sum(retried.values())} samples retaken")
    if parts:
        DISTURBED["note"] = "; ".join(parts)
    return {name: np.array(t)[keep] for name, t in times.items()}, results


def stats(t):
    t = np.asarray(t, dtype=float)
    med = float(np.median(t))
    spread = float((np.percentile(t, 75) - np.percentile(t, 25)) / med * 100) if med > 0 else 0.0
    return med, spread


def time_rows(case, variant, times, ours="numbarnn", targets=None, notes=None, labels=None):
    """One row per implementation, ratios against ``ours``; targets {impl: (text, min ratio)}."""
    targets, notes, labels = targets or {}, notes or {}, labels or {}
    base = float(np.median(times[ours]))
    rows = []
    for impl, t in times.items():
        med, spread = stats(t)
        note = "; ".join(n for n in (notes.get(impl, ""), DISTURBED.get("note", "") if impl == ours else "") if n)
        row = Row(case, variant, labels.get(impl, impl), med, "s", spread, note=note)
        if impl != ours:
            row.ratio = med / base
            if impl in targets:
                text, minimum = targets[impl]
                row.target, row.met = text, row.ratio >= minimum
        rows.append(row)
    if torch is None:
        rows.append(Row(case, variant, "pytorch", note="PyTorch not available: no PyTorch column"))
    return rows


def parity_note(results, rtol, step2_rtol=None):
    """Check that every implementation's first two losses agree with numbarnn's
    (``step2_rtol``: {impl: looser tolerance for the second step's loss})."""
    n = min(len(r) for r in results.values())
    ours = np.array(results["numbarnn"][:n], dtype=float)
    bad = []
    for impl, losses in results.items():
        theirs = np.array(losses[:n], dtype=float)
        tol = np.full(len(ours), rtol)
        if step2_rtol and impl in step2_rtol:
            tol[1:] = step2_rtol[impl]
        if not np.all(np.abs(theirs - ours) <= tol * np.abs(ours)):
            bad.append(f"{impl} {theirs.round(6).tolist()} vs numbarnn {ours.round(6).tolist()}")
    if bad:
        return False, "LOSS MISMATCH: " + "; ".join(bad)
    return True, f"step-1/2 losses agree (rtol {rtol:g})"


# ---- the implementations of one training step -----------------------------------------------------

def numbarnn_trainer(cell, V, H, dtype, **kwargs):
    import numbarnn
    return numbarnn.make_trainer(cell, vocab_size=V, hidden_size=H, dtype=dtype, seed=0, **kwargs)


def torch_model(cell, params, V, H, dtype):
    tdtype = getattr(torch, dtype)
    rnn = getattr(torch.nn, TORCH_MODULES[cell])(V, H, batch_first=True, dtype=tdtype)
    head = torch.nn.Linear(H, V, dtype=tdtype)
    with torch.no_grad():
        for ours, theirs in (("W_x", "weight_ih_l0"), ("W_h", "weight_hh_l0"), ("b_x", "bias_ih_l0"),
                             ("b_h", "bias_hh_l0")):
            getattr(rnn, theirs).copy_(torch.from_numpy(params[ours]))
        head.weight.copy_(torch.from_numpy(params["W_y"]))
        head.bias.copy_(torch.from_numpy(params["b_y"]))
    return rnn, head


def torch_one_hot(indices, V, tdtype):
    """(B, T) int64 tensor -> (B, T, V) one-hot; -1 gives a zero vector (the course's None)."""
    valid = indices >= 0
    return (torch.nn.functional.one_hot(indices.clamp(min=0), V) * valid.unsqueeze(-1)).to(tdtype)


def torch_train_step(rnn, head, optimizer, inputs, targets, V, clip, clip_mode):
    inputs_t = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.int64))
    targets_t = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.int64)).reshape(-1)
    params = list(rnn.parameters()) + list(head.parameters())
    tdtype = rnn.weight_hh_l0.dtype
    B = inputs.shape[0]

    def run():
        x = torch_one_hot(inputs_t, V, tdtype)
        out, _ = rnn(x)
        logits = head(out)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets_t, reduction="sum") / B
        loss.backward()
        if clip_mode == "value":
            torch.nn.utils.clip_grad_value_(params, clip)
        else:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()
    return run


def train_runs(cell, V, H, B, T, dtype="float32", *, seed=0, impls=("numbarnn", "numpy", "pytorch")):
    """The three implementations of one Adam + clip-by-norm-5 training step from the same weights."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, V, size=(B, T + 1))
    inputs, targets = np.ascontiguousarray(data[:, :-1]), np.ascontiguousarray(data[:, 1:])
    trainer = numbarnn_trainer(cell, V, H, dtype, optimizer="adam", lr=1e-3, clip=5.0, clip_mode="norm")
    runs = {}
    if "numbarnn" in impls:
        runs["numbarnn"] = lambda: trainer.train_step(inputs, targets)
    params = {k: v.copy() for k, v in trainer.model.params.items()}
    if "numpy" in impls:
        ref = reference.ReferenceTrainer(cell, params, optimizer="adam", lr=1e-3, clip=5.0, clip_mode="norm")
        runs["numpy"] = lambda: ref.train_step(inputs, targets)
    if "pytorch" in impls and torch is not None:
        rnn, head = torch_model(cell, params, V, H, dtype)
        opt = torch.optim.Adam(list(rnn.parameters()) + list(head.parameters()), lr=1e-3)
        runs["pytorch"] = torch_train_step(rnn, head, opt, inputs, targets, V, 5.0, "norm")
    return runs


def train_flops(cell_gates, V, H, B, T):
    """FLOPs of one training step: forward 2TB·GH·(X+H) + head 2TB·V·H, backward about twice that."""
    forward = 2 * T * B * cell_gates * H * (V + H) + 2 * T * B * V * H
    return 3 * forward


# ---- the cases ------------------------------------------------------------------------------------

def case_course(sz, repeats, ctx):
    import course_reference as course
    rows = []
    V, T = sz["V"], sz["T"]
    rng = np.random.default_rng(0)
    chars = [int(i) for i in rng.integers(1, V, size=T - 1)]   # index 0 is the newline, as in the course
    X = [None] + chars                                          # the course's inputs (None: zero vector)
    Y = X[1:] + [0]                                             # ... and targets (ending in the newline)
    inputs = np.array([[-1] + chars])                           # numbarnn / PyTorch: -1 is a zero input
    targets = np.array([Y])
    for H in sz["hiddens"]:
        course_params = course.initialize_parameters(H, V, V)
        course_params["b"] = rng.normal(scale=0.1, size=(H, 1))
        course_params["by"] = rng.normal(scale=0.1, size=(V, 1))
        trainer = numbarnn_trainer("rnn", V, H, "float64", optimizer="sgd", lr=0.01, clip=5.0, clip_mode="value")
        p = trainer.model.params
        p["W_x"][...] = course_params["Wax"]
        p["W_h"][...] = course_params["Waa"]
        p["b_x"][...] = course_params["b"][:, 0]
        p["b_h"][...] = 0.0
        p["W_y"][...] = course_params["Wya"]
        p["b_y"][...] = course_params["by"][:, 0]
        a0 = np.zeros((H, 1))
        runs = {"numbarnn": lambda: trainer.train_step(inputs, targets),
                "numpy": lambda: course.optimize(X, Y, a0, course_params, 0.01)[0]}
        if torch is not None:
            rnn, head = torch_model("rnn", {k: v.copy() for k, v in p.items()}, V, H, "float64")
            opt = torch.optim.SGD(list(rnn.parameters()) + list(head.parameters()), lr=0.01)
            runs["pytorch"] = torch_train_step(rnn, head, opt, inputs, targets, V, 5.0, "value")
        times, results = measure(runs, repeats)
        # The course has one hidden bias b, numbarnn and nn.RNN two (b_x, b_h) that both receive
        # db, so after the first update the effective bias has moved by 2 lr db instead of
        # lr db: step-1 losses agree to rounding, step-2 losses only closely.
        ok, note = parity_note(results, 1e-9, step2_rtol={"numpy": 1e-4})
        ctx["ok"] &= ok
        rows += time_rows("course", f"RNN H{H} f64", times,
                          targets={"numpy": (">= 10x", 10.0), "pytorch": (">= 10x", 10.0)},
                          notes={"numbarnn": note, "numpy": "the course's own optimize()"},
                          labels={"numpy": "numpy (course)"})
    return rows


MATMUL = "matmul f32 peak"


def case_lstm_train(name, sz, repeats, ctx, target, with_peak=False):
    V, H, B, T = sz["V"], sz["H"], sz["B"], sz["T"]
    runs = train_runs("lstm", V, H, B, T)
    if with_peak:   # the float32 peak again, interleaved with the steps (same machine state)
        a, b = (np.random.default_rng(1).random((1024, 1024), dtype=np.float32) for _ in range(2))
        runs[MATMUL] = lambda: a @ b
    times, results = measure(runs, repeats, warmup=2)
    results.pop(MATMUL, None)
    if with_peak:
        ctx["peak_interleaved"] = 2 * 1024 ** 3 / float(np.min(times.pop(MATMUL))) / 1e9
    ok, note = parity_note(results, 2e-3)
    ctx["ok"] &= ok
    rows = time_rows(name, f"LSTM H{H} B{B}", times, targets={"pytorch": target} if target else None,
                     notes={"numbarnn": note})
    return rows, times


def case_mid(sz, repeats, ctx):
    return case_lstm_train("mid", sz, repeats, ctx, (">= 1.5x", 1.5))[0]


def case_large(sz, repeats, ctx):
    rows, times = case_lstm_train("large", sz, repeats, ctx, (">= 1.0x", 1.0), with_peak=True)
    V, H, B, T = sz["V"], sz["H"], sz["B"], sz["T"]
    flops = train_flops(4, V, H, B, T)
    # The higher of the two float32 peak measurements: at the start of the run, and interleaved here.
    start_peak, here_peak = ctx["peak"]["numpy float32"], ctx["peak_interleaved"]
    peak = max(start_peak, here_peak)
    for impl in times:
        achieved = flops / float(np.median(times[impl])) / 1e9
        if impl == "numbarnn":
            rows.append(Row("large", f"LSTM H{H} B{B}", "numbarnn GFLOP/s", achieved, "GFLOP/s",
                            target=">= 70% of peak", met=achieved >= 0.7 * peak,
                            note=f"{achieved / peak * 100:.0f}% of the float32 matmul peak {peak:.0f} GFLOP/s "
                                 f"(best of: run start {start_peak:.0f}, interleaved here {here_peak:.0f}); "
                                 f"{flops / 1e9:.2f} GFLOP per step"))
        else:
            rows.append(Row("large", f"LSTM H{H} B{B}", f"{impl} GFLOP/s", achieved, "GFLOP/s",
                            note=f"{achieved / peak * 100:.0f}% of the float32 peak"))
    return rows


def case_generate(sz, repeats, ctx):
    V, L = sz["V"], sz["length"]
    rows = []
    for H, minimum in zip(sz["hiddens"], (10.0, 2.0)):
        trainer = numbarnn_trainer("lstm", V, H, "float32", sampler="categorical")
        params = {k: v.copy() for k, v in trainer.model.params.items()}
        runs = {"numbarnn": lambda: trainer.generate(prime=[], length=L, seed=1),
                "numpy": lambda: reference.generate_lstm(params, L, np.random.default_rng(1))}
        if torch is not None:
            rnn, head = torch_model("lstm", params, V, H, "float32")

            def torch_generate(rnn=rnn, head=head):
                generator = torch.Generator().manual_seed(1)
                x = torch.zeros(1, 1, V)
                state, out = None, []
                with torch.no_grad():
                    for _ in range(L):
                        h, state = rnn(x, state)
                        probs = torch.softmax(head(h[0, 0]), dim=-1)
                        idx = int(torch.multinomial(probs, 1, generator=generator).item())
                        out.append(idx)
                        x.zero_()
                        x[0, 0, idx] = 1.0
                return out
            runs["pytorch"] = torch_generate
        times, results = measure(runs, repeats, warmup=1, adaptive=False)   # one call is 2,000 steps
        lengths = {impl: len(r[0]) for impl, r in results.items()}
        if set(lengths.values()) != {L}:
            ctx["ok"] = False
            note = f"LENGTH MISMATCH {lengths}"
        else:
            note = f"{L} chars each; {np.median(times['numbarnn']) / L * 1e6:.0f} us/char"
        rows += time_rows("generate", f"LSTM H{H}", times,
                          targets={"pytorch": (f">= {minimum:g}x", minimum)}, notes={"numbarnn": note})
    return rows


def case_plugin(sz, repeats, ctx):
    import numbarnn
    V, H, B, T = sz["V"], sz["H"], sz["B"], sz["T"]
    if "gru" not in numbarnn.list_cells():
        return [Row("plugin", f"GRU H{H} B{B}", "numbarnn gru",
                    note="the GRU plugin (plugins/numbarnn-gru) is not installed")]
    runs = train_runs("gru", V, H, B, T)
    lstm = train_runs("lstm", V, H, B, T, impls=("numbarnn",))
    runs = {"numbarnn": runs["numbarnn"], "numbarnn lstm": lstm["numbarnn"],
            **{k: v for k, v in runs.items() if k != "numbarnn"}}
    times, results = measure(runs, repeats, warmup=2)
    results.pop("numbarnn lstm")
    ok, note = parity_note(results, 2e-3)
    ctx["ok"] &= ok
    gru, lstm_t = float(np.median(times["numbarnn"])), float(np.median(times["numbarnn lstm"]))
    per_gate = (gru / 3) / (lstm_t / 4)
    n = min(len(times["numbarnn"]), len(times["numbarnn lstm"]))   # disturbed samples may have been dropped
    paired = (times["numbarnn"][:n] / 3) / (times["numbarnn lstm"][:n] / 4)
    rows = time_rows("plugin", f"GRU H{H} B{B}", times, notes={"numbarnn": "GRU plugin; " + note},
                     labels={"numbarnn": "numbarnn gru", "numpy": "numpy gru", "pytorch": "pytorch gru"})
    for row in rows:
        if row.impl == "numbarnn lstm":
            row.ratio, row.note = None, "built-in LSTM, same sizes (interleaved with the rest)"
    rows.append(Row("plugin", f"GRU H{H} B{B}", "gru/lstm per gate", per_gate, "x", stats(paired)[1],
                    target="<= 1.10x", met=per_gate <= 1.10,
                    note=f"(GRU time / 3) / (LSTM time / 4): {gru / 3 * 1e3:.3g} vs {lstm_t / 4 * 1e3:.3g} ms "
                         "per gate"))
    return rows


def case_owncells(sz, repeats, ctx):
    """Cells with parameters of their own (the plugins numbarnn-indrnn, numbarnn-layernorm-lstm):
    a training step against the same cell as a PyTorch loop with autograd and in JAX (lax.scan
    under jit), and per gate against the built-in LSTM; see benchmarks/own_cells_anchors.py."""
    import own_cells_anchors as anchors
    try:
        import jax  # noqa: F401
        use_jax = True
    except ImportError:
        use_jax = False
    sizes = {key: sz[key] for key in ("V", "H", "B", "T")}
    runs, expected, notes = anchors.build_runs(sizes, anchors.CELLS, use_torch=torch is not None, use_jax=use_jax)
    times, results = measure(runs, repeats, warmup=2)
    problems = anchors.check_losses(results, expected)
    ctx["ok"] &= not problems
    medians = {label: float(np.median(t)) for label, t in times.items()}
    rows = []
    variant = f"H{sz['H']} B{sz['B']}"
    SHORT = {"indrnn": "IndRNN", "layernorm_lstm": "LN-LSTM"}
    for cell in anchors.CELLS:
        ours = f"numbarnn {cell}"
        if ours not in times:
            rows.append(Row("owncells", variant, ours, note=f"the {cell} plugin is not installed (plugins/)"))
            continue
        mine = {label: t for label, t in times.items() if label.endswith(f" {cell}")}
        jax_target = 1.5 if cell == "layernorm_lstm" else 1.0
        targets = {f"pytorch-loop {cell}": (">= 5x", 5.0), f"jax {cell}": (f">= {jax_target:g}x", jax_target)}
        note = "; ".join(problems) if problems else "first losses agree with the float64 reference (rtol 1e-4)"
        rows += time_rows("owncells", f"{SHORT[cell]} H{sz['H']}", mine, ours=ours, targets=targets,
                          notes={ours: ("LOSS MISMATCH: " if problems else "") + note})
        per_gate = (medians[ours] / anchors.GATES[cell]) / (medians["numbarnn lstm"] / anchors.GATES["lstm"])
        target = "<= 1.50x" if cell == "layernorm_lstm" else ""
        rows.append(Row("owncells", f"{SHORT[cell]} H{sz['H']}", "per gate / lstm", per_gate, "x",
                        target=target, met=(per_gate <= 1.5) if target else None,
                        note=f"({cell} time / {anchors.GATES[cell]}) / (built-in LSTM time / 4), "
                             f"LSTM {medians['numbarnn lstm'] * 1e3:.3g} ms"))
    if not use_jax:
        rows.append(Row("owncells", variant, "jax", note="JAX not installed (pip install \".[bench]\"): no JAX column"))
    return rows


# ---- models as layer stacks: digits, bidirectional, embedding -----------------------------------

def stack_trainer(**kwargs):
    """A numbarnn trainer with the suite's optimizer (Adam, clip-by-norm 5), float32, seed 0."""
    import numbarnn
    options = dict(optimizer="adam", lr=1e-3, clip=5.0, clip_mode="norm", dtype="float32", seed=0)
    options.update(kwargs)
    return numbarnn.make_trainer("lstm", **options)


def torch_stack(trainer, lr):
    """The trainer's model as torch modules with the same weights (numbarnn.interop.to_torch), batch first,
    and a torch Adam over all of them."""
    from numbarnn.interop import to_torch
    stack = to_torch(trainer.model, batch_first=True)
    params = [p for module in stack if module is not None for p in module.parameters()]
    return stack, params, torch.optim.Adam(params, lr=lr)


def torch_update(loss, params, optimizer):
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 5.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def case_digits(sz, repeats, ctx):
    """scikit-learn's digits as 8 rows of 8 pixels, LSTM + a 10-class head on the last state, one
    timed call = one epoch of minibatches (the same shuffled order for both), ``repeats`` epochs."""
    H, B = sz["H"], sz["B"]
    variant = f"LSTM H{H} B{B}"
    try:
        from numbarnn import datasets
        X, y = datasets.digits()
    except ImportError as error:
        return [Row("digits", variant, "numbarnn", note=f"skipped: {error}")]
    order = np.random.default_rng(0).permutation(len(X))
    X, y = X[order], y[order]
    X_test, y_test, X, y = X[:360], y[:360], X[360:360 + sz["n_train"]], y[360:360 + sz["n_train"]]
    trainer = stack_trainer(task="classify", input_size=8, num_classes=10, hidden_size=H, lr=1e-2)
    steps = {"numbarnn": lambda xb, yb: trainer.train_step(xb, yb)}
    if torch is not None:
        (_, rnn, head), params, opt = torch_stack(trainer, 1e-2)

        def torch_step(xb, yb):
            _, (h_n, _) = rnn(torch.from_numpy(xb))
            loss = torch.nn.functional.cross_entropy(head(h_n[-1]), torch.from_numpy(yb))   # mean over B
            return torch_update(loss, params, opt)
        steps["pytorch"] = torch_step

    def epochs(step):
        count = [0]

        def run():   # one epoch; every implementation's n-th epoch has the same order
            perm = np.random.default_rng(1000 + count[0]).permutation(len(X))
            count[0] += 1
            return [step(X[perm[i:i + B]], y[perm[i:i + B]]) for i in range(0, len(X), B)][0]
        return run

    # Parity before timing: the first two steps (same weights, same batches) give the same loss.
    results = {name: [step(X[i * B:(i + 1) * B], y[i * B:(i + 1) * B]) for i in range(2)]
               for name, step in steps.items()}
    ok, note = parity_note(results, 2e-3)
    ctx["ok"] &= ok
    times, _ = measure({name: epochs(step) for name, step in steps.items()}, repeats, warmup=1,
                       calibrate=False, adaptive=False)
    accuracy = {"numbarnn": trainer.score(X_test, y_test)["accuracy"]}
    if torch is not None:
        with torch.no_grad():
            _, (h_n, _) = rnn(torch.from_numpy(X_test))
            accuracy["pytorch"] = float((head(h_n[-1]).argmax(1).numpy() == y_test).mean())
    steps_per_epoch = -(-len(X) // B)
    notes = {impl: f"after {repeats + 1} epochs + 2 steps: test accuracy {acc:.1%}" for impl, acc in accuracy.items()}
    notes["numbarnn"] = "; ".join((note, f"{len(X)} digits, {steps_per_epoch} steps per epoch", notes["numbarnn"]))
    return time_rows("digits", variant, times, targets={"pytorch": (">= 1.5x", 1.5)}, notes=notes,
                     labels={"numbarnn": "numbarnn epoch", "pytorch": "pytorch epoch"})


def case_bilstm(sz, repeats, ctx):
    """One training step of a bidirectional LSTM regressor (dense inputs, a dense output per step, mse).

    numbarnn runs the two directions at the same time when BLAS runs one thread per call: its
    row uses the 2 cores that way (BLAS limited to 1 thread around its step, as
    ``numbarnn.set_threads(1)`` would for a whole process); "numbarnn in turn" is the same step
    with the suite's 2 BLAS threads, the directions one after the other (the default there)."""
    from threadpoolctl import ThreadpoolController
    H, B, T, X_size, O = sz["H"], sz["B"], sz["T"], sz["X"], sz["O"]
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(B, T, X_size)).astype(np.float32)
    targets = rng.normal(size=(B, T, O)).astype(np.float32)
    options = dict(task="regress", input_size=X_size, output_size=O, hidden_size=H, bidirectional=True)
    trainer, in_turn = stack_trainer(**options), stack_trainer(**options)
    blas = ThreadpoolController().select(user_api="blas")

    def concurrent_step():
        with blas.limit(limits=1):
            return trainer.train_step(inputs, targets)
    runs = {"numbarnn": concurrent_step, "numbarnn in turn": lambda: in_turn.train_step(inputs, targets)}
    if torch is not None:
        (_, rnn, head), params, opt = torch_stack(trainer, 1e-3)
        x_t, y_t = torch.from_numpy(inputs), torch.from_numpy(targets)

        def torch_step():
            out, _ = rnn(x_t)                                        # (B, T, 2H)
            loss = 0.5 * ((head(out) - y_t) ** 2).sum() / B           # numbarnn's mse: 0.5 * sum, / B
            return torch_update(loss, params, opt)
        runs["pytorch"] = torch_step
    times, results = measure(runs, repeats, warmup=2)
    ok, note = parity_note(results, 2e-3)
    ctx["ok"] &= ok
    return time_rows("bilstm", f"H{H} B{B} T{T}", times, targets={"pytorch": (">= 1.0x", 1.0)},
                     notes={"numbarnn": f"regress X{X_size} O{O}, Adam, clip-norm 5; 1 BLAS thread, the directions "
                                        f"at the same time; {note}",
                            "numbarnn in turn": "2 BLAS threads, the directions one after the other"})


def case_embedding(sz, repeats, ctx):
    """A language model's step with a learnt embedding (V -> E -> LSTM) vs the one-hot input (V -> LSTM),
    per token, in numbarnn and in PyTorch (nn.Embedding vs one-hot vectors)."""
    V, E, H, B, T = sz["V"], sz["E"], sz["H"], sz["B"], sz["T"]
    rng = np.random.default_rng(0)
    data = rng.integers(0, V, size=(B, T + 1))
    inputs, targets = np.ascontiguousarray(data[:, :-1]), np.ascontiguousarray(data[:, 1:])
    embedded = stack_trainer(vocab_size=V, embedding=E, hidden_size=H)
    one_hot = train_runs("lstm", V, H, B, T, impls=("numbarnn", "pytorch"))
    runs = {"numbarnn": lambda: embedded.train_step(inputs, targets), "numbarnn one-hot": one_hot["numbarnn"]}
    if torch is not None:
        (emb, rnn, head), params, opt = torch_stack(embedded, 1e-3)
        inputs_t = torch.from_numpy(inputs.astype(np.int64))
        targets_t = torch.from_numpy(targets.astype(np.int64)).reshape(-1)

        def torch_step():
            out, _ = rnn(emb(inputs_t))
            loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, V), targets_t, reduction="sum") / B
            return torch_update(loss, params, opt)
        runs["pytorch"] = torch_step
        runs["pytorch one-hot"] = one_hot["pytorch"]
    times, results = measure(runs, repeats, warmup=2)
    # Two models with different weights: each pair (embedding, one-hot) is checked on its own.
    ok, note = parity_note({k: v for k, v in results.items() if not k.endswith("one-hot")}, 2e-3)
    ok2, note2 = parity_note({k.replace(" one-hot", ""): v for k, v in results.items() if k.endswith("one-hot")},
                             2e-3)
    ctx["ok"] &= ok and ok2
    tokens = B * T
    per_token = {impl: f"{float(np.median(t)) / tokens * 1e9:.0f} ns per token" for impl, t in times.items()}
    notes = dict(per_token)
    notes["numbarnn"] = f"E{E}: {per_token['numbarnn']}; {note}"
    notes["numbarnn one-hot"] = f"{per_token['numbarnn one-hot']}; one-hot pair: {note2}"
    rows = time_rows("embedding", f"V{V} E{E} H{H} B{B}", times, notes=notes,
                     targets={"numbarnn one-hot": ("emb. no slower", 1.0)})
    return rows


# ---- start-up -------------------------------------------------------------------------------------

NUMBARNN_START = """
import numpy as np, numbarnn
trainer = numbarnn.make_trainer(vocab_size={V}, hidden_size={H}, seed=0)
data = (np.arange(26) % {V})[None]
trainer.train_step(data[:, :-1], data[:, 1:])
"""
TORCH_START = """
import torch
torch.set_num_threads({threads})
rnn, head = torch.nn.LSTM({V}, {H}, batch_first=True), torch.nn.Linear({H}, {V})
opt = torch.optim.Adam(list(rnn.parameters()) + list(head.parameters()), lr=1e-3)
data = (torch.arange(26) % {V})[None]
x = torch.nn.functional.one_hot(data[:, :-1], {V}).float()
loss = torch.nn.functional.cross_entropy(head(rnn(x)[0]).reshape(-1, {V}), data[:, 1:].reshape(-1), reduction="sum")
loss.backward()
torch.nn.utils.clip_grad_value_(list(rnn.parameters()) + list(head.parameters()), 5.0)
opt.step()
"""


def child_env(**extra):
    env = dict(os.environ)
    env.update(THREAD_ENV)
    env.update(extra)
    return env


def run_timed(args, env, timeout=600):
    start = time.perf_counter()
    result = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])}... failed:\n{result.stderr[-2000:]}")
    return elapsed


def case_startup(sz, repeats, ctx):
    V, H = sz["V"], sz["H"]
    env = child_env()
    commands = {"python -c pass": [sys.executable, "-c", "pass"],
                "numbarnn": [sys.executable, "-c", NUMBARNN_START.format(V=V, H=H)]}
    if torch is not None:
        commands["pytorch"] = [sys.executable, "-c", TORCH_START.format(V=V, H=H, threads=THREADS)]
    for name, args in commands.items():   # warm the numba cache and the OS file cache, untimed
        if sz.get("prewarm", True):
            run_timed(args, env)
    runs = {name: (lambda a=args: run_timed(a, env)) for name, args in commands.items()}
    times, _ = measure(runs, repeats, warmup=0)
    disturbed = "; " + DISTURBED["note"] if "note" in DISTURBED else ""
    base = float(np.median(times["python -c pass"]))
    cold = []
    for _ in range(sz["cold"]):
        with tempfile.TemporaryDirectory(prefix="numbarnn-cold-") as cache:
            cold.append(run_timed(commands["numbarnn"], child_env(NUMBA_CACHE_DIR=cache)) - base)
    variant = f"LSTM V{V} H{H}"
    rows = [Row("start-up", variant, "python -c pass", base, "s", stats(times["python -c pass"])[1],
                note="interpreter start, subtracted from the rows below" + disturbed)]
    warm = times["numbarnn"] - base
    warm_med = float(np.median(warm))
    rows.append(Row("start-up", variant, "numbarnn warm", warm_med, "s", stats(warm)[1],
                    target="<= 1.5 s", met=warm_med <= 1.5,
                    note="fresh process, warm cache: import, make_trainer, first train_step"))
    if torch is not None:
        t = times["pytorch"] - base
        rows.append(Row("start-up", variant, "pytorch warm", float(np.median(t)), "s", stats(t)[1],
                        ratio=float(np.median(t)) / warm_med,
                        note="import torch, build LSTM + head + Adam, first step (context, no target)"))
    if not cold:
        rows.append(Row("start-up", variant, "numbarnn cold", note="not run (--quick)"))
        return rows
    cold_med = float(np.median(cold))
    rows.append(Row("start-up", variant, "numbarnn cold", cold_med, "s", stats(cold)[1] if len(cold) > 1 else None,
                    target="<= 20 s (aim)", met=cold_med <= 20.0,
                    note=f"same, in a fresh empty NUMBA_CACHE_DIR ({len(cold)} run{'s' if len(cold) > 1 else ''})"))
    return rows


# ---- memory ---------------------------------------------------------------------------------------

def peak_rss_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # KiB on Linux


def vm_hwm_kib():
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def memory_child(spec):
    """Runs in its own process: peak-RSS increase of ``steps`` training steps of one implementation."""
    impl, V, H, B, T, steps = spec["impl"], spec["V"], spec["H"], spec["B"], spec["T"], spec["steps"]
    global torch
    if impl == "pytorch":
        import torch as _torch
        torch = _torch
        torch.set_num_threads(THREADS)

    def build(H_, B_, T_):
        runs = train_runs("lstm", V, H_, B_, T_, impls=(impl,))
        return runs[impl]

    # Load and compile every code path at a tiny size first, so the measured increase is the
    # step's memory, not the compiler's or the library's first-use buffers.
    tiny = build(8, 2, 3)
    tiny()
    tiny()
    del tiny
    run = build(H, B, T)
    if impl == "pytorch":
        prime_torch_adam_state(run)
    gc.collect()
    try:   # reset the peak-RSS high-water mark to the current RSS (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    before, hwm_before = peak_rss_kib(), vm_hwm_kib()
    for _ in range(steps):
        run()
    after, hwm_after = peak_rss_kib(), vm_hwm_kib()
    print(json.dumps({"before_kib": before, "after_kib": after, "reset": reset,
                      "hwm_before_kib": hwm_before, "hwm_after_kib": hwm_after}))


def prime_torch_adam_state(run):
    """Create torch.optim.Adam's per-parameter state (zeros, step 0), which it otherwise allocates
    lazily in the first step; numbarnn and the reference allocate theirs at construction."""
    cells = dict(zip(run.__code__.co_freevars, (c.cell_contents for c in run.__closure__)))
    optimizer = cells["optimizer"]
    for group in optimizer.param_groups:
        for p in group["params"]:
            optimizer.state[p] = {"step": torch.tensor(0.0),
                                  "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                  "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}


def case_memory(sz, repeats, ctx):
    impls = ["numbarnn", "numpy"] + (["pytorch"] if torch is not None else [])
    procs = {}
    with tempfile.TemporaryDirectory(prefix="numbarnn-suite-memory-") as tmp:
        for impl in impls:   # concurrently: nothing is timed here, and RSS is per process
            spec = dict(sz, impl=impl)
            # Through sh, which forks the child: a process started straight from this one would
            # inherit this process's peak RSS as the floor of its ru_maxrss (Linux keeps the
            # larger of the exec'ing process's high-water mark and the new one's).
            child = [sys.executable, str(Path(__file__).resolve()), "--memory-child", json.dumps(spec)]
            out_file, err_file = open(Path(tmp) / f"{impl}.out", "w+"), open(Path(tmp) / f"{impl}.err", "w+")
            procs[impl] = (subprocess.Popen(["sh", "-c", '"$@"; exit $?', "sh", *child], env=child_env(), cwd=ROOT,
                                            stdout=out_file, stderr=err_file), out_file, err_file)
        out = {}
        for impl, (proc, out_file, err_file) in procs.items():
            code = proc.wait(timeout=900)
            out_file.seek(0)
            err_file.seek(0)
            stdout, stderr = out_file.read(), err_file.read()
            out_file.close()
            err_file.close()
            if code != 0:
                raise RuntimeError(f"memory child {impl} failed:\n{stderr[-2000:]}")
            out[impl] = json.loads(stdout.strip().splitlines()[-1])
    variant = f"LSTM H{sz['H']} B{sz['B']}"
    ours = (out["numbarnn"]["after_kib"] - out["numbarnn"]["before_kib"]) / 1024
    rows = []
    for impl in impls:
        o = out[impl]
        increase = (o["after_kib"] - o["before_kib"]) / 1024
        note = (f"ru_maxrss {o['before_kib'] / 1024:.0f} -> {o['after_kib'] / 1024:.0f} MiB over "
                f"{sz['steps']} steps" + ("" if o["reset"] else " (high-water mark NOT reset)"))
        if o.get("hwm_after_kib") is not None:
            hwm = (o["hwm_after_kib"] - o["hwm_before_kib"]) / 1024
            note += f"; VmHWM +{hwm:.0f} MiB" + (" (differs!)" if abs(hwm - increase) > max(2.0, 0.05 * increase)
                                                else " (agrees)")
        row = Row("memory", variant, impl, increase, "MiB", note=note)
        if impl != "numbarnn" and ours > 0:
            row.ratio = increase / ours
            if impl == "pytorch":
                row.target, row.met = ">= 1.0x", increase >= ours
        rows.append(row)
    if torch is None:
        rows.append(Row("memory", variant, "pytorch", note="PyTorch not available: no PyTorch column"))
    return rows


# ---- scaling --------------------------------------------------------------------------------------

def case_scaling(sz, repeats, ctx):
    V, B = sz["V"], sz["B"]
    rows, per_step, lead = [], {}, []
    variants = [(T, sz["H_for_T"], "T") for T in sz["Ts"]] + [(sz["T_for_H"], H, "H") for H in sz["Hs"]]
    for T, H, axis in variants:
        log(f"scaling T{T} H{H}")
        runs = train_runs("lstm", V, H, B, T)
        big = train_flops(4, V, H, B, T) > 2e10
        if big:   # seconds per call: one warm-up call (compilation is done by now), fewer repeats
            times, results = measure(runs, max(3, repeats - 2), warmup=1, adaptive=False)
        else:
            times, results = measure(runs, repeats, warmup=2)
        ok, note = parity_note(results, 2e-3)
        ctx["ok"] &= ok
        variant = f"T{T} H{H}"
        new = time_rows("scaling", variant, times)
        med = float(np.median(times["numbarnn"]))
        if axis == "T":
            per_step[T] = med / T
            first = per_step[sz["Ts"][0]]
            growth = per_step[T] / first
            new[0].note = "; ".join(n for n in (f"{per_step[T] * 1e3:.3g} ms per time step "
                                                f"({growth:.2f}x of T{sz['Ts'][0]}'s)", new[0].note) if n)
            if T != sz["Ts"][0]:
                new[0].target, new[0].met = "linear in T", growth <= 1.25
        if not ok:
            new[0].note = "; ".join(n for n in (note, new[0].note) if n)
        if torch is not None:
            ratio = float(np.median(times["pytorch"])) / med
            lead.append((axis, T, H, ratio))
        rows += new
    if lead:
        for axis in ("T", "H"):
            points = [(T if axis == "T" else H, r) for a, T, H, r in lead if a == axis]
            behind = [p for p, r in points if r < 1.0]
            ahead = [p for p, r in points if r >= 1.0]
            if not behind:
                text = f"numbarnn leads PyTorch at every {axis} measured"
            elif not ahead:
                text = f"numbarnn trails PyTorch at every {axis} measured"
            else:
                text = (f"numbarnn leads PyTorch at {axis} = {', '.join(map(str, ahead))}; "
                        f"trails at {axis} = {', '.join(map(str, behind))}")
            rows.append(Row("scaling", f"by {axis}", "numbarnn vs torch", note=text))
    return rows


# ---- machine ----------------------------------------------------------------------------------------

def matmul_peak(n=1024, tries=10):
    out = {}
    rng = np.random.default_rng(0)
    for dtype in ("float32", "float64"):
        a, b = rng.random((n, n)).astype(dtype), rng.random((n, n)).astype(dtype)
        best = min(_timed(lambda: a @ b) for _ in range(tries))
        out[f"numpy {dtype}"] = 2 * n ** 3 / best / 1e9
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            best = min(_timed(lambda: ta @ tb) for _ in range(tries))
            out[f"torch {dtype}"] = 2 * n ** 3 / best / 1e9
    return out


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def thread_report():
    from threadpoolctl import threadpool_info
    parts = []
    for info in threadpool_info():
        lib = Path(info["filepath"]).parent.name.replace(".libs", "")
        parts.append(f"{info['internal_api']} {info.get('version') or ''} via {lib} "
                     f"({info.get('architecture') or info['user_api']}): {info['num_threads']} threads")
    return "; ".join(parts)


NOTES = """\
Notes on method and fairness:
- speed-up = reference median / numbarnn median (> 1: numbarnn faster); for memory, reference increase /
  numbarnn increase. spread = interquartile range as % of the median. Repeats are interleaved and rotate order.
- Same data, sizes, dtype and starting weights everywhere (numbarnn's initial weights copied into the NumPy
  reference and the torch modules); the first two losses of every implementation are checked to agree before
  timing. Loss: cross-entropy summed over time, averaged over the batch; inputs are integer indices, turned into
  one-hot vectors inside the timed step by NumPy and PyTorch (numbarnn gathers rows of W_x instead).
- course: numbarnn rnn + sgd(lr 0.01) + clip 5 by value vs the course's own optimize() (plain NumPy, B=1, float64)
  vs nn.RNN + nn.Linear + SGD + clip_grad_value_. numbarnn and nn.RNN carry two biases (b_x, b_h; b_h = 0), the
  course one.
- mid/large/plugin/scaling: Adam(lr 1e-3, betas 0.9/0.999, eps 1e-8) and clip_grad_norm_(5) semantics in all three
  (numbarnn trainer clip=5, clip_mode="norm"). PyTorch: nn.LSTM/nn.GRU(batch_first=True) + nn.Linear +
  cross_entropy(reduction="sum")/B, default (single-tensor) Adam, zero_grad(set_to_none=True). NumPy reference:
  benchmarks/reference.py (tests/naive.py equations; BPTT reuses the forward's cache instead of recomputing it).
- Threads: numbarnn (SciPy's OpenBLAS through numba) and NumPy (NumPy's OpenBLAS) are capped at {threads} BLAS
  threads with threadpoolctl; torch.set_num_threads({threads}). Each library uses its own BLAS (torch: MKL/oneDNN).
- GFLOP/s: 3 x (2TB*4H*(X+H) + 2TB*V*H) per step, as specified; numbarnn replaces the one-hot input product by a
  row gather, so the count credits it with input-projection FLOPs it does not execute (X/(X+H) of the projections).
  Peak = fastest numpy float32 matmul of 1024x1024 (OpenBLAS), measured at the start of the run and again
  interleaved with the large case's steps; the higher is used. torch's own matmul peak is shown for context.
- generate: numbarnn trainer.generate (categorical sampler, seeded) vs plain NumPy (one step at a time, one uniform
  draw per char) vs torch.no_grad() loop: nn.LSTM step, nn.Linear, softmax, torch.multinomial with a seeded
  generator. All start from a zero input and sample the full length (no stop character).
- digits/bilstm/embedding (models as layer stacks): PyTorch's modules come from numbarnn.interop.to_torch of the
  numbarnn model (same weights), batch_first; Adam and clip_grad_norm_(5) as above. digits: scikit-learn's digits
  (the datasets extra) as 8 steps of 8 pixels, nn.LSTM + nn.Linear on h_n[-1], cross_entropy (mean), lr 1e-2;
  one timed call is one epoch of minibatches in an order both share (batch slicing and tensor wrapping included),
  parity on the first two steps before timing, the test accuracy after training in the notes. bilstm: nn.LSTM
  (bidirectional) + nn.Linear on every step, 0.5 * sum of squares / B (numbarnn's mse); numbarnn's row limits
  BLAS to 1 thread around its step so that the two directions run at the same time on the 2 cores ("numbarnn
  in turn": 2 BLAS threads, the directions one after the other). embedding: nn.Embedding
  + nn.LSTM + nn.Linear vs the one-hot step of mid; the target compares numbarnn's two input paths per token.
- owncells: the plugin cells against the same cell as a PyTorch loop with autograd and as jax.lax.scan under
  jax.jit (benchmarks/own_cells_anchors.py; first losses checked against a float64 NumPy reference). The loop's
  time is mostly fixed per-operation cost (44 of its 82 ms remain at H8 B2), numbarnn's step is bound by its
  per-step matrix products: the loop ratio grows with the matmul peak printed above (docs/performance.md).
- timing: before each sample a gc.collect() and an idle gap of {gap:g} s (so the previous library's spinning
  BLAS/OpenMP worker threads park and do not steal a core); a sample repeats the call until it has lasted
  {min_sample:g} s and records the time per call (sub-millisecond course steps would otherwise be timer noise).
- disturbance: this machine is shared. For every sample the suite compares the machine's busy CPU time
  (/proc/stat) with its own (and its children's): when other processes used more than a quarter of a CPU, the
  sample is retaken after a pause (up to {retries} times; samples under {retry_max_sample_s:g} s only; {retry_budget_s:g} s of retries per
  case). A repeat in which a sample stayed disturbed is dropped for every implementation when at least 3 clean
  repeats remain (so all are compared over the same repeats); the first row of a case says how many were
  disturbed. Under load PyTorch's OpenMP threads suffer more than OpenBLAS (a barrier waits for a descheduled
  thread), so disturbed samples tend to favour numbarnn.
- start-up: wall time of fresh subprocesses minus the median `python -c pass`; warm = after an untimed run of
  each filled numba's cache and the OS file cache (--quick skips that run); cold = a fresh empty NUMBA_CACHE_DIR.
- memory: each implementation in its own fresh subprocess (the three run at the same time; nothing is timed).
  Every code path is first run at a tiny size (compilation and libraries' first-use buffers), then the large
  model, inputs and optimizer state are built (PyTorch's lazy Adam state is created up front, as numbarnn and
  the reference allocate theirs at construction), the peak-RSS high-water mark is reset to the current RSS
  (echo 5 > /proc/self/clear_refs), ru_maxrss is read, {steps} steps run, ru_maxrss is read again: the row is
  the increase (MiB), i.e. the steps' transient peak. Children are started through sh so their ru_maxrss does
  not inherit this process's peak as a floor; /proc VmHWM is shown as a check.
- The machine is shared: other processes may run; the load average is printed above and below the table."""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per case (default: per case)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 repeats: a smoke test")
    parser.add_argument("--only", nargs="+", choices=CASE_NAMES, metavar="CASE",
                        help=f"run only these cases: {', '.join(CASE_NAMES)}")
    parser.add_argument("--no-torch", action="store_true", help="behave as if PyTorch were not installed")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        from threadpoolctl import threadpool_limits
        with threadpool_limits(THREADS):
            memory_child(json.loads(args.memory_child))
        return 0
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")

    started = time.perf_counter()
    global torch
    torch_missing = None
    if not args.no_torch:
        try:
            import torch as _torch
            torch = _torch
            torch.set_num_threads(THREADS)
        except ImportError as error:  # pragma: no cover - depends on the environment
            torch_missing = f"PyTorch is not installed ({error}): only numbarnn and NumPy columns are shown"
    else:
        torch_missing = "PyTorch disabled (--no-torch): only numbarnn and NumPy columns are shown"
    import numba
    import numbarnn
    from numbarnn.kernels import tiles
    # Load SciPy's BLAS (numba's np.dot inside @njit goes through it) before capping threads.
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import threadpool_limits
    limits = threadpool_limits(THREADS)
    numba.set_num_threads(min(THREADS, numba.config.NUMBA_NUM_THREADS))

    sizes = QUICK if args.quick else FULL
    if args.quick:
        TIMING.update(min_sample=0.005, gap=0.005, extra_warmup=1, retries=0)
    cases = [c for c in CASE_NAMES if not args.only or c in args.only]
    ctx = {"ok": True}
    load_before = os.getloadavg()
    log("measuring the matmul peak")
    ctx["peak"] = matmul_peak(1024, 10 if not args.quick else 3)
    functions = {"course": case_course, "mid": case_mid, "large": case_large, "generate": case_generate,
                 "plugin": case_plugin, "owncells": case_owncells, "digits": case_digits, "bilstm": case_bilstm,
                 "embedding": case_embedding, "start-up": case_startup, "memory": case_memory, "scaling": case_scaling}
    size_key = {"start-up": "startup"}
    rows, loads = [], [load_before[0]]
    for case in cases:
        sz = sizes[size_key.get(case, case)]
        repeats = args.repeats if args.repeats is not None else sz.get("repeats", 1)
        log(f"case {case} ({repeats} repeats)")
        _RETRY_SPENT[0] = 0.0
        loads.append(os.getloadavg()[0])
        case_start = time.perf_counter()
        try:
            rows += functions[case](sz, repeats, ctx)
        except Exception as error:  # keep going: one broken case should not hide the others
            ctx["ok"] = False
            rows.append(Row(case, "", "ERROR", note=f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"))
            import traceback
            traceback.print_exc()
        log(f"case {case} took {time.perf_counter() - case_start:.1f} s")
    blas = thread_report()
    limits.restore_original_limits()

    peak = ctx["peak"]
    print(f"numbarnn suite{' (--quick: tiny sizes, not representative)' if args.quick else ''}: "
          f"{cpu_name()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"numpy {np.__version__}, numba {numba.__version__} ({numba.get_num_threads()} threads), "
          f"numbarnn {getattr(numbarnn, '__version__', '?')}, "
          + (f"torch {torch.__version__} ({torch.get_num_threads()} threads)" if torch is not None else "torch: -"))
    if torch_missing:
        print(f"NOTE: {torch_missing}")
    print(f"BLAS: {blas}")
    print(f"numbarnn's tiled per-step products: {tiles.VECTOR_BYTES * 8}-bit vectors "
          f"({'AVX-512' if tiles.VECTOR_BYTES == 64 else 'AVX2'}, as Numba compiles for this CPU, whatever BLAS runs)")
    if os.environ.get("OPENBLAS_CORETYPE"):
        print(f"NOTE: OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} is set: OpenBLAS runs those kernels, not "
              "its best for this CPU (NumPy, the reference and numbarnn's whole-sequence products; not PyTorch). "
              "For the machine as it is: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE (docs/performance.md)")
    print("matmul peak (1024x1024, best of several, this run): "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()))
    loads.append(os.getloadavg()[0])
    print(f"1-min load average at start {load_before[0]:.2f}, highest seen {max(loads):.2f}, at end {loads[-1]:.2f} "
          f"(this suite alone adds up to {THREADS})")
    stats_ = REPEAT_STATS
    print(f"timed repeats disturbed by other processes: {stats_['disturbed']} of {stats_['repeats']}, "
          f"of which {stats_['kept_disturbed']} had to be kept (fewer than 3 clean repeats in their case)")
    if max(loads) > (os.cpu_count() or 1) + 1 or stats_["kept_disturbed"] > 0.1 * max(stats_["repeats"], 1):
        print(f"WARNING: other processes loaded this {os.cpu_count()}-CPU machine during the run: the rows whose "
              "note says 'kept' are inflated and noisy (see the spreads); their ratios are less reliable")
    print()
    print_table(rows)
    print()
    print(NOTES.format(threads=THREADS, steps=sizes["memory"]["steps"], **TIMING))
    print()
    print(f"suite wall time {time.perf_counter() - started:.0f} s; "
          + ("all parity checks passed" if ctx["ok"] else "SOME CHECKS FAILED (see NO/ERROR/MISMATCH above)"))
    return 0 if ctx["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
