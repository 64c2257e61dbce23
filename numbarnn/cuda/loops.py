"""The time loops on the GPU: the mirror of :mod:`numbarnn.kernels.loops`.

Same organisation as on the CPU (and in cuDNN): the input projection of every step is
one matrix product (or a row gather for integer inputs) before the loop, the weight
gradients are whole-sequence products after it, and only the recurrence is sequential.

The recurrence is **one fused kernel per step**. A block owns BM batch rows and BJ hidden
units *of every gate* (the columns ``g*H + j`` for all G gates), so once it has computed
its slice of ``hz = h_{t-1} @ W_h.T + b_h`` (a tiled product through shared memory) each
thread holds every gate pre-activation of its elements ``(b, j)`` and calls the cell's
pointwise device function on them directly: no second launch, and no trip through global
memory between the product and the gates. Backward is fused the same way: the block
computes its slice of ``dh = dhz_{t+1} @ W_h``, forms the total state gradient and calls
the cell's pointwise backward, which writes ``dhz_t`` for the next launch.

Two loop strategies run the same tile code (:class:`StepKernels`):

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

Two kinds of step kernel share the loops (``config.step_kernel``): the tiled one above,
and the rowdot one (:func:`_build_rowdot_steps`), where a warp owns one hidden unit and a
few batch rows and its lanes split K. The tiled one leaves most of the GPU idle at small
batches; on an H100 the rowdot one won at batch 1, 4 and 64 (docs/gpu.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from numba import cuda
from numba.np import numpy_support

from ._support import config, grid1d, kernel_cache, simulator
from .cells import cell_key, resolve
from .matmul import gemm

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


def _blocks(n: int) -> int:
    return grid1d(n)


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
    _project_indices_kernel[_blocks(N * GH), config.threads, stream](idx, W_x, b_x, xz2d)


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


# ---- the recurrence: fused step kernels, per cell ------------------------------------------

def _pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


def step_tiles(B: int, H: int, G: int) -> tuple:
    """``(BM, BJ, BK, TM)`` for the fused step: ``config.step_tile`` if set, else a heuristic
    (not yet tuned on a GPU): BM batch rows per block (the batch rounded up to a power of
    two, at most 64), BJ hidden units of every gate, BK the K-slice, TM rows per thread.

    B batch rows, H hidden units, G gates (ints); returns a tuple of four ints.

    >>> from numbarnn.cuda import config
    >>> from numbarnn.cuda.loops import step_tiles
    >>> saved = config.step_tile
    >>> _ = config.update(step_tile=None)  # the heuristic
    >>> step_tiles(1, 100, 4), step_tiles(3, 6, 1), step_tiles(10, 20, 4), step_tiles(100, 256, 4)
    ((1, 32, 16, 1), (4, 8, 16, 1), (16, 16, 16, 2), (64, 16, 16, 4))
    >>> _ = config.update(step_tile=(2, 4, 3, 1))  # set: taken as it is
    >>> step_tiles(100, 256, 4)
    (2, 4, 3, 1)
    >>> _ = config.update(step_tile=saved)
    """
    if config.step_tile is not None:
        return tuple(config.step_tile)
    BM = min(64, _pow2_at_least(B))
    TM = 1 if BM <= 4 else (2 if BM <= 16 else 4)
    BJ = 32 if BM <= 8 else 16
    BJ = min(BJ, _pow2_at_least(H))
    return (BM, BJ, 16, TM)


@dataclass(frozen=True)
class StepKernels:
    """The fused recurrent kernels of one cell, dtype and tile.

    ``forward_step[grid, block](t, xz, W_h, b_h, states, cache, hz)`` computes step t;
    ``forward_persistent[...](T, ntiles, ...)`` all steps. ``backward_step[...](t, T, W,
    states, cache, d_outputs, dstate, dstate_prev, dxz, dhz)`` computes step t of BPTT
    (t = -1 finishes: dstate becomes the gradient of the initial state);
    ``backward_persistent[...](T, t_stop, ntiles, ...)`` runs t = T-1 down to t_stop.
    The backward's ``W`` is ``W_h`` for the tiled kernels and a contiguous ``W_h.T`` for
    the rowdot kernels (:attr:`backward_wants_transpose`); :func:`sequence_backward`
    passes the right one.

    ``kind`` is ``"tiled"`` (``tile = (BM, BJ, BK, TM)``) or ``"rowdot"`` (``tile = (BG,
    WPB)``: batch rows per warp, warps per block). A tile is what one block computes in
    one step; :meth:`ntiles` counts them.

    The arrays, all device arrays of the kernels' dtype: xz ``(T, B, G*H)``, W_h ``(G*H,
    H)``, b_h ``(G*H,)``, states (S, T+1, B, H), cache ``(T, B, max(C, 1)*H)``, hz ``(B,
    G*H)``, d_outputs (T, B, H), dstate and dstate_prev (S, B, H), dxz and dhz ``(T, B,
    G*H)``. A per-step launch is ``[ntiles(B, H), block]``. One forward step of a tiled
    RNN, by hand (:func:`sequence_forward` runs the loop):

    >>> import numpy as np
    >>> from numba import cuda
    >>> import numbarnn
    >>> from numbarnn.cuda import config
    >>> from numbarnn.cuda.loops import StepKernels, step_kernels
    >>> saved = config.step_kernel, config.step_tile
    >>> _ = config.update(step_kernel="tiled", step_tile=(2, 4, 3, 1))
    >>> B, H = 3, 6
    >>> kernels = step_kernels(numbarnn.get_cell("rnn"), np.float64, B, H)
    >>> _ = config.update(step_kernel=saved[0], step_tile=saved[1])
    >>> kernels.kind, kernels.block, kernels.ntiles(B, H), kernels.backward_wants_transpose  # 2 x 2 tiles
    ('tiled', (4, 2), 4, False)
    >>> rng = np.random.default_rng(0)
    >>> xz, W_h, b_h = rng.normal(size=(1, B, H)), rng.normal(size=(H, H)), rng.normal(size=H)
    >>> h0 = rng.normal(size=(B, H))
    >>> states = cuda.to_device(np.stack([h0, np.zeros((B, H))])[None])  # S 1, T 1
    >>> kernels.forward_step[kernels.ntiles(B, H), kernels.block](
    ...     0, cuda.to_device(xz), cuda.to_device(W_h), cuda.to_device(b_h), states,
    ...     cuda.device_array((1, B, H)), cuda.device_array((B, H)))
    >>> np.allclose(states.copy_to_host()[0, 1], np.tanh(xz[0] + h0 @ W_h.T + b_h))
    True
    >>> rowdot = StepKernels(None, None, None, None, tile=(2, 3), kind="rowdot")  # the shapes only
    >>> rowdot.block, rowdot.ntiles(5, 7), rowdot.backward_wants_transpose  # 7 units x 3 row groups: 21 warps
    ((96,), 7, True)
    """

    forward_step: Callable
    forward_persistent: Callable
    backward_step: Callable
    backward_persistent: Callable
    tile: tuple
    kind: str = "tiled"

    @property
    def block(self) -> tuple:
        if self.kind == "rowdot":
            return (32 * self.tile[1],)
        BM, BJ, BK, TM = self.tile
        return (BJ, BM // TM)

    @property
    def backward_wants_transpose(self) -> bool:
        return self.kind == "rowdot"

    def ntiles(self, B: int, H: int) -> int:
        if self.kind == "rowdot":
            BG, WPB = self.tile
            units = H * ((B + BG - 1) // BG)  # a warp per (hidden unit, group of BG batch rows)
            return (units + WPB - 1) // WPB
        BM, BJ = self.tile[0], self.tile[1]
        return ((H + BJ - 1) // BJ) * ((B + BM - 1) // BM)


def _wrap_steps(forward_tile, backward_tile, tile: tuple, kind: str) -> StepKernels:
    """The four kernels (per-step and persistent, each direction) around two tile functions."""

    @cuda.jit
    def forward_step(t, xz, W_h, b_h, states, cache, hz):
        forward_tile(cuda.blockIdx.x, t, xz, W_h, b_h, states, cache, hz)

    @cuda.jit
    def forward_persistent(T, ntiles, xz, W_h, b_h, states, cache, hz):
        grid = cuda.cg.this_grid()
        for t in range(T):
            tile_id = cuda.blockIdx.x
            while tile_id < ntiles:
                forward_tile(tile_id, t, xz, W_h, b_h, states, cache, hz)
                tile_id += cuda.gridDim.x
            grid.sync()

    @cuda.jit
    def backward_step(t, T, W, states, cache, d_outputs, dstate, dstate_prev, dxz, dhz):
        backward_tile(cuda.blockIdx.x, t, T, W, states, cache, d_outputs, dstate, dstate_prev, dxz, dhz)

    @cuda.jit
    def backward_persistent(T, t_stop, ntiles, W, states, cache, d_outputs, dstate, dstate_prev, dxz, dhz):
        grid = cuda.cg.this_grid()
        for t in range(T - 1, t_stop - 1, -1):
            tile_id = cuda.blockIdx.x
            while tile_id < ntiles:
                backward_tile(tile_id, t, T, W, states, cache, d_outputs, dstate, dstate_prev, dxz, dhz)
                tile_id += cuda.gridDim.x
            grid.sync()

    return StepKernels(forward_step, forward_persistent, backward_step, backward_persistent, tile, kind)


def _build_steps(pair, dtype: np.dtype, G: int, S: int, tile: tuple) -> StepKernels:
    BM, BJ, BK, TM = tile
    NTY = BM // TM
    NT = BJ * NTY
    GBJ = G * BJ
    nb_dtype = numpy_support.from_dtype(dtype)
    zero = dtype.type(0)
    cell_forward, cell_backward = pair.forward, pair.backward

    @cuda.jit(device=True)
    def forward_tile(tile_id, t, xz, W_h, b_h, states, cache, hz):
        As = cuda.shared.array((BK, BM), nb_dtype)
        Ws = cuda.shared.array((BK, GBJ), nb_dtype)
        acc = cuda.local.array((TM, G), nb_dtype)
        B = states.shape[2]
        H = states.shape[3]
        nJ = (H + BJ - 1) // BJ
        j0 = (tile_id % nJ) * BJ
        m0 = (tile_id // nJ) * BM
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * BJ + tx
        for i in range(TM):
            for g in range(G):
                acc[i, g] = zero
        for k0 in range(0, H, BK):
            for e in range(tid, BK * BM, NT):
                mm = e // BK
                kk = e - mm * BK
                b = m0 + mm
                k = k0 + kk
                v = zero
                if b < B and k < H:
                    v = states[0, t, b, k]
                As[kk, mm] = v
            for e in range(tid, BK * GBJ, NT):
                c = e // BK
                kk = e - c * BK
                g = c // BJ
                j = j0 + (c - g * BJ)
                k = k0 + kk
                v = zero
                if j < H and k < H:
                    v = W_h[g * H + j, k]
                Ws[kk, c] = v
            cuda.syncthreads()
            for kk in range(BK):
                for i in range(TM):
                    a = As[kk, ty + i * NTY]
                    for g in range(G):
                        acc[i, g] += a * Ws[kk, g * BJ + tx]
            cuda.syncthreads()
        j = j0 + tx
        if j < H:
            xz_t = xz[t]
            cache_t = cache[t]
            for i in range(TM):
                b = m0 + ty + i * NTY
                if b < B:
                    for g in range(G):
                        hz[b, g * H + j] = acc[i, g] + b_h[g * H + j]
                    cell_forward(xz_t, hz, states, t, cache_t, b, j)

    @cuda.jit(device=True)
    def backward_tile(tile_id, t, T, W_h, states, cache, d_outputs, dstate, dstate_prev, dxz, dhz):
        As = cuda.shared.array((BK, BM), nb_dtype)
        Ws = cuda.shared.array((BK, BJ), nb_dtype)
        acc = cuda.local.array(TM, nb_dtype)
        B = states.shape[2]
        H = states.shape[3]
        GH = W_h.shape[0]
        nJ = (H + BJ - 1) // BJ
        j0 = (tile_id % nJ) * BJ
        m0 = (tile_id // nJ) * BM
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * BJ + tx
        for i in range(TM):
            acc[i] = zero
        recurrent = t + 1 < T
        if recurrent:  # dh = dhz_{t+1} @ W_h for this tile (uniform across the block)
            src = dhz[t + 1]
            for k0 in range(0, GH, BK):
                for e in range(tid, BK * BM, NT):
                    mm = e // BK
                    kk = e - mm * BK
                    b = m0 + mm
                    k = k0 + kk
                    v = zero
                    if b < B and k < GH:
                        v = src[b, k]
                    As[kk, mm] = v
                for e in range(tid, BK * BJ, NT):
                    kk = e // BJ
                    jj = e - kk * BJ
                    j = j0 + jj
                    k = k0 + kk
                    v = zero
                    if j < H and k < GH:
                        v = W_h[k, j]
                    Ws[kk, jj] = v
                cuda.syncthreads()
                for kk in range(BK):
                    w = Ws[kk, tx]
                    for i in range(TM):
                        acc[i] += As[kk, ty + i * NTY] * w
                cuda.syncthreads()
        j = j0 + tx
        if j < H:
            for i in range(TM):
                b = m0 + ty + i * NTY
                if b < B:
                    if recurrent:
                        dstate[0, b, j] = dstate_prev[0, b, j] + acc[i]
                        for s in range(1, S):
                            dstate[s, b, j] = dstate_prev[s, b, j]
                    if t >= 0:
                        dstate[0, b, j] += d_outputs[t, b, j]
                        cell_backward(dstate, states, t, cache[t], dxz[t], dhz[t], dstate_prev, b, j)

    return _wrap_steps(forward_tile, backward_tile, tile, "tiled")


_FULL_MASK = 0xFFFFFFFF


def _build_warp_sum():
    """``warp_sum(v, scratch, warp, lane)``: every lane gets the sum of v over its warp.

    A butterfly of ``shfl_xor`` on a GPU (every lane ends with the same bits). The simulator
    has no shuffles, so there the lanes go through ``scratch`` (a ``(warps, 32)`` shared
    array) and each adds the 32 values in lane order: two block barriers, where a
    simulated butterfly would take ten, and barriers are what the simulator pays for.
    Every thread of the block must call it (the barriers), active or not.
    """
    if simulator():
        @cuda.jit(device=True)
        def warp_sum(v, scratch, warp, lane):
            scratch[warp, lane] = v
            cuda.syncthreads()
            total = scratch[warp, 0]
            for other in range(1, 32):
                total += scratch[warp, other]
            cuda.syncthreads()
            return total
    else:
        @cuda.jit(device=True)
        def warp_sum(v, scratch, warp, lane):
            offset = 16
            while offset > 0:
                v = v + cuda.shfl_xor_sync(_FULL_MASK, v, offset)
                offset //= 2
            return v
    return warp_sum


def _build_rowdot_steps(pair, dtype: np.dtype, G: int, S: int, tile: tuple) -> StepKernels:
    """Step kernels for small batches: a warp per (hidden unit j, group of BG batch rows).

    The tiled kernels give a block a tile of batch rows and units, so a batch of one makes
    H / BJ blocks that each walk all of K alone: a few dozen warps on a GPU with
    thousands of slots, waiting on memory. Here each warp computes the G dot products of
    unit j (rows ``g*H + j`` of W_h, read contiguously by its lanes, which splits K 32
    ways) for its BG batch rows, sums across lanes, and lane i then runs the cell's
    pointwise code for batch row ``b0 + i``. H * ceil(B / BG) warps per step; W_h is read
    once per batch group, from L2 after the first step. Backward does the same with the
    rows of ``W_h.T`` (``dh[:, j] = dhz_{t+1} @ W_h[:, j]``).
    """
    BG, WPB = tile
    nb_dtype = numpy_support.from_dtype(dtype)
    zero = dtype.type(0)
    cell_forward, cell_backward = pair.forward, pair.backward
    warp_sum = _build_warp_sum()

    @cuda.jit(device=True)
    def warp_unit(tile_id, H):
        """This thread's warp and lane, and its warp's hidden unit j and first batch row b0."""
        warp = cuda.threadIdx.x // 32
        unit = tile_id * WPB + warp
        return warp, cuda.threadIdx.x % 32, unit % H, (unit // H) * BG

    @cuda.jit(device=True)
    def forward_tile(tile_id, t, xz, W_h, b_h, states, cache, hz):
        scratch = cuda.shared.array((WPB, 32), nb_dtype)
        acc = cuda.local.array((G, BG), nb_dtype)
        w = cuda.local.array(G, nb_dtype)
        B = states.shape[2]
        H = states.shape[3]
        warp, lane, j, b0 = warp_unit(tile_id, H)
        active = b0 < B  # the same for the whole warp; past the last unit b0 >= B
        for g in range(G):
            for i in range(BG):
                acc[g, i] = zero
        if active:
            for k in range(lane, H, 32):
                for g in range(G):
                    w[g] = W_h[g * H + j, k]
                for i in range(BG):
                    b = b0 + i
                    if b < B:
                        h = states[0, t, b, k]
                        for g in range(G):
                            acc[g, i] += w[g] * h
        for g in range(G):
            for i in range(BG):
                acc[g, i] = warp_sum(acc[g, i], scratch, warp, lane)
        b = b0 + lane
        if active and lane < BG and b < B:
            for g in range(G):
                total = zero
                for i in range(BG):  # acc[g, lane] without a dynamic index (keeps acc in registers)
                    if i == lane:
                        total = acc[g, i]
                hz[b, g * H + j] = total + b_h[g * H + j]
            cell_forward(xz[t], hz, states, t, cache[t], b, j)

    @cuda.jit(device=True)
    def backward_tile(tile_id, t, T, W_hT, states, cache, d_outputs, dstate, dstate_prev, dxz, dhz):
        scratch = cuda.shared.array((WPB, 32), nb_dtype)
        acc = cuda.local.array(BG, nb_dtype)
        B = states.shape[2]
        H = states.shape[3]
        GH = W_hT.shape[1]
        warp, lane, j, b0 = warp_unit(tile_id, H)
        active = b0 < B
        for i in range(BG):
            acc[i] = zero
        recurrent = t + 1 < T  # the same for the whole grid
        if recurrent:  # dh[:, j] = dhz_{t+1} @ W_h[:, j] for this warp's batch rows
            if active:
                src = dhz[t + 1]
                for k in range(lane, GH, 32):
                    w = W_hT[j, k]
                    for i in range(BG):
                        b = b0 + i
                        if b < B:
                            acc[i] += w * src[b, k]
            for i in range(BG):
                acc[i] = warp_sum(acc[i], scratch, warp, lane)
        b = b0 + lane
        if active and lane < BG and b < B:
            if recurrent:
                dh = zero
                for i in range(BG):
                    if i == lane:
                        dh = acc[i]
                dstate[0, b, j] = dstate_prev[0, b, j] + dh
                for s in range(1, S):
                    dstate[s, b, j] = dstate_prev[s, b, j]
            if t >= 0:
                dstate[0, b, j] += d_outputs[t, b, j]
                cell_backward(dstate, states, t, cache[t], dxz[t], dhz[t], dstate_prev, b, j)

    return _wrap_steps(forward_tile, backward_tile, tile, "rowdot")


def step_kind(B: int) -> str:
    """``"tiled"`` or ``"rowdot"`` for a batch of B rows: ``config.step_kernel``, where
    ``"auto"`` means rowdot up to ``config.rowdot_max_batch`` rows.

    >>> from numbarnn.cuda import config
    >>> from numbarnn.cuda.loops import step_kind
    >>> saved = config.step_kernel, config.rowdot_max_batch
    >>> _ = config.update(step_kernel="auto", rowdot_max_batch=4)
    >>> [step_kind(B) for B in (1, 4, 5, 64)]
    ['rowdot', 'rowdot', 'tiled', 'tiled']
    >>> _ = config.update(step_kernel="tiled")  # a fixed choice holds for every batch
    >>> step_kind(1)
    'tiled'
    >>> _ = config.update(step_kernel=saved[0], rowdot_max_batch=saved[1])
    """
    if config.step_kernel != "auto":
        return config.step_kernel
    return "rowdot" if B <= config.rowdot_max_batch else "tiled"


def step_kernels(cell, dtype, B: int, H: int) -> StepKernels:
    """The fused step kernels of ``cell`` for this dtype and problem size (cached per tile).

    ``cell`` a :class:`numbarnn.cells.CellSpec` with CUDA kernels, ``dtype`` a float dtype
    (or its name), B batch rows, H hidden units; a :class:`StepKernels` whose kind is
    :func:`step_kind` (B) and whose tile is :func:`step_tiles` (tiled) or ``(min(rowdot_batch,
    B), rowdot_warps)`` (rowdot). Building compiles nothing; the first launch does.

    >>> import numpy as np
    >>> import numbarnn
    >>> from numbarnn.cuda import config
    >>> from numbarnn.cuda.loops import step_kernels, step_tiles
    >>> lstm = numbarnn.get_cell("lstm")
    >>> saved = config.step_kernel
    >>> _ = config.update(step_kernel="rowdot")
    >>> rowdot = step_kernels(lstm, np.float32, 2, 6)
    >>> rowdot.kind, rowdot.tile == (min(config.rowdot_batch, 2), config.rowdot_warps)
    ('rowdot', True)
    >>> _ = config.update(step_kernel="tiled")
    >>> tiled = step_kernels(lstm, np.float32, 2, 6)
    >>> tiled.kind, tiled.tile == step_tiles(2, 6, lstm.gates), tiled is step_kernels(lstm, "float32", 2, 6)
    ('tiled', True, True)
    >>> _ = config.update(step_kernel=saved)
    """
    dtype = np.dtype(dtype)
    kind = step_kind(B)
    if kind == "rowdot":
        tile = (min(config.rowdot_batch, B), config.rowdot_warps)
    else:
        tile = step_tiles(B, H, cell.gates)
    return _build_step_kernels(cell, dtype, kind, tile)


@kernel_cache(key=lambda cell, dtype, kind, tile: cell_key(cell, dtype) + (kind, tile))
def _build_step_kernels(cell, dtype: np.dtype, kind: str, tile: tuple) -> StepKernels:
    build = _build_rowdot_steps if kind == "rowdot" else _build_steps
    return build(resolve(cell), dtype, cell.gates, cell.states, tile)


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
    >>> from numbarnn.cuda.loops import transpose
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
    _transpose_kernel[_blocks(src.size), config.threads, stream](src, dst)


# ---- choosing the loop strategy ------------------------------------------------------------

def resident_blocks(dispatcher, args, block) -> int:
    """How many blocks of this kernel can be resident at once (0: no cooperative launch).

    ``dispatcher`` a ``cuda.jit`` kernel, ``args`` the arguments it will be launched with
    (they pick the specialisation), ``block`` the block shape (a tuple of ints); returns an
    int, cached per kernel, argument types and block. Always 1 on the simulator.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda import simulator
    >>> from numbarnn.cuda.loops import fill_kernel, resident_blocks
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

    ``kernels`` from :func:`step_kernels` for the cell, dtype, B and H; W_h ``(G*H, H)`` and
    b_h ``(G*H,)``; every array of the kernels' dtype. ``loop``: ``"launch"``,
    ``"persistent"``, ``"auto"`` or None for ``config.loop``. Fills ``states[:, 1:]``.

    >>> import numpy as np
    >>> from numba import cuda
    >>> import numbarnn
    >>> from numbarnn.cuda.loops import sequence_forward, step_kernels
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
    >>> from numbarnn.cuda.loops import sequence_backward, sequence_forward, step_kernels
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


