"""The sequence-models course's functions, exactly, on top of numbarnn's kernels.

A learner can swap their own solution for these: same names, parameter names, shapes,
cache tuples and random-number behaviour as the course's two first-week assignments.

Conventions (the course's, not numbarnn's time-major ones): ``x`` is ``(n_x, m, T_x)``,
``a`` is ``(n_a, m, T_x)``, biases are column vectors ``(n, 1)``, ``softmax`` is over axis 0.

Two course functions share a name across the assignments; both are here and the call's
arity picks one:

* "Building your RNN step by step": ``rnn_forward(x, a0, parameters)`` and
  ``rnn_backward(da, caches)`` (also as :func:`rnn_sequence_forward` / :func:`rnn_sequence_backward`);
* "Dinosaur Island": ``rnn_forward(X, Y, a0, parameters)`` and
  ``rnn_backward(X, Y, parameters, cache)`` over lists of character indices, ``None`` being a
  zero input (also as :func:`char_rnn_forward` / :func:`char_rnn_backward`).

Random numbers are drawn from NumPy's global generator exactly where the course draws them
(``initialize_parameters``, ``sample``, ``model``); the arithmetic runs in the kernels.
Bad input raises ``ValueError`` naming the key or argument, the shape given and the one expected.
"""
from __future__ import annotations

import copy

import numpy as np

from .cells import LSTM, RNN
from .kernels import heads, losses
from .models import RecurrentModel

__all__ = [
    "softmax", "sigmoid", "rnn_cell_forward", "rnn_forward", "lstm_cell_forward", "lstm_forward",
    "rnn_cell_backward", "rnn_backward", "lstm_cell_backward", "lstm_backward",
    "rnn_sequence_forward", "rnn_sequence_backward", "char_rnn_forward", "char_rnn_backward",
    "initialize_parameters", "smooth", "get_initial_loss", "clip", "update_parameters", "optimize",
    "sample", "get_sample", "print_sample", "model",
]


# ---- validation --------------------------------------------------------------------------------

def _shape_text(shape):
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _check(label, value, expected):
    """``value`` as a float64 array of shape ``expected`` (None matches any size)."""
    if value is None:
        raise ValueError(f"{label} is missing (expected shape {_shape_text(expected)})")
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != len(expected) or any(e is not None and e != d for e, d in zip(expected, array.shape)):
        raise ValueError(f"{label} has shape {array.shape}, expected {_shape_text(expected)}")
    return array


def _param(parameters, key, expected, alias=None):
    if not isinstance(parameters, dict):
        raise ValueError(f"parameters must be a dict of arrays, got {type(parameters).__name__}")
    if key not in parameters and alias is not None and alias in parameters:
        key = alias
    if key not in parameters:
        raise ValueError(f"parameters is missing key {key!r} (expected shape {_shape_text(expected)})")
    return _check(f"parameters[{key!r}]", parameters[key], expected)


def _rnn_parameters(parameters, n_x, n_a):
    """The course's RNN parameters, checked; returns (Wax, Waa, b, Wya, by)."""
    Wax = _param(parameters, "Wax", (n_a, n_x))
    Waa = _param(parameters, "Waa", (n_a, n_a))
    b = _param(parameters, "ba", (n_a, 1), alias="b")
    Wya = _param(parameters, "Wya", (None, n_a))
    by = _param(parameters, "by", (Wya.shape[0], 1))
    return Wax, Waa, b, Wya, by


_LSTM_GATES = ("f", "i", "c", "o")


def _lstm_parameters(parameters, n_x, n_a):
    checked = {}
    for g in _LSTM_GATES:
        checked["W" + g] = _param(parameters, "W" + g, (n_a, n_a + n_x))
        checked["b" + g] = _param(parameters, "b" + g, (n_a, 1))
    checked["Wy"] = _param(parameters, "Wy", (None, n_a))
    checked["by"] = _param(parameters, "by", (checked["Wy"].shape[0], 1))
    return checked


def _rnn_layer(Wax, Waa, b):
    return RecurrentModel(RNN, Wax.shape[1], Waa.shape[0], dtype="float64",
                          params={"W_x": Wax, "W_h": Waa, "b_x": b.ravel(), "b_h": np.zeros(b.shape[0])})


def _lstm_layer(checked, n_x, n_a):
    return RecurrentModel(LSTM, n_x, n_a, dtype="float64", params=LSTM.from_course(checked))


def _head_probabilities(h2d, W, by):
    """softmax(W h + by) for rows of h2d (N, n_a) -> (N, n_y), through the kernels."""
    logits = np.empty((h2d.shape[0], W.shape[0]))
    heads.linear_forward(np.ascontiguousarray(h2d), W, np.ascontiguousarray(by.ravel()), logits)
    probs = np.empty_like(logits)
    losses.softmax_rows(logits, probs)
    return probs


def _time_major(x):
    """(n, m, T) -> contiguous (T, m, n)."""
    return np.ascontiguousarray(np.transpose(x, (2, 1, 0)))


def _course_major(x):
    """(T, m, n) -> contiguous (n, m, T)."""
    return np.ascontiguousarray(np.transpose(x, (2, 1, 0)))


# ---- activations -------------------------------------------------------------------------------

