"""Losses on the GPU: the mirror of :mod:`numbarnn.kernels.losses`, plus the reductions.

One thread per row computes what the CPU kernel computes for that row (the same
max-shifted softmax, log-sum-exp in float64, the same gradient) and writes the row's
loss to a float64 buffer; a two-stage reduction then sums the rows into one float64
number on the device, so only that number comes back to the host. The trainer's ``1/B``
scaling of the gradient is folded in (``scale``; 1 leaves the gradient as the CPU
kernel writes it). fastmath stays off: these feed NaN checks.

A row per thread suits character vocabularies (tens to hundreds of columns); a large
vocabulary would want a block per row.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ._support import config, grid1d, kernel_cache

# ---- reductions: x (n,) -> out[slot], float64 accumulation -----------------------------

SUM, SQUARES, NONFINITE = 0, 1, 2  # what reduce_sum adds up: x, x*x, or x - x (NaN iff x is not finite)


@kernel_cache
def _build_reduce(threads: int, mode: int):
    @cuda.jit(device=True)
    def block_sum(buf, tid, s):
        """Every thread's s summed over the block, in buf[0] (a tree, fixed order)."""
        buf[tid] = s
        cuda.syncthreads()
        width = threads // 2
        while width > 0:
            if tid < width:
                buf[tid] += buf[tid + width]
            cuda.syncthreads()
            width //= 2

    @cuda.jit
    def partial_kernel(x, partials):
        buf = cuda.shared.array(threads, np.float64)
        tid = cuda.threadIdx.x
        s = 0.0
        i = cuda.blockIdx.x * threads + tid
        stride = cuda.gridDim.x * threads
        n = x.shape[0]
        while i < n:
            v = np.float64(x[i])
            if mode == SQUARES:
                s += v * v
            elif mode == NONFINITE:
                s += v - v
            else:
                s += v
            i += stride
        block_sum(buf, tid, s)
        if tid == 0:
            partials[cuda.blockIdx.x] = buf[0]

    @cuda.jit
    def final_kernel(partials, nparts, out, slot):
        buf = cuda.shared.array(threads, np.float64)
        tid = cuda.threadIdx.x
        s = 0.0
        i = tid
        while i < nparts:
            s += partials[i]
            i += threads
        block_sum(buf, tid, s)
        if tid == 0:
            out[slot] = buf[0]

    return partial_kernel, final_kernel


MAX_PARTIALS = 64


