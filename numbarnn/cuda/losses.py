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

from . import config, grid1d

# ---- reductions: x (n,) -> out[slot], float64 accumulation -----------------------------

_REDUCE = {}

SUM, SQUARES, NONFINITE = 0, 1, 2  # what reduce_sum adds up: x, x*x, or x - x (NaN iff x is not finite)


def _build_reduce(threads: int, mode: int):
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
        buf[tid] = s
        cuda.syncthreads()
        width = threads // 2
        while width > 0:
            if tid < width:
                buf[tid] += buf[tid + width]
            cuda.syncthreads()
            width //= 2
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
        buf[tid] = s
        cuda.syncthreads()
        width = threads // 2
        while width > 0:
            if tid < width:
                buf[tid] += buf[tid + width]
            cuda.syncthreads()
            width //= 2
        if tid == 0:
            out[slot] = buf[0]

    return partial_kernel, final_kernel


MAX_PARTIALS = 64


def reduce_sum(x, out, slot=0, partials=None, square=False, stream=0, mode=None):
    """``out[slot] = sum(x)`` (``sum(x*x)`` with ``square`` or ``mode=SQUARES``; with
    ``mode=NONFINITE`` 0 when every element is finite, else NaN) in float64, on the device.

    x (n,) any float dtype; out a float64 device array; partials a float64 device scratch
    array of at least ``MAX_PARTIALS`` entries (allocated if None).
    """
    threads = config.reduce_threads
    mode = (SQUARES if square else SUM) if mode is None else int(mode)
    key = (threads, mode)
    kernels = _REDUCE.get(key)
    if kernels is None:
        kernels = _REDUCE[key] = _build_reduce(threads, mode)
    partial_kernel, final_kernel = kernels
    if partials is None:
        partials = cuda.device_array(MAX_PARTIALS, np.float64)
    nblocks = int(min(MAX_PARTIALS, config.max_blocks, max(1, (x.shape[0] + threads - 1) // threads)))
    partial_kernel[nblocks, threads, stream](x, partials)
    final_kernel[1, threads, stream](partials, nblocks, out, slot)


# ---- softmax cross-entropy ------------------------------------------------------------------

@cuda.jit
def softmax_cross_entropy_kernel(logits2d, targets, mask, scale, probs2d, dlogits2d, row_loss):
    """Row n of the CPU kernel: probs, ``dlogits = mask * (probs - onehot(target))`` (times
    ``scale`` unless it is 1) and ``row_loss[n] = -mask * log softmax(logits)[target]``."""
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
    CPU kernel, with the gradient multiplied by ``scale`` (a number of the logits' dtype)."""
    N = logits2d.shape[0]
    scale = np.dtype(logits2d.dtype).type(1 if scale is None else scale)
    softmax_cross_entropy_kernel[grid1d(N), config.threads, stream](
        logits2d, targets, mask, scale, probs2d, dlogits2d, row_loss)
    reduce_sum(row_loss, out, slot, partials, stream=stream)


# ---- half squared error ---------------------------------------------------------------------

@cuda.jit
def squared_error_kernel(outputs2d, targets2d, mask, scale, dout2d, row_loss):
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
    """Device arrays; ``out[slot]`` = ``0.5 * sum_n mask[n] * sum_k (out - target)^2`` (float64)."""
    N = outputs2d.shape[0]
    scale = np.dtype(outputs2d.dtype).type(1 if scale is None else scale)
    squared_error_kernel[grid1d(N), config.threads, stream](
        outputs2d, targets2d, mask, scale, dout2d, row_loss)
    reduce_sum(row_loss, out, slot, partials, stream=stream)
