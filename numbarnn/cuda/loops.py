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

``config.loop = "auto"`` takes the persistent kernel when every tile gets its own
resident block, else per-step launches (on the simulator, which runs cooperative grids
of one block only, always per-step launches). ``benchmarks/gpu_check.py`` times both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from numba import cuda
from numba.np import numpy_support

from . import config, grid1d, simulator
from .cells import cell_key, resolve
from .matmul import gemm

# ---- input projection ------------------------------------------------------------------------


def project_dense(x2d, W_x, b_x, xz2d, stream=0):
    """x2d (N, X) -> xz2d (N, G*H) = x2d @ W_x.T + b_x."""
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
    """idx (N,) integer inputs (one-hot, never materialised); -1 is an all-zero input."""
    N, GH = xz2d.shape
    _project_indices_kernel[_blocks(N * GH), config.threads, stream](idx, W_x, b_x, xz2d)


# ---- weight gradients, hoisted out of the loop -------------------------------------------

def _colsum_shape() -> tuple:
    """Block of the column sums: CW columns x CR row slices (32 x 8 with 256 threads)."""
    cw = min(32, config.threads)
    return cw, max(1, config.threads // cw)


def _build_column_sums(dtype, CW: int, CR: int):
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


_COLSUMS = {}


def column_sums(a2d, out, stream=0):
    """out (K,) = sum over the rows of a2d (N, K): a block sums CW columns in CR row slices."""
    dtype = np.dtype(a2d.dtype)
    CW, CR = _colsum_shape()
    kernel = _COLSUMS.get((dtype.name, CW, CR))
    if kernel is None:
        kernel = _COLSUMS[dtype.name, CW, CR] = _build_column_sums(dtype, CW, CR)
    K = a2d.shape[1]
    kernel[(K + CW - 1) // CW, (CW, CR), stream](a2d, out)


def recurrent_weight_gradients(dhz2d, h_prev2d, dW_h, db_h, stream=0):
    """dW_h = dHZ^T H_prev, db_h = sum dHZ over all steps; dhz2d (N, G*H), h_prev2d (N, H)."""
    gemm(dhz2d, h_prev2d, dW_h, trans_a=True, stream=stream)
    column_sums(dhz2d, db_h, stream=stream)


def input_weight_gradients_dense(dxz2d, x2d, W_x, dW_x, db_x, dx2d, stream=0):
    """dW_x = dXZ^T X, db_x = sum dXZ, dX = dXZ W_x."""
    gemm(dxz2d, x2d, dW_x, trans_a=True, stream=stream)
    column_sums(dxz2d, db_x, stream=stream)
    if dx2d is not None:
        gemm(dxz2d, W_x, dx2d, stream=stream)


def index_segments(idx: np.ndarray, vocab: int):
    """Host side, with the batch: ``order`` (N,) sorts the rows by input index (stably, so
    rows of one index stay in time order) and ``starts`` (V+1,) bounds each index's run;
    rows with index -1 come first and belong to no run. Lets the device compute the
    scatter-add ``dW_x = dXZ^T onehot(idx)`` as V independent, deterministic sums."""
    idx = np.asarray(idx).reshape(-1)
    order = np.argsort(idx, kind="stable").astype(np.int64)
    starts = np.searchsorted(idx[order], np.arange(vocab + 1), side="left").astype(np.int64)
    return order, starts


def _build_segment_sums(dtype):
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


_SEGMENT_SUMS = {}


def input_weight_gradients_indices(dxz2d, order, starts, dW_x, db_x, stream=0):
    """dW_x = dXZ^T onehot(idx) from :func:`index_segments`; inputs -1 contribute nothing."""
    GH, V = dW_x.shape
    dtype = np.dtype(dW_x.dtype)
    kernel = _SEGMENT_SUMS.get(dtype.name)
    if kernel is None:
        kernel = _SEGMENT_SUMS[dtype.name] = _build_segment_sums(dtype)
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
    two, at most 64), BJ hidden units of every gate, BK the K-slice, TM rows per thread."""
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
    ``forward_persistent[...](T, ntiles, ...)`` all steps. ``backward_step[...](t, T, W_h,
    states, cache, d_outputs, dstate, dstate_prev, dxz, dhz)`` computes step t of BPTT
    (t = -1 finishes: dstate becomes the gradient of the initial state);
    ``backward_persistent[...](T, t_stop, ntiles, ...)`` runs t = T-1 down to t_stop.
    """

    forward_step: Callable
    forward_persistent: Callable
    backward_step: Callable
    backward_persistent: Callable
    tile: tuple

    @property
    def block(self) -> tuple:
        BM, BJ, BK, TM = self.tile
        return (BJ, BM // TM)

    def ntiles(self, B: int, H: int) -> int:
        BM, BJ = self.tile[0], self.tile[1]
        return ((H + BJ - 1) // BJ) * ((B + BM - 1) // BM)


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

    @cuda.jit
    def backward_step(t, T, W_h, states, cache, d_outputs, dstate, dstate_prev, dxz, dhz):
        backward_tile(cuda.blockIdx.x, t, T, W_h, states, cache, d_outputs, dstate, dstate_prev, dxz, dhz)

    @cuda.jit
    def backward_persistent(T, t_stop, ntiles, W_h, states, cache, d_outputs, dstate, dstate_prev, dxz, dhz):
        grid = cuda.cg.this_grid()
        for t in range(T - 1, t_stop - 1, -1):
            tile_id = cuda.blockIdx.x
            while tile_id < ntiles:
                backward_tile(tile_id, t, T, W_h, states, cache, d_outputs, dstate, dstate_prev, dxz, dhz)
                tile_id += cuda.gridDim.x
            grid.sync()

    return StepKernels(forward_step, forward_persistent, backward_step, backward_persistent, tile)


_STEPS = {}


def step_kernels(cell, dtype, B: int, H: int) -> StepKernels:
    """The fused step kernels of ``cell`` for this dtype and problem size (cached per tile)."""
    dtype = np.dtype(dtype)
    tile = step_tiles(B, H, cell.gates)
    key = cell_key(cell, dtype) + (tile,)
    kernels = _STEPS.get(key)
    if kernels is None:
        kernels = _STEPS[key] = _build_steps(resolve(cell), dtype, cell.gates, cell.states, tile)
    return kernels


# ---- choosing the loop strategy ------------------------------------------------------------

_RESIDENT = {}


def resident_blocks(dispatcher, args, block) -> int:
    """How many blocks of this kernel can be resident at once (0: no cooperative launch)."""
    if simulator():
        return 1  # the simulator runs cooperative grids of one block only
    try:
        argtypes = tuple(dispatcher.typeof_pyval(a) for a in args)
        key = (id(dispatcher), argtypes, tuple(block))
        if key not in _RESIDENT:
            kernel = dispatcher.compile(argtypes)
            _RESIDENT[key] = int(kernel.max_cooperative_grid_blocks(block))
        return _RESIDENT[key]
    except Exception:  # noqa: BLE001 - no cooperative launch on this device/driver: per-step launches
        return 0


def _strategy(loop, ntiles, dispatcher, args, block):
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
    return resident >= ntiles, ntiles


def sequence_forward(kernels: StepKernels, xz, W_h, b_h, states, cache, hz, loop=None, stream=0):
    """Run the fused forward over T steps (device arrays).

    xz (T, B, G*H); states (S, T+1, B, H) with ``states[:, 0]`` set to the initial state;
    cache (T, B, max(C, 1)*H); hz (B, G*H) scratch for the recurrent projection.
    """
    T = xz.shape[0]
    B, H = states.shape[2], states.shape[3]
    ntiles = kernels.ntiles(B, H)
    block = kernels.block
    args = (T, ntiles, xz, W_h, b_h, states, cache, hz)
    persistent, grid = _strategy(loop, ntiles, kernels.forward_persistent, args, block)
    if persistent:
        kernels.forward_persistent[grid, block, stream](*args)
        return
    launch = kernels.forward_step[ntiles, block, stream]
    for t in range(T):
        launch(t, xz, W_h, b_h, states, cache, hz)


def sequence_backward(kernels: StepKernels, W_h, states, cache, d_outputs, dstate, dstate_prev, dxz, dhz,
                      initial_gradient=True, loop=None, stream=0):
    """Backpropagation through time (device arrays).

    d_outputs (T, B, H): upstream gradient of every hidden state h_1..h_T. dstate (S, B, H):
    on entry the gradient w.r.t. the final state (zeros if none); on exit, with
    ``initial_gradient``, the gradient w.r.t. the initial state. dstate_prev (S, B, H) is
    scratch. dxz, dhz (T, B, G*H) receive the gradients of the two projections (the same
    array when the cell's ``shared_gate_grad`` is True).
    """
    T = d_outputs.shape[0]
    B, H = states.shape[2], states.shape[3]
    ntiles = kernels.ntiles(B, H)
    block = kernels.block
    t_stop = -1 if initial_gradient else 0
    args = (T, t_stop, ntiles, W_h, states, cache, d_outputs, dstate, dstate_prev, dxz, dhz)
    persistent, grid = _strategy(loop, ntiles, kernels.backward_persistent, args, block)
    if persistent:
        kernels.backward_persistent[grid, block, stream](*args)
        return
    launch = kernels.backward_step[ntiles, block, stream]
    for t in range(T - 1, t_stop - 1, -1):
        launch(t, T, W_h, states, cache, d_outputs, dstate, dstate_prev, dxz, dhz)


# ---- small helpers on device arrays ------------------------------------------------------

@cuda.jit
def fill_kernel(a, value):
    for i in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        a[i] = value


@cuda.jit
def _copy_kernel(src, dst):
    for i in range(cuda.grid(1), src.shape[0], cuda.gridsize(1)):
        dst[i] = src[i]


def copy_flat(src, dst, stream=0):
    """dst[:] = src for two 1-D device arrays of the same size (device to device)."""
    if src.shape != dst.shape:
        raise ValueError(f"copy_flat: shapes differ, {src.shape} and {dst.shape}")
    _copy_kernel[_blocks(src.shape[0]), config.threads, stream](src, dst)


def fill(a1d, value, stream=0):
    """a1d[:] = value for a 1-D (or flattened contiguous) device array."""
    fill_kernel[_blocks(a1d.shape[0]), config.threads, stream](a1d, a1d.dtype.type(value))


@cuda.jit
def _state_out_kernel(states, t, out):
    S = out.shape[0]
    B = out.shape[1]
    H = out.shape[2]
    for p in range(cuda.grid(1), S * B * H, cuda.gridsize(1)):
        s = p // (B * H)
        r = p - s * B * H
        b = r // H
        j = r - b * H
        out[s, b, j] = states[s, t, b, j]


@cuda.jit
def _state_in_kernel(src, states, t):
    S = src.shape[0]
    B = src.shape[1]
    H = src.shape[2]
    for p in range(cuda.grid(1), S * B * H, cuda.gridsize(1)):
        s = p // (B * H)
        r = p - s * B * H
        b = r // H
        j = r - b * H
        states[s, t, b, j] = src[s, b, j]


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
    """out (S, B, H) = states[:, t]."""
    _state_out_kernel[_blocks(out.size), config.threads, stream](states, t, out)


def state_in(src, states, t, stream=0):
    """states[:, t] = src (S, B, H)."""
    _state_in_kernel[_blocks(src.size), config.threads, stream](src, states, t)


def state_copy(src, ts, dst, td, stream=0):
    """dst[:, td] = src[:, ts] for two (S, T+1, B, H) state arrays of the same S, B, H."""
    n = src.shape[0] * src.shape[2] * src.shape[3]
    _state_copy_kernel[_blocks(n), config.threads, stream](src, ts, dst, td)
