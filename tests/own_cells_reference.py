"""References for the two cells with parameters of their own (issue 16): IndRNN and the
layer-normalised LSTM, written straight from the issue's equations.

* **indrnn** (Li et al. 2018): ``h_t = relu(W_x x_t + b_x + u * h_{t-1})``.
* **layernorm_lstm** (Ba et al. 2016, as in haste), with ``LN`` over the last axis: subtract
  the mean, divide by ``sqrt(biased variance + 1e-5)``, no gain or shift of its own::

      z   = LN(W_x x_t) * gamma_x + LN(W_h h_{t-1}) * gamma_h + b_x      (B, 4H)
      i, f, g, o = the four H-wide blocks of z, in that order
      c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
      h_t = sigmoid(o) * tanh(LN(c_t) * gamma_c + beta_c)

Conventions are numbarnn's (and ``tests/naive.py``'s): ``x`` is time-major ``(T, B, X)``;
the state is an array ``h (B, H)`` for indrnn and a tuple ``(h, c)`` for layernorm_lstm,
zeros when None; a forward returns ``(outputs (T, B, H), final state)``. Gradients are of
``sum(outputs * d_outputs) [+ sum(final_state * d_final_state)]`` and are named ``"d" + name``
for each parameter, plus ``dx`` and (when an initial state is given) ``dstate``.

Three independent pieces, so each checks the others:

* a naive NumPy forward (one loop iteration per step, one line per equation);
* a PyTorch autograd forward of the same equations (``torch.nn.functional.layer_norm``
  rather than a hand-written LN) and :func:`torch_gradients`; PyTorch is imported only when
  these are called;
* :func:`finite_difference_gradients`, central differences in float64 of any forward.

>>> rng = np.random.default_rng(0)
>>> params = init_params("layernorm_lstm", 3, 2, rng)
>>> {name: p.shape for name, p in params.items()}
{'W_x': (8, 3), 'W_h': (8, 2), 'b_x': (8,), 'gamma_x': (8,), 'gamma_h': (8,), 'gamma_c': (2,), 'beta_c': (2,)}
>>> outputs, (h, c) = numpy_forward("layernorm_lstm", params, rng.normal(size=(5, 4, 3)))
>>> outputs.shape, h.shape, c.shape
((5, 4, 2), (4, 2), (4, 2))
"""
from __future__ import annotations

import numpy as np

try:  # works whether or not tests/ is a package
    from . import naive
except ImportError:
    import naive

CELLS = ("indrnn", "layernorm_lstm")
LN_EPS = 1e-5  # inside the square root, as in haste and torch.nn.LayerNorm


# ---- parameters ------------------------------------------------------------------------------

def param_shapes(cell: str, X: int, H: int) -> dict:
    """The issue's parameter names and shapes, in its order."""
    if cell == "indrnn":
        return {"W_x": (H, X), "b_x": (H,), "u": (H,)}
    if cell == "layernorm_lstm":
        return {"W_x": (4 * H, X), "W_h": (4 * H, H), "b_x": (4 * H,), "gamma_x": (4 * H,),
                "gamma_h": (4 * H,), "gamma_c": (H,), "beta_c": (H,)}
    raise ValueError(f"unknown cell {cell!r}; expected one of {CELLS}")


def init_params(cell: str, X: int, H: int, rng, dtype=np.float64) -> dict:
    """The issue's initialisation: weights ``W_*`` uniform in ±1/sqrt(H), ``u`` uniform in
    (0, 1), the gammas 1, the biases ``b_x`` and ``beta_c`` 0. Draws in ``param_shapes`` order.

    >>> p = init_params("indrnn", 3, 4, np.random.default_rng(0))
    >>> sorted(p), p["b_x"].tolist(), bool(np.all((0 <= p["u"]) & (p["u"] < 1)))
    (['W_x', 'b_x', 'u'], [0.0, 0.0, 0.0, 0.0], True)
    """
    bound = 1.0 / np.sqrt(H)
    params = {}
    for name, shape in param_shapes(cell, X, H).items():
        if name.startswith("W_"):
            value = rng.uniform(-bound, bound, size=shape)
        elif name == "u":
            value = rng.uniform(0.0, 1.0, size=shape)
        elif name.startswith("gamma_"):
            value = np.ones(shape)
        else:  # b_x, beta_c
            value = np.zeros(shape)
        params[name] = value.astype(dtype)
    return params


