"""Pointwise kernels of the built-in cells.

A cell is its gate count plus two pointwise kernels that only see the projected
gate pre-activations; the time loops in :mod:`numbarnn.kernels.loops` are shared.

Protocol (plugin cells implement the same two signatures):

``forward(xz_t, hz_t, states, t, cache_t)``
    xz_t (B, G*H): ``x_t @ W_x.T + b_x``; hz_t (B, G*H): ``h_{t-1} @ W_h.T + b_h``.
    Reads ``states[:, t]``, writes ``states[:, t+1]`` and ``cache_t`` (B, C*H).

``backward(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev)``
    dstate (S, B, H): total gradient of the loss w.r.t. ``states[:, t+1]``.
    Writes dxz_t and dhz_t (B, G*H), the gradients w.r.t. the two projections
    (the same values when the recurrent projection enters the gates additively;
    they may then be the same array), and overwrites dstate_prev (S, B, H) with the
    *direct* gradient w.r.t. ``states[:, t]`` (the loop adds ``dhz_t @ W_h`` to h's).

Style, for speed: one short loop per output array. The compiler vectorises a loop that
reads an array or two and writes one; a loop that writes several arrays needs run-time
aliasing checks it gives up on, and stays scalar (9x slower for the LSTM). Constants are
made in the arrays' dtype (``one = states.dtype.type(1.0)``) so float32 stays float32.
"""
from numba import njit

from .activations import sigmoid, tanh


# ---- tanh RNN: G = 1, S = 1 (h), C = 0 -------------------------------------------------

@njit(cache=True)
def rnn_forward(xz_t, hz_t, states, t, cache_t):
    """h_t = tanh(xz_t + hz_t); see the module docstring for the protocol."""
    B, H = states.shape[2], states.shape[3]
    for b in range(B):
        for j in range(H):
            states[0, t + 1, b, j] = tanh(xz_t[b, j] + hz_t[b, j])


@njit(cache=True)
def rnn_backward(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev):
    """dz = dh * (1 - h_t^2) into both dxz_t and dhz_t; no direct path to h_{t-1}."""
    B, H = states.shape[2], states.shape[3]
    one = states.dtype.type(1.0)
    for b in range(B):
        for j in range(H):
            h = states[0, t + 1, b, j]
            dxz_t[b, j] = dstate[0, b, j] * (one - h * h)
        for j in range(H):
            dhz_t[b, j] = dxz_t[b, j]
        for j in range(H):
            dstate_prev[0, b, j] = 0.0


# ---- LSTM: G = 4 (PyTorch's order i, f, g, o), S = 2 (h, c), C = 5 (i, f, g, o, tanh c) ----

@njit(cache=True)
def lstm_forward(xz_t, hz_t, states, t, cache_t):
    """PyTorch's LSTM step; saves i, f, g, o and tanh(c_t) in cache_t."""
    B, H = states.shape[2], states.shape[3]
    for b in range(B):
        for j in range(H):  # input gate
            cache_t[b, j] = sigmoid(xz_t[b, j] + hz_t[b, j])
        for j in range(H, 2 * H):  # forget gate
            cache_t[b, j] = sigmoid(xz_t[b, j] + hz_t[b, j])
        for j in range(2 * H, 3 * H):  # candidate
            cache_t[b, j] = tanh(xz_t[b, j] + hz_t[b, j])
        for j in range(3 * H, 4 * H):  # output gate
            cache_t[b, j] = sigmoid(xz_t[b, j] + hz_t[b, j])
        for j in range(H):  # c = f * c_prev + i * g
            states[1, t + 1, b, j] = (cache_t[b, H + j] * states[1, t, b, j]
                                      + cache_t[b, j] * cache_t[b, 2 * H + j])
        for j in range(H):
            cache_t[b, 4 * H + j] = tanh(states[1, t + 1, b, j])
        for j in range(H):  # h = o * tanh(c)
            states[0, t + 1, b, j] = cache_t[b, 3 * H + j] * cache_t[b, 4 * H + j]


@njit(cache=True)
def lstm_backward(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev):
    """Gate gradients from dh_t and dc_t; the direct path gives dc_{t-1} = dc_t * f."""
    B, H = states.shape[2], states.shape[3]
    one = states.dtype.type(1.0)
    for b in range(B):
        # dstate_prev[1] first holds dc, the total gradient of c_t, then becomes dc * f.
        for j in range(H):
            o, tc = cache_t[b, 3 * H + j], cache_t[b, 4 * H + j]
            dstate_prev[1, b, j] = dstate[1, b, j] + dstate[0, b, j] * o * (one - tc * tc)
        for j in range(H):  # d input gate
            i = cache_t[b, j]
            dxz_t[b, j] = dstate_prev[1, b, j] * cache_t[b, 2 * H + j] * i * (one - i)
        for j in range(H):  # d forget gate
            f = cache_t[b, H + j]
            dxz_t[b, H + j] = dstate_prev[1, b, j] * states[1, t, b, j] * f * (one - f)
        for j in range(H):  # d candidate
            g = cache_t[b, 2 * H + j]
            dxz_t[b, 2 * H + j] = dstate_prev[1, b, j] * cache_t[b, j] * (one - g * g)
        for j in range(H):  # d output gate
            o = cache_t[b, 3 * H + j]
            dxz_t[b, 3 * H + j] = dstate[0, b, j] * cache_t[b, 4 * H + j] * o * (one - o)
        for j in range(4 * H):
            dhz_t[b, j] = dxz_t[b, j]
        for j in range(H):
            dstate_prev[1, b, j] = dstate_prev[1, b, j] * cache_t[b, H + j]
        for j in range(H):
            dstate_prev[0, b, j] = 0.0
