"""Optimizer update and gradient-clipping kernels. fastmath stays off: these feed NaN checks.

Every kernel updates one parameter in place through flat views: callers pass
``param.reshape(-1)``, ``grad.reshape(-1)`` and state arrays of the same size (P,),
so one compiled kernel serves every parameter shape. float32 and float64 arrays
both work; scalar hyperparameters are Python floats, so the arithmetic of one
element happens in float64 and is rounded once when stored into a float32 array.

The formulas follow ``torch.optim`` (dampening 0, maximize off) except Adagrad, which is
min-char-rnn's. ``weight_decay`` (default 0) is PyTorch's L2 penalty: the gradient becomes
``g + weight_decay * p``, rounded to the gradient's dtype as PyTorch's ``grad.add(param,
alpha=weight_decay)`` is; Adam's ``decoupled=True`` is AdamW's decay instead, ``p *= 1 - lr
* weight_decay`` before the update. With ``weight_decay == 0`` the branch is never taken, so
the arithmetic (and every bit of the result) is what it was without it.

error_model="numpy": divisions are plain IEEE ones, without the zero-divisor test of
Numba's default that keeps the update loops from being vectorised (8x for Adam).
"""
import math

import numpy as np

from ._jit import jit


@jit(error_model="numpy")
def sgd_update(p, g, lr, weight_decay=0.0):
    """p (P,) -= lr * g (P,), with g + weight_decay * p for g when weight_decay is not 0.

    >>> import numpy as np
    >>> from numbarnn.kernels.optim import sgd_update
    >>> p, g = np.array([1.0, 2.0, 3.0]), np.array([10.0, 0.0, -10.0])
    >>> sgd_update(p, g, 0.1)
    >>> p.tolist()
    [0.0, 2.0, 4.0]
    >>> sgd_update(p, np.zeros(3), 0.1, 0.5)  # weight decay alone shrinks p by lr * weight_decay
    >>> p.tolist()
    [0.0, 1.9, 3.8]
    """
    for i in range(p.shape[0]):
        gi = g[i]
        if weight_decay != 0.0:  # g.dtype.type: rounded to g's dtype, and gi keeps that type
            gi = g.dtype.type(gi + weight_decay * p[i])
        p[i] -= lr * gi


@jit(error_model="numpy")
def momentum_update(p, g, velocity, lr, momentum, nesterov, weight_decay=0.0):
    """PyTorch's SGD with momentum (dampening 0), velocity (P,) starting at zero.

    v = momentum * v + g; the step is v, or g + momentum * v with Nesterov.
    PyTorch sets v = g on the first step; from a zero v the formula gives the same.

    p, g, velocity (P,), one float dtype; nesterov a bool; weight_decay as :func:`sgd_update`.

    >>> import numpy as np
    >>> from numbarnn.kernels.optim import momentum_update
    >>> p, g, velocity = np.zeros(2), np.array([1.0, -2.0]), np.zeros(2)
    >>> for _ in range(2):
    ...     momentum_update(p, g, velocity, 0.1, 0.5, False)
    >>> velocity.tolist(), np.allclose(p, -0.1 * (1 + 1.5) * g)  # steps of g, then 1.5 g
    ([1.5, -3.0], True)
    """
    for i in range(p.shape[0]):
        gi = g[i]
        if weight_decay != 0.0:
            gi = g.dtype.type(gi + weight_decay * p[i])
        v = momentum * velocity[i] + gi
        velocity[i] = v
        if nesterov:
            p[i] -= lr * (gi + momentum * v)
        else:
            p[i] -= lr * v


