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

from ._jit import jit
from .activations import sigmoid, tanh


# ---- tanh RNN: G = 1, S = 1 (h), C = 0 -------------------------------------------------

@jit
def rnn_forward(xz_t, hz_t, states, t, cache_t):
    """h_t = tanh(xz_t + hz_t); see the module docstring for the protocol.

    xz_t, hz_t (B, H); states (1, T+1, B, H); cache_t (B, 0), unused (C = 0). One float
    dtype for all (float32 or float64). One step, t = 0:

    >>> import numpy as np
    >>> from numbarnn.kernels.cells import rnn_forward
    >>> rng = np.random.default_rng(0)
    >>> B, H = 2, 3
    >>> xz_t, hz_t = rng.normal(size=(B, H)), rng.normal(size=(B, H))
    >>> states = np.zeros((1, 2, B, H))  # S = 1 state (h), T = 1 step
    >>> rnn_forward(xz_t, hz_t, states, 0, np.empty((B, 0)))
    >>> np.allclose(states[0, 1], np.tanh(xz_t + hz_t))
    True
    """
    B, H = states.shape[2], states.shape[3]
    for b in range(B):
        for j in range(H):
            states[0, t + 1, b, j] = tanh(xz_t[b, j] + hz_t[b, j])


@jit
def rnn_backward(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev):
    """dz = dh * (1 - h_t^2) into both dxz_t and dhz_t; no direct path to h_{t-1}.

    dstate, dstate_prev (1, B, H); states (1, T+1, B, H) as the forward left them;
    cache_t (B, 0); dxz_t, dhz_t (B, H).

    >>> import numpy as np
    >>> from numbarnn.kernels.cells import rnn_backward
    >>> rng = np.random.default_rng(0)
    >>> B, H = 2, 3
    >>> states = np.tanh(rng.normal(size=(1, 2, B, H)))  # h_0 and h_1
    >>> dstate = rng.normal(size=(1, B, H))  # d loss / d h_1
    >>> dxz_t, dhz_t, dstate_prev = np.empty((B, H)), np.empty((B, H)), np.empty((1, B, H))
    >>> rnn_backward(dstate, states, 0, np.empty((B, 0)), dxz_t, dhz_t, dstate_prev)
    >>> np.allclose(dxz_t, dstate[0] * (1 - states[0, 1] ** 2)), np.array_equal(dhz_t, dxz_t)
    (True, True)
    >>> bool((dstate_prev == 0).all())
    True
    """
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

@jit
def lstm_forward(xz_t, hz_t, states, t, cache_t):
    """PyTorch's LSTM step; saves i, f, g, o and tanh(c_t) in cache_t.

    xz_t, hz_t (B, 4H) in gate order i, f, g, o; states (2, T+1, B, H) (h, then c);
    cache_t (B, 5H). One float dtype for all.

    >>> import numpy as np
    >>> from numbarnn.kernels.cells import lstm_forward
    >>> rng = np.random.default_rng(0)
    >>> B, H = 2, 3
    >>> xz_t, hz_t = rng.normal(size=(B, 4 * H)), rng.normal(size=(B, 4 * H))
    >>> states = np.zeros((2, 2, B, H))
    >>> states[1, 0] = rng.normal(size=(B, H))  # c_0
    >>> lstm_forward(xz_t, hz_t, states, 0, np.empty((B, 5 * H)))
    >>> i, f, g, o = np.split(xz_t + hz_t, 4, axis=1)
    >>> sig = lambda a: 1 / (1 + np.exp(-a))
    >>> c = sig(f) * states[1, 0] + sig(i) * np.tanh(g)
    >>> np.allclose(states[1, 1], c), np.allclose(states[0, 1], sig(o) * np.tanh(c))
    (True, True)
    """
    B, H = states.shape[2], states.shape[3]
    for b in range(B):
        # Each gate block as its own 1-D view: loops indexed by j alone vectorise, where
        # offsets like cache_t[b, H + j] kept them scalar (2x slower on a (32, 128) step).
        x, hz, cache = xz_t[b], hz_t[b], cache_t[b]
        i, f, g, o, tanh_c = cache[0:H], cache[H:2 * H], cache[2 * H:3 * H], cache[3 * H:4 * H], cache[4 * H:5 * H]
        x_i, x_f, x_g, x_o = x[0:H], x[H:2 * H], x[2 * H:3 * H], x[3 * H:4 * H]
        h_i, h_f, h_g, h_o = hz[0:H], hz[H:2 * H], hz[2 * H:3 * H], hz[3 * H:4 * H]
        h_new, c_prev, c_new = states[0, t + 1, b], states[1, t, b], states[1, t + 1, b]
        for j in range(H):
            i[j] = sigmoid(x_i[j] + h_i[j])
        for j in range(H):
            f[j] = sigmoid(x_f[j] + h_f[j])
        for j in range(H):
            g[j] = tanh(x_g[j] + h_g[j])
        for j in range(H):
            o[j] = sigmoid(x_o[j] + h_o[j])
        for j in range(H):  # c = f * c_prev + i * g
            c_new[j] = f[j] * c_prev[j] + i[j] * g[j]
        for j in range(H):
            tanh_c[j] = tanh(c_new[j])
        for j in range(H):  # h = o * tanh(c)
            h_new[j] = o[j] * tanh_c[j]