def random_params(cell: str, X: int, H: int, rng, scale=0.3) -> dict:
    """``init_params`` plus normal noise on every array (float64): gammas away from 1, biases
    and ``beta_c`` away from 0, some ``u`` negative, so that every gradient is exercised at a
    general point rather than at the initialisation's special values."""
    return {name: p + rng.normal(scale=scale, size=p.shape) for name, p in init_params(cell, X, H, rng).items()}


# ---- NumPy forward ---------------------------------------------------------------------------

def layer_norm(a):
    """LN over the last axis: ``(a - mean) / sqrt(biased variance + 1e-5)``; no gain, no shift."""
    mean = a.mean(axis=-1, keepdims=True)
    variance = ((a - mean) ** 2).mean(axis=-1, keepdims=True)   # biased: divide by n
    return (a - mean) / np.sqrt(variance + LN_EPS)


def indrnn_forward(params, x, h0=None):
    """-> (outputs (T, B, H), h_T)."""
    W_x, b_x, u = params["W_x"], params["b_x"], params["u"]
    T, B, _ = x.shape
    H = u.shape[0]
    h = np.zeros((B, H), np.result_type(x, W_x)) if h0 is None else h0
    outputs = np.empty((T, B, H), np.result_type(x, W_x, h))
    for t in range(T):
        h = np.maximum(x[t] @ W_x.T + b_x + u * h, 0.0)   # u * h: element-wise, no W_h
        outputs[t] = h
    return outputs, h


def layernorm_lstm_forward(params, x, state=None):
    """-> (outputs (T, B, H), (h_T, c_T))."""
    p = params
    T, B, _ = x.shape
    H = p["gamma_c"].shape[0]
    dtype = np.result_type(x, p["W_x"])
    h, c = (np.zeros((B, H), dtype), np.zeros((B, H), dtype)) if state is None else state
    outputs = np.empty((T, B, H), np.result_type(dtype, h))
    for t in range(T):
        # LN over the whole 4H gate vector, once for the input and once for the recurrent projection
        z = layer_norm(x[t] @ p["W_x"].T) * p["gamma_x"] + layer_norm(h @ p["W_h"].T) * p["gamma_h"] + p["b_x"]
        i, f, g, o = z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:]
        c = naive.sigmoid(f) * c + naive.sigmoid(i) * np.tanh(g)
        h = naive.sigmoid(o) * np.tanh(layer_norm(c) * p["gamma_c"] + p["beta_c"])   # LN over H
        outputs[t] = h
    return outputs, (h, c)


_NUMPY_FORWARDS = {"indrnn": indrnn_forward, "layernorm_lstm": layernorm_lstm_forward}


def numpy_forward(cell: str, params, x, initial_state=None):
    """The NumPy forward of ``cell``: ``(outputs (T, B, H), final state)``."""
    if cell not in _NUMPY_FORWARDS:
        raise ValueError(f"unknown cell {cell!r}; expected one of {CELLS}")
    return _NUMPY_FORWARDS[cell](params, x, initial_state)


# ---- PyTorch autograd forward and gradients --------------------------------------------------
# Dtype-agnostic (the float32 speed anchor in benchmarks/own_cells_anchors.py runs these same
# steps); the references call them in float64.

def torch_indrnn_step(p, x_t, h):
    """One step: ``(h_t, new state)`` from ``x_t (B, X)`` and the state ``h (B, H)``."""
    import torch
    h = torch.relu(x_t @ p["W_x"].T + p["b_x"] + p["u"] * h)
    return h, h


def torch_layernorm_lstm_step(p, x_t, state):
    """One step: ``(h_t, (h_t, c_t))`` from ``x_t (B, X)`` and the state ``(h, c)``."""
    import torch
    layer_norm = torch.nn.functional.layer_norm   # biased variance, eps inside the root; no weight: no gain/shift
    h, c = state
    G, H = p["W_x"].shape[0], p["gamma_c"].shape[0]
    z = (layer_norm(x_t @ p["W_x"].T, (G,), eps=LN_EPS) * p["gamma_x"]
         + layer_norm(h @ p["W_h"].T, (G,), eps=LN_EPS) * p["gamma_h"] + p["b_x"])
    i, f, g, o = z.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(layer_norm(c, (H,), eps=LN_EPS) * p["gamma_c"] + p["beta_c"])
    return h, (h, c)


