"""The time loops on the GPU: the mirror of :mod:`numbarnn.kernels.loops`.

Same organisation as on the CPU (and in cuDNN): the input projection of every step is
one matrix product (or a row gather for integer inputs) before the loop, the weight
gradients are whole-sequence products after it, and only the recurrence is sequential.

The recurrence runs a cell's fused step kernels (:mod:`numbarnn.cuda.steps`: one kernel
per step computes the recurrent product and the cell's pointwise code together) in one
of two loop strategies:

* ``"launch"``: one kernel launch per time step (per direction); the launch boundary is
  the grid-wide barrier between steps. Works everywhere, any grid size.
* ``"persistent"``: one cooperative launch for the whole sequence; each block loops
  over its tiles and the grid synchronises (``cuda.cg.this_grid().sync()``) between
  steps, saving a launch per step. It needs the grid to be resident at once; with more
  tiles than resident blocks the blocks loop over several tiles per step.

``config.loop = "auto"`` takes the persistent kernel for batches up to
``config.persistent_max_batch`` rows, else per-step launches (on the simulator, which
runs cooperative grids of one block only, always per-step launches).
``benchmarks/gpu_check.py`` times both.
"""
from __future__ import annotations

import numpy as np
from numba import cuda
from numba.np import numpy_support

from ._support import config, grid1d, kernel_cache, simulator
from .arrays import transpose
from .matmul import gemm
from .steps import StepKernels

# ---- input projection ------------------------------------------------------------------------


def project_dense(x2d, W_x, b_x, xz2d, stream=0):
    """x2d (N, X) -> xz2d (N, G*H) = x2d @ W_x.T + b_x.

    Device arrays of one float dtype: x2d ``(N, X)`` with N = T*B, W_x ``(G*H, X)``, b_x
    ``(G*H,)``, xz2d ``(N, G*H)`` (written). One :func:`numbarnn.cuda.matmul.gemm` call.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.loops import project_dense
    >>> rng = np.random.default_rng(0)
    >>> x2d, W_x, b_x = rng.normal(size=(4, 3)), rng.normal(size=(2, 3)), rng.normal(size=2)
    >>> xz2d = cuda.device_array((4, 2))
    >>> project_dense(cuda.to_device(x2d), cuda.to_device(W_x), cuda.to_device(b_x), xz2d)
    >>> np.allclose(xz2d.copy_to_host(), x2d @ W_x.T + b_x)
    True
    """
    gemm(x2d, W_x, xz2d, bias=b_x, trans_b=True, stream=stream)


@cuda.jit
def _project_indices_kernel(idx, W_x, b_x, xz2d):
    N = xz2d.shape[0]
    GH = xz2d.shape[1]
    for p in range(cuda.grid(1), N * GH, cuda.gridsize(1)):
        n = p // GH
        k = p - n * GH
        i = idx[n]
        if i < 0:
            xz2d[n, k] = b_x[k]
        else:
            xz2d[n, k] = W_x[k, i] + b_x[k]


def project_indices(idx, W_x, b_x, xz2d, stream=0):
    """idx (N,) integer inputs (one-hot, never materialised); -1 is an all-zero input.

    Device arrays: idx ``(N,)`` integers in [-1, V), W_x ``(G*H, V)`` and b_x ``(G*H,)`` of
    one float dtype; writes xz2d ``(N, G*H)``, row n being ``W_x[:, idx[n]] + b_x``.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.loops import project_indices
    >>> rng = np.random.default_rng(0)
    >>> idx = np.array([2, -1, 0, 2], np.int64)
    >>> W_x, b_x = rng.normal(size=(2, 3)), rng.normal(size=2)
    >>> xz2d = cuda.device_array((4, 2))
    >>> project_indices(cuda.to_device(idx), cuda.to_device(W_x), cuda.to_device(b_x), xz2d)
    >>> onehot = np.eye(3)[idx] * (idx >= 0)[:, None]
    >>> np.allclose(xz2d.copy_to_host(), onehot @ W_x.T + b_x)
    True
    """
    N, GH = xz2d.shape
    _project_indices_kernel[grid1d(N * GH), config.threads, stream](idx, W_x, b_x, xz2d)


# ---- weight gradients, hoisted out of the loop -------------------------------------------

