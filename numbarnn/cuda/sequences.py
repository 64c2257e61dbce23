"""Moving time steps on the device: what bidirectional layers and classifiers need.

* :func:`copy_steps` and :func:`reorder_steps` copy a ``(T, B, K)`` array, the second
  with each sequence's steps reversed within its length (the order of
  :func:`numbarnn.sequence_model.reverse_order`, its own inverse), into an array that may
  be a strided view (one half of a bidirectional layer's ``(T, B, 2H)`` output).
* :func:`last_step_features` gathers a classifier's features, each sequence's output at
  its last real step (the reverse direction's at step 0), and
  :func:`last_step_features_backward` puts their gradient back.
* :func:`states_at` copies each sequence's state after its last real step.

Grid-stride kernels of one thread per element, device to device, as
:mod:`numbarnn.cuda.arrays`.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from ._support import config, grid1d
from .arrays import fill

__all__ = ["copy_steps", "reorder_steps", "last_step_features", "last_step_features_backward", "states_at"]


@cuda.jit
def _steps_kernel(src, order, reorder, dst):
    B = dst.shape[1]
    K = dst.shape[2]
    for p in range(cuda.grid(1), dst.shape[0] * B * K, cuda.gridsize(1)):
        t = p // (B * K)
        r = p - t * B * K
        b = r // K
        k = r - b * K
        dst[t, b, k] = src[order[t, b] if reorder else t, b, k]


_NO_ORDER = []  # a placeholder order for plain copies, made at the first one


def _check_same(name, src, dst):
    if src.shape != dst.shape:
        raise ValueError(f"{name}: src has shape {src.shape}, dst {dst.shape}")


def copy_steps(src, dst, stream=0):
    """dst (T, B, K) = src; either may be a strided view (a half of a wider array).

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.sequences import copy_steps
    >>> wide = cuda.to_device(np.zeros((2, 1, 4)))
    >>> copy_steps(cuda.to_device(np.ones((2, 1, 2))), wide[:, :, 2:])  # the right half
    >>> wide.copy_to_host()[:, 0].tolist()
    [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]]
    """
    _check_same("copy_steps", src, dst)
    if not _NO_ORDER:
        _NO_ORDER.append(cuda.device_array((1, 1), np.int64))
    _steps_kernel[grid1d(dst.size), config.threads, stream](src, _NO_ORDER[0], False, dst)


def reorder_steps(src, order, dst, stream=0):
    """dst[t, b] = src[order[t, b], b] for (T, B, K) arrays and an int64 (T, B) ``order``
    whose columns are permutations of the steps (dst must not be src).

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.sequences import reorder_steps
    >>> from numbarnn.sequence_model import reverse_order
    >>> src = np.arange(8.0).reshape(4, 2, 1)  # T 4, B 2, K 1
    >>> order = reverse_order(4, 2, np.array([4, 2]))  # the second sequence has 2 real steps
    >>> dst = cuda.device_array((4, 2, 1))
    >>> reorder_steps(cuda.to_device(src), cuda.to_device(order), dst)
    >>> dst.copy_to_host()[:, :, 0].T.tolist()  # reversed within each length, padding in place
    [[6.0, 4.0, 2.0, 0.0], [3.0, 1.0, 5.0, 7.0]]
    """
    _check_same("reorder_steps", src, dst)
    if tuple(order.shape) != tuple(dst.shape[:2]):
        raise ValueError(f"reorder_steps: order has shape {order.shape}, expected {dst.shape[:2]}")
    _steps_kernel[grid1d(dst.size), config.threads, stream](src, order, True, dst)


@cuda.jit
def _last_step_kernel(outputs, lengths, H, features, backward):
    B = features.shape[0]
    K = features.shape[1]
    for p in range(cuda.grid(1), B * K, cuda.gridsize(1)):
        b = p // K
        k = p - b * K
        t = lengths[b] - 1 if k < H else 0  # the reverse direction (columns H..2H) ends at step 0
        if backward:
            outputs[t, b, k] = features[b, k]
        else:
            features[b, k] = outputs[t, b, k]


def last_step_features(outputs, lengths, H: int, features, stream=0):
    """features (B, D*H): columns ``:H`` from ``outputs[lengths[b] - 1, b]`` (the forward
    direction's last real step), columns ``H:`` (a reverse direction) from ``outputs[0, b]``.

    outputs (T, B, D*H) float, lengths (B,) int64 in [1, T], as
    :meth:`numbarnn.sequence_model.SequenceModel.forward` takes a classifier's features.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.sequences import last_step_features
    >>> outputs = np.arange(12.0).reshape(3, 2, 2)  # T 3, B 2, two directions of H 1
    >>> features = cuda.device_array((2, 2))
    >>> last_step_features(cuda.to_device(outputs), cuda.to_device(np.array([3, 1])), 1, features)
    >>> features.copy_to_host().tolist()  # [outputs[2, 0, 0], outputs[0, 0, 1]], [outputs[0, 1, 0], outputs[0, 1, 1]]
    [[8.0, 1.0], [2.0, 3.0]]
    """
    _last_step_kernel[grid1d(features.size), config.threads, stream](outputs, lengths, H, features, False)


def last_step_features_backward(d_features, lengths, H: int, d_outputs, stream=0):
    """The gradient of :func:`last_step_features`: d_outputs (T, B, D*H) is zero but at the
    steps the features came from, which get ``d_features`` (B, D*H).

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.sequences import last_step_features_backward
    >>> d_outputs = cuda.device_array((3, 1, 2))
    >>> last_step_features_backward(cuda.to_device(np.array([[5.0, 7.0]])), cuda.to_device(np.array([2])), 1,
    ...                             d_outputs)
    >>> d_outputs.copy_to_host()[:, 0].tolist()
    [[0.0, 7.0], [5.0, 0.0], [0.0, 0.0]]
    """
    fill(d_outputs.reshape(d_outputs.size), 0, stream)
    _last_step_kernel[grid1d(d_features.size), config.threads, stream](d_outputs, lengths, H, d_features, True)


@cuda.jit
def _states_at_kernel(states, lengths, out):
    S = out.shape[0]
    B = out.shape[1]
    H = out.shape[2]
    for p in range(cuda.grid(1), S * B * H, cuda.gridsize(1)):
        s = p // (B * H)
        r = p - s * B * H
        b = r // H
        j = r - b * H
        out[s, b, j] = states[s, lengths[b], b, j]


def states_at(states, lengths, out, stream=0):
    """out (S, B, H) = each sequence's state after its last real step, ``states[:, lengths[b], b]``.

    states (S, T+1, B, H) float, lengths (B,) int64 in [1, T].

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.sequences import states_at
    >>> states = np.arange(8.0).reshape(1, 4, 2, 1)  # S 1, T 3, B 2, H 1
    >>> out = cuda.device_array((1, 2, 1))
    >>> states_at(cuda.to_device(states), cuda.to_device(np.array([3, 1])), out)
    >>> out.copy_to_host().ravel().tolist()  # states[0, 3, 0], states[0, 1, 1]
    [6.0, 3.0]
    """
    _states_at_kernel[grid1d(out.size), config.threads, stream](states, lengths, out)