@jit(error_model="numpy")
def adagrad_update(p, g, memory, lr, eps, weight_decay=0.0):
    """min-char-rnn's Adagrad: memory (P,) += g*g; p -= lr * g / sqrt(memory + eps).

    (PyTorch's Adagrad puts eps outside the square root; the course's form is kept.)

    p, g, memory (P,), one float dtype; weight_decay as :func:`sgd_update`.

    >>> import numpy as np
    >>> from numbarnn.kernels.optim import adagrad_update
    >>> p, g, memory = np.zeros(2), np.array([3.0, -4.0]), np.zeros(2)
    >>> adagrad_update(p, g, memory, 0.1, 1e-8)
    >>> memory.tolist(), np.allclose(p, -0.1 * g / np.sqrt(g * g + 1e-8))
    ([9.0, 16.0], True)
    """
    for i in range(p.shape[0]):
        gi = g[i]
        if weight_decay != 0.0:
            gi = g.dtype.type(gi + weight_decay * p[i])
        mem = memory[i] + gi * gi
        memory[i] = mem
        p[i] -= lr * gi / math.sqrt(mem + eps)


@jit(error_model="numpy")
def rmsprop_update(p, g, square_avg, lr, alpha, eps, weight_decay=0.0):
    """PyTorch's RMSprop (not centered, no momentum): v = alpha v + (1-alpha) g^2;
    p -= lr * g / (sqrt(v) + eps). square_avg (P,) starts at zero.

    p, g, square_avg (P,), one float dtype; weight_decay as :func:`sgd_update`.

    >>> import numpy as np
    >>> from numbarnn.kernels.optim import rmsprop_update
    >>> p, g, square_avg = np.zeros(2), np.array([3.0, -4.0]), np.zeros(2)
    >>> rmsprop_update(p, g, square_avg, 0.01, 0.99, 1e-8)
    >>> v = 0.01 * g * g
    >>> np.allclose(square_avg, v), np.allclose(p, -0.01 * g / (np.sqrt(v) + 1e-8))
    (True, True)
    """
    for i in range(p.shape[0]):
        gi = g[i]
        if weight_decay != 0.0:
            gi = g.dtype.type(gi + weight_decay * p[i])
        v = alpha * square_avg[i] + (1.0 - alpha) * (gi * gi)
        square_avg[i] = v
        p[i] -= lr * (gi / (math.sqrt(v) + eps))


@jit(error_model="numpy")
def adam_update(p, g, m, v, lr, beta1, beta2, eps, step, weight_decay=0.0, decoupled=False):
    """PyTorch's Adam (amsgrad off) with bias correction; ``step`` counts from 1.

    ``weight_decay``: Adam's L2 penalty as :func:`sgd_update`, or with ``decoupled`` AdamW's
    decay, ``p *= 1 - lr * weight_decay`` before the update (PyTorch's ``AdamW``).

    m, v (P,) start at zero. m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    p -= lr / (1 - b1^step) * m / (sqrt(v) / sqrt(1 - b2^step) + eps).

    p, g, m, v (P,), one float dtype. After bias correction the first step moves every
    weight by about lr, against its gradient's sign:

    >>> import numpy as np
    >>> from numbarnn.kernels.optim import adam_update
    >>> rng = np.random.default_rng(0)
    >>> p, g, m, v = np.zeros(4), rng.normal(size=4), np.zeros(4), np.zeros(4)
    >>> adam_update(p, g, m, v, 0.1, 0.9, 0.999, 1e-8, 1)
    >>> np.allclose(p, -0.1 * np.sign(g)), np.allclose(m, 0.1 * g), np.allclose(v, 0.001 * g * g)
    (True, True, True)
    """
    # Float exponent, as PyTorch (which holds step as a float): pow, not repeated products.
    t = np.float64(step)
    step_size = lr / (1.0 - beta1 ** t)
    bc2_sqrt = math.sqrt(1.0 - beta2 ** t)
    l2 = 0.0 if decoupled else weight_decay
    shrink = 1.0 - lr * weight_decay
    for i in range(p.shape[0]):
        gi = g[i]
        if l2 != 0.0:
            gi = g.dtype.type(gi + l2 * p[i])
        elif decoupled and weight_decay != 0.0:
            p[i] *= shrink
        mi = beta1 * m[i] + (1.0 - beta1) * gi
        vi = beta2 * v[i] + (1.0 - beta2) * (gi * gi)
        m[i] = mi
        v[i] = vi
        p[i] -= step_size * (mi / (math.sqrt(vi) / bc2_sqrt + eps))