def _colsum_shape() -> tuple:
    """Block of the column sums: CW columns x CR row slices (32 x 8 with 256 threads)."""
    cw = min(32, config.threads)
    return cw, max(1, config.threads // cw)


@kernel_cache
def _build_column_sums(dtype: np.dtype, CW: int, CR: int):
    nb_dtype = numpy_support.from_dtype(dtype)
    zero = dtype.type(0)

    @cuda.jit
    def column_sums_kernel(a2d, out):
        partial = cuda.shared.array((CR, CW), nb_dtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        k = cuda.blockIdx.x * CW + tx
        N = a2d.shape[0]
        K = a2d.shape[1]
        s = zero
        if k < K:
            for n in range(ty, N, CR):
                s += a2d[n, k]
        partial[ty, tx] = s
        cuda.syncthreads()
        if ty == 0 and k < K:
            total = zero
            for r in range(CR):
                total += partial[r, tx]
            out[k] = total

    return column_sums_kernel


def column_sums(a2d, out, stream=0):
    """out (K,) = sum over the rows of a2d (N, K): a block sums CW columns in CR row slices.

    Device arrays of one dtype, which is also the accumulator's; ``ceil(K / CW)`` blocks of
    ``config.threads`` threads (CW = min(32, threads) columns, CR = threads / CW row slices).

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.loops import column_sums
    >>> a2d = np.arange(15.0).reshape(3, 5)
    >>> out = cuda.device_array(5)
    >>> column_sums(cuda.to_device(a2d), out)
    >>> out.copy_to_host().tolist(), np.array_equal(out.copy_to_host(), a2d.sum(axis=0))
    ([15.0, 18.0, 21.0, 24.0, 27.0], True)
    """
    CW, CR = _colsum_shape()
    kernel = _build_column_sums(np.dtype(a2d.dtype), CW, CR)
    K = a2d.shape[1]
    kernel[(K + CW - 1) // CW, (CW, CR), stream](a2d, out)


def recurrent_weight_gradients(dhz2d, h_prev2d, dW_h, db_h, stream=0):
    """dW_h = dHZ^T H_prev, db_h = sum dHZ over all steps; dhz2d (N, G*H), h_prev2d (N, H).

    Device arrays of one float dtype, N = T*B; writes dW_h ``(G*H, H)`` and db_h ``(G*H,)``.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.loops import recurrent_weight_gradients
    >>> rng = np.random.default_rng(0)
    >>> dhz2d, h_prev2d = rng.normal(size=(4, 6)), rng.normal(size=(4, 2))  # G 3, H 2
    >>> dW_h, db_h = cuda.device_array((6, 2)), cuda.device_array(6)
    >>> recurrent_weight_gradients(cuda.to_device(dhz2d), cuda.to_device(h_prev2d), dW_h, db_h)
    >>> np.allclose(dW_h.copy_to_host(), dhz2d.T @ h_prev2d), np.allclose(db_h.copy_to_host(), dhz2d.sum(axis=0))
    (True, True)
    """
    gemm(dhz2d, h_prev2d, dW_h, trans_a=True, stream=stream)
    column_sums(dhz2d, db_h, stream=stream)


def input_weight_gradients_dense(dxz2d, x2d, W_x, dW_x, db_x, dx2d, stream=0):
    """dW_x = dXZ^T X, db_x = sum dXZ, dX = dXZ W_x.

    Device arrays of one float dtype: dxz2d ``(N, G*H)``, x2d (N, X), W_x ``(G*H, X)``;
    writes dW_x ``(G*H, X)``, db_x ``(G*H,)`` and dx2d (N, X), or skips dX when dx2d is None.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.loops import input_weight_gradients_dense
    >>> rng = np.random.default_rng(0)
    >>> dxz2d, x2d, W_x = rng.normal(size=(4, 2)), rng.normal(size=(4, 3)), rng.normal(size=(2, 3))
    >>> dW_x, db_x, dx2d = cuda.device_array((2, 3)), cuda.device_array(2), cuda.device_array((4, 3))
    >>> input_weight_gradients_dense(cuda.to_device(dxz2d), cuda.to_device(x2d), cuda.to_device(W_x),
    ...                              dW_x, db_x, dx2d)
    >>> (np.allclose(dW_x.copy_to_host(), dxz2d.T @ x2d), np.allclose(db_x.copy_to_host(), dxz2d.sum(axis=0)),
    ...  np.allclose(dx2d.copy_to_host(), dxz2d @ W_x))
    (True, True, True)
    """
    gemm(dxz2d, x2d, dW_x, trans_a=True, stream=stream)
    column_sums(dxz2d, db_x, stream=stream)
    if dx2d is not None:
        gemm(dxz2d, W_x, dx2d, stream=stream)


def index_segments(idx: np.ndarray, vocab: int):
    """Host side, with the batch: ``order`` (N,) sorts the rows by input index (stably, so
    rows of one index stay in time order) and ``starts`` (V+1,) bounds each index's run;
    rows with index -1 come first and belong to no run. Lets the device compute the
    scatter-add ``dW_x = dXZ^T onehot(idx)`` as V independent, deterministic sums.

    idx: any integer array of N = T*B entries in [-1, V) (flattened); both results are
    host int64 arrays. The rows of index i are ``order[starts[i]:starts[i + 1]]``.

    >>> import numpy as np
    >>> from numbarnn.cuda.loops import index_segments
    >>> order, starts = index_segments(np.array([2, -1, 0, 2, 0]), vocab=3)
    >>> order.tolist(), starts.tolist()
    ([1, 2, 4, 0, 3], [1, 3, 3, 5])
    >>> [order[starts[i]:starts[i + 1]].tolist() for i in range(3)]  # index 1 never occurs
    [[2, 4], [], [0, 3]]
    """
    idx = np.asarray(idx).reshape(-1)
    order = np.argsort(idx, kind="stable").astype(np.int64)
    starts = np.searchsorted(idx[order], np.arange(vocab + 1), side="left").astype(np.int64)
    return order, starts


@kernel_cache
def _build_segment_sums(dtype: np.dtype):
    zero = dtype.type(0)

    @cuda.jit
    def segment_sums_kernel(dxz2d, order, starts, dW_x):
        GH = dW_x.shape[0]
        V = dW_x.shape[1]
        for p in range(cuda.grid(1), GH * V, cuda.gridsize(1)):
            i = p // GH
            k = p - i * GH  # neighbouring threads: neighbouring columns of dxz2d
            s = zero
            for r in range(starts[i], starts[i + 1]):
                s += dxz2d[order[r], k]
            dW_x[k, i] = s

    return segment_sums_kernel


def input_weight_gradients_indices(dxz2d, order, starts, dW_x, db_x, stream=0):
    """dW_x = dXZ^T onehot(idx) from :func:`index_segments`; inputs -1 contribute nothing.

    Device arrays: dxz2d ``(N, G*H)`` float, order ``(N,)`` and starts ``(V+1,)`` int64;
    writes dW_x ``(G*H, V)`` and db_x ``(G*H,)`` (db_x sums every row, -1 inputs too).

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.loops import index_segments, input_weight_gradients_indices
    >>> rng = np.random.default_rng(0)
    >>> dxz2d, idx = rng.normal(size=(4, 2)), np.array([1, -1, 1, 0], np.int64)
    >>> order, starts = index_segments(idx, vocab=3)
    >>> dW_x, db_x = cuda.device_array((2, 3)), cuda.device_array(2)
    >>> input_weight_gradients_indices(cuda.to_device(dxz2d), cuda.to_device(order), cuda.to_device(starts),
    ...                                dW_x, db_x)
    >>> onehot = np.eye(3)[idx] * (idx >= 0)[:, None]
    >>> np.allclose(dW_x.copy_to_host(), dxz2d.T @ onehot), np.allclose(db_x.copy_to_host(), dxz2d.sum(axis=0))
    (True, True)
    """
    GH, V = dW_x.shape
    kernel = _build_segment_sums(np.dtype(dW_x.dtype))
    kernel[grid1d(GH * V), config.threads, stream](dxz2d, order, starts, dW_x)
    column_sums(dxz2d, db_x, stream=stream)


# ---- the recurrence: per-step launches or one persistent launch ---------------------------

def resident_blocks(dispatcher, args, block) -> int:
    """How many blocks of this kernel can be resident at once (0: no cooperative launch).

    ``dispatcher`` a ``cuda.jit`` kernel, ``args`` the arguments it will be launched with
    (they pick the specialisation), ``block`` the block shape (a tuple of ints); returns an
    int, cached per kernel, argument types and block. Always 1 on the simulator.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda import simulator
    >>> from numbarnn.cuda.arrays import fill_kernel
    >>> from numbarnn.cuda.loops import resident_blocks
    >>> n = resident_blocks(fill_kernel, (cuda.device_array(8), np.float64(0)), (4,))
    >>> n == 1 if simulator() else n >= 0  # a GPU's count depends on the GPU
    True
    """
    if simulator():
        return 1  # the simulator runs cooperative grids of one block only
    try:
        return _max_cooperative_blocks(dispatcher, tuple(dispatcher.typeof_pyval(a) for a in args), tuple(block))
    except Exception:  # noqa: BLE001 - no cooperative launch on this device/driver: per-step launches
        return 0


@kernel_cache(key=lambda dispatcher, argtypes, block: (id(dispatcher), argtypes, block))
def _max_cooperative_blocks(dispatcher, argtypes: tuple, block: tuple) -> int:
    return int(dispatcher.compile(argtypes).max_cooperative_grid_blocks(block))


def _strategy(loop, ntiles, dispatcher, args, block, batch):
    """-> (use_persistent, grid) for the persistent kernel."""
    loop = config.loop if loop is None else loop
    if loop == "launch" or (loop == "auto" and simulator()):
        return False, ntiles
    resident = resident_blocks(dispatcher, args, block)
    if loop == "persistent":
        if resident < 1:
            raise RuntimeError("loop='persistent' needs cooperative launches, which this device or "
                               "driver does not support; use loop='launch'")
        return True, min(ntiles, resident)
    # "auto": persistent for small batches, where a launch per step costs more than the
    # step (on an H100: 4.1 vs 10.7 ms at batch 1, 6.9 vs 11.2 ms at batch 4); per-step
    # launches for large ones (40.7 vs 51.4 ms at batch 64). Blocks loop over the tiles
    # when the grid does not fit, so fitting is not required.
    if resident >= 1 and batch <= config.persistent_max_batch:
        return True, min(ntiles, resident)
    return False, ntiles


def sequence_forward(kernels: StepKernels, xz, W_h, b_h, states, cache, hz, loop=None, stream=0):
    """Run the fused forward over T steps (device arrays).

    xz (T, B, G*H); states (S, T+1, B, H) with ``states[:, 0]`` set to the initial state;
    cache (T, B, max(C, 1)*H); hz (B, G*H) scratch for the recurrent projection.

    ``kernels`` from :func:`numbarnn.cuda.steps.step_kernels` for the cell, dtype, B and
    H; W_h ``(G*H, H)`` and b_h ``(G*H,)``; every array of the kernels' dtype. ``loop``:
    ``"launch"``, ``"persistent"``, ``"auto"`` or None for ``config.loop``. Fills
    ``states[:, 1:]``.

    >>> import numpy as np
    >>> from numba import cuda
    >>> import numbarnn
    >>> from numbarnn.cuda.loops import sequence_forward
    >>> from numbarnn.cuda.steps import step_kernels
    >>> rng = np.random.default_rng(0)
    >>> T, B, H = 3, 2, 2
    >>> xz, W_h, b_h = rng.normal(size=(T, B, H)), rng.normal(size=(H, H)), rng.normal(size=H)
    >>> states = cuda.to_device(np.zeros((1, T + 1, B, H)))  # h_0 = 0
    >>> kernels = step_kernels(numbarnn.get_cell("rnn"), np.float64, B, H)
    >>> sequence_forward(kernels, cuda.to_device(xz), cuda.to_device(W_h), cuda.to_device(b_h), states,
    ...                  cuda.device_array((T, B, H)), cuda.device_array((B, H)))
    >>> h = np.zeros((B, H))
    >>> for t in range(T):
    ...     h = np.tanh(xz[t] + h @ W_h.T + b_h)
    >>> np.allclose(states.copy_to_host()[0, T], h)
    True
    """
    T = xz.shape[0]
    B, H = states.shape[2], states.shape[3]
    ntiles = kernels.ntiles(B, H)
    block = kernels.block
    args = (T, ntiles, xz, W_h, b_h, states, cache, hz)
    persistent, grid = _strategy(loop, ntiles, kernels.forward_persistent, args, block, B)
    if persistent:
        kernels.forward_persistent[grid, block, stream](*args)
        return
    launch = kernels.forward_step[ntiles, block, stream]
    for t in range(T):
        launch(t, xz, W_h, b_h, states, cache, hz)


def sequence_backward(kernels: StepKernels, W_h, states, cache, d_outputs, dstate, dstate_prev, dxz, dhz,
                      initial_gradient=True, loop=None, stream=0, W_hT=None):
    """Backpropagation through time (device arrays).

    d_outputs (T, B, H): upstream gradient of every hidden state h_1..h_T. dstate (S, B, H):
    on entry the gradient w.r.t. the final state (zeros if none); on exit, with
    ``initial_gradient``, the gradient w.r.t. the initial state. dstate_prev (S, B, H) is
    scratch. dxz, dhz (T, B, G*H) receive the gradients of the two projections (the same
    array when the cell's ``shared_gate_grad`` is True). W_hT (H, G*H): scratch for the
    transposed weights that rowdot kernels read (allocated here when not given).

    W_h ``(G*H, H)``; kernels, states and cache as :func:`sequence_forward` used and left
    them; every array of the kernels' dtype. ``loop`` as there.

    >>> import numpy as np
    >>> from numba import cuda
    >>> import numbarnn
    >>> from numbarnn.cuda.loops import sequence_backward, sequence_forward
    >>> from numbarnn.cuda.steps import step_kernels
    >>> rng = np.random.default_rng(0)
    >>> T, B, H = 3, 2, 2
    >>> xz, W_h, d_outputs = rng.normal(size=(T, B, H)), rng.normal(size=(H, H)), rng.normal(size=(T, B, H))
    >>> kernels = step_kernels(numbarnn.get_cell("rnn"), np.float64, B, H)
    >>> states, cache = cuda.to_device(np.zeros((1, T + 1, B, H))), cuda.device_array((T, B, H))
    >>> d_W_h = cuda.to_device(W_h)
    >>> sequence_forward(kernels, cuda.to_device(xz), d_W_h, cuda.to_device(np.zeros(H)), states, cache,
    ...                  cuda.device_array((B, H)))
    >>> dstate, dxz = cuda.to_device(np.zeros((1, B, H))), cuda.device_array((T, B, H))
    >>> sequence_backward(kernels, d_W_h, states, cache, cuda.to_device(d_outputs), dstate,
    ...                   cuda.device_array((1, B, H)), dxz, dxz)  # the RNN shares dxz and dhz
    >>> h, dz, dh = states.copy_to_host()[0], np.empty((T, B, H)), np.zeros((B, H))
    >>> for t in reversed(range(T)):  # the same by hand, newest step first
    ...     dz[t] = (dh + d_outputs[t]) * (1 - h[t + 1] ** 2)
    ...     dh = dz[t] @ W_h
    >>> np.allclose(dxz.copy_to_host(), dz), np.allclose(dstate.copy_to_host()[0], dh)  # dh: w.r.t. h_0
    (True, True)
    """
    T = d_outputs.shape[0]
    B, H = states.shape[2], states.shape[3]
    ntiles = kernels.ntiles(B, H)
    block = kernels.block
    t_stop = -1 if initial_gradient else 0
    if kernels.backward_wants_transpose:
        if W_hT is None:
            W_hT = cuda.device_array((W_h.shape[1], W_h.shape[0]), W_h.dtype)
        transpose(W_h, W_hT, stream=stream)
        W_h = W_hT
    args = (T, t_stop, ntiles, W_h, states, cache, d_outputs, dstate, dstate_prev, dxz, dhz)
    persistent, grid = _strategy(loop, ntiles, kernels.backward_persistent, args, block, B)
    if persistent:
        kernels.backward_persistent[grid, block, stream](*args)
        return
    launch = kernels.backward_step[ntiles, block, stream]
    for t in range(T - 1, t_stop - 1, -1):
        launch(t, T, W_h, states, cache, d_outputs, dstate, dstate_prev, dxz, dhz)
