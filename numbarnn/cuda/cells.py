"""CUDA pointwise kernels of the built-in cells, and the factory that builds kernels per cell.

The GPU mirror of :mod:`numbarnn.kernels.cells`. A cell's CUDA pair is two
``@cuda.jit(device=True)`` functions that compute **one element** ``(b, j)``
(batch row b, hidden unit j) of the CPU kernels' loops, with the same arrays:

``forward(xz_t, hz_t, states, t, cache_t, b, j)``
    xz_t, hz_t (B, G*H): the two projections of step t (``hz_t`` includes ``b_h``).
    Reads ``states[:, t, b, j]``; writes ``states[:, t+1, b, j]`` and, for each saved
    block c, ``cache_t[b, c*H + j]``.

``backward(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev, b, j)``
    Reads ``dstate[:, b, j]`` (total gradient w.r.t. ``states[:, t+1]``); writes
    ``dxz_t[b, g*H + j]`` and ``dhz_t[b, g*H + j]`` for every gate g (the same array
    when the cell's ``shared_gate_grad`` is True), and ``dstate_prev[:, b, j]``, the
    *direct* gradient w.r.t. ``states[:, t]`` (the loop adds ``dhz_t @ W_h`` to h's).

A device function touches only its own element's entries, so the loops may run any
elements on any thread and fuse the pointwise step into the recurrent matrix product.

Device functions are not first-class values on the GPU (a kernel cannot take one as an
argument the way an ``@njit`` function can take another), so kernels are built per cell
by small factories that close over the pair, and cached per cell and dtype
(:func:`numbarnn.cuda._support.kernel_cache`): :func:`pointwise_kernels` here (one launch
computes one step over all elements) and the fused step kernels in :mod:`numbarnn.cuda.steps`.

A cell declares its pair lazily, as a dotted path in ``CellSpec.cuda_pointwise``
(``"package.module:NAME"``, NAME a :class:`CudaPointwise`), so that importing numbarnn
or a plugin never imports numba.cuda; :func:`resolve` imports it on first use.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from numba import cuda

from ._support import UnsupportedOnCuda, config, grid1d, kernel_cache


@dataclass(frozen=True)
class CudaPointwise:
    """A cell's CUDA pair: two ``@cuda.jit(device=True)`` functions (see the module docstring).

    A cell names its pair in ``CellSpec.cuda_pointwise``; :func:`resolve` imports it:

    >>> import numbarnn
    >>> from numbarnn.cuda.cells import LSTM_CUDA, CudaPointwise, lstm_backward, lstm_forward, resolve
    >>> LSTM_CUDA == CudaPointwise(forward=lstm_forward, backward=lstm_backward)
    True
    >>> numbarnn.get_cell("lstm").cuda_pointwise, resolve(numbarnn.get_cell("lstm")) is LSTM_CUDA
    ('numbarnn.cuda.cells:LSTM_CUDA', True)
    """

    forward: Callable
    backward: Callable


# ---- activations (the CPU ones branch the same way, so float64 results agree) --------------

@cuda.jit(device=True)
def sigmoid(z):
    """1 / (1 + exp(-z)) of a float32 or float64 scalar, for device code; exp never overflows.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.cells import sigmoid
    >>> @cuda.jit
    ... def sigmoid_all(z, out):
    ...     for i in range(cuda.grid(1), z.shape[0], cuda.gridsize(1)):
    ...         out[i] = sigmoid(z[i])
    >>> z, out = np.array([-800.0, -2.0, 0.0, 2.0, 800.0]), cuda.device_array(5)
    >>> sigmoid_all[1, 4](cuda.to_device(z), out)
    >>> out.copy_to_host().round(4).tolist()
    [0.0, 0.1192, 0.5, 0.8808, 1.0]
    """
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@cuda.jit(device=True)
def tanh(z):
    """tanh(z) of a float32 or float64 scalar, for device code.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.cells import tanh
    >>> @cuda.jit
    ... def tanh_all(z, out):
    ...     for i in range(cuda.grid(1), z.shape[0], cuda.gridsize(1)):
    ...         out[i] = tanh(z[i])
    >>> z, out = np.linspace(-3.0, 3.0, 5), cuda.device_array(5)
    >>> tanh_all[1, 4](cuda.to_device(z), out)
    >>> np.allclose(out.copy_to_host(), np.tanh(z))
    True
    """
    return math.tanh(z)


# ---- tanh RNN: G = 1, S = 1, C = 0 ----------------------------------------------------------

@cuda.jit(device=True)
def rnn_forward(xz_t, hz_t, states, t, cache_t, b, j):
    """Element (b, j) of h_t = tanh(xz_t + hz_t); see the module docstring for the protocol.

    xz_t, hz_t (B, H); states (1, T+1, B, H); cache_t unused. Called by a kernel, one
    thread per element:

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.cells import rnn_forward
    >>> @cuda.jit
    ... def step(xz_t, hz_t, states, cache_t):
    ...     b, j = cuda.grid(2)
    ...     if b < states.shape[2] and j < states.shape[3]:
    ...         rnn_forward(xz_t, hz_t, states, 0, cache_t, b, j)
    >>> rng = np.random.default_rng(0)
    >>> B, H = 2, 3
    >>> xz_t, hz_t = rng.normal(size=(B, H)), rng.normal(size=(B, H))
    >>> states = cuda.to_device(np.zeros((1, 2, B, H)))
    >>> step[1, (B, H)](cuda.to_device(xz_t), cuda.to_device(hz_t), states, cuda.device_array((B, H)))
    >>> np.allclose(states.copy_to_host()[0, 1], np.tanh(xz_t + hz_t))
    True
    """
    states[0, t + 1, b, j] = tanh(xz_t[b, j] + hz_t[b, j])


@cuda.jit(device=True)
def rnn_backward(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev, b, j):
    """Element (b, j) of :func:`numbarnn.kernels.cells.rnn_backward`.

    dstate, dstate_prev (1, B, H); states (1, T+1, B, H); dxz_t, dhz_t (B, H). Launched
    here over every element by :func:`pointwise_kernels`, against the CPU kernel:

    >>> import numpy as np
    >>> from numba import cuda
    >>> import numbarnn
    >>> from numbarnn.cuda.cells import pointwise_kernels
    >>> from numbarnn.kernels import cells
    >>> rng = np.random.default_rng(0)
    >>> B, H = 2, 3
    >>> states, dstate = np.tanh(rng.normal(size=(1, 2, B, H))), rng.normal(size=(1, B, H))
    >>> d = [cuda.device_array((B, H)), cuda.device_array((B, H)), cuda.device_array((1, B, H))]
    >>> kernels = pointwise_kernels(numbarnn.get_cell("rnn"), np.float64)
    >>> kernels.backward(cuda.to_device(dstate), cuda.to_device(states), 0, cuda.device_array((B, H)), *d)
    >>> expected = [np.empty((B, H)), np.empty((B, H)), np.empty((1, B, H))]
    >>> cells.rnn_backward(dstate, states, 0, np.empty((B, 0)), *expected)
    >>> [np.allclose(a.copy_to_host(), b) for a, b in zip(d, expected)]
    [True, True, True]
    """
    h = states[0, t + 1, b, j]
    dz = dstate[0, b, j] * (1.0 - h * h)
    dxz_t[b, j] = dz
    dhz_t[b, j] = dz
    dstate_prev[0, b, j] = 0.0


# ---- LSTM: G = 4 (i, f, g, o), S = 2 (h, c), C = 5 (i, f, g, o, tanh c) -------------------

@cuda.jit(device=True)
def lstm_forward(xz_t, hz_t, states, t, cache_t, b, j):
    """Element (b, j) of :func:`numbarnn.kernels.cells.lstm_forward` (PyTorch's LSTM step).

    xz_t, hz_t (B, 4H) in gate order i, f, g, o; states (2, T+1, B, H) (h, then c);
    cache_t (B, 5H): i, f, g, o and tanh(c_t). Against the CPU kernel:

    >>> import numpy as np
    >>> from numba import cuda
    >>> import numbarnn
    >>> from numbarnn.cuda.cells import pointwise_kernels
    >>> from numbarnn.kernels import cells
    >>> rng = np.random.default_rng(0)
    >>> B, H = 2, 3
    >>> xz_t, hz_t, states = rng.normal(size=(B, 4 * H)), rng.normal(size=(B, 4 * H)), rng.normal(size=(2, 2, B, H))
    >>> d_states, d_cache = cuda.to_device(states), cuda.device_array((B, 5 * H))
    >>> kernels = pointwise_kernels(numbarnn.get_cell("lstm"), np.float64)
    >>> kernels.forward(cuda.to_device(xz_t), cuda.to_device(hz_t), d_states, 0, d_cache)
    >>> cache_t = np.empty((B, 5 * H))
    >>> cells.lstm_forward(xz_t, hz_t, states, 0, cache_t)
    >>> np.allclose(d_states.copy_to_host(), states), np.allclose(d_cache.copy_to_host(), cache_t)
    (True, True)
    """
    H = states.shape[3]
    i = sigmoid(xz_t[b, j] + hz_t[b, j])
    f = sigmoid(xz_t[b, H + j] + hz_t[b, H + j])
    g = tanh(xz_t[b, 2 * H + j] + hz_t[b, 2 * H + j])
    o = sigmoid(xz_t[b, 3 * H + j] + hz_t[b, 3 * H + j])
    c = f * states[1, t, b, j] + i * g
    tc = tanh(c)
    states[1, t + 1, b, j] = c
    states[0, t + 1, b, j] = o * tc
    cache_t[b, j] = i
    cache_t[b, H + j] = f
    cache_t[b, 2 * H + j] = g
    cache_t[b, 3 * H + j] = o
    cache_t[b, 4 * H + j] = tc


@cuda.jit(device=True)
def lstm_backward(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev, b, j):
    """Element (b, j) of :func:`numbarnn.kernels.cells.lstm_backward`.

    dstate, dstate_prev (2, B, H); states (2, T+1, B, H) and cache_t (B, 5H) as the
    forward left them; dxz_t, dhz_t (B, 4H). Against the CPU kernel:

    >>> import numpy as np
    >>> from numba import cuda
    >>> import numbarnn
    >>> from numbarnn.cuda.cells import pointwise_kernels
    >>> from numbarnn.kernels import cells
    >>> rng = np.random.default_rng(0)
    >>> B, H = 2, 3
    >>> states, cache_t = rng.normal(size=(2, 2, B, H)), np.empty((B, 5 * H))
    >>> cells.lstm_forward(rng.normal(size=(B, 4 * H)), rng.normal(size=(B, 4 * H)), states, 0, cache_t)
    >>> dstate = rng.normal(size=(2, B, H))
    >>> d = [cuda.device_array((B, 4 * H)), cuda.device_array((B, 4 * H)), cuda.device_array((2, B, H))]
    >>> kernels = pointwise_kernels(numbarnn.get_cell("lstm"), np.float64)
    >>> kernels.backward(cuda.to_device(dstate), cuda.to_device(states), 0, cuda.to_device(cache_t), *d)
    >>> expected = [np.empty((B, 4 * H)), np.empty((B, 4 * H)), np.empty((2, B, H))]
    >>> cells.lstm_backward(dstate, states, 0, cache_t, *expected)
    >>> [np.allclose(a.copy_to_host(), b) for a, b in zip(d, expected)]
    [True, True, True]
    """
    H = states.shape[3]
    i = cache_t[b, j]
    f = cache_t[b, H + j]
    g = cache_t[b, 2 * H + j]
    o = cache_t[b, 3 * H + j]
    tc = cache_t[b, 4 * H + j]
    dh = dstate[0, b, j]
    dc = dstate[1, b, j] + dh * o * (1.0 - tc * tc)
    di = dc * g * i * (1.0 - i)
    df = dc * states[1, t, b, j] * f * (1.0 - f)
    dg = dc * i * (1.0 - g * g)
    do = dh * tc * o * (1.0 - o)
    dxz_t[b, j] = di
    dxz_t[b, H + j] = df
    dxz_t[b, 2 * H + j] = dg
    dxz_t[b, 3 * H + j] = do
    dhz_t[b, j] = di
    dhz_t[b, H + j] = df
    dhz_t[b, 2 * H + j] = dg
    dhz_t[b, 3 * H + j] = do
    dstate_prev[0, b, j] = 0.0
    dstate_prev[1, b, j] = dc * f


RNN_CUDA = CudaPointwise(forward=rnn_forward, backward=rnn_backward)
LSTM_CUDA = CudaPointwise(forward=lstm_forward, backward=lstm_backward)


# ---- resolving a cell's pair -------------------------------------------------------------

def resolve(cell) -> CudaPointwise:
    """The :class:`CudaPointwise` a cell names in ``cuda_pointwise``, imported now.

    A cell without one (or naming something that is not a pair) is a clear
    :class:`~numbarnn.cuda.UnsupportedOnCuda` error saying how to add one.

    >>> import dataclasses
    >>> import numbarnn
    >>> from numbarnn.cuda.cells import RNN_CUDA, resolve
    >>> rnn = numbarnn.get_cell("rnn")
    >>> resolve(rnn) is RNN_CUDA
    True
    >>> resolve(dataclasses.replace(rnn, name="cpu_only", cuda_pointwise=None))
    Traceback (most recent call last):
        ...
    numbarnn.cuda.UnsupportedOnCuda: cell 'cpu_only' has no CUDA kernels, so it cannot run with device='cuda' ...
    >>> from numbarnn.cells import ParamSpec, ones
    >>> resolve(dataclasses.replace(rnn, name="gained", params=(ParamSpec("gain", ("H",), ones),)))
    Traceback (most recent call last):
        ...
    numbarnn.cuda.UnsupportedOnCuda: cell 'gained' has parameters of its own (gain): the CUDA backend runs ...
    """
    path = getattr(cell, "cuda_pointwise", None)
    name = getattr(cell, "name", repr(cell))
    own = ", ".join(getattr(p, "name", str(p)) for p in getattr(cell, "params", ()))
    lacks = [what for what, flag in (("no recurrent weights", "recurrent_weights"),
                                     ("no projection biases", "projection_biases")) if not getattr(cell, flag, True)]
    if own or lacks:
        what = f"parameters of its own ({own})" if own else lacks[0]
        raise UnsupportedOnCuda(
            f"cell {name!r} has {what}: the CUDA backend runs cells made of the four fused weights "
            "(W_x, W_h, b_x, b_h) only, so it cannot run with device='cuda' (it runs on device='cpu'; "
            "see docs/plugins.md)")
    if not path:
        raise UnsupportedOnCuda(
            f"cell {name!r} has no CUDA kernels, so it cannot run with device='cuda' (it runs on "
            "device='cpu'). A cell supplies them by setting CellSpec.cuda_pointwise to "
            "'package.module:NAME', NAME a numbarnn.cuda.cells.CudaPointwise of two "
            "@cuda.jit(device=True) functions (see docs/gpu.md)")
    module_name, sep, attr = str(path).partition(":")
    if not sep or not module_name or not attr:
        raise UnsupportedOnCuda(f"cell {name!r}: cuda_pointwise must be 'package.module:NAME', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnsupportedOnCuda(f"cell {name!r}: cannot import {module_name!r} named by its "
                                f"cuda_pointwise {path!r}: {exc}") from exc
    try:
        pair = getattr(module, attr)
    except AttributeError:
        raise UnsupportedOnCuda(f"cell {name!r}: module {module_name!r} has no {attr!r} "
                                f"(its cuda_pointwise is {path!r})") from None
    if isinstance(pair, tuple) and len(pair) == 2:
        pair = CudaPointwise(*pair)
    if not (callable(getattr(pair, "forward", None)) and callable(getattr(pair, "backward", None))):
        raise UnsupportedOnCuda(f"cell {name!r}: {path!r} must be a CudaPointwise (forward, backward), "
                                f"got {type(pair).__name__}")
    return pair


def cell_key(cell, dtype) -> tuple:
    """Cache key of the kernels built for one cell and dtype: (name, cuda_pointwise, dtype name).

    >>> import numpy as np
    >>> import numbarnn
    >>> from numbarnn.cuda.cells import cell_key
    >>> cell_key(numbarnn.get_cell("lstm"), np.float32)
    ('lstm', 'numbarnn.cuda.cells:LSTM_CUDA', 'float32')
    """
    return (cell.name, getattr(cell, "cuda_pointwise", None), np.dtype(dtype).name)


# ---- one launch per step over all elements: the factory --------------------------------------


@dataclass(frozen=True)
class PointwiseKernels:
    """Launchers of a cell's pair over every element of one step (B*H threads).

    ``forward(xz_t, hz_t, states, t, cache_t)`` and
    ``backward(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev)`` take the same
    arguments as the CPU kernels (device arrays) and launch one kernel each, on
    ``stream`` (default 0). Shapes: xz_t, hz_t, dxz_t, dhz_t (B, G*H); states
    (S, T+1, B, H); cache_t (B, C*H), at least one column wide; dstate, dstate_prev
    (S, B, H). One step of the RNN, forward then backward:

    >>> import numpy as np
    >>> from numba import cuda
    >>> import numbarnn
    >>> from numbarnn.cuda.cells import pointwise_kernels
    >>> rng = np.random.default_rng(0)
    >>> B, H = 2, 3
    >>> z, dh = rng.normal(size=(B, H)), rng.normal(size=(1, B, H))
    >>> states, cache_t = cuda.to_device(np.zeros((1, 2, B, H))), cuda.device_array((B, H))
    >>> kernels = pointwise_kernels(numbarnn.get_cell("rnn"), np.float64)
    >>> kernels.forward(cuda.to_device(z), cuda.to_device(np.zeros((B, H))), states, 0, cache_t)
    >>> dz, dstate_prev = cuda.device_array((B, H)), cuda.device_array((1, B, H))
    >>> kernels.backward(cuda.to_device(dh), states, 0, cache_t, dz, dz, dstate_prev)
    >>> np.allclose(dz.copy_to_host(), dh[0] * (1 - np.tanh(z) ** 2))
    True
    """

    forward_kernel: Callable
    backward_kernel: Callable
    threads: int

    def _grid(self, states):
        return grid1d(states.shape[2] * states.shape[3])

    def forward(self, xz_t, hz_t, states, t, cache_t, stream=0):
        """Launch the cell's forward over every (b, j) of step t."""
        self.forward_kernel[self._grid(states), self.threads, stream](xz_t, hz_t, states, t, cache_t)

    def backward(self, dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev, stream=0):
        """Launch the cell's backward over every (b, j) of step t."""
        self.backward_kernel[self._grid(states), self.threads, stream](
            dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev)


@kernel_cache(key=lambda cell, dtype, threads: cell_key(cell, dtype) + (threads,))
def _build_pointwise(cell, dtype, threads: int) -> PointwiseKernels:
    pair = resolve(cell)
    cell_forward, cell_backward = pair.forward, pair.backward

    @cuda.jit
    def forward_kernel(xz_t, hz_t, states, t, cache_t):
        H = states.shape[3]
        for i in range(cuda.grid(1), states.shape[2] * H, cuda.gridsize(1)):
            cell_forward(xz_t, hz_t, states, t, cache_t, i // H, i % H)

    @cuda.jit
    def backward_kernel(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev):
        H = states.shape[3]
        for i in range(cuda.grid(1), states.shape[2] * H, cuda.gridsize(1)):
            cell_backward(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev, i // H, i % H)

    return PointwiseKernels(forward_kernel, backward_kernel, threads)


def pointwise_kernels(cell, dtype) -> PointwiseKernels:
    """The per-step pointwise kernels of ``cell`` for ``dtype``, built once and cached.

    Returns a :class:`PointwiseKernels` (see there for a launch); the cache is keyed by
    :func:`cell_key` and ``config.threads``.

    >>> import numpy as np
    >>> import numbarnn
    >>> from numbarnn.cuda import config
    >>> from numbarnn.cuda.cells import pointwise_kernels
    >>> kernels = pointwise_kernels(numbarnn.get_cell("lstm"), np.float32)
    >>> kernels is pointwise_kernels(numbarnn.get_cell("lstm"), np.float32), kernels.threads == config.threads
    (True, True)
    """
    return _build_pointwise(cell, dtype, config.threads)
