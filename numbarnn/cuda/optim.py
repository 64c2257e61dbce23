"""Optimizer updates and gradient clipping on the GPU: the mirror of :mod:`numbarnn.kernels.optim`.

The trainer keeps every parameter in one flat device buffer (and every gradient and
optimizer slot in buffers of the same layout), so each update or clip is one launch over
all parameters, one thread per element, with the CPU kernel's formula for that element.
Scalar hyperparameters are Python floats (float64 arithmetic per element, rounded once
when stored, as on the CPU); Adam's bias corrections are computed on the host exactly as
the CPU kernel computes them. ``weight_decay`` is the CPU kernels' too: ``g + weight_decay *
p`` rounded to the gradient's dtype (PyTorch's L2 penalty), or AdamW's ``p *= shrink`` with
``shrink = 1 - lr * weight_decay``; at 0 the branch is never taken. The squared global gradient norm is reduced on the device
into a float64 device scalar (``norm_sq``), which clipping by norm reads there. fastmath
stays off.
"""
from __future__ import annotations

import math

from numba import cuda

from ._support import config, grid1d
from .losses import reduce_sum


@cuda.jit
def sgd_kernel(p, g, lr, weight_decay):
    """p (P,) -= lr * g (P,), a thread per element (grid-stride: any grid covers P); with
    ``weight_decay`` not 0, g + weight_decay * p for g.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.optim import sgd_kernel
    >>> p = cuda.to_device(np.array([1.0, 2.0, 3.0]))
    >>> sgd_kernel[1, 2](p, cuda.to_device(np.array([10.0, 0.0, -10.0])), 0.1, 0.0)
    >>> p.copy_to_host().round(12).tolist()  # a GPU fuses p - lr * g into one FMA: -5.6e-17, not 0.0
    [0.0, 2.0, 4.0]
    """
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        gi = g[i]
        if weight_decay != 0.0:
            gi = g.dtype.type(gi + weight_decay * p[i])
        p[i] -= lr * gi


@cuda.jit
def momentum_kernel(p, g, velocity, lr, momentum, nesterov, weight_decay):
    """:func:`numbarnn.kernels.optim.momentum_update` per element; p, g, velocity (P,).

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.optim import momentum_kernel
    >>> p, velocity = cuda.to_device(np.zeros(2)), cuda.to_device(np.array([1.0, 1.0]))
    >>> momentum_kernel[1, 4](p, cuda.to_device(np.array([1.0, -2.0])), velocity, 0.1, 0.5, False, 0.0)
    >>> velocity.copy_to_host().tolist(), np.allclose(p.copy_to_host(), [-0.15, 0.15])  # v = 0.5 v + g
    ([1.5, -1.5], True)
    """
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        gi = g[i]
        if weight_decay != 0.0:
            gi = g.dtype.type(gi + weight_decay * p[i])
        v = momentum * velocity[i] + gi
        velocity[i] = v
        if nesterov:
            p[i] -= lr * (gi + momentum * v)
        else:
            p[i] -= lr * v


@cuda.jit
def adagrad_kernel(p, g, memory, lr, eps, weight_decay):
    """:func:`numbarnn.kernels.optim.adagrad_update` per element; p, g, memory (P,).

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.optim import adagrad_kernel
    >>> p, memory = cuda.to_device(np.zeros(2)), cuda.to_device(np.zeros(2))
    >>> adagrad_kernel[1, 4](p, cuda.to_device(np.array([3.0, -4.0])), memory, 0.1, 0.0, 0.0)
    >>> memory.copy_to_host().tolist(), np.allclose(p.copy_to_host(), [-0.1, 0.1])  # lr * g / |g|
    ([9.0, 16.0], True)
    """
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        gi = g[i]
        if weight_decay != 0.0:
            gi = g.dtype.type(gi + weight_decay * p[i])
        mem = memory[i] + gi * gi
        memory[i] = mem
        p[i] -= lr * gi / math.sqrt(mem + eps)


@cuda.jit
def rmsprop_kernel(p, g, square_avg, lr, alpha, eps, weight_decay):
    """:func:`numbarnn.kernels.optim.rmsprop_update` per element; p, g, square_avg (P,).

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.optim import rmsprop_kernel
    >>> p, square_avg = cuda.to_device(np.zeros(2)), cuda.to_device(np.zeros(2))
    >>> rmsprop_kernel[1, 4](p, cuda.to_device(np.array([3.0, -4.0])), square_avg, 0.01, 0.75, 0.0, 0.0)
    >>> square_avg.copy_to_host().tolist(), np.allclose(p.copy_to_host(), [-0.02, 0.02])  # v = g^2 / 4
    ([2.25, 4.0], True)
    """
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        gi = g[i]
        if weight_decay != 0.0:
            gi = g.dtype.type(gi + weight_decay * p[i])
        v = alpha * square_avg[i] + (1.0 - alpha) * (gi * gi)
        square_avg[i] = v
        p[i] -= lr * (gi / (math.sqrt(v) + eps))


