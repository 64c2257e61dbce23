"""The GRU's CUDA pointwise pair, for numbarnn's ``device="cuda"``.

Named by ``GRU.cuda_pointwise = "numbarnn_gru.cuda:GRU_CUDA"`` and imported only when a
GRU runs on the GPU, so importing the plugin never imports numba.cuda. Each function is
one element ``(b, j)`` of the loops in :mod:`numbarnn_gru.kernels`, with the same
arithmetic (see :mod:`numbarnn.cuda.cells` for the protocol).
"""
from numba import cuda

from numbarnn.cuda.cells import CudaPointwise, sigmoid, tanh


@cuda.jit(device=True)
def gru_forward(xz_t, hz_t, states, t, cache_t, b, j):
    H = states.shape[3]
    r = sigmoid(xz_t[b, j] + hz_t[b, j])
    z = sigmoid(xz_t[b, H + j] + hz_t[b, H + j])
    hn = hz_t[b, 2 * H + j]
    n = tanh(xz_t[b, 2 * H + j] + r * hn)
    states[0, t + 1, b, j] = (1.0 - z) * n + z * states[0, t, b, j]
    cache_t[b, j] = r
    cache_t[b, H + j] = z
    cache_t[b, 2 * H + j] = n
    cache_t[b, 3 * H + j] = hn


@cuda.jit(device=True)
def gru_backward(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev, b, j):
    H = states.shape[3]
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


GRU_CUDA = CudaPointwise(forward=gru_forward, backward=gru_backward)
