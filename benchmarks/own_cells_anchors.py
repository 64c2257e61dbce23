"""Speed anchors for cells with parameters of their own (issue 16): what a researcher writes
today for IndRNN and the layer-normalised LSTM, timed against numbarnn's built-in LSTM.

    python benchmarks/own_cells_anchors.py [--quick] [--repeats N] [--cells indrnn layernorm_lstm]

One training step is what ``numbarnn.Trainer.train_step`` does for a language model: one-hot
inputs (V wide; the same step at every implementation), the cell over T steps from a zero
state, a vocabulary head ``logits = h W_y^T + b_y``, softmax cross-entropy summed over time
and averaged over the batch, BPTT, clipping by global norm 5 (``clip_grad_norm_``'s
``5 / (norm + 1e-6)``), PyTorch's Adam with lr 1e-3. float32, V65 H128 B32 T50 (the issue's
sizes; ``--quick``: tiny ones, a smoke test).

Implementations (the cell's equations are those of ``tests/own_cells_reference.py``):

* ``pytorch-loop <cell>``: the cell as a Python loop over time with autograd (the
  reference's own torch step functions, in float32), ``torch.optim.Adam``;
* ``jax <cell>``: ``jax.lax.scan`` over a cell function, ``jax.value_and_grad``, the clip and
  a hand-written Adam (PyTorch's formula), all in one ``jax.jit`` function. JAX compiles the
  cell whole, which makes it the strongest anchor. JAX is optional (``pip install jax``, or
  the ``bench`` extra: ``pip install ".[bench]"``);
* ``numbarnn lstm``: the built-in LSTM's ``train_step``, the comparison the issue names
  (a plugin's time per gate against it); ``jax lstm`` runs the plain LSTM with numbarnn's
  own weights, to re-measure "numbarnn's LSTM is 2.0x JAX's" on this machine;
* ``numbarnn <cell>``: once a plugin registers the cell (``numbarnn.get_cell`` finds it).

Before timing, every implementation's first loss is checked against the float64 NumPy
reference on the same weights (``jax lstm`` against numbarnn's), and the second losses of
the PyTorch loop and JAX against each other (the clip and Adam agree); a mismatch makes the
exit status 1, no timing does. Timing is ``benchmarks/suite.py``'s ``measure``: interleaved
repeats, order rotating, medians. Threads: 2 for BLAS (threadpoolctl) and PyTorch; XLA uses
its own pool (all cores, 2 here).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import own_cells_reference as ref  # noqa: E402  (the cells' equations, NumPy and PyTorch)
import reference  # noqa: E402  (one_hot)

FULL = {"V": 65, "H": 128, "B": 32, "T": 50}
QUICK = {"V": 7, "H": 4, "B": 2, "T": 5}
CELLS = ref.CELLS
GATES = {"indrnn": 1, "layernorm_lstm": 4, "lstm": 4}
HEAD = ("W_y", "b_y")
LR, CLIP, BETAS, ADAM_EPS = 1e-3, 5.0, (0.9, 0.999), 1e-8   # PyTorch's Adam defaults
THREADS = 2


# ---- weights, data and the reference loss -----------------------------------------------------

def make_weights(cell: str, V: int, H: int, seed: int = 0, dtype=np.float32) -> dict:
    """The cell's parameters (the issue's initialisers) plus the head ``W_y (V, H)`` uniform
    in ±1/sqrt(H) and ``b_y (V,)`` zero, one-hot inputs: X = V."""
    rng = np.random.default_rng(seed)
    weights = ref.init_params(cell, V, H, rng, dtype)
    weights["W_y"] = rng.uniform(-1 / np.sqrt(H), 1 / np.sqrt(H), size=(V, H)).astype(dtype)
    weights["b_y"] = np.zeros(V, dtype)
    return weights


def make_batch(V: int, B: int, T: int, seed: int = 0):
    """``(inputs, targets)``, both ``(B, T)`` int64: a random sequence and its next tokens."""
    data = np.random.default_rng(seed).integers(0, V, size=(B, T + 1))
    return np.ascontiguousarray(data[:, :-1]), np.ascontiguousarray(data[:, 1:])


def reference_loss(cell: str, weights: dict, inputs, targets) -> float:
    """The first step's loss in float64 NumPy: softmax cross-entropy summed over time, mean over the batch."""
    w = {name: np.asarray(a, np.float64) for name, a in weights.items()}
    V, B = w["W_y"].shape[0], inputs.shape[0]
    x = reference.one_hot(inputs.T, V, np.float64)                       # (T, B, V)
    outputs, _ = ref.numpy_forward(cell, {k: a for k, a in w.items() if k not in HEAD}, x)
    logits = outputs @ w["W_y"].T + w["b_y"]                              # (T, B, V)
    top = logits.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(logits - top).sum(axis=-1)) + top[..., 0]
    picked = np.take_along_axis(logits, targets.T[..., None], axis=-1)[..., 0]
    return float((log_z - picked).sum() / B)