@jit
def lstm_backward(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev):
    """Gate gradients from dh_t and dc_t; the direct path gives dc_{t-1} = dc_t * f.

    dstate, dstate_prev (2, B, H) (h, then c); states (2, T+1, B, H) and cache_t (B, 5H)
    as the forward left them; dxz_t, dhz_t (B, 4H). With a gradient on c_t only, the
    output gate gets none and dc_{t-1} is dc_t times the forget gate:

    >>> import numpy as np
    >>> from numbarnn.kernels.cells import lstm_backward, lstm_forward
    >>> rng = np.random.default_rng(0)
    >>> B, H = 2, 3
    >>> states, cache_t = np.zeros((2, 2, B, H)), np.empty((B, 5 * H))
    >>> lstm_forward(rng.normal(size=(B, 4 * H)), rng.normal(size=(B, 4 * H)), states, 0, cache_t)
    >>> dstate = np.zeros((2, B, H))
    >>> dstate[1] = 1.0  # d loss / d c_1 = 1, d loss / d h_1 = 0
    >>> dxz_t, dhz_t, dstate_prev = np.empty((B, 4 * H)), np.empty((B, 4 * H)), np.empty((2, B, H))
    >>> lstm_backward(dstate, states, 0, cache_t, dxz_t, dhz_t, dstate_prev)
    >>> np.allclose(dstate_prev[1], cache_t[:, H:2 * H]), np.allclose(dxz_t[:, 3 * H:], 0)
    (True, True)
    >>> np.array_equal(dhz_t, dxz_t)
    True
    """
    B, H = states.shape[2], states.shape[3]
    one = states.dtype.type(1.0)
    for b in range(B):
        # 1-D views per gate block, as in lstm_forward, so every loop vectorises.
        cache, dx, dhz = cache_t[b], dxz_t[b], dhz_t[b]
        i, f, g, o, tanh_c = cache[0:H], cache[H:2 * H], cache[2 * H:3 * H], cache[3 * H:4 * H], cache[4 * H:5 * H]
        d_i, d_f, d_g, d_o = dx[0:H], dx[H:2 * H], dx[2 * H:3 * H], dx[3 * H:4 * H]
        dh, dc_in, c_prev = dstate[0, b], dstate[1, b], states[1, t, b]
        dh_prev, dc = dstate_prev[0, b], dstate_prev[1, b]
        # dc (dstate_prev[1]) first holds the total gradient of c_t, then becomes dc * f.
        for j in range(H):
            dc[j] = dc_in[j] + dh[j] * o[j] * (one - tanh_c[j] * tanh_c[j])
        for j in range(H):  # d input gate
            d_i[j] = dc[j] * g[j] * i[j] * (one - i[j])
        for j in range(H):  # d forget gate
            d_f[j] = dc[j] * c_prev[j] * f[j] * (one - f[j])
        for j in range(H):  # d candidate
            d_g[j] = dc[j] * i[j] * (one - g[j] * g[j])
        for j in range(H):  # d output gate
            d_o[j] = dh[j] * tanh_c[j] * o[j] * (one - o[j])
        for j in range(4 * H):
            dhz[j] = dx[j]
        for j in range(H):
            dc[j] = dc[j] * f[j]
        for j in range(H):
            dh_prev[j] = 0.0
