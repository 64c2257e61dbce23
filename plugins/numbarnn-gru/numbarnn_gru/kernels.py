"""Pointwise kernels of the GRU cell (PyTorch's equations, gate rows r, z, n).

G = 3, S = 1 (h), C = 4: the forward saves r, z, n and ``hz_n = W_hn h_{t-1} + b_hn``
per step. The reset gate multiplies ``hz_n`` (bias included), so the gradients of the
two projections differ in the n block: ``dxz_n = dn_raw`` but ``dhz_n = dn_raw * r``
(the spec sets ``shared_gate_grad=False`` and the loop passes two arrays). The direct
path ``z * h_{t-1}`` gives ``dstate_prev[0] = dh * z``; the loop adds ``dhz_t @ W_h``.
"""
from numba import njit

from numbarnn.kernels.activations import sigmoid, tanh


# One short loop per output array, as numbarnn's own kernels: loops that write a single
# array are vectorised; one loop writing seven arrays would stay scalar. Each gate block
# is sliced into its own 1-D view first: loops indexed by j alone vectorise, where
# offsets like cache_t[b, 2 * H + j] kept them scalar (measured 2x on a (32, 128) step).

@njit(cache=True)
def gru_forward(xz_t, hz_t, states, t, cache_t):
    """One GRU step, pointwise: from the two projections of step t to ``states[0, t+1]``.

    xz_t, hz_t (B, 3H): ``x_t @ W_x.T + b_x`` and ``h_{t-1} @ W_h.T + b_h``, gate blocks
    r, z, n. states (1, T+1, B, H): reads ``states[0, t]`` (h_{t-1}), writes
    ``states[0, t+1]``. cache_t (B, 4H): writes r, z, n and ``hz_n`` for the backward.
    Float32 or float64, all arrays of one dtype. Against PyTorch's GRU equations in NumPy:

    >>> import numpy as np
    >>> from numbarnn_gru.kernels import gru_forward
    >>> rng = np.random.default_rng(0)
    >>> B, H = 2, 3
    >>> xz_t, hz_t = rng.normal(size=(B, 3 * H)), rng.normal(size=(B, 3 * H))
    >>> states, cache_t = rng.normal(size=(1, 2, B, H)), np.empty((B, 4 * H))   # T = 1
    >>> gru_forward(xz_t, hz_t, states, 0, cache_t)
    >>> sigmoid = lambda a: 1 / (1 + np.exp(-a))
    >>> (x_r, x_z, x_n), (h_r, h_z, h_n) = np.split(xz_t, 3, axis=1), np.split(hz_t, 3, axis=1)
    >>> r, z = sigmoid(x_r + h_r), sigmoid(x_z + h_z)
    >>> n = np.tanh(x_n + r * h_n)
    >>> h_prev = states[0, 0]
    >>> np.allclose(states[0, 1], (1 - z) * n + z * h_prev), np.allclose(cache_t, np.hstack([r, z, n, h_n]))
    (True, True)
    """
    B, H = states.shape[2], states.shape[3]
    one = states.dtype.type(1.0)
    for b in range(B):
        x, hz, cache = xz_t[b], hz_t[b], cache_t[b]
        r, z, n, hz_n = cache[0:H], cache[H:2 * H], cache[2 * H:3 * H], cache[3 * H:4 * H]
        x_r, x_z, x_n = x[0:H], x[H:2 * H], x[2 * H:3 * H]
        h_r, h_z, h_n = hz[0:H], hz[H:2 * H], hz[2 * H:3 * H]
        h_prev, h_new = states[0, t, b], states[0, t + 1, b]
        for j in range(H):  # reset gate
            r[j] = sigmoid(x_r[j] + h_r[j])
        for j in range(H):  # update gate
            z[j] = sigmoid(x_z[j] + h_z[j])
        for j in range(H):  # hz_n = W_hn h + b_hn, saved for the backward
            hz_n[j] = h_n[j]
        for j in range(H):  # candidate: the reset gate multiplies hz_n
            n[j] = tanh(x_n[j] + r[j] * hz_n[j])
        for j in range(H):
            h_new[j] = (one - z[j]) * n[j] + z[j] * h_prev[j]


