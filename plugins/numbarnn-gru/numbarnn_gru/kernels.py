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
# array are vectorised; one loop writing seven arrays would stay scalar.

@njit(cache=True)
def gru_forward(xz_t, hz_t, states, t, cache_t):
    B, H = states.shape[2], states.shape[3]
    one = states.dtype.type(1.0)
    for b in range(B):
        for j in range(H):  # reset gate
            cache_t[b, j] = sigmoid(xz_t[b, j] + hz_t[b, j])
        for j in range(H, 2 * H):  # update gate
            cache_t[b, j] = sigmoid(xz_t[b, j] + hz_t[b, j])
        for j in range(H):  # hz_n = W_hn h + b_hn, saved for the backward
            cache_t[b, 3 * H + j] = hz_t[b, 2 * H + j]
        for j in range(H):  # candidate: the reset gate multiplies hz_n
            cache_t[b, 2 * H + j] = tanh(xz_t[b, 2 * H + j] + cache_t[b, j] * cache_t[b, 3 * H + j])
        for j in range(H):
            z = cache_t[b, H + j]
            states[0, t + 1, b, j] = (one - z) * cache_t[b, 2 * H + j] + z * states[0, t, b, j]


@njit(cache=True)
def gru_backward(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev):
    B, H = states.shape[2], states.shape[3]
    one = states.dtype.type(1.0)
    for b in range(B):
        for j in range(H):  # dn_raw
            z, n = cache_t[b, H + j], cache_t[b, 2 * H + j]
            dxz_t[b, 2 * H + j] = dstate[0, b, j] * (one - z) * (one - n * n)
        for j in range(H):  # dr
            r = cache_t[b, j]
            dxz_t[b, j] = dxz_t[b, 2 * H + j] * cache_t[b, 3 * H + j] * r * (one - r)
        for j in range(H):  # dz
            z = cache_t[b, H + j]
            dxz_t[b, H + j] = dstate[0, b, j] * (states[0, t, b, j] - cache_t[b, 2 * H + j]) * z * (one - z)
        for j in range(2 * H):
            dhz_t[b, j] = dxz_t[b, j]
        for j in range(H):
            dhz_t[b, 2 * H + j] = dxz_t[b, 2 * H + j] * cache_t[b, j]
        for j in range(H):
            dstate_prev[0, b, j] = dstate[0, b, j] * cache_t[b, H + j]
