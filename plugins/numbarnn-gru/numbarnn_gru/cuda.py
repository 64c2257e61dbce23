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
    """Element (b, j) of :func:`numbarnn_gru.kernels.gru_forward` (PyTorch's GRU step).

    xz_t, hz_t (B, 3H) in gate order r, z, n; states (1, T+1, B, H): reads
    ``states[0, t, b, j]``, writes ``states[0, t+1, b, j]``; cache_t (B, 4H): writes r, z,
    n and ``hz_n`` at ``cache_t[b, c*H + j]`` for blocks c = 0..3. Device code: a kernel
    calls it, here one thread per element, against the CPU kernel:

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn_gru import kernels
    >>> from numbarnn_gru.cuda import gru_forward
    >>> @cuda.jit
    ... def step(xz_t, hz_t, states, t, cache_t):
    ...     b, j = cuda.grid(2)
    ...     if b < states.shape[2] and j < states.shape[3]:
    ...         gru_forward(xz_t, hz_t, states, t, cache_t, b, j)
    >>> rng = np.random.default_rng(0)
    >>> B, H = 2, 3
    >>> xz_t, hz_t, states = rng.normal(size=(B, 3 * H)), rng.normal(size=(B, 3 * H)), rng.normal(size=(1, 2, B, H))
    >>> d_states, d_cache = cuda.to_device(states), cuda.device_array((B, 4 * H))
    >>> step[1, (B, H)](cuda.to_device(xz_t), cuda.to_device(hz_t), d_states, 0, d_cache)
    >>> cache_t = np.empty((B, 4 * H))
    >>> kernels.gru_forward(xz_t, hz_t, states, 0, cache_t)
    >>> np.allclose(d_states.copy_to_host(), states), np.allclose(d_cache.copy_to_host(), cache_t)
    (True, True)
    """
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
    """Element (b, j) of :func:`numbarnn_gru.kernels.gru_backward`.

    dstate, dstate_prev (1, B, H); states (1, T+1, B, H) and cache_t (B, 4H) as the
    forward left them; writes ``dxz_t[b, g*H + j]`` and ``dhz_t[b, g*H + j]`` (B, 3H) for
    g = r, z, n (``dhz_n = dn_raw * r``, so two arrays) and ``dstate_prev[0, b, j] =
    dh * z``. Launched over every element by a tiny kernel, against the CPU kernel:

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn_gru import kernels
    >>> from numbarnn_gru.cuda import gru_backward
    >>> @cuda.jit
    ... def step_back(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev):
    ...     b, j = cuda.grid(2)
    ...     if b < states.shape[2] and j < states.shape[3]:
    ...         gru_backward(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev, b, j)
    >>> rng = np.random.default_rng(0)
    >>> B, H = 2, 3
    >>> xz_t, hz_t, states = rng.normal(size=(B, 3 * H)), rng.normal(size=(B, 3 * H)), rng.normal(size=(1, 2, B, H))
    >>> cache_t = np.empty((B, 4 * H))
    >>> kernels.gru_forward(xz_t, hz_t, states, 0, cache_t)   # fills states[0, 1] and the cache
    >>> dstate = rng.normal(size=(1, B, H))
    >>> d = [cuda.device_array((B, 3 * H)), cuda.device_array((B, 3 * H)), cuda.device_array((1, B, H))]
    >>> step_back[1, (B, H)](cuda.to_device(dstate), cuda.to_device(states), 0, cuda.to_device(cache_t), *d)
    >>> expected = [np.empty((B, 3 * H)), np.empty((B, 3 * H)), np.empty((1, B, H))]
    >>> kernels.gru_backward(dstate, states, 0, cache_t, *expected)
    >>> [np.allclose(a.copy_to_host(), e) for a, e in zip(d, expected)]
    [True, True, True]
    """
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