def reduce_sum(x, out, slot=0, partials=None, square=False, stream=0, mode=None):
    """``out[slot] = sum(x)`` (``sum(x*x)`` with ``square`` or ``mode=SQUARES``; with
    ``mode=NONFINITE`` 0 when every element is finite, else NaN) in float64, on the device.

    x (n,) any float dtype; out a float64 device array; partials a float64 device scratch
    array of at least ``MAX_PARTIALS`` entries (allocated if None).

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.losses import NONFINITE, reduce_sum
    >>> x, out = cuda.to_device(np.arange(10, dtype=np.float32)), cuda.device_array(3, np.float64)
    >>> reduce_sum(x, out, 0)
    >>> reduce_sum(x, out, 1, square=True)
    >>> reduce_sum(cuda.to_device(np.array([1.0, np.inf])), out, 2, mode=NONFINITE)
    >>> out.copy_to_host().tolist()  # sum(x), sum(x*x), NaN: not every entry is finite
    [45.0, 285.0, nan]
    """
    threads = config.reduce_threads
    mode = (SQUARES if square else SUM) if mode is None else int(mode)
    partial_kernel, final_kernel = _build_reduce(threads, mode)
    if partials is None:
        partials = cuda.device_array(MAX_PARTIALS, np.float64)
    nblocks = int(min(MAX_PARTIALS, config.max_blocks, max(1, (x.shape[0] + threads - 1) // threads)))
    partial_kernel[nblocks, threads, stream](x, partials)
    final_kernel[1, threads, stream](partials, nblocks, out, slot)


# ---- softmax cross-entropy ------------------------------------------------------------------

@cuda.jit
def softmax_cross_entropy_kernel(logits2d, targets, mask, scale, probs2d, dlogits2d, row_loss):
    """Row n of the CPU kernel: probs, ``dlogits = mask * (probs - onehot(target))`` (times
    ``scale`` unless it is 1) and ``row_loss[n] = -mask * log softmax(logits)[target]``.

    logits2d, probs2d, dlogits2d (N, V) and mask (N,) of one float dtype; targets (N,)
    int64; scale a number of that dtype; row_loss (N,) float64. One thread per row, any
    grid (:func:`softmax_cross_entropy` launches it and sums row_loss):

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.losses import softmax_cross_entropy_kernel
    >>> logits2d, targets = np.log(np.array([[0.25, 0.75], [0.5, 0.5]])), np.array([1, 0], np.int64)
    >>> probs2d, dlogits2d, row_loss = cuda.device_array((2, 2)), cuda.device_array((2, 2)), cuda.device_array(2)
    >>> mask = cuda.to_device(np.ones(2))
    >>> softmax_cross_entropy_kernel[1, 4](cuda.to_device(logits2d), cuda.to_device(targets), mask, 0.5, probs2d,
    ...                                    dlogits2d, row_loss)
    >>> np.allclose(row_loss.copy_to_host(), -np.log([0.75, 0.5])), probs2d.copy_to_host().round(4).tolist()
    (True, [[0.25, 0.75], [0.5, 0.5]])
    >>> dlogits2d.copy_to_host().round(4).tolist()  # 0.5 * (probs - onehot)
    [[0.125, -0.125], [-0.25, 0.25]]
    """
    N = logits2d.shape[0]
    V = logits2d.shape[1]
    for n in range(cuda.grid(1), N, cuda.gridsize(1)):
        m = logits2d[n, 0]
        for k in range(1, V):
            if logits2d[n, k] > m:
                m = logits2d[n, k]
        s = 0.0
        for k in range(V):
            e = math.exp(logits2d[n, k] - m)
            probs2d[n, k] = e
            s += e
        for k in range(V):
            probs2d[n, k] /= s
        lse = m + math.log(s)
        w = mask[n]
        y = targets[n]
        loss = 0.0
        if w != 0.0:
            loss -= w * (logits2d[n, y] - lse)
        for k in range(V):
            dlogits2d[n, k] = w * probs2d[n, k]
        dlogits2d[n, y] -= w
        if scale != 1.0:
            for k in range(V):
                dlogits2d[n, k] *= scale
        row_loss[n] = loss


def softmax_cross_entropy(logits2d, targets, mask, probs2d, dlogits2d, row_loss, out, slot=0, scale=None,
                          partials=None, stream=0):
    """Device arrays. ``out[slot]`` receives the summed masked loss (float64); the rest as the
    CPU kernel, with the gradient multiplied by ``scale`` (a number of the logits' dtype).

    logits2d, probs2d, dlogits2d (N, V) and mask (N,) of one float dtype; targets (N,)
    int64; row_loss (N,) float64 scratch; partials as :func:`reduce_sum`. Against the
    CPU kernel:

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda import losses as dlosses
    >>> from numbarnn.kernels import losses
    >>> rng = np.random.default_rng(0)
    >>> N, V = 3, 4
    >>> logits2d, targets, mask = rng.normal(size=(N, V)), np.array([0, 3, 1], np.int64), np.array([1.0, 0.5, 0.0])
    >>> probs2d, dlogits2d, out = cuda.device_array((N, V)), cuda.device_array((N, V)), cuda.device_array(1)
    >>> dlosses.softmax_cross_entropy(cuda.to_device(logits2d), cuda.to_device(targets), cuda.to_device(mask),
    ...                               probs2d, dlogits2d, cuda.device_array(N), out)
    >>> expected = np.empty((N, V))
    >>> loss = losses.softmax_cross_entropy(logits2d, targets, mask, np.empty((N, V)), expected)
    >>> np.allclose(out.copy_to_host()[0], loss), np.allclose(dlogits2d.copy_to_host(), expected)
    (True, True)
    """
    N = logits2d.shape[0]
    scale = np.dtype(logits2d.dtype).type(1 if scale is None else scale)
    softmax_cross_entropy_kernel[grid1d(N), config.threads, stream](
        logits2d, targets, mask, scale, probs2d, dlogits2d, row_loss)
    reduce_sum(row_loss, out, slot, partials, stream=stream)


# ---- half squared error ---------------------------------------------------------------------

@cuda.jit
def squared_error_kernel(outputs2d, targets2d, mask, scale, dout2d, row_loss):
    """Row n of :func:`numbarnn.kernels.losses.squared_error`: ``dout2d = mask * (out - target)``
    (times ``scale`` unless it is 1) and ``row_loss[n] = 0.5 * mask * sum (out - target)^2``.

    outputs2d, targets2d, dout2d (N, V) and mask (N,) of one float dtype; scale a number
    of that dtype; row_loss (N,) float64. One thread per row, any grid:

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.losses import squared_error_kernel
    >>> outputs2d, targets2d = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[0.0, 2.0], [np.nan, 0.0]])
    >>> dout2d, row_loss = cuda.device_array((2, 2)), cuda.device_array(2)
    >>> squared_error_kernel[1, 4](cuda.to_device(outputs2d), cuda.to_device(targets2d),
    ...                            cuda.to_device(np.array([2.0, 0.0])), 1.0, dout2d, row_loss)
    >>> row_loss.copy_to_host().tolist(), dout2d.copy_to_host().tolist()  # row 1 is padding
    ([1.0, 0.0], [[2.0, 0.0], [0.0, 0.0]])
    """
    N = outputs2d.shape[0]
    V = outputs2d.shape[1]
    for n in range(cuda.grid(1), N, cuda.gridsize(1)):
        w = mask[n]
        if w == 0.0:
            for k in range(V):
                dout2d[n, k] = 0.0
            row_loss[n] = 0.0
        else:
            row = 0.0
            for k in range(V):
                d = outputs2d[n, k] - targets2d[n, k]
                row += np.float64(d) * np.float64(d)
                dout2d[n, k] = w * d
            if scale != 1.0:
                for k in range(V):
                    dout2d[n, k] *= scale
            row_loss[n] = 0.5 * w * row


def squared_error(outputs2d, targets2d, mask, dout2d, row_loss, out, slot=0, scale=None, partials=None,
                  stream=0):
    """Device arrays; ``out[slot]`` = ``0.5 * sum_n mask[n] * sum_k (out - target)^2`` (float64).

    outputs2d, targets2d, dout2d (N, V) and mask (N,) of one float dtype; row_loss (N,)
    float64 scratch; ``dout2d = mask * (out - target)``, times ``scale`` when given.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.losses import squared_error
    >>> rng = np.random.default_rng(0)
    >>> outputs2d, targets2d = rng.normal(size=(3, 2)), rng.normal(size=(3, 2))
    >>> dout2d, out = cuda.device_array((3, 2)), cuda.device_array(1)
    >>> squared_error(cuda.to_device(outputs2d), cuda.to_device(targets2d), cuda.to_device(np.ones(3)), dout2d,
    ...               cuda.device_array(3), out, scale=0.5)
    >>> d = outputs2d - targets2d
    >>> np.allclose(out.copy_to_host()[0], 0.5 * (d * d).sum()), np.allclose(dout2d.copy_to_host(), 0.5 * d)
    (True, True)
    """
    N = outputs2d.shape[0]
    scale = np.dtype(outputs2d.dtype).type(1 if scale is None else scale)
    squared_error_kernel[grid1d(N), config.threads, stream](
        outputs2d, targets2d, mask, scale, dout2d, row_loss)
    reduce_sum(row_loss, out, slot, partials, stream=stream)
