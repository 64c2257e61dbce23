"""Optimizer updates and gradient clipping on the GPU: the mirror of :mod:`numbarnn.kernels.optim`.

The trainer keeps every parameter in one flat device buffer (and every gradient and
optimizer slot in buffers of the same layout), so each update or clip is one launch over
all parameters, one thread per element, with the CPU kernel's formula for that element.
Scalar hyperparameters are Python floats (float64 arithmetic per element, rounded once
when stored, as on the CPU); Adam's bias corrections are computed on the host exactly as
the CPU kernel computes them. The squared global gradient norm is reduced on the device
into a float64 device scalar (``norm_sq``), which clipping by norm reads there. fastmath
stays off.
"""
from __future__ import annotations

import math

from numba import cuda

from . import config, grid1d
from .losses import reduce_sum


def _grid(n: int) -> int:
    return grid1d(n)


@cuda.jit
def sgd_kernel(p, g, lr):
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        p[i] -= lr * g[i]


@cuda.jit
def momentum_kernel(p, g, velocity, lr, momentum, nesterov):
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        v = momentum * velocity[i] + g[i]
        velocity[i] = v
        if nesterov:
            p[i] -= lr * (g[i] + momentum * v)
        else:
            p[i] -= lr * v


@cuda.jit
def adagrad_kernel(p, g, memory, lr, eps):
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        gi = g[i]
        mem = memory[i] + gi * gi
        memory[i] = mem
        p[i] -= lr * gi / math.sqrt(mem + eps)


@cuda.jit
def rmsprop_kernel(p, g, square_avg, lr, alpha, eps):
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        gi = g[i]
        v = alpha * square_avg[i] + (1.0 - alpha) * (gi * gi)
        square_avg[i] = v
        p[i] -= lr * (gi / (math.sqrt(v) + eps))


@cuda.jit
def adam_kernel(p, g, m, v, step_size, beta1, beta2, eps, bc2_sqrt):
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        gi = g[i]
        mi = beta1 * m[i] + (1.0 - beta1) * gi
        vi = beta2 * v[i] + (1.0 - beta2) * (gi * gi)
        m[i] = mi
        v[i] = vi
        p[i] -= step_size * (mi / (math.sqrt(vi) / bc2_sqrt + eps))


def adam_scalars(lr: float, beta1: float, beta2: float, step: int):
    """``(step_size, bc2_sqrt)`` exactly as :func:`numbarnn.kernels.optim.adam_update` computes them."""
    t = float(step)
    return lr / (1.0 - beta1 ** t), math.sqrt(1.0 - beta2 ** t)


def sgd_update(p, g, lr, stream=0):
    sgd_kernel[_grid(p.shape[0]), config.threads, stream](p, g, float(lr))


def momentum_update(p, g, velocity, lr, momentum, nesterov, stream=0):
    momentum_kernel[_grid(p.shape[0]), config.threads, stream](p, g, velocity, float(lr), float(momentum),
                                                               bool(nesterov))


def adagrad_update(p, g, memory, lr, eps, stream=0):
    adagrad_kernel[_grid(p.shape[0]), config.threads, stream](p, g, memory, float(lr), float(eps))


def rmsprop_update(p, g, square_avg, lr, alpha, eps, stream=0):
    rmsprop_kernel[_grid(p.shape[0]), config.threads, stream](p, g, square_avg, float(lr), float(alpha),
                                                              float(eps))


def adam_update(p, g, m, v, lr, beta1, beta2, eps, step, stream=0):
    step_size, bc2_sqrt = adam_scalars(float(lr), float(beta1), float(beta2), step)
    adam_kernel[_grid(p.shape[0]), config.threads, stream](p, g, m, v, step_size, float(beta1), float(beta2),
                                                           float(eps), bc2_sqrt)


# ---- clipping ----------------------------------------------------------------------------

@cuda.jit
def clip_by_value_kernel(g, max_value):
    for i in range(cuda.grid(1), g.shape[0], cuda.gridsize(1)):
        if g[i] > max_value:
            g[i] = max_value
        elif g[i] < -max_value:
            g[i] = -max_value


@cuda.jit
def clip_by_norm_kernel(g, norm_sq, clip):
    """torch's clip_grad_norm_: scale by clip / (norm + 1e-6) when that is below 1 (a NaN
    norm scales nothing, an infinite one scales by 0), the norm read on the device."""
    coef = clip / (math.sqrt(norm_sq[0]) + 1e-6)
    if coef < 1.0:
        for i in range(cuda.grid(1), g.shape[0], cuda.gridsize(1)):
            g[i] *= coef


def clip_by_value(g, max_value, stream=0):
    clip_by_value_kernel[_grid(g.shape[0]), config.threads, stream](g, float(max_value))


def sum_of_squares(g, out, slot=0, partials=None, stream=0):
    """``out[slot] = sum(g*g)`` in float64 on the device."""
    reduce_sum(g, out, slot, partials, square=True, stream=stream)


def clip_by_norm(g, norm_sq, clip, stream=0):
    """Scale g in place as ``clip_gradients(mode="norm")`` does; ``norm_sq`` (1,) holds sum(g*g)."""
    clip_by_norm_kernel[_grid(g.shape[0]), config.threads, stream](g, norm_sq, float(clip))
