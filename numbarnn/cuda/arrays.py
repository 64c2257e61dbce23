"""Small helpers on device arrays: fill, copy, multiply, add, transpose, and copies of recurrent states.

Grid-stride kernels of one thread per element (``config.threads`` threads a block, at
most ``config.max_blocks`` blocks), device to device: nothing here copies to the host.
"""
from __future__ import annotations

from numba import cuda

from ._support import config, grid1d

@cuda.jit
def fill_kernel(a, value):
    """``fill_kernel[blocks, threads](a, value)``: a[:] = value, grid-stride over a 1-D device array.

    ``value`` a scalar of a's dtype (:func:`fill` casts it and picks the grid).

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.arrays import fill_kernel
    >>> a = cuda.device_array(5)
    >>> fill_kernel[1, 2](a, 1.5)  # 2 threads cover 5 elements
    >>> a.copy_to_host().tolist()
    [1.5, 1.5, 1.5, 1.5, 1.5]
    """
    for i in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        a[i] = value


@cuda.jit
def _copy_kernel(src, dst):
    for i in range(cuda.grid(1), src.shape[0], cuda.gridsize(1)):
        dst[i] = src[i]


def copy_flat(src, dst, stream=0):
    """dst[:] = src for two 1-D device arrays of the same size (device to device).

    Same shape and dtype; different shapes are a ValueError.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.arrays import copy_flat
    >>> src, dst = cuda.to_device(np.arange(5.0)), cuda.device_array(5)
    >>> copy_flat(src, dst)
    >>> dst.copy_to_host().tolist()
    [0.0, 1.0, 2.0, 3.0, 4.0]
    >>> copy_flat(src, cuda.device_array(4))
    Traceback (most recent call last):
        ...
    ValueError: copy_flat: shapes differ, (5,) and (4,)
    """
    if src.shape != dst.shape:
        raise ValueError(f"copy_flat: shapes differ, {src.shape} and {dst.shape}")
    _copy_kernel[grid1d(src.shape[0]), config.threads, stream](src, dst)


def fill(a1d, value, stream=0):
    """a1d[:] = value for a 1-D (or flattened contiguous) device array.

    ``value`` a Python or NumPy scalar, cast to a1d's dtype.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.arrays import fill
    >>> a = cuda.device_array((2, 3), np.float32)
    >>> fill(a.reshape(6), 2)  # a flattened view fills the whole array
    >>> np.array_equal(a.copy_to_host(), np.full((2, 3), 2, np.float32))
    True
    """
    fill_kernel[grid1d(a1d.shape[0]), config.threads, stream](a1d, a1d.dtype.type(value))


@cuda.jit
def _multiply_kernel(a, b, out):
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[i] = a[i] * b[i]


def multiply(a1d, b1d, out1d, stream=0):
    """out1d[:] = a1d * b1d, element by element (out1d may be a1d: in place).

    1-D (or flattened contiguous) device arrays of one shape and dtype; different shapes
    are a ValueError. Dropout between stacked layers uses it, forward and backward.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.arrays import multiply
    >>> a = cuda.to_device(np.arange(5.0))
    >>> multiply(a, cuda.to_device(np.full(5, 2.0)), a)
    >>> a.copy_to_host().tolist()
    [0.0, 2.0, 4.0, 6.0, 8.0]
    >>> multiply(a, cuda.device_array(4), a)
    Traceback (most recent call last):
        ...
    ValueError: multiply: shapes differ, (5,), (4,) and (5,)
    """
    if not a1d.shape == b1d.shape == out1d.shape:
        raise ValueError(f"multiply: shapes differ, {a1d.shape}, {b1d.shape} and {out1d.shape}")
    _multiply_kernel[grid1d(out1d.shape[0]), config.threads, stream](a1d, b1d, out1d)


@cuda.jit
def _add_kernel(a, out):
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[i] += a[i]


def add(a1d, out1d, stream=0):
    """out1d[:] += a1d, element by element (the two directions' input gradients, summed).

    1-D (or flattened contiguous) device arrays of one shape and dtype.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.arrays import add
    >>> out = cuda.to_device(np.arange(3.0))
    >>> add(cuda.to_device(np.full(3, 0.5)), out)
    >>> out.copy_to_host().tolist()
    [0.5, 1.5, 2.5]
    """
    if a1d.shape != out1d.shape:
        raise ValueError(f"add: shapes differ, {a1d.shape} and {out1d.shape}")
    _add_kernel[grid1d(out1d.shape[0]), config.threads, stream](a1d, out1d)


