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
"""
from numba import njit

from .activations import sigmoid, tanh


# ---- tanh RNN: G = 1, S = 1 (h), C = 0 -------------------------------------------------

@njit(cache=True)
def rnn_forward(xz_t, hz_t, states, t, cache_t):
    B, H = states.shape[2], states.shape[3]
    for b in range(B):
        for j in range(H):
            states[0, t + 1, b, j] = tanh(xz_t[b, j] + hz_t[b, j])


@njit(cache=True)
def rnn_backward(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev):
    B, H = states.shape[2], states.shape[3]
    for b in range(B):
        for j in range(H):
            h = states[0, t + 1, b, j]
            dz = dstate[0, b, j] * (1.0 - h * h)
            dxz_t[b, j] = dz
            dhz_t[b, j] = dz
            dstate_prev[0, b, j] = 0.0


# ---- LSTM: G = 4 (PyTorch's order i, f, g, o), S = 2 (h, c), C = 5 (i, f, g, o, tanh c) ----

@njit(cache=True)
def lstm_forward(xz_t, hz_t, states, t, cache_t):
    B, H = states.shape[2], states.shape[3]
    for b in range(B):
        for j in range(H):
            i = sigmoid(xz_t[b, j] + hz_t[b, j])
            f = sigmoid(xz_t[b, H + j] + hz_t[b, H + j])
            g = tanh(xz_t[b, 2 * H + j] + hz_t[b, 2 * H + j])
            o = sigmoid(xz_t[b, 3 * H + j] + hz_t[b, 3 * H + j])
            c = f * states[1, t, b, j] + i * g
            tc = tanh(c)
            states[1, t + 1, b, j] = c
            states[0, t + 1, b, j] = o * tc
            cache_t[b, j] = i
            cache_t[b, H + j] = f
            cache_t[b, 2 * H + j] = g
            cache_t[b, 3 * H + j] = o
            cache_t[b, 4 * H + j] = tc


@njit(cache=True)
def lstm_backward(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev):
    B, H = states.shape[2], states.shape[3]
    for b in range(B):
        for j in range(H):
            i = cache_t[b, j]
            f = cache_t[b, H + j]
            g = cache_t[b, 2 * H + j]
            o = cache_t[b, 3 * H + j]
            tc = cache_t[b, 4 * H + j]
            dh = dstate[0, b, j]
            dc = dstate[1, b, j] + dh * o * (1.0 - tc * tc)
            di = dc * g * i * (1.0 - i)
            df = dc * states[1, t, b, j] * f * (1.0 - f)
            dg = dc * i * (1.0 - g * g)
            do = dh * tc * o * (1.0 - o)
            dxz_t[b, j] = di
            dxz_t[b, H + j] = df
            dxz_t[b, 2 * H + j] = dg
            dxz_t[b, 3 * H + j] = do
            dhz_t[b, j] = di
            dhz_t[b, H + j] = df
            dhz_t[b, 2 * H + j] = dg
            dhz_t[b, 3 * H + j] = do
            dstate_prev[0, b, j] = 0.0
            dstate_prev[1, b, j] = dc * f