# ---- small helpers on device arrays ------------------------------------------------------

@cuda.jit
def fill_kernel(a, value):
    """``fill_kernel[blocks, threads](a, value)``: a[:] = value, grid-stride over a 1-D device array.

    ``value`` a scalar of a's dtype (:func:`fill` casts it and picks the grid).

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.loops import fill_kernel
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
    >>> from numbarnn.cuda.loops import copy_flat
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
    _copy_kernel[_blocks(src.shape[0]), config.threads, stream](src, dst)


def fill(a1d, value, stream=0):
    """a1d[:] = value for a 1-D (or flattened contiguous) device array.

    ``value`` a Python or NumPy scalar, cast to a1d's dtype.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.loops import fill
    >>> a = cuda.device_array((2, 3), np.float32)
    >>> fill(a.reshape(6), 2)  # a flattened view fills the whole array
    >>> np.array_equal(a.copy_to_host(), np.full((2, 3), 2, np.float32))
    True
    """
    fill_kernel[_blocks(a1d.shape[0]), config.threads, stream](a1d, a1d.dtype.type(value))


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
    >>> from numbarnn.cuda.loops import state_out
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
    >>> from numbarnn.cuda.loops import state_in
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
    >>> from numbarnn.cuda.loops import state_copy
    >>> src = np.random.default_rng(0).normal(size=(2, 4, 3, 2))  # T 3
    >>> dst = cuda.to_device(np.zeros((2, 2, 3, 2)))  # T 1
    >>> state_copy(cuda.to_device(src), 3, dst, 0)  # the last state of one run starts the next
    >>> host = dst.copy_to_host()
    >>> np.array_equal(host[:, 0], src[:, 3]), not host[:, 1].any()
    (True, True)
    """
    n = src.shape[0] * src.shape[2] * src.shape[3]
    _state_copy_kernel[_blocks(n), config.threads, stream](src, ts, dst, td)