@cuda.jit
def adam_kernel(p, g, m, v, step_size, beta1, beta2, eps, bc2_sqrt, l2, shrink):
    """:func:`numbarnn.kernels.optim.adam_update` per element; p, g, m, v (P,); the bias
    corrections ``step_size`` and ``bc2_sqrt`` come from :func:`adam_scalars`. ``l2``: Adam's
    weight decay (added to the gradient); ``shrink``: AdamW's ``1 - lr * weight_decay`` (1.0:
    none).

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.optim import adam_kernel, adam_scalars
    >>> g = np.array([0.5, -2.0, 3.0])
    >>> p, m, v = cuda.to_device(np.zeros(3)), cuda.to_device(np.zeros(3)), cuda.to_device(np.zeros(3))
    >>> step_size, bc2_sqrt = adam_scalars(0.1, 0.9, 0.999, 1)
    >>> adam_kernel[1, 4](p, cuda.to_device(g), m, v, step_size, 0.9, 0.999, 1e-8, bc2_sqrt, 0.0, 1.0)
    >>> np.allclose(p.copy_to_host(), -0.1 * np.sign(g))  # the first step: about lr against the sign
    True
    """
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        gi = g[i]
        if l2 != 0.0:
            gi = g.dtype.type(gi + l2 * p[i])
        elif shrink != 1.0:
            p[i] *= shrink
        mi = beta1 * m[i] + (1.0 - beta1) * gi
        vi = beta2 * v[i] + (1.0 - beta2) * (gi * gi)
        m[i] = mi
        v[i] = vi
        p[i] -= step_size * (mi / (math.sqrt(vi) / bc2_sqrt + eps))


def adam_scalars(lr: float, beta1: float, beta2: float, step: int):
    """``(step_size, bc2_sqrt)`` exactly as :func:`numbarnn.kernels.optim.adam_update` computes them.

    ``step_size = lr / (1 - beta1**step)`` and ``bc2_sqrt = sqrt(1 - beta2**step)``, floats.

    >>> from numbarnn.cuda.optim import adam_scalars
    >>> [round(x, 6) for x in adam_scalars(0.1, 0.9, 0.99, 2)]
    [0.526316, 0.141067]
    """
    t = float(step)
    return lr / (1.0 - beta1 ** t), math.sqrt(1.0 - beta2 ** t)


def sgd_update(p, g, lr, weight_decay=0.0, stream=0):
    """Launch :func:`sgd_kernel` over every element: p (P,) -= lr * g (P,), device arrays.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.optim import sgd_update
    >>> p = cuda.to_device(np.ones(10))
    >>> sgd_update(p, cuda.to_device(np.arange(10.0)), 0.5)
    >>> np.allclose(p.copy_to_host(), 1 - 0.5 * np.arange(10.0))
    True
    """
    sgd_kernel[grid1d(p.shape[0]), config.threads, stream](p, g, float(lr), float(weight_decay))


def momentum_update(p, g, velocity, lr, momentum, nesterov, weight_decay=0.0, stream=0):
    """Launch :func:`momentum_kernel`; device arrays p, g, velocity (P,), as the CPU kernel.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.optim import momentum_update
    >>> from numbarnn.kernels import optim
    >>> rng = np.random.default_rng(0)
    >>> p, g = rng.normal(size=6), rng.normal(size=6)
    >>> d_p, d_velocity = cuda.to_device(p), cuda.to_device(np.zeros(6))
    >>> velocity = np.zeros(6)
    >>> for _ in range(2):
    ...     momentum_update(d_p, cuda.to_device(g), d_velocity, 0.1, 0.9, True)
    ...     optim.momentum_update(p, g, velocity, 0.1, 0.9, True)
    >>> np.allclose(d_p.copy_to_host(), p), np.allclose(d_velocity.copy_to_host(), velocity)
    (True, True)
    """
    momentum_kernel[grid1d(p.shape[0]), config.threads, stream](p, g, velocity, float(lr), float(momentum),
                                                               bool(nesterov), float(weight_decay))