@njit(cache=True)
def gru_backward(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev):
    """The backward of :func:`gru_forward` at step t, pointwise.

    dstate (1, B, H): the total gradient w.r.t. ``states[0, t+1]``. states (1, T+1, B, H)
    and cache_t (B, 4H) as the forward left them. Writes dxz_t, dhz_t (B, 3H), the
    gradients w.r.t. the two projections (blocks r, z, n; they differ in the n block:
    ``dhz_n = dn_raw * r``), and dstate_prev (1, B, H), the direct gradient w.r.t.
    ``states[0, t]``, ``dh * z`` (the loop adds ``dhz_t @ W_h``). Against the formulas
    and against central finite differences of ``L = sum(dstate * h_t)``:

    >>> import numpy as np
    >>> from numbarnn_gru.kernels import gru_backward, gru_forward
    >>> rng = np.random.default_rng(0)
    >>> B, H = 2, 3
    >>> xz_t, hz_t, h_prev = rng.normal(size=(B, 3 * H)), rng.normal(size=(B, 3 * H)), rng.normal(size=(B, H))
    >>> states, cache_t = np.stack([h_prev, np.zeros((B, H))])[None], np.empty((B, 4 * H))   # (1, 2, B, H)
    >>> gru_forward(xz_t, hz_t, states, 0, cache_t)
    >>> dstate = rng.normal(size=(1, B, H))
    >>> dxz_t, dhz_t, dstate_prev = np.empty((B, 3 * H)), np.empty((B, 3 * H)), np.empty((1, B, H))
    >>> gru_backward(dstate, states, 0, cache_t, dxz_t, dhz_t, dstate_prev)
    >>> r, z = cache_t[:, :H], cache_t[:, H:2 * H]
    >>> np.allclose(dstate_prev[0], dstate[0] * z), np.allclose(dhz_t[:, 2 * H:], dxz_t[:, 2 * H:] * r)
    (True, True)
    >>> def loss(xz, hz, h):
    ...     s = np.stack([h, np.zeros((B, H))])[None]
    ...     gru_forward(xz, hz, s, 0, np.empty((B, 4 * H)))
    ...     return np.sum(dstate[0] * s[0, 1])
    >>> def slope(i, d, eps=1e-6):   # central difference of loss along d in argument i
    ...     plus, minus = [xz_t, hz_t, h_prev], [xz_t, hz_t, h_prev]
    ...     plus[i], minus[i] = plus[i] + eps * d, minus[i] - eps * d
    ...     return (loss(*plus) - loss(*minus)) / (2 * eps)
    >>> grads = [dxz_t, dhz_t, dstate_prev[0]]   # along each gradient, the slope is its squared norm
    >>> [bool(np.isclose(slope(i, g), np.sum(g * g))) for i, g in enumerate(grads)]
    [True, True, True]
    """
    B, H = states.shape[2], states.shape[3]
    one = states.dtype.type(1.0)
    for b in range(B):
        cache, dx, dhz = cache_t[b], dxz_t[b], dhz_t[b]
        r, z, n, hz_n = cache[0:H], cache[H:2 * H], cache[2 * H:3 * H], cache[3 * H:4 * H]
        d_r, d_z, d_n = dx[0:H], dx[H:2 * H], dx[2 * H:3 * H]
        dh, h_prev, dh_prev = dstate[0, b], states[0, t, b], dstate_prev[0, b]
        dhz_rz, dhz_n = dhz[0:2 * H], dhz[2 * H:3 * H]
        for j in range(H):  # dn_raw
            d_n[j] = dh[j] * (one - z[j]) * (one - n[j] * n[j])
        for j in range(H):  # dr
            d_r[j] = d_n[j] * hz_n[j] * r[j] * (one - r[j])
        for j in range(H):  # dz
            d_z[j] = dh[j] * (h_prev[j] - n[j]) * z[j] * (one - z[j])
        for j in range(2 * H):
            dhz_rz[j] = dx[j]
        for j in range(H):
            dhz_n[j] = d_n[j] * r[j]
        for j in range(H):
            dh_prev[j] = dh[j] * z[j]
