"""Pointwise kernels of the GRU cell (PyTorch's equations, gate rows r, z, n).

G = 3, S = 1 (h), C = 4: the forward saves r, z, n and ``hz_n = W_hn h_{t-1} + b_hn``
per step. The reset gate multiplies ``hz_n`` (bias included), so the gradients of the
two projections differ in the n block: ``dxz_n = dn_raw`` but ``dhz_n = dn_raw * r``
(the spec sets ``shared_gate_grad=False`` and the loop passes two arrays). The direct
path ``z * h_{t-1}`` gives ``dstate_prev[0] = dh * z``; the loop adds ``dhz_t @ W_h``.
"""
from numba import njit

from numbarnn.kernels.activations import sigmoid, tanh


@njit(cache=True)
def gru_forward(xz_t, hz_t, states, t, cache_t):
    B, H = states.shape[2], states.shape[3]
    for b in range(B):
        for j in range(H):
            r = sigmoid(xz_t[b, j] + hz_t[b, j])
            z = sigmoid(xz_t[b, H + j] + hz_t[b, H + j])
            hn = hz_t[b, 2 * H + j]
            n = tanh(xz_t[b, 2 * H + j] + r * hn)
            states[0, t + 1, b, j] = (1.0 - z) * n + z * states[0, t, b, j]
            cache_t[b, j] = r
            cache_t[b, H + j] = z
            cache_t[b, 2 * H + j] = n
            cache_t[b, 3 * H + j] = hn


@njit(cache=True)
def gru_backward(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev):
    B, H = states.shape[2], states.shape[3]
    for b in range(B):
        for j in range(H):
            r = cache_t[b, j]
            z = cache_t[b, H + j]
            n = cache_t[b, 2 * H + j]
            hn = cache_t[b, 3 * H + j]
            dh = dstate[0, b, j]
            dn = dh * (1.0 - z) * (1.0 - n * n)
            dr = dn * hn * r * (1.0 - r)
            dz = dh * (states[0, t, b, j] - n) * z * (1.0 - z)
            dxz_t[b, j] = dr
            dxz_t[b, H + j] = dz
            dxz_t[b, 2 * H + j] = dn
            dhz_t[b, j] = dr
            dhz_t[b, H + j] = dz
            dhz_t[b, 2 * H + j] = dn * r
            dstate_prev[0, b, j] = dh * z