def adagrad_update(p, g, memory, lr, eps, weight_decay=0.0, stream=0):
    """Launch :func:`adagrad_kernel`; device arrays p, g, memory (P,), as the CPU kernel.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.optim import adagrad_update
    >>> from numbarnn.kernels import optim
    >>> rng = np.random.default_rng(0)
    >>> p, g, memory = rng.normal(size=6), rng.normal(size=6), np.zeros(6)
    >>> d_p, d_memory = cuda.to_device(p), cuda.to_device(memory)
    >>> adagrad_update(d_p, cuda.to_device(g), d_memory, 0.1, 1e-8)
    >>> optim.adagrad_update(p, g, memory, 0.1, 1e-8)
    >>> np.allclose(d_p.copy_to_host(), p), np.allclose(d_memory.copy_to_host(), memory)
    (True, True)
    """
    adagrad_kernel[grid1d(p.shape[0]), config.threads, stream](p, g, memory, float(lr), float(eps),
                                                              float(weight_decay))


def rmsprop_update(p, g, square_avg, lr, alpha, eps, weight_decay=0.0, stream=0):
    """Launch :func:`rmsprop_kernel`; device arrays p, g, square_avg (P,), as the CPU kernel.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.optim import rmsprop_update
    >>> from numbarnn.kernels import optim
    >>> rng = np.random.default_rng(0)
    >>> p, g, square_avg = rng.normal(size=6), rng.normal(size=6), np.zeros(6)
    >>> d_p, d_square_avg = cuda.to_device(p), cuda.to_device(square_avg)
    >>> rmsprop_update(d_p, cuda.to_device(g), d_square_avg, 0.01, 0.99, 1e-8)
    >>> optim.rmsprop_update(p, g, square_avg, 0.01, 0.99, 1e-8)
    >>> np.allclose(d_p.copy_to_host(), p), np.allclose(d_square_avg.copy_to_host(), square_avg)
    (True, True)
    """
    rmsprop_kernel[grid1d(p.shape[0]), config.threads, stream](p, g, square_avg, float(lr), float(alpha),
                                                              float(eps), float(weight_decay))


def adam_update(p, g, m, v, lr, beta1, beta2, eps, step, weight_decay=0.0, decoupled=False, stream=0):
    """Launch :func:`adam_kernel`; device arrays p, g, m, v (P,); ``step`` counts from 1;
    ``weight_decay`` Adam's L2 penalty, or AdamW's decay with ``decoupled``.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.optim import adam_update
    >>> from numbarnn.kernels import optim
    >>> rng = np.random.default_rng(0)
    >>> p, g, m, v = rng.normal(size=6), rng.normal(size=6), np.zeros(6), np.zeros(6)
    >>> d_p, d_m, d_v = cuda.to_device(p), cuda.to_device(m), cuda.to_device(v)
    >>> for step in (1, 2):
    ...     adam_update(d_p, cuda.to_device(g), d_m, d_v, 0.01, 0.9, 0.999, 1e-8, step)
    ...     optim.adam_update(p, g, m, v, 0.01, 0.9, 0.999, 1e-8, step)
    >>> np.allclose(d_p.copy_to_host(), p), np.allclose(d_v.copy_to_host(), v)
    (True, True)
    """
    step_size, bc2_sqrt = adam_scalars(float(lr), float(beta1), float(beta2), step)
    weight_decay = float(weight_decay)
    l2 = 0.0 if decoupled else weight_decay
    # 1.0 - lr * weight_decay as the CPU kernel computes it; 1.0 (no decay) skips the branch.
    shrink = 1.0 - float(lr) * weight_decay if decoupled and weight_decay != 0.0 else 1.0
    adam_kernel[grid1d(p.shape[0]), config.threads, stream](p, g, m, v, step_size, float(beta1), float(beta2),
                                                           float(eps), bc2_sqrt, l2, shrink)


# ---- one signature for all: what an optimizer class names as its ``cuda_update`` ---------------
# (params, grads, slots, options, step): flat device arrays (P,), the slot buffers by name, the
# CPU optimizer's validated options, and the step count after this update (from 1).

def sgd_step(p, g, slots, o, step):
    """:class:`numbarnn.optimizers.SGD` on the device."""
    sgd_update(p, g, o["lr"], o["weight_decay"])


def momentum_step(p, g, slots, o, step):
    """:class:`numbarnn.optimizers.Momentum` on the device."""
    momentum_update(p, g, slots["velocity"], o["lr"], o["momentum"], o["nesterov"], o["weight_decay"])


def adagrad_step(p, g, slots, o, step):
    """:class:`numbarnn.optimizers.Adagrad` on the device."""
    adagrad_update(p, g, slots["memory"], o["lr"], o["eps"], o["weight_decay"])


