"""Batch checks that run before data reaches the other kernels.

A bad index inside an ``@njit`` kernel reads another row's memory or crashes, so every
index batch is range-checked at the Python boundary. Doing the check and the transpose to
time-major order in one compiled pass costs about a microsecond, where NumPy's
``min``, ``max`` and copy cost several: it matters for the course-size models, whose
whole training step takes tens of microseconds.
"""
import numpy as np

from ._jit import jit


@jit
def time_major_indices(batch, low, high, out):
    """Copy ``batch`` (B, T) of integers into ``out`` (T, B) int64, checking ``low <= v < high``.

    Returns -1 when every value is in range, else the flat (row-major) position in
    ``batch`` of the first value outside it; ``out`` is then partly written.

    >>> import numpy as np
    >>> batch = np.array([[3, 1, -1], [0, 2, 4]])
    >>> out = np.empty((3, 2), np.int64)
    >>> time_major_indices(batch, -1, 5, out), np.array_equal(out, batch.T)
    (-1, True)
    >>> time_major_indices(batch, 0, 5, out)  # -1 is below 0: position 2
    2
    """
    B, T = batch.shape
    for b in range(B):
        for t in range(T):
            value = batch[b, t]
            if value < low or value >= high:
                return b * T + t
            out[t, b] = value
    return -1
