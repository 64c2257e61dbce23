"""Two small cells with parameters of their own, for the core's tests of that protocol
(``tests/test_own_params.py``); the real ones are the plugins in ``plugins/``.

* ``gained_rnn``: ``h_t = tanh(g * (x_t @ W_x.T + h_{t-1} @ W_h.T) + c)``: projections
  without biases (``projection_biases=False``), own gain ``g`` and bias ``c`` (H,).
* ``diag_rnn``: ``h_t = tanh(x_t @ W_x.T + b_x + u * h_{t-1})``: no ``W_h``
  (``recurrent_weights=False``), own element-wise recurrent weight ``u`` (H,).

Module-level ``@njit`` kernels, so their loops are cached on disk like a plugin's.
"""
import numpy as np
from numba import njit

from numbarnn.cells import CellSpec, ParamSpec, uniform, zeros
from numbarnn.kernels.activations import tanh


@njit(cache=True)
def gained_forward(xz_t, hz_t, states, t, cache_t, params):
    g, c = params
    B, H = states.shape[2], states.shape[3]
    for b in range(B):
        for j in range(H):
            cache_t[b, j] = xz_t[b, j] + hz_t[b, j]  # the projections' sum, for g's gradient
    for b in range(B):
        for j in range(H):
            states[0, t + 1, b, j] = tanh(g[j] * cache_t[b, j] + c[j])


@njit(cache=True)
def gained_backward(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev, params, grads):
    g, c = params
    dg, dc = grads
    B, H = states.shape[2], states.shape[3]
    one = states.dtype.type(1.0)
    for b in range(B):
        for j in range(H):
            h = states[0, t + 1, b, j]
            dz = dstate[0, b, j] * (one - h * h)
            dxz_t[b, j] = dz * g[j]
            dc[j] += dz
            dg[j] += dz * cache_t[b, j]
    for b in range(B):
        for j in range(H):
            dhz_t[b, j] = dxz_t[b, j]
            dstate_prev[0, b, j] = 0.0


GAINED_RNN = CellSpec(
    name="gained_rnn", description="test cell: h = tanh(g * (W_x x + W_h h) + c), own g and c",
    gates=1, states=1, cache_width=1, forward=gained_forward, backward=gained_backward,
    projection_biases=False,
    params=(ParamSpec("g", ("H",), uniform(0.5, 1.5)), ParamSpec("c", ("H",), zeros)),
)


@njit(cache=True)
def diag_forward(xz_t, hz_t, states, t, cache_t, params):
    u = params[0]
    B, H = states.shape[2], states.shape[3]
    for b in range(B):
        for j in range(H):
            states[0, t + 1, b, j] = tanh(xz_t[b, j] + u[j] * states[0, t, b, j])


@njit(cache=True)
def diag_backward(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev, params, grads):
    u = params[0]
    du = grads[0]
    B, H = states.shape[2], states.shape[3]
    one = states.dtype.type(1.0)
    for b in range(B):
        for j in range(H):
            h = states[0, t + 1, b, j]
            dxz_t[b, j] = dstate[0, b, j] * (one - h * h)
    for b in range(B):
        for j in range(H):
            du[j] += dxz_t[b, j] * states[0, t, b, j]
    for b in range(B):
        for j in range(H):
            dstate_prev[0, b, j] = dxz_t[b, j] * u[j]  # the whole gradient of h_{t-1}: there is no W_h


DIAG_RNN = CellSpec(
    name="diag_rnn", description="test cell: h = tanh(W_x x + b_x + u * h_prev), no W_h",
    gates=1, states=1, cache_width=0, forward=diag_forward, backward=diag_backward,
    recurrent_weights=False, params=(ParamSpec("u", ("H",), uniform(0.0, 1.0)),),
)

OWN_PARAM_CELLS = (GAINED_RNN, DIAG_RNN)


def numpy_forward(cell, params, x, h0=None):
    """The same cells in plain NumPy: x (T, B, X) -> (outputs (T, B, H), h_T)."""
    T, B, _ = x.shape
    H = params["W_x"].shape[0]
    h = np.zeros((B, H)) if h0 is None else h0
    outputs = []
    for t in range(T):
        if cell is GAINED_RNN:
            h = np.tanh(params["g"] * (x[t] @ params["W_x"].T + h @ params["W_h"].T) + params["c"])
        else:
            h = np.tanh(x[t] @ params["W_x"].T + params["b_x"] + params["u"] * h)
        outputs.append(h)
    return np.stack(outputs), h