TORCH_STEPS = {"indrnn": torch_indrnn_step, "layernorm_lstm": torch_layernorm_lstm_step}
STATE_COUNTS = {"indrnn": 1, "layernorm_lstm": 2}


def torch_zero_state(cell: str, B: int, H: int, dtype, requires_grad=False):
    import torch
    zeros = [torch.zeros(B, H, dtype=dtype, requires_grad=requires_grad) for _ in range(STATE_COUNTS[cell])]
    return zeros[0] if len(zeros) == 1 else tuple(zeros)


def torch_forward(cell: str, params, x, initial_state=None):
    """A Python loop over time with autograd. ``params``: dict of tensors; ``x (T, B, X)``
    tensor. Returns ``(outputs (T, B, H), final state)`` as tensors."""
    import torch
    if cell not in TORCH_STEPS:
        raise ValueError(f"unknown cell {cell!r}; expected one of {CELLS}")
    step = TORCH_STEPS[cell]
    H = (params["u"] if cell == "indrnn" else params["gamma_c"]).shape[0]
    state = torch_zero_state(cell, x.shape[1], H, x.dtype) if initial_state is None else initial_state
    outputs = []
    for t in range(x.shape[0]):
        h, state = step(params, x[t], state)
        outputs.append(h)
    return torch.stack(outputs), state


def _state_list(state):
    """An array state or a tuple of them -> a list of arrays."""
    return list(state) if isinstance(state, (tuple, list)) else [state]


def _state_like(arrays, like):
    """A list of arrays -> the form of ``like`` (one array, or a tuple)."""
    return tuple(arrays) if isinstance(like, (tuple, list)) else arrays[0]


def torch_gradients(cell: str, params: dict, x, d_outputs, initial_state=None, d_final_state=None) -> dict:
    """Every gradient of ``sum(outputs * d_outputs) [+ sum(final * d_final_state)]`` by PyTorch
    autograd in float64: ``"d" + name`` for each parameter, ``dx``, and ``dstate`` (in the
    state's form) when ``initial_state`` is given. NumPy in, NumPy out."""
    import torch

    def leaf(a):
        return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)

    tparams = {name: leaf(p) for name, p in params.items()}
    tx = leaf(x)
    tstate = None if initial_state is None else [leaf(s) for s in _state_list(initial_state)]
    outputs, final = torch_forward(cell, tparams, tx, None if tstate is None else _state_like(tstate, initial_state))
    objective = (outputs * torch.from_numpy(np.asarray(d_outputs, dtype=np.float64))).sum()
    if d_final_state is not None:
        for s, d in zip(_state_list(final), _state_list(d_final_state)):
            objective = objective + (s * torch.from_numpy(np.asarray(d, dtype=np.float64))).sum()
    objective.backward()

    def grad(t):  # a leaf the objective does not reach has no .grad: its gradient is zero
        return np.zeros(tuple(t.shape)) if t.grad is None else t.grad.numpy().copy()

    grads = {"d" + name: grad(t) for name, t in tparams.items()}
    grads["dx"] = grad(tx)
    if tstate is not None:
        grads["dstate"] = _state_like([grad(s) for s in tstate], initial_state)
    return grads


# ---- finite differences ----------------------------------------------------------------------

def finite_difference_gradients(forward, params: dict, x, d_outputs, initial_state=None, d_final_state=None,
                                eps=1e-4) -> dict:
    """Central differences (float64) of ``sum(outputs * d_outputs) [+ sum(final * d_final_state)]``
    for any ``forward(params, x, initial_state) -> (outputs, final_state)``, e.g.
    ``functools.partial(numpy_forward, "indrnn")``. Same keys as :func:`torch_gradients`.

    Fourth order: ``(4 D(eps) - D(2 eps)) / 3`` from ``tests/naive.py``'s second-order central
    difference D (Richardson). Why: a layer norm over a few gates curves sharply, so D's
    eps**2 error reaches 1e-6 of the gradient at any eps that rounding allows; this one's
    error is ~1e-9 at eps = 1e-4.

    Only where :func:`smooth_enough_for_differences` holds: near relu's kink or a layer norm
    of an almost constant vector the differences are not the gradient.
    """
    params = {name: np.array(p, dtype=np.float64) for name, p in params.items()}   # copies: probed in place
    x = np.array(x, dtype=np.float64)
    state = None if initial_state is None else [np.array(s, dtype=np.float64) for s in _state_list(initial_state)]
    d_outputs = np.asarray(d_outputs, dtype=np.float64)

    def objective():
        outputs, final = forward(params, x, None if state is None else _state_like(state, initial_state))
        value = np.sum(outputs * d_outputs)
        if d_final_state is not None:
            value += sum(np.sum(s * d) for s, d in zip(_state_list(final), _state_list(d_final_state)))
        return value

    def gradient(array):
        fine = naive.finite_difference_grad(objective, array, eps)
        coarse = naive.finite_difference_grad(objective, array, 2 * eps)
        return (4 * fine - coarse) / 3

    grads = {"d" + name: gradient(p) for name, p in params.items()}
    grads["dx"] = gradient(x)
    if state is not None:
        grads["dstate"] = _state_like([gradient(s) for s in state], initial_state)
    return grads