# ---- anchor 1: the cell as a PyTorch loop with autograd ---------------------------------------

def torch_loop_train_step(cell: str, weights: dict, inputs, targets, lr=LR, clip=CLIP):
    """A closure running one training step per call; returns the step's loss (before the update)."""
    import torch
    F = torch.nn.functional
    params = {name: torch.tensor(a, requires_grad=True) for name, a in weights.items()}
    cell_params = {name: p for name, p in params.items() if name not in HEAD}
    optimizer = torch.optim.Adam(params.values(), lr=lr, betas=BETAS, eps=ADAM_EPS)
    V, B = weights["W_y"].shape[0], inputs.shape[0]
    x_indices = torch.from_numpy(np.ascontiguousarray(inputs.T, dtype=np.int64))          # (T, B): time-major
    y = torch.from_numpy(np.ascontiguousarray(targets.T, dtype=np.int64)).reshape(-1)
    dtype = params["W_y"].dtype

    def run():
        x = F.one_hot(x_indices, V).to(dtype)
        outputs, _ = ref.torch_forward(cell, cell_params, x)                               # the Python loop
        logits = outputs @ params["W_y"].T + params["b_y"]
        loss = F.cross_entropy(logits.reshape(-1, V), y, reduction="sum") / B
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params.values(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()
    return run


# ---- anchor 2: the cell in JAX, lax.scan under jit ---------------------------------------------

def jax_cells() -> dict:
    """``{name: (step(params, state, x_t) -> (state, h_t), number of states)}`` in JAX."""
    import jax
    import jax.numpy as jnp
    sigmoid = jax.nn.sigmoid

    def layer_norm(a):   # over the last axis, biased variance, eps inside the root, no gain or shift
        mean = a.mean(axis=-1, keepdims=True)
        return (a - mean) * jax.lax.rsqrt(((a - mean) ** 2).mean(axis=-1, keepdims=True) + ref.LN_EPS)

    def indrnn(p, h, x_t):
        h = jax.nn.relu(x_t @ p["W_x"].T + p["b_x"] + p["u"] * h)
        return h, h

    def layernorm_lstm(p, state, x_t):
        h, c = state
        z = layer_norm(x_t @ p["W_x"].T) * p["gamma_x"] + layer_norm(h @ p["W_h"].T) * p["gamma_h"] + p["b_x"]
        i, f, g, o = jnp.split(z, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * jnp.tanh(g)
        h = sigmoid(o) * jnp.tanh(layer_norm(c) * p["gamma_c"] + p["beta_c"])
        return (h, c), h

    def lstm(p, state, x_t):   # numbarnn's built-in LSTM (PyTorch's equations), for calibration
        h, c = state
        z = x_t @ p["W_x"].T + p["b_x"] + h @ p["W_h"].T + p["b_h"]
        i, f, g, o = jnp.split(z, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * jnp.tanh(g)
        h = sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    return {"indrnn": (indrnn, 1), "layernorm_lstm": (layernorm_lstm, 2), "lstm": (lstm, 2)}


def jax_train_step(cell: str, weights: dict, inputs, targets, lr=LR, clip=CLIP):
    """A closure running one training step per call; returns the step's loss (before the update)."""
    import jax
    import jax.numpy as jnp
    step, n_states = jax_cells()[cell]
    V, B, H = weights["W_y"].shape[0], inputs.shape[0], weights["W_y"].shape[1]
    dtype = jnp.dtype(weights["W_y"].dtype)

    def loss_fn(params, x_indices, y):
        x = jax.nn.one_hot(x_indices, V, dtype=dtype)                                     # (T, B, V)
        zeros = jnp.zeros((B, H), dtype)
        state = zeros if n_states == 1 else (zeros, zeros)
        _, outputs = jax.lax.scan(lambda s, x_t: step(params, s, x_t), state, x)
        logits = outputs @ params["W_y"].T + params["b_y"]
        log_p = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.take_along_axis(log_p, y[..., None], axis=-1).sum() / B

    @jax.jit
    def train(params, m, v, count, x_indices, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x_indices, y)
        norm = jnp.sqrt(sum(jnp.sum(g * g) for g in grads.values()))
        scale = jnp.minimum(1.0, clip / (norm + 1e-6))                                     # clip_grad_norm_
        count = count + 1
        beta1, beta2 = BETAS
        step_size = lr / (1 - beta1 ** count)                                              # torch.optim.Adam's
        root_correction = jnp.sqrt(1 - beta2 ** count)
        new_params, new_m, new_v = {}, {}, {}
        for name, p in params.items():
            g = grads[name] * scale
            new_m[name] = beta1 * m[name] + (1 - beta1) * g
            new_v[name] = beta2 * v[name] + (1 - beta2) * g * g
            denominator = jnp.sqrt(new_v[name]) / root_correction + ADAM_EPS
            new_params[name] = p - step_size * new_m[name] / denominator
        return new_params, new_m, new_v, count, loss

    params = {name: jnp.asarray(a) for name, a in weights.items()}
    zeros = {name: jnp.zeros_like(p) for name, p in params.items()}
    carried = [params, zeros, dict(zeros), jnp.asarray(0, dtype), jnp.asarray(inputs.T), jnp.asarray(targets.T)]

    def run():
        params, m, v, count, loss = train(*carried)
        carried[:4] = params, m, v, count
        return float(loss)   # waits for the result
    return run


# ---- numbarnn ------------------------------------------------------------------------------------

def numbarnn_trainer(cell: str, V: int, H: int, seed: int = 0):
    import numbarnn
    return numbarnn.make_trainer(cell, vocab_size=V, hidden_size=H, dtype="float32", optimizer="adam", lr=LR,
                                 clip=CLIP, clip_mode="norm", seed=seed)


def numbarnn_cell_registered(cell: str) -> bool:
    import numbarnn
    try:
        numbarnn.get_cell(cell)
    except numbarnn.UnknownNameError:
        return False
    return True


def share_weights(trainer, weights: dict) -> bool:
    """Copy ``weights`` into a trainer whose parameters have exactly these names and shapes
    (for loss parity with the anchors); False, copying nothing, otherwise."""
    params = trainer.model.params
    if set(params) != set(weights) or any(params[k].shape != weights[k].shape for k in weights):
        return False
    for name, a in weights.items():
        params[name][...] = a
    return True


# ---- the run ---------------------------------------------------------------------------------------

def build_runs(sizes: dict, cells=CELLS, use_torch=True, use_jax=True):
    """``(runs {label: step closure}, expected first losses {label: loss}, notes)``."""
    V, H, B, T = sizes["V"], sizes["H"], sizes["B"], sizes["T"]
    inputs, targets = make_batch(V, B, T)
    runs, expected, notes = {}, {}, []
    lstm = numbarnn_trainer("lstm", V, H)
    runs["numbarnn lstm"] = lambda: lstm.train_step(inputs, targets)
    if use_jax:
        lstm_weights = {name: a.copy() for name, a in lstm.model.params.items()}
        runs["jax lstm"] = jax_train_step("lstm", lstm_weights, inputs, targets)
        expected["jax lstm"] = "numbarnn lstm"   # same weights: the first losses must agree
    for cell in cells:
        weights = make_weights(cell, V, H)
        loss = reference_loss(cell, weights, inputs, targets)
        if use_torch:
            runs[f"pytorch-loop {cell}"] = torch_loop_train_step(cell, weights, inputs, targets)
            expected[f"pytorch-loop {cell}"] = loss
        if use_jax:
            runs[f"jax {cell}"] = jax_train_step(cell, weights, inputs, targets)
            expected[f"jax {cell}"] = loss
        if numbarnn_cell_registered(cell):
            trainer = numbarnn_trainer(cell, V, H)
            runs[f"numbarnn {cell}"] = lambda trainer=trainer: trainer.train_step(inputs, targets)
            if share_weights(trainer, weights):
                expected[f"numbarnn {cell}"] = loss
            else:
                notes.append(f"numbarnn {cell}: its parameters are not the reference's names and shapes: "
                             "no loss check")
        else:
            notes.append(f"no numbarnn {cell} yet (no plugin registers it): anchors only")
    return runs, expected, notes


def check_losses(results: dict, expected: dict, rtol=1e-4):
    """Problems with the first two losses: first losses against the reference (or another
    implementation's), second losses of the PyTorch loop and JAX against each other."""
    problems = []
    for label, want in expected.items():
        want = results[want][0] if isinstance(want, str) else want
        got = results[label][0]
        if not abs(got - want) <= rtol * abs(want):
            problems.append(f"{label}: first loss {got:.7g}, expected {want:.7g}")
    for cell in CELLS:
        pair = [f"pytorch-loop {cell}", f"jax {cell}"]
        if all(p in results and len(results[p]) > 1 for p in pair):
            a, b = results[pair[0]][1], results[pair[1]][1]
            if not abs(a - b) <= rtol * abs(a):
                problems.append(f"{cell}: second losses differ: pytorch-loop {a:.7g}, jax {b:.7g}")
    return problems


def ratio_lines(medians: dict):
    """The comparisons the issue names, as ratios of median times (> 1: the second is faster)."""
    lines = []

    def add(slower, faster, what):
        if slower in medians and faster in medians:
            lines.append(f"{slower} / {faster}: {medians[slower] / medians[faster]:.2f}x  ({what})")

    add("jax lstm", "numbarnn lstm", "issue 16 quotes 2.0x, 2026-12-01")
    for cell in CELLS:
        add(f"pytorch-loop {cell}", f"jax {cell}", "how much the JAX anchor leads the PyTorch loop")
        add(f"pytorch-loop {cell}", "numbarnn lstm", "the built-in LSTM against this anchor")
        add(f"jax {cell}", "numbarnn lstm", "the built-in LSTM against this anchor")
        target_jax = ">= 1.5x" if cell == "layernorm_lstm" else ">= 1.0x"
        add(f"pytorch-loop {cell}", f"numbarnn {cell}", "target >= 5x")
        add(f"jax {cell}", f"numbarnn {cell}", f"target {target_jax}")
        ours = f"numbarnn {cell}"
        if ours in medians:
            per_gate = (medians[ours] / GATES[cell]) / (medians["numbarnn lstm"] / GATES["lstm"])
            lines.append(f"{ours} per gate / numbarnn lstm per gate: {per_gate:.2f}x"
                         + ("  (target <= 1.5x)" if cell == "layernorm_lstm" else ""))
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 repeats: a smoke test")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 7, quick 2)")
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    args = parser.parse_args(argv)
    sizes, repeats = (QUICK, 2) if args.quick else (FULL, 7)
    repeats = args.repeats or repeats

    import suite   # its interleaved timing; imported here so that importing this module stays light
    from threadpoolctl import threadpool_limits
    threadpool_limits(THREADS)
    notes = []
    try:
        import torch
        torch.set_num_threads(THREADS)
        use_torch = True
    except ImportError:
        use_torch, notes = False, notes + ["PyTorch not installed: no pytorch-loop anchors"]
    try:
        import jax  # noqa: F401
        use_jax = True
    except ImportError:
        use_jax, notes = False, notes + ["JAX not installed (pip install jax): no jax anchors"]

    runs, expected, build_notes = build_runs(sizes, args.cells, use_torch, use_jax)
    print(f"one training step, float32, V{sizes['V']} H{sizes['H']} B{sizes['B']} T{sizes['T']}, Adam, "
          f"clip norm {CLIP:g}; {repeats} interleaved repeats, medians", flush=True)
    times, results = suite.measure(runs, repeats)
    problems = check_losses(results, expected)

    medians = {}
    print(f"\n{'implementation':<30} {'median ms':>10} {'spread %':>9}  first loss")
    for label, t in times.items():
        medians[label], spread = suite.stats(t)
        print(f"{label:<30} {medians[label] * 1e3:>10.3f} {spread:>9.1f}  {results[label][0]:.6f}")
    print()
    for line in ratio_lines(medians):
        print(line)
    for note in notes + build_notes + ([suite.DISTURBED["note"]] if suite.DISTURBED.get("note") else []):
        print("note:", note)
    if problems:
        print("LOSS MISMATCH: " + "; ".join(problems))
        return 1
    print("losses: every first loss agrees with the float64 reference (rtol 1e-4); "
          "pytorch-loop and jax agree on the second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
