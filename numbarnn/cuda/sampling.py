"""Picking the next token on the GPU: the mirror of :mod:`numbarnn.kernels.sampling`.

One single-thread kernel per generated token reads the head's row of logits, builds the
sampler's distribution exactly as the CPU kernels do (float64, max-shifted softmax with
temperature, the stable top-k / top-p filters) and draws with a uniform ``u`` that the
host drew in advance from the trainer's NumPy Generator. The index is written both to the
output sequence and to the next step's input, so generation never waits for the host;
the sequence is copied back once at the end.

A distribution the CPU kernels would reject (NaN, a zero or infinite sum) writes
:data:`INVALID` instead of an index, and the host raises the CPU's error. The sort behind
top-k and top-p is an insertion sort (one thread, O(V^2)): fine for character
vocabularies, not for very large ones.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ..kernels.sampling import CATEGORICAL, GREEDY, TEMPERATURE, TOP_K, TOP_P  # noqa: F401 (the CPU loops' modes)
from ..samplers import generation_kernel_args

INVALID = -2


@cuda.jit(device=True)
def _argmax_row(logits2d, row):
    V = logits2d.shape[1]
    best = 0
    for k in range(V):
        x = np.float64(logits2d[row, k])
        if math.isnan(x):
            return k
        if x > np.float64(logits2d[row, best]):
            best = k
    return best


@cuda.jit(device=True)
def _softmax_row(logits2d, row, temperature, probs):
    V = logits2d.shape[1]
    m = np.float64(logits2d[row, 0])
    for k in range(1, V):
        if np.float64(logits2d[row, k]) > m:
            m = np.float64(logits2d[row, k])
    s = 0.0
    for k in range(V):
        e = math.exp((np.float64(logits2d[row, k]) - m) / temperature)
        probs[k] = e
        s += e
    for k in range(V):
        probs[k] /= s


@cuda.jit(device=True)
def _descending_order(probs, order):
    # Stable: equal values keep increasing index order (np.argsort(-p, kind="mergesort")).
    V = probs.shape[0]
    for i in range(V):
        key = probs[i]
        pos = i
        while pos > 0 and probs[order[pos - 1]] < key:
            order[pos] = order[pos - 1]
            pos -= 1
        order[pos] = i


@cuda.jit(device=True)
def _renormalise_kept(probs, order, n_keep, out):
    s = 0.0
    for r in range(n_keep):
        s += probs[order[r]]
    if not (s > 0.0 and s < math.inf):
        return False
    for k in range(out.shape[0]):
        out[k] = 0.0
    for r in range(n_keep):
        j = order[r]
        out[j] = probs[j] / s
    return True


@cuda.jit(device=True)
def _sample_categorical(probs, u):
    V = probs.shape[0]
    total = 0.0
    for k in range(V):
        pk = probs[k]
        if not (pk >= 0.0):
            return INVALID
        total += pk
    if not (total > 0.0 and total < math.inf):
        return INVALID
    c = 0.0
    for k in range(V):
        c += probs[k]
        if c / total > u:
            return k
    return V - 1


@cuda.jit
def sample_kernel(logits2d, row, mode, temperature, top_k, top_p, uniforms, step, probs, filtered, order,
                  out, next_input):
    """Token ``step`` of a generation from ``logits2d[row]``: ``out[step]`` and ``next_input[0]``
    receive the index (``next_input`` gets -1, a zero input, after an INVALID draw).
    probs, filtered (V,) float64 and order (V,) int64 are scratch.

    logits2d (N, V) float32 or float64; mode one of CATEGORICAL, GREEDY, TEMPERATURE,
    TOP_K, TOP_P with its temperature, top_k and top_p (see :func:`sampler_mode`);
    uniforms (at least step + 1,) float64; out (length,) int64; next_input (1, 1) int64.
    Launch it with one thread (:func:`sample` does):

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.sampling import GREEDY, sample_kernel
    >>> logits2d = cuda.to_device(np.array([[0.1, 0.3, 0.2], [2.0, 0.0, 1.0]]))
    >>> out, next_input = cuda.to_device(np.full(2, -9, np.int64)), cuda.device_array((1, 1), np.int64)
    >>> scratch = cuda.device_array(3), cuda.device_array(3), cuda.device_array(3, np.int64)
    >>> sample_kernel[1, 1](logits2d, 0, GREEDY, 1.0, 1, 1.0, cuda.to_device(np.zeros(1)), 1, *scratch, out,
    ...                     next_input)
    >>> out.copy_to_host().tolist(), int(next_input.copy_to_host()[0, 0])  # token 1 is row 0's argmax
    ([-9, 1], 1)
    """
    if cuda.grid(1) != 0:
        return
    V = logits2d.shape[1]
    if mode == GREEDY:
        idx = _argmax_row(logits2d, row)
    else:
        temp = 1.0
        if mode != CATEGORICAL:
            temp = temperature
        _softmax_row(logits2d, row, temp, probs)
        u = uniforms[step]
        if mode == TOP_K or mode == TOP_P:
            _descending_order(probs, order)
            n_keep = V
            if mode == TOP_K:
                n_keep = min(top_k, V)
            else:
                total = 0.0
                for k in range(V):
                    total += probs[k]
                target = top_p * total
                c = 0.0
                for r in range(V):
                    c += probs[order[r]]
                    if c >= target:
                        n_keep = r + 1
                        break
            if _renormalise_kept(probs, order, n_keep, filtered):
                idx = _sample_categorical(filtered, u)
            else:
                idx = INVALID
        else:
            idx = _sample_categorical(probs, u)
    out[step] = idx
    if idx >= 0:
        next_input[0, 0] = idx
    else:
        next_input[0, 0] = -1


def sampler_mode(sampler):
    """``(mode, temperature, k, p)`` for a built-in sampler object, or None (no device kernel:
    plugin samplers and beam search run on the host): :func:`numbarnn.samplers.generation_kernel_args`.

    >>> from numbarnn.cuda.sampling import TOP_K, sampler_mode
    >>> from numbarnn.samplers import BeamSampler, TopKSampler
    >>> sampler_mode(TopKSampler(k=3, temperature=0.5)) == (TOP_K, 0.5, 3, 1.0)
    True
    >>> sampler_mode(BeamSampler()) is None
    True
    """
    return generation_kernel_args(sampler)  # what the sampler's class declares, for both devices


def sample(logits2d, row, sampler_params, uniforms, step, probs, filtered, order, out, next_input, stream=0):
    """Launch :func:`sample_kernel` for one token (one thread).

    ``sampler_params`` is :func:`sampler_mode`'s tuple; the arrays as :func:`sample_kernel`.
    The same index as the CPU sampler's ``choose`` with the same uniform:

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.sampling import sample, sampler_mode
    >>> from numbarnn.samplers import TopPSampler
    >>> sampler = TopPSampler(p=0.8, temperature=0.7)
    >>> logits, uniforms = np.random.default_rng(0).normal(size=(1, 4)), np.random.default_rng(1).random(1)
    >>> out, next_input = cuda.device_array(1, np.int64), cuda.device_array((1, 1), np.int64)
    >>> scratch = cuda.device_array(4), cuda.device_array(4), cuda.device_array(4, np.int64)
    >>> sample(cuda.to_device(logits), 0, sampler_mode(sampler), cuda.to_device(uniforms), 0, *scratch, out,
    ...        next_input)
    >>> int(out.copy_to_host()[0]) == sampler.choose(logits[0], np.random.default_rng(1))
    True
    """
    mode, temperature, k, p = sampler_params
    sample_kernel[1, 1, stream](logits2d, row, mode, temperature, k, p, uniforms, step, probs, filtered, order,
                                out, next_input)