# ---- clipping -------------------------------------------------------------------------------

@jit(error_model="numpy")
def clip_by_value(g, max_value):
    """In place, the course's ``np.clip(g, -max_value, max_value, out=g)``; NaN stays NaN.

    g (P,) float32 or float64.

    >>> import numpy as np
    >>> from numbarnn.kernels.optim import clip_by_value
    >>> g = np.array([-7.0, 0.5, np.nan, 12.0])
    >>> clip_by_value(g, 5.0)
    >>> g.tolist()
    [-5.0, 0.5, nan, 5.0]
    """
    for i in range(g.shape[0]):
        if g[i] > max_value:
            g[i] = max_value
        elif g[i] < -max_value:
            g[i] = -max_value


@jit(error_model="numpy")
def sum_of_squares(g):
    """sum(g*g) of a flat array in a float64 accumulator, so a caller can add several
    arrays' sums and take one square root for a global norm.

    g (P,) float32 or float64; returns a float.

    >>> import numpy as np
    >>> from numbarnn.kernels.optim import sum_of_squares
    >>> g = np.arange(10, dtype=np.float32)  # more than the eight partial sums
    >>> sum_of_squares(g), float((g.astype(np.float64) ** 2).sum())
    (285.0, 285.0)
    """
    # Eight independent partial sums: without fastmath the compiler may not reorder one
    # running sum, so a single accumulator would serialise on the add latency.
    n = g.shape[0]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    i = 0
    while i + 8 <= n:
        # np.float64, not float(): numba's float() leaves a float32 a float32.
        x0, x1, x2, x3 = np.float64(g[i]), np.float64(g[i + 1]), np.float64(g[i + 2]), np.float64(g[i + 3])
        x4, x5, x6, x7 = np.float64(g[i + 4]), np.float64(g[i + 5]), np.float64(g[i + 6]), np.float64(g[i + 7])
        s0 += x0 * x0
        s1 += x1 * x1
        s2 += x2 * x2
        s3 += x3 * x3
        s4 += x4 * x4
        s5 += x5 * x5
        s6 += x6 * x6
        s7 += x7 * x7
        i += 8
    while i < n:
        x = np.float64(g[i])
        s0 += x * x
        i += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@jit(error_model="numpy")
def clip_flat(g, max_value, by_norm):
    """Clip one flat gradient buffer in place; returns its L2 norm before clipping.

    The trainer's per-step clip in one compiled call: :func:`sum_of_squares`, then
    :func:`clip_by_value` (``by_norm`` False) or PyTorch's norm rule, scaling by
    ``max_value / (norm + 1e-6)`` when that is below 1 (``by_norm`` True). ``max_value
    <= 0`` clips nothing. The same kernels in the same order as
    :func:`numbarnn.optimizers.clip_gradients` on one array, so the same bits.

    g (P,) float32 or float64.

    >>> import numpy as np
    >>> from numbarnn.kernels.optim import clip_flat
    >>> g = np.array([3.0, -10.0, 4.0])
    >>> round(clip_flat(g, 5.0, False), 4), g.tolist()
    (11.1803, [3.0, -5.0, 4.0])
    >>> g = np.array([3.0, 4.0])
    >>> clip_flat(g, 1.0, True), g.round(4).tolist()
    (5.0, [0.6, 0.8])
    """
    norm = np.sqrt(sum_of_squares(g))
    if max_value > 0.0:
        if by_norm:
            coef = max_value / (norm + 1e-6)
            if coef < 1.0:  # PyTorch clamps the coefficient at 1
                scale(g, coef)
        else:
            clip_by_value(g, max_value)
    return norm


@jit(error_model="numpy")
def scale(g, factor):
    """In place g *= factor; g (P,) float32 or float64.

    >>> import numpy as np
    >>> from numbarnn.kernels.optim import scale
    >>> g = np.array([1.0, -2.0, 4.0])
    >>> scale(g, 0.5)
    >>> g.tolist()
    [0.5, -1.0, 2.0]
    """
    for i in range(g.shape[0]):
        g[i] *= factor