def smooth_enough_for_differences(cell: str, params, x, initial_state=None, margin=1e-3) -> bool:
    """Whether finite differences (eps <= 1e-4) measure the gradient at this point: every relu
    pre-activation of indrnn is at least ``margin`` from the kink at 0, and every vector that
    layernorm_lstm normalises has a variance of at least ``margin`` (LN of a nearly constant
    vector curves sharply: its derivatives grow like powers of 1/sqrt(variance + 1e-5)).
    Not counted: ``W_h h_0`` from the implicit zero state (it is 0 whatever W_h is) and LN(c)
    over one hidden unit (identically 0)."""
    state = initial_state
    for t in range(x.shape[0]):
        x_t = x[t:t + 1]
        if cell == "indrnn":
            h = np.zeros((x.shape[1], params["u"].shape[0])) if state is None else state
            if np.abs(x[t] @ params["W_x"].T + params["b_x"] + params["u"] * h).min() < margin:
                return False
        else:
            variances = [(x[t] @ params["W_x"].T).var(axis=1)]
            if state is not None:
                variances.append((state[0] @ params["W_h"].T).var(axis=1))
            _, (_, c) = numpy_forward(cell, params, x_t, state)
            if c.shape[1] > 1:
                variances.append(c.var(axis=1))
            if min(v.min() for v in variances) < margin:
                return False
        _, state = numpy_forward(cell, params, x_t, state)
    return True


def relative_error(actual, expected, floor=1e-3) -> float:
    """``max |actual - expected| / max(max |expected|, floor)``: relative to the array's scale,
    so that entries near zero do not blow the ratio up. The floor is for gradients that are
    tiny everywhere (a layer norm of ``W_x x`` with one input unit cancels x's scale: ``dx`` ~ 1e-7),
    where finite differences' rounding, not the gradient, sets the error: they are compared
    absolutely, at ``rtol * floor``."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise ValueError(f"shapes differ: {actual.shape} vs {expected.shape}")
    error = float(np.max(np.abs(actual - expected), initial=0.0))
    return error / max(float(np.max(np.abs(expected), initial=0.0)), floor)


def assert_gradients_close(actual: dict, expected: dict, rtol: float, floor=1e-3):
    """Every gradient of ``expected`` is in ``actual`` within ``rtol`` (:func:`relative_error`);
    the assertion names the worst. Returns ``{name: error}``.

    >>> assert_gradients_close({"dW": np.ones(2)}, {"dW": np.ones(2) + 1e-3}, rtol=1e-6)
    Traceback (most recent call last):
    ...
    AssertionError: dW: relative error 0.000999 > 1e-06 (errors: dW 0.000999)
    """
    missing = sorted(set(expected) - set(actual))
    if missing:
        raise AssertionError(f"gradients missing: {missing}")
    errors = {}
    for name, e in expected.items():
        pairs = zip(_state_list(actual[name]), _state_list(e))   # dstate may be a tuple
        errors[name] = max(relative_error(a, b, floor) for a, b in pairs)
    worst = max(errors, key=errors.get)
    summary = ", ".join(f"{name} {err:.3g}" for name, err in errors.items())
    if not errors[worst] <= rtol:   # a raise, not an assert: the message must not depend on pytest's rewriting
        raise AssertionError(f"{worst}: relative error {errors[worst]:.3g} > {rtol:g} (errors: {summary})")
    return errors


def assert_params_identical(actual: dict, expected: dict, dtype) -> None:
    """The same names in the same order, each array of ``dtype`` and equal bit for bit."""
    assert list(actual) == list(expected)
    for name in actual:
        assert actual[name].dtype == dtype, name
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)