def softmax(x):
    """The course's softmax over axis 0: each column of ``x`` (n,) or (n, m) sums to one.

    Returns a float64 array of ``x``'s shape.

    >>> softmax(np.array([[0.0, 1.0], [0.0, 1.0]]))
    array([[0.5, 0.5],
           [0.5, 0.5]])
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim not in (1, 2):
        raise ValueError(f"softmax expects a vector or a matrix, got shape {x.shape}")
    rows = np.ascontiguousarray(x.reshape(x.shape[0], -1).T)
    probs = np.empty_like(rows)
    losses.softmax_rows(rows, probs)
    return probs.T.reshape(x.shape)


def sigmoid(x):
    """The course's element-wise logistic function ``1 / (1 + exp(-x))``, any shape.

    >>> float(sigmoid(0.0))
    0.5
    """
    return 1 / (1 + np.exp(-x))


# ---- "Building your Recurrent Neural Network - Step by Step" -------------------------------------

def rnn_cell_forward(xt, a_prev, parameters):
    """One RNN step. xt (n_x, m), a_prev (n_a, m) -> (a_next, yt_pred, cache).

    ``a_next = tanh(Waa a_prev + Wax xt + ba)`` (n_a, m), ``yt_pred = softmax(Wya a_next + by)``
    (n_y, m), ``cache = (a_next, a_prev, xt, parameters)``. ``parameters``: ``Wax`` (n_a, n_x),
    ``Waa`` (n_a, n_a), ``Wya`` (n_y, n_a), ``ba`` (or ``b``) (n_a, 1), ``by`` (n_y, 1).

    The notebook's test case and its expected output:

    >>> np.random.seed(1)
    >>> xt, a_prev = np.random.randn(3, 10), np.random.randn(5, 10)
    >>> parameters = {"Waa": np.random.randn(5, 5), "Wax": np.random.randn(5, 3),
    ...               "Wya": np.random.randn(2, 5), "ba": np.random.randn(5, 1), "by": np.random.randn(2, 1)}
    >>> a_next, yt_pred, cache = rnn_cell_forward(xt, a_prev, parameters)
    >>> a_next.shape, yt_pred.shape
    ((5, 10), (2, 10))
    >>> a_next[4, :3].round(8).tolist()
    [0.59584544, 0.18141802, 0.61311866]
    """
    xt = _check("xt", xt, (None, None))
    n_x, m = xt.shape
    a_prev = _check("a_prev", a_prev, (None, m))
    Wax, Waa, b, Wya, by = _rnn_parameters(parameters, n_x, a_prev.shape[0])
    outputs, _ = _rnn_layer(Wax, Waa, b).forward(xt.T[None], a_prev.T)
    a_next = np.ascontiguousarray(outputs[0].T)
    yt_pred = _head_probabilities(outputs[0], Wya, by).T.copy()
    return a_next, yt_pred, (a_next, a_prev, xt, parameters)


def rnn_sequence_forward(x, a0, parameters):
    """The RNN over T_x steps. x (n_x, m, T_x), a0 (n_a, m) -> (a, y_pred, caches).

    a (n_a, m, T_x), y_pred (n_y, m, T_x), ``caches = (list of rnn_cell_forward caches, x)``.
    Parameters as for :func:`rnn_cell_forward`. Also reachable as ``rnn_forward(x, a0, parameters)``.

    >>> rng = np.random.default_rng(0)
    >>> parameters = {"Wax": rng.normal(size=(5, 3)), "Waa": rng.normal(size=(5, 5)),
    ...               "Wya": rng.normal(size=(2, 5)), "ba": np.zeros((5, 1)), "by": np.zeros((2, 1))}
    >>> a, y_pred, (cell_caches, x) = rnn_sequence_forward(rng.normal(size=(3, 10, 4)), np.zeros((5, 10)), parameters)
    >>> a.shape, y_pred.shape, len(cell_caches)
    ((5, 10, 4), (2, 10, 4), 4)
    """
    x = _check("x", x, (None, None, None))
    n_x, m, T_x = x.shape
    a0 = _check("a0", a0, (None, m))
    Wax, Waa, b, Wya, by = _rnn_parameters(parameters, n_x, a0.shape[0])
    outputs, _ = _rnn_layer(Wax, Waa, b).forward(_time_major(x), a0.T)
    n_a = a0.shape[0]
    probs = _head_probabilities(outputs.reshape(T_x * m, n_a), Wya, by)
    a = _course_major(outputs)
    y_pred = _course_major(probs.reshape(T_x, m, -1))
    caches = []
    a_prev = a0
    for t in range(T_x):
        a_next = a[:, :, t].copy()
        caches.append((a_next, a_prev, x[:, :, t].copy(), parameters))
        a_prev = a_next
    return a, y_pred, (caches, x)


def lstm_cell_forward(xt, a_prev, c_prev, parameters):
    """One LSTM step. xt (n_x, m), a_prev and c_prev (n_a, m) -> (a_next, c_next, yt_pred, cache).

    ``Wf, Wi, Wc, Wo`` are (n_a, n_a + n_x) acting on ``concat = [a_prev; xt]``, ``bf, bi, bc,
    bo`` (n_a, 1), ``Wy`` (n_y, n_a), ``by`` (n_y, 1). a_next and c_next are (n_a, m), yt_pred
    (n_y, m); ``cache = (a_next, c_next, a_prev, c_prev, ft, it, cct, ot, xt, parameters)``.

    >>> rng = np.random.default_rng(0)
    >>> parameters = {"W" + g: rng.normal(size=(5, 8)) for g in "fico"}
    >>> parameters.update({"b" + g: rng.normal(size=(5, 1)) for g in "fico"})
    >>> parameters.update(Wy=rng.normal(size=(2, 5)), by=rng.normal(size=(2, 1)))
    >>> xt, a_prev, c_prev = rng.normal(size=(3, 10)), rng.normal(size=(5, 10)), rng.normal(size=(5, 10))
    >>> a_next, c_next, yt_pred, cache = lstm_cell_forward(xt, a_prev, c_prev, parameters)
    >>> a_next.shape, c_next.shape, yt_pred.shape, len(cache)
    ((5, 10), (5, 10), (2, 10), 10)
    >>> bool(np.allclose(a_next, cache[7] * np.tanh(c_next)))   # a = ot * tanh(c)
    True
    """
    xt = _check("xt", xt, (None, None))
    n_x, m = xt.shape
    a_prev = _check("a_prev", a_prev, (None, m))
    n_a = a_prev.shape[0]
    c_prev = _check("c_prev", c_prev, (n_a, m))
    a, y, c, (caches, _) = _lstm_run(xt[:, :, None], a_prev, c_prev, parameters)
    return a[:, :, 0].copy(), c[:, :, 0].copy(), y[:, :, 0].copy(), caches[0]


def lstm_forward(x, a0, parameters):
    """The LSTM over T_x steps from a0 and a zero cell state -> (a, y, c, caches).

    x (n_x, m, T_x), a0 (n_a, m); a and c (n_a, m, T_x), y (n_y, m, T_x),
    ``caches = (list of lstm_cell_forward caches, x)``. Parameters as for :func:`lstm_cell_forward`.

    >>> rng = np.random.default_rng(0)
    >>> parameters = {"W" + g: rng.normal(size=(5, 8)) for g in "fico"}
    >>> parameters.update({"b" + g: rng.normal(size=(5, 1)) for g in "fico"})
    >>> parameters.update(Wy=rng.normal(size=(2, 5)), by=rng.normal(size=(2, 1)))
    >>> a, y, c, (cell_caches, x) = lstm_forward(rng.normal(size=(3, 10, 7)), rng.normal(size=(5, 10)), parameters)
    >>> a.shape, y.shape, c.shape, len(cell_caches)
    ((5, 10, 7), (2, 10, 7), (5, 10, 7), 7)
    """
    x = _check("x", x, (None, None, None))
    a0 = _check("a0", a0, (None, x.shape[1]))
    return _lstm_run(x, a0, np.zeros_like(a0), parameters)


def _lstm_run(x, a0, c0, parameters):
    n_x, m, T_x = x.shape
    n_a = a0.shape[0]
    checked = _lstm_parameters(parameters, n_x, n_a)
    layer = _lstm_layer(checked, n_x, n_a)
    outputs, _ = layer.forward(_time_major(x), (a0.T, c0.T))
    _, _, states, gate_cache = layer.context
    probs = _head_probabilities(outputs.reshape(T_x * m, n_a), checked["Wy"], checked["by"])
    a = _course_major(outputs)
    c = _course_major(states[1, 1:])
    y = _course_major(probs.reshape(T_x, m, -1))
    # The kernel saves gates in PyTorch's order i, f, g, o (then tanh c), each H wide.
    gates = {name: _course_major(gate_cache[:, :, k * n_a:(k + 1) * n_a])
             for k, name in enumerate(("it", "ft", "cct", "ot"))}
    caches = []
    a_prev, c_prev = a0, c0
    for t in range(T_x):
        a_next, c_next = a[:, :, t].copy(), c[:, :, t].copy()
        caches.append((a_next, c_next, a_prev, c_prev, gates["ft"][:, :, t].copy(),
                       gates["it"][:, :, t].copy(), gates["cct"][:, :, t].copy(),
                       gates["ot"][:, :, t].copy(), x[:, :, t].copy(), parameters))
        a_prev, c_prev = a_next, c_next
    return a, y, c, (caches, x)


def rnn_cell_backward(da_next, cache):
    """Gradients of one RNN step -> dict dxt, da_prev, dWax, dWaa, dba.

    ``da_next`` (n_a, m) is the upstream gradient of a_next; ``cache`` is what
    :func:`rnn_cell_forward` returned. dxt (n_x, m), da_prev (n_a, m), dWax (n_a, n_x),
    dWaa (n_a, n_a), dba (n_a, 1).

    >>> rng = np.random.default_rng(0)
    >>> parameters = {"Wax": rng.normal(size=(5, 3)), "Waa": rng.normal(size=(5, 5)),
    ...               "Wya": rng.normal(size=(2, 5)), "ba": rng.normal(size=(5, 1)), "by": np.zeros((2, 1))}
    >>> a_next, _, cache = rnn_cell_forward(rng.normal(size=(3, 10)), rng.normal(size=(5, 10)), parameters)
    >>> gradients = rnn_cell_backward(np.ones((5, 10)), cache)
    >>> {k: v.shape for k, v in sorted(gradients.items())}
    {'dWaa': (5, 5), 'dWax': (5, 3), 'da_prev': (5, 10), 'dba': (5, 1), 'dxt': (3, 10)}
    """
    a_next, a_prev, xt, parameters = _unpack(cache, 4, "cache (a_next, a_prev, xt, parameters)")
    xt = _check("cache xt", xt, (None, None))
    a_prev = _check("cache a_prev", a_prev, (None, xt.shape[1]))
    g = _rnn_bptt(xt[:, :, None], a_prev, [a_next], _check("da_next", da_next, a_prev.shape)[:, :, None],
                  parameters)
    return {"dxt": g["dx"][:, :, 0].copy(), "da_prev": g["da0"], "dWax": g["dWax"], "dWaa": g["dWaa"],
            "dba": g["dba"]}


def rnn_sequence_backward(da, caches):
    """BPTT of :func:`rnn_sequence_forward`. da (n_a, m, T_x): upstream gradient of every a<t>.

    Returns dict dx (n_x, m, T_x), da0 (n_a, m), dWax (n_a, n_x), dWaa (n_a, n_a), dba (n_a, 1).
    Also reachable as ``rnn_backward(da, caches)``.

    >>> rng = np.random.default_rng(0)
    >>> parameters = {"Wax": rng.normal(size=(5, 3)), "Waa": rng.normal(size=(5, 5)),
    ...               "Wya": rng.normal(size=(2, 5)), "ba": np.zeros((5, 1)), "by": np.zeros((2, 1))}
    >>> a, _, caches = rnn_sequence_forward(rng.normal(size=(3, 10, 4)), np.zeros((5, 10)), parameters)
    >>> gradients = rnn_sequence_backward(np.ones_like(a), caches)
    >>> gradients["dx"].shape, gradients["da0"].shape, gradients["dWaa"].shape
    ((3, 10, 4), (5, 10), (5, 5))
    """
    cell_caches, x = _unpack(caches, 2, "caches (list of caches, x)")
    if not cell_caches:
        raise ValueError("caches holds no time step")
    a_next0, a0, x1, parameters = _unpack(cell_caches[0], 4, "caches[0][0] (a_next, a_prev, xt, parameters)")
    x = _check("caches x", x, (None, None, None))
    a0 = _check("caches a_prev", a0, (None, x.shape[1]))
    da = _check("da", da, (a0.shape[0], x.shape[1], None))
    T_x = da.shape[2]
    if T_x > len(cell_caches):
        raise ValueError(f"da has {T_x} time steps but caches only {len(cell_caches)}")
    return _rnn_bptt(x[:, :, :T_x], a0, [c[0] for c in cell_caches[:T_x]], da, parameters)


def _rnn_bptt(x, a0, a_list, da, parameters):
    n_x, m, T_x = x.shape
    n_a = a0.shape[0]
    Wax, Waa, b, _, _ = _rnn_parameters(parameters, n_x, n_a)
    layer = _rnn_layer(Wax, Waa, b)
    states = np.empty((1, T_x + 1, m, n_a))
    states[0, 0] = a0.T
    for t, a_t in enumerate(a_list):
        states[0, t + 1] = _check(f"cached a<{t + 1}>", a_t, (n_a, m)).T
    g = layer.bptt(_time_major(x), False, states, np.empty((T_x, m, 0)), _time_major(da))
    return {"dx": _course_major(g["dx"]), "da0": g["dstate"].T.copy(), "dWax": g["dW_x"],
            "dWaa": g["dW_h"], "dba": g["db_x"][:, None]}


def lstm_cell_backward(da_next, dc_next, cache):
    """Gradients of one LSTM step -> dict dxt, da_prev, dc_prev, dWf, dbf, dWi, dbi, dWc, dbc, dWo, dbo.

    ``da_next`` and ``dc_next`` (n_a, m) are the upstream gradients of a_next and c_next;
    ``cache`` is what :func:`lstm_cell_forward` returned. dxt (n_x, m), da_prev and dc_prev
    (n_a, m), each dW (n_a, n_a + n_x), each db (n_a, 1).

    >>> rng = np.random.default_rng(0)
    >>> parameters = {"W" + g: rng.normal(size=(5, 8)) for g in "fico"}
    >>> parameters.update({"b" + g: rng.normal(size=(5, 1)) for g in "fico"})
    >>> parameters.update(Wy=rng.normal(size=(2, 5)), by=rng.normal(size=(2, 1)))
    >>> *_, cache = lstm_cell_forward(rng.normal(size=(3, 10)), rng.normal(size=(5, 10)),
    ...                               rng.normal(size=(5, 10)), parameters)
    >>> gradients = lstm_cell_backward(np.ones((5, 10)), np.zeros((5, 10)), cache)
    >>> gradients["dxt"].shape, gradients["dc_prev"].shape, gradients["dWf"].shape, gradients["dbo"].shape
    ((3, 10), (5, 10), (5, 8), (5, 1))
    """
    cache = _unpack(cache, 10, "cache (a_next, c_next, a_prev, c_prev, ft, it, cct, ot, xt, parameters)")
    xt = _check("cache xt", cache[8], (None, None))
    g = _lstm_bptt([cache], xt[:, :, None], _check("da_next", da_next, (None, xt.shape[1]))[:, :, None],
                   dc_next)
    g["dxt"] = g.pop("dx")[:, :, 0].copy()
    g["da_prev"] = g.pop("da0")
    return g


def lstm_backward(da, caches):
    """BPTT of :func:`lstm_forward`; T_x is taken from ``da.shape[2]`` as in the course.

    ``da`` (n_a, m, T_x) is the upstream gradient of every a<t>. Returns dict dx (n_x, m, T_x),
    da0 (n_a, m) and dWf, dbf, dWi, dbi, dWc, dbc, dWo, dbo (shapes of the parameters).

    >>> rng = np.random.default_rng(0)
    >>> parameters = {"W" + g: rng.normal(size=(5, 8)) for g in "fico"}
    >>> parameters.update({"b" + g: rng.normal(size=(5, 1)) for g in "fico"})
    >>> parameters.update(Wy=rng.normal(size=(2, 5)), by=rng.normal(size=(2, 1)))
    >>> a, y, c, caches = lstm_forward(rng.normal(size=(3, 10, 7)), rng.normal(size=(5, 10)), parameters)
    >>> gradients = lstm_backward(np.ones_like(a), caches)
    >>> gradients["dx"].shape, gradients["da0"].shape, gradients["dWc"].shape
    ((3, 10, 7), (5, 10), (5, 8))
    """
    cell_caches, x = _unpack(caches, 2, "caches (list of caches, x)")
    x = _check("caches x", x, (None, None, None))
    da = _check("da", da, (None, x.shape[1], None))
    T_x = da.shape[2]
    if T_x > len(cell_caches):
        raise ValueError(f"da has {T_x} time steps but caches only {len(cell_caches)}")
    g = _lstm_bptt(cell_caches[:T_x], x[:, :, :T_x], da, None)
    del g["dc_prev"]
    return g


def _lstm_bptt(cell_caches, x, da, dc_last):
    n_x, m, T_x = x.shape
    a0 = _check("cached a_prev", cell_caches[0][2], (None, m))
    n_a = a0.shape[0]
    parameters = cell_caches[0][9]
    layer = _lstm_layer(_lstm_parameters(parameters, n_x, n_a), n_x, n_a)
    da = _check("da", da, (n_a, m, T_x))
    states = np.empty((2, T_x + 1, m, n_a))
    gate_cache = np.empty((T_x, m, 5 * n_a))
    states[0, 0] = a0.T
    states[1, 0] = _check("cached c_prev", cell_caches[0][3], (n_a, m)).T
    for t, cache in enumerate(cell_caches):
        a_next, c_next, _, _, ft, it, cct, ot = (_check(f"cache[{t}][{k}]", v, (n_a, m))
                                                 for k, v in enumerate(cache[:8]))
        states[0, t + 1], states[1, t + 1] = a_next.T, c_next.T
        for k, gate in enumerate((it, ft, cct, ot, np.tanh(c_next))):  # the kernel's layout
            gate_cache[t, :, k * n_a:(k + 1) * n_a] = gate.T
    d_final = None if dc_last is None else (np.zeros((m, n_a)), _check("dc_next", dc_last, (n_a, m)).T)
    g = layer.bptt(_time_major(x), False, states, gate_cache, _time_major(da), d_final)
    out = {"dx": _course_major(g["dx"]), "da0": g["dstate"][0].T.copy(), "dc_prev": g["dstate"][1].T.copy()}
    for k, name in enumerate(("i", "f", "c", "o")):
        rows = slice(k * n_a, (k + 1) * n_a)
        out["dW" + name] = np.hstack([g["dW_h"][rows], g["dW_x"][rows]])
        out["db" + name] = g["db_x"][rows][:, None].copy()
    return out


def _unpack(value, n, what):
    if not isinstance(value, (tuple, list)) or len(value) != n:
        raise ValueError(f"expected {what}, a tuple of {n}, got {type(value).__name__}"
                         + (f" of length {len(value)}" if isinstance(value, (tuple, list)) else ""))
    return value


# ---- "Dinosaur Island - Character level language model" -----------------------------------------

def initialize_parameters(n_a, n_x, n_y):
    """The course's initial parameters: ``np.random.seed(1)``, then Wax (n_a, n_x), Waa
    (n_a, n_a) and Wya (n_y, n_a) drawn as ``randn * 0.01`` in that order; zero biases b
    (n_a, 1) and by (n_y, 1).

    >>> parameters = initialize_parameters(n_a=50, n_x=27, n_y=27)
    >>> {k: v.shape for k, v in parameters.items()}
    {'Wax': (50, 27), 'Waa': (50, 50), 'Wya': (27, 50), 'b': (50, 1), 'by': (27, 1)}
    """
    np.random.seed(1)
    Wax = np.random.randn(n_a, n_x) * 0.01
    Waa = np.random.randn(n_a, n_a) * 0.01
    Wya = np.random.randn(n_y, n_a) * 0.01
    b = np.zeros((n_a, 1))
    by = np.zeros((n_y, 1))
    return {"Wax": Wax, "Waa": Waa, "Wya": Wya, "b": b, "by": by}


def smooth(loss, cur_loss):
    """The course's running average of the loss: ``0.999 * loss + 0.001 * cur_loss``.

    >>> round(smooth(10.0, 20.0), 6)
    10.01
    """
    return loss * 0.999 + cur_loss * 0.001


def get_initial_loss(vocab_size, seq_length):
    """The loss of a uniform guess over ``seq_length`` characters: ``seq_length * log(vocab_size)``.

    >>> round(float(get_initial_loss(27, 7)), 4)
    23.0709
    """
    return -np.log(1.0 / vocab_size) * seq_length


_GRADIENT_KEYS = ("dWaa", "dWax", "dWya", "db", "dby")


def clip(gradients, maxValue):
    """Clipped copies of dWaa, dWax, dWya, db, dby to [-maxValue, maxValue]; never mutates its argument.

    Returns a new dict with just those five keys (any shapes).

    >>> gradients = {k: np.array([[-10.0, 0.5, 10.0]]) for k in ("dWaa", "dWax", "dWya", "db", "dby")}
    >>> clip(gradients, 5)["dWax"]
    array([[-5. ,  0.5,  5. ]])
    >>> gradients["dWax"]
    array([[-10. ,   0.5,  10. ]])
    """
    if not isinstance(gradients, dict):
        raise ValueError(f"gradients must be a dict, got {type(gradients).__name__}")
    missing = [k for k in _GRADIENT_KEYS if k not in gradients]
    if missing:
        raise ValueError(f"gradients is missing key {missing[0]!r} (clip needs {', '.join(_GRADIENT_KEYS)})")
    gradients = copy.deepcopy(gradients)
    for key in _GRADIENT_KEYS:
        np.clip(gradients[key], -maxValue, maxValue, out=gradients[key])
    return {key: gradients[key] for key in _GRADIENT_KEYS}


def _index_sequence(seq, label, vocab_size, allow_none):
    out = np.empty(len(seq), dtype=np.int64)
    for t, ix in enumerate(seq):
        if ix is None and allow_none:
            out[t] = -1
        elif isinstance(ix, (int, np.integer)) and not isinstance(ix, bool) and 0 <= ix < vocab_size:
            out[t] = ix
        else:
            raise ValueError(f"{label}[{t}] = {ix!r} is not a character index in [0, {vocab_size})"
                             + (" or None" if allow_none else ""))
    return out


def char_rnn_forward(X, Y, a0, parameters, vocab_size=None):
    """Dinosaur Island's ``rnn_forward``: loss summed over steps and ``cache = (y_hat, a, x)``.

    X, Y: lists of T indices (None in X is a zero input); a0 (n_a, 1). ``vocab_size``
    defaults to the parameters' ``n_x`` (the course's default is 27). ``y_hat``, ``a`` and
    ``x`` are dicts by time step of (vocab, 1), (n_a, 1) and (vocab, 1) columns (``a[-1]`` is a0).
    Also reachable as ``rnn_forward(X, Y, a0, parameters)``.

    >>> parameters = initialize_parameters(n_a=4, n_x=3, n_y=3)
    >>> loss, (y_hat, a, x) = char_rnn_forward([None, 1, 2], [1, 2, 0], np.zeros((4, 1)), parameters)
    >>> round(loss, 4), y_hat[0].shape, a[2].shape      # near 3 * log(3) with tiny initial weights
    (3.2959, (3, 1), (4, 1))
    """
    if len(X) != len(Y) or len(X) == 0:
        raise ValueError(f"X and Y must be non-empty and of equal length, got {len(X)} and {len(Y)}")
    Wax = _param(parameters, "Wax", (None, None))
    n_a, n_x = Wax.shape
    if vocab_size is not None and vocab_size != n_x:
        raise ValueError(f"vocab_size={vocab_size} but parameters['Wax'] has shape {Wax.shape}, expected "
                         f"({n_a}, {vocab_size})")
    Wax, Waa, b, Wya, by = _rnn_parameters(parameters, n_x, n_a)
    a0 = _check("a0", a0, (n_a, 1))
    inputs = _index_sequence(X, "X", n_x, allow_none=True)
    targets = _index_sequence(Y, "Y", Wya.shape[0], allow_none=False)
    outputs, _ = _rnn_layer(Wax, Waa, b).forward(inputs[:, None], a0.T)
    T = len(X)
    logits = np.empty((T, Wya.shape[0]))
    heads.linear_forward(outputs.reshape(T, n_a), Wya, by.ravel().copy(), logits)
    probs, dlogits = np.empty_like(logits), np.empty_like(logits)
    loss = losses.softmax_cross_entropy(logits, targets, np.ones(T), probs, dlogits)
    x, a, y_hat = {}, {-1: np.copy(a0)}, {}
    for t in range(T):
        x[t] = np.zeros((n_x, 1))
        if inputs[t] >= 0:
            x[t][inputs[t]] = 1
        a[t] = outputs[t, 0][:, None].copy()
        y_hat[t] = probs[t][:, None].copy()
    return loss, (y_hat, a, x)


def char_rnn_backward(X, Y, parameters, cache):
    """Dinosaur Island's ``rnn_backward`` -> (gradients, a).

    gradients: dWax, dWaa, dWya, db, dby (the parameters' shapes) and da_next (n_a, 1),
    the gradient of a0; ``a`` is the cache's dict of hidden states. Also reachable as
    ``rnn_backward(X, Y, parameters, cache)``.

    >>> parameters = initialize_parameters(n_a=4, n_x=3, n_y=3)
    >>> loss, cache = char_rnn_forward([None, 1, 2], [1, 2, 0], np.zeros((4, 1)), parameters)
    >>> gradients, a = char_rnn_backward([None, 1, 2], [1, 2, 0], parameters, cache)
    >>> {k: v.shape for k, v in sorted(gradients.items())}
    {'dWaa': (4, 4), 'dWax': (4, 3), 'dWya': (3, 4), 'da_next': (4, 1), 'db': (4, 1), 'dby': (3, 1)}
    """
    y_hat, a, _ = _unpack(cache, 3, "cache (y_hat, a, x)")
    Wax = _param(parameters, "Wax", (None, None))
    n_a, n_x = Wax.shape
    Wax, Waa, b, Wya, by = _rnn_parameters(parameters, n_x, n_a)
    T = len(X)
    inputs = _index_sequence(X, "X", n_x, allow_none=True)
    targets = _index_sequence(Y, "Y", Wya.shape[0], allow_none=False)
    states = np.empty((1, T + 1, 1, n_a))
    dlogits = np.empty((T, Wya.shape[0]))
    for t in range(-1, T):
        states[0, t + 1, 0] = _check(f"cache a[{t}]", a[t], (n_a, 1))[:, 0]
    for t in range(T):
        dlogits[t] = _check(f"cache y_hat[{t}]", y_hat[t], (Wya.shape[0], 1))[:, 0]
        dlogits[t, targets[t]] -= 1
    dWya, dby, dh = np.empty_like(Wya), np.empty(Wya.shape[0]), np.empty((T, n_a))
    heads.linear_backward(dlogits, states[0, 1:].reshape(T, n_a), Wya, dWya, dby, dh)
    g = _rnn_layer(Wax, Waa, b).bptt(inputs[:, None], True, states, np.empty((T, 1, 0)), dh[:, None, :])
    gradients = {"dWax": g["dW_x"], "dWaa": g["dW_h"], "dWya": dWya, "db": g["db_x"][:, None],
                 "dby": dby[:, None], "da_next": g["dstate"].T.copy()}
    return gradients, a


def rnn_forward(*args, **kwargs):
    """``rnn_forward(x, a0, parameters)`` (step by step) or ``rnn_forward(X, Y, a0, parameters)`` (Dinosaur Island).

    Three arguments call :func:`rnn_sequence_forward`, four :func:`char_rnn_forward`.

    >>> parameters = initialize_parameters(n_a=4, n_x=3, n_y=3)
    >>> a, y_pred, caches = rnn_forward(np.ones((3, 2, 5)), np.zeros((4, 2)), parameters)
    >>> a.shape
    (4, 2, 5)
    >>> loss, cache = rnn_forward([None, 1], [1, 0], np.zeros((4, 1)), parameters)
    """
    if len(args) + len(kwargs) >= 4 or "Y" in kwargs:
        return char_rnn_forward(*args, **kwargs)
    return rnn_sequence_forward(*args, **kwargs)


def rnn_backward(*args, **kwargs):
    """``rnn_backward(da, caches)`` (step by step) or ``rnn_backward(X, Y, parameters, cache)`` (Dinosaur Island).

    Two arguments call :func:`rnn_sequence_backward`, four :func:`char_rnn_backward`.

    >>> parameters = initialize_parameters(n_a=4, n_x=3, n_y=3)
    >>> a, y_pred, caches = rnn_forward(np.ones((3, 2, 5)), np.zeros((4, 2)), parameters)
    >>> rnn_backward(np.ones_like(a), caches)["dx"].shape
    (3, 2, 5)
    """
    if len(args) + len(kwargs) >= 4 or "Y" in kwargs:
        return char_rnn_backward(*args, **kwargs)
    return rnn_sequence_backward(*args, **kwargs)


def update_parameters(parameters, gradients, lr):
    """Gradient descent in place on Wax, Waa, Wya, b (or ba), by; returns ``parameters``.

    ``gradients`` holds dWax, dWaa, dWya, db, dby of the parameters' shapes; each parameter
    becomes ``parameter - lr * gradient``.

    >>> parameters = initialize_parameters(n_a=2, n_x=3, n_y=3)
    >>> gradients = {"dWax": np.ones((2, 3)), "dWaa": np.ones((2, 2)), "dWya": np.ones((3, 2)),
    ...              "db": np.ones((2, 1)), "dby": np.ones((3, 1))}
    >>> update_parameters(parameters, gradients, lr=0.5)["b"].ravel().tolist()
    [-0.5, -0.5]
    """
    bias = "b" if "b" in parameters else "ba"
    for key, grad in (("Wax", "dWax"), ("Waa", "dWaa"), ("Wya", "dWya"), (bias, "db"), ("by", "dby")):
        if key not in parameters:
            raise ValueError(f"parameters is missing key {key!r}")
        if grad not in gradients:
            raise ValueError(f"gradients is missing key {grad!r}")
        shape = np.shape(parameters[key])
        g = _check(f"gradients[{grad!r}]", gradients[grad], shape)
        parameters[key] += -lr * g
    return parameters


def optimize(X, Y, a_prev, parameters, learning_rate=0.01):
    """One step of training: forward, backward, clip at 5, update -> (loss, gradients, a[len(X)-1]).

    X, Y: lists of indices as for :func:`char_rnn_forward`; a_prev (n_a, 1). The parameters
    are updated in place; the returned hidden state (n_a, 1) is the last step's.

    >>> parameters = initialize_parameters(n_a=4, n_x=3, n_y=3)
    >>> loss, gradients, a_last = optimize([None, 1, 2], [1, 2, 0], np.zeros((4, 1)), parameters, 0.01)
    >>> round(loss, 4), a_last.shape
    (3.2959, (4, 1))
    """
    loss, cache = char_rnn_forward(X, Y, a_prev, parameters)
    gradients, a = char_rnn_backward(X, Y, parameters, cache)
    gradients = clip(gradients, 5)
    parameters = update_parameters(parameters, gradients, learning_rate)
    return loss, gradients, a[len(X) - 1]


def sample(parameters, char_to_ix, seed):
    """Sample a name: indices drawn with ``np.random.seed(counter + seed)`` before each draw.

    Starts from a zero input and zero state; stops at the newline index or after 50
    characters (then appends the newline index). Returns the list of indices, the newline's
    last. ``char_to_ix`` must have one entry per row of ``Wya`` (vocab, n_a), ``"\\n"`` among them.

    >>> parameters = initialize_parameters(n_a=5, n_x=3, n_y=3)
    >>> indices = sample(parameters, {"\\n": 0, "a": 1, "b": 2}, seed=0)
    >>> [int(i) for i in indices]
    [1, 1, 2, 2, 2, 2, 0]
    """
    if "\n" not in char_to_ix:
        raise ValueError("char_to_ix has no '\\n' entry: sample stops at the newline character")
    Wax = _param(parameters, "Wax", (None, None))
    n_a, vocab_size = Wax.shape
    Wax, Waa, b, Wya, by = _rnn_parameters(parameters, vocab_size, n_a)
    if len(char_to_ix) != Wya.shape[0]:
        raise ValueError(f"char_to_ix has {len(char_to_ix)} characters but parameters['Wya'] has shape "
                         f"{Wya.shape}, expected ({len(char_to_ix)}, {n_a})")
    layer = _rnn_layer(Wax, Waa, b)
    a_prev = np.zeros((1, n_a))
    x = np.array([[-1]])  # the zero input
    indices = []
    idx = -1
    counter = 0
    newline_character = char_to_ix["\n"]
    while idx != newline_character and counter != 50:
        outputs, a_prev = layer.forward(x, a_prev)
        y = _head_probabilities(outputs[0], Wya, by)
        np.random.seed(counter + seed)
        idx = np.random.choice(range(len(char_to_ix)), p=y.ravel())
        indices.append(idx)
        x = np.array([[idx]])
        seed += 1
        counter += 1
    if counter == 50:
        indices.append(char_to_ix["\n"])
    return indices


def get_sample(sample_ix, ix_to_char):
    """The sampled characters joined, first letter capitalised.

    >>> get_sample([1, 2, 0], {0: "\\n", 1: "a", 2: "b"})
    'Ab\\n'
    """
    txt = "".join(ix_to_char[ix] for ix in sample_ix)
    return txt[0].upper() + txt[1:]


def print_sample(sample_ix, ix_to_char):
    """Print :func:`get_sample` without adding a newline (the sample usually ends with one).

    >>> print_sample([1, 2, 0], {0: "\\n", 1: "a", 2: "b"})
    Ab
    """
    print("%s" % (get_sample(sample_ix, ix_to_char),), end="")


def model(data_x, ix_to_char, char_to_ix, num_iterations=35000, n_a=50, dino_names=7, vocab_size=27,
          verbose=False):
    """Train the character model as the course does -> (parameters, last_dino_name).

    Examples are stripped and shuffled after ``np.random.seed(0)``; iteration j trains on
    example ``j % len(examples)`` with ``X = [None] + indices`` and ``Y = X[1:] + [newline]``,
    carrying ``a_prev``; every 2000 iterations it prints the smoothed loss and ``dino_names``
    names sampled with seeds 0, 1, ... ``parameters`` are the course's RNN parameters with
    ``n_a`` hidden units and ``vocab_size`` characters (see :func:`initialize_parameters`).

    >>> import contextlib, io
    >>> with contextlib.redirect_stdout(io.StringIO()) as printed:
    ...     parameters, last_name = model(["ab", "ba"], {0: "\\n", 1: "a", 2: "b"}, {"\\n": 0, "a": 1, "b": 2},
    ...                                   num_iterations=3, n_a=4, dino_names=2, vocab_size=3)
    >>> printed.getvalue().splitlines()[0]
    'Iteration: 0, Loss: 2.198323'
    >>> parameters["Waa"].shape
    (4, 4)
    """
    n_x, n_y = vocab_size, vocab_size
    if len(char_to_ix) != vocab_size:
        raise ValueError(f"vocab_size={vocab_size} but char_to_ix has {len(char_to_ix)} characters")
    if "\n" not in char_to_ix:
        raise ValueError("char_to_ix has no '\\n' entry")
    examples = [x.strip() for x in data_x]
    for line, example in enumerate(examples):
        for ch in example:
            if ch not in char_to_ix:
                raise ValueError(f"example {line} ({example!r}) has the character {ch!r}, which is not in "
                                 "char_to_ix")
    parameters = initialize_parameters(n_a, n_x, n_y)
    loss = get_initial_loss(vocab_size, dino_names)
    np.random.seed(0)
    np.random.shuffle(examples)
    a_prev = np.zeros((n_a, 1))
    last_dino_name = "abc"
    for j in range(num_iterations):
        idx = j % len(examples)
        single_example = examples[idx]
        single_example_ix = [char_to_ix[c] for c in single_example]
        X = [None] + single_example_ix
        ix_newline = char_to_ix["\n"]
        Y = X[1:] + [ix_newline]
        curr_loss, gradients, a_prev = optimize(X, Y, a_prev, parameters, learning_rate=0.01)
        if verbose and j in [0, len(examples) - 1, len(examples)]:
            print("j = ", j, "idx = ", idx)
        if verbose and j in [0]:
            print("single_example =", single_example)
            print("single_example_chars", list(single_example))
            print("single_example_ix", single_example_ix)
            print(" X = ", X, "\n", "Y =       ", Y, "\n")
        loss = smooth(loss, curr_loss)
        if j % 2000 == 0:
            print("Iteration: %d, Loss: %f" % (j, loss) + "\n")
            seed = 0
            for _ in range(dino_names):
                sampled_indices = sample(parameters, char_to_ix, seed)
                last_dino_name = get_sample(sampled_indices, ix_to_char)
                print(last_dino_name.replace("\n", ""))
                seed += 1
            print("\n")
    return parameters, last_dino_name