def rmsprop_step(p, g, slots, o, step):
    """:class:`numbarnn.optimizers.RMSprop` on the device."""
    rmsprop_update(p, g, slots["square_avg"], o["lr"], o["alpha"], o["eps"], o["weight_decay"])


def adam_step(p, g, slots, o, step):
    """:class:`numbarnn.optimizers.Adam` on the device."""
    adam_update(p, g, slots["exp_avg"], slots["exp_avg_sq"], o["lr"], o["beta1"], o["beta2"], o["eps"], step,
                o["weight_decay"])


def adamw_step(p, g, slots, o, step):
    """:class:`numbarnn.optimizers.AdamW` on the device."""
    adam_update(p, g, slots["exp_avg"], slots["exp_avg_sq"], o["lr"], o["beta1"], o["beta2"], o["eps"], step,
                o["weight_decay"], decoupled=True)


# ---- clipping ----------------------------------------------------------------------------

@cuda.jit
def clip_by_value_kernel(g, max_value):
    """In place, ``np.clip(g, -max_value, max_value)`` of g (P,); NaN stays NaN.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.optim import clip_by_value_kernel
    >>> g = cuda.to_device(np.array([-7.0, 0.5, np.nan, 12.0]))
    >>> clip_by_value_kernel[1, 4](g, 5.0)
    >>> g.copy_to_host().tolist()
    [-5.0, 0.5, nan, 5.0]
    """
    for i in range(cuda.grid(1), g.shape[0], cuda.gridsize(1)):
        if g[i] > max_value:
            g[i] = max_value
        elif g[i] < -max_value:
            g[i] = -max_value


@cuda.jit
def clip_by_norm_kernel(g, norm_sq, clip):
    """torch's clip_grad_norm_: scale by clip / (norm + 1e-6) when that is below 1 (a NaN
    norm scales nothing, an infinite one scales by 0), the norm read on the device.

    g (P,); norm_sq (1,) float64 holding sum(g*g); clip a float.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.optim import clip_by_norm_kernel
    >>> g = cuda.to_device(np.array([3.0, -4.0]))  # norm 5
    >>> clip_by_norm_kernel[1, 4](g, cuda.to_device(np.array([25.0])), 1.0)
    >>> g.copy_to_host().round(6).tolist()
    [0.6, -0.8]
    """
    coef = clip / (math.sqrt(norm_sq[0]) + 1e-6)
    if coef < 1.0:
        for i in range(cuda.grid(1), g.shape[0], cuda.gridsize(1)):
            g[i] *= coef


def clip_by_value(g, max_value, stream=0):
    """Launch :func:`clip_by_value_kernel` over g (P,), a device array, as the CPU kernel.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.optim import clip_by_value
    >>> g = np.random.default_rng(0).normal(scale=3.0, size=10)
    >>> d_g = cuda.to_device(g)
    >>> clip_by_value(d_g, 2.0)
    >>> np.array_equal(d_g.copy_to_host(), np.clip(g, -2.0, 2.0))
    True
    """
    clip_by_value_kernel[grid1d(g.shape[0]), config.threads, stream](g, float(max_value))


def sum_of_squares(g, out, slot=0, partials=None, stream=0):
    """``out[slot] = sum(g*g)`` in float64 on the device.

    g (P,) any float dtype; out a float64 device array; partials as
    :func:`numbarnn.cuda.losses.reduce_sum`.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.optim import sum_of_squares
    >>> out = cuda.device_array(2, np.float64)
    >>> sum_of_squares(cuda.to_device(np.arange(10, dtype=np.float32)), out, 1)
    >>> float(out.copy_to_host()[1])
    285.0
    """
    reduce_sum(g, out, slot, partials, square=True, stream=stream)


def clip_by_norm(g, norm_sq, clip, stream=0):
    """Scale g in place as ``clip_gradients(mode="norm")`` does; ``norm_sq`` (1,) holds sum(g*g).

    g (P,) and norm_sq (1,) float64 are device arrays, so the norm never leaves the device:

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.optim import clip_by_norm, sum_of_squares
    >>> g = np.random.default_rng(0).normal(size=10)
    >>> d_g, norm_sq = cuda.to_device(g), cuda.device_array(1)
    >>> sum_of_squares(d_g, norm_sq)
    >>> clip_by_norm(d_g, norm_sq, 1.0)
    >>> np.allclose(d_g.copy_to_host(), g / (np.linalg.norm(g) + 1e-6))
    True
    """
    clip_by_norm_kernel[grid1d(g.shape[0]), config.threads, stream](g, norm_sq, float(clip))