@cuda.jit
def _transpose_kernel(src, dst):
    R = src.shape[0]
    C = src.shape[1]
    for p in range(cuda.grid(1), R * C, cuda.gridsize(1)):
        c = p // R
        r = p - c * R  # neighbouring threads write neighbouring elements of dst
        dst[c, r] = src[r, c]


def transpose(src, dst, stream=0):
    """dst (C, R) = src (R, C).T, device to device.

    Two 2-D device arrays of one dtype; a dst of another shape is a ValueError.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.arrays import transpose
    >>> src = np.arange(6.0).reshape(2, 3)
    >>> dst = cuda.device_array((3, 2))
    >>> transpose(cuda.to_device(src), dst)
    >>> np.array_equal(dst.copy_to_host(), src.T)
    True
    >>> transpose(cuda.to_device(src), cuda.device_array((2, 3)))
    Traceback (most recent call last):
        ...
    ValueError: transpose: dst has shape (2, 3), expected (3, 2)
    """
    if dst.shape != (src.shape[1], src.shape[0]):
        raise ValueError(f"transpose: dst has shape {dst.shape}, expected {(src.shape[1], src.shape[0])}")
    _transpose_kernel[grid1d(src.size), config.threads, stream](src, dst)


@cuda.jit
def _state_copy_kernel(src, ts, dst, td):
    S = src.shape[0]
    B = src.shape[2]
    H = src.shape[3]
    for p in range(cuda.grid(1), S * B * H, cuda.gridsize(1)):
        s = p // (B * H)
        r = p - s * B * H
        b = r // H
        j = r - b * H
        dst[s, td, b, j] = src[s, ts, b, j]


def state_out(states, t, out, stream=0):
    """out (S, B, H) = states[:, t].

    states (S, T+1, B, H) and out device arrays of one dtype; t an int in [0, T].

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.arrays import state_out
    >>> states = np.random.default_rng(0).normal(size=(2, 4, 3, 2))  # S 2, T 3, B 3, H 2
    >>> out = cuda.device_array((2, 3, 2))
    >>> state_out(cuda.to_device(states), 3, out)  # the final state
    >>> np.array_equal(out.copy_to_host(), states[:, 3])
    True
    """
    S, B, H = out.shape
    state_copy(states, t, out.reshape((S, 1, B, H)), 0, stream)  # out as a one-step state array


def state_in(src, states, t, stream=0):
    """states[:, t] = src (S, B, H).

    states (S, T+1, B, H) and src device arrays of one dtype; t an int in [0, T].

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.arrays import state_in
    >>> src = np.random.default_rng(0).normal(size=(2, 3, 2))
    >>> states = cuda.to_device(np.zeros((2, 4, 3, 2)))
    >>> state_in(cuda.to_device(src), states, 0)  # the initial state
    >>> host = states.copy_to_host()
    >>> np.array_equal(host[:, 0], src), not host[:, 1:].any()  # the rest untouched
    (True, True)
    """
    S, B, H = src.shape
    state_copy(src.reshape((S, 1, B, H)), 0, states, t, stream)  # src as a one-step state array


def state_copy(src, ts, dst, td, stream=0):
    """dst[:, td] = src[:, ts] for two (S, T+1, B, H) state arrays of the same S, B, H.

    Device arrays of one dtype; their T may differ, and they may be the same array.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.arrays import state_copy
    >>> src = np.random.default_rng(0).normal(size=(2, 4, 3, 2))  # T 3
    >>> dst = cuda.to_device(np.zeros((2, 2, 3, 2)))  # T 1
    >>> state_copy(cuda.to_device(src), 3, dst, 0)  # the last state of one run starts the next
    >>> host = dst.copy_to_host()
    >>> np.array_equal(host[:, 0], src[:, 3]), not host[:, 1].any()
    (True, True)
    """
    n = src.shape[0] * src.shape[2] * src.shape[3]
    _state_copy_kernel[grid1d(n), config.threads, stream](src, ts, dst, td)
