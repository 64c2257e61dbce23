"""The fused recurrent step kernels of a cell: one kernel per time step, both directions.

A step kernel computes its slice of ``hz = h_{t-1} @ W_h.T + b_h`` and then calls the
cell's pointwise device function on it, in the same kernel: no second launch, and no trip
through global memory between the product and the gates. Backward is fused the same way:
the slice of ``dh = dhz_{t+1} @ W_h``, the total state gradient, then the cell's pointwise
backward, which writes ``dhz_t`` for the next launch.

Two kinds share the same contract (:class:`StepKernels`), picked by
``config.step_kernel`` (:func:`step_kind`):

* ``"tiled"``: a block owns BM batch rows and BJ hidden units *of every gate*, the
  product staged through shared memory;
* ``"rowdot"``: a warp owns one hidden unit and a few batch rows, its lanes splitting K
  and reducing with warp shuffles. The tiled kernel leaves most of the GPU idle at small
  batches; on an H100 rowdot won at batch 1, 4 and 64 (docs/gpu.md).

Each kind's two tile functions are wrapped here into four kernels: a per-step kernel and a
persistent one (the whole sequence in one cooperative launch) for each direction;
:mod:`numbarnn.cuda.loops` picks which to launch. Kernels are built per cell, dtype, kind
and tile, and cached.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from numba import cuda
from numba.np import numpy_support

from ._support import config, kernel_cache, simulator
from .cells import cell_key, resolve

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
    >>> from numbarnn.cuda.steps import step_tiles
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
    the rowdot kernels (:attr:`backward_wants_transpose`);
    :func:`numbarnn.cuda.loops.sequence_backward` passes the right one.

    ``kind`` is ``"tiled"`` (``tile = (BM, BJ, BK, TM)``) or ``"rowdot"`` (``tile = (BG,
    WPB)``: batch rows per warp, warps per block). A tile is what one block computes in
    one step; :meth:`ntiles` counts them.

    The arrays, all device arrays of the kernels' dtype: xz ``(T, B, G*H)``, W_h ``(G*H,
    H)``, b_h ``(G*H,)``, states (S, T+1, B, H), cache ``(T, B, max(C, 1)*H)``, hz ``(B,
    G*H)``, d_outputs (T, B, H), dstate and dstate_prev (S, B, H), dxz and dhz ``(T, B,
    G*H)``. A per-step launch is ``[ntiles(B, H), block]``. One forward step of a tiled
    RNN, by hand (:func:`numbarnn.cuda.loops.sequence_forward` runs the loop):

    >>> import numpy as np
    >>> from numba import cuda
    >>> import numbarnn
    >>> from numbarnn.cuda import config
    >>> from numbarnn.cuda.steps import StepKernels, step_kernels
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
    """The four kernels (per-step and persistent, each direction) around two tile functions.

    ``forward_tile(tile_id, t, ...)`` and ``backward_tile(tile_id, t, T, ...)`` are device
    functions that compute one tile of step t, as :func:`_tiled_tiles` and
    :func:`_rowdot_tiles` build them.
    """

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


# ---- the tiled kind: a block per tile of batch rows and hidden units -----------------------
# The tile functions live in this module, with the kernels that call them: numba's simulator
# swaps the cuda module into a kernel's own module for a whole launch, but into another
# module's once per device-function call, and its simulated threads race on that swap.

def _tiled_tiles(pair, dtype: np.dtype, G: int, S: int, tile: tuple) -> tuple:
    """``(forward_tile, backward_tile)`` of the tiled kernel: a block owns BM batch rows and BJ
    hidden units of every gate.

    Once the block has computed its slice of ``hz = h_{t-1} @ W_h.T + b_h`` (the columns
    ``g*H + j`` for all G gates, a tiled product through shared memory, each thread TM
    rows) each thread holds every gate pre-activation of its elements ``(b, j)`` and calls
    the cell's pointwise device function on them directly. Backward computes the block's
    slice of ``dh = dhz_{t+1} @ W_h`` the same way, then the state gradient and the cell's
    pointwise backward. ``pair`` the cell's :class:`numbarnn.cuda.cells.CudaPointwise`,
    ``dtype`` its float dtype, G gates, S states, ``tile = (BM, BJ, BK, TM)``; the block is
    ``(BJ, BM // TM)`` threads.
    """
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

    return forward_tile, backward_tile


# ---- the rowdot kind: a warp per hidden unit and a few batch rows --------------------------

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


def _rowdot_tiles(pair, dtype: np.dtype, G: int, S: int, tile: tuple) -> tuple:
    """``(forward_tile, backward_tile)`` of the rowdot kernel, for small batches: a warp per
    (hidden unit j, group of BG batch rows).

    ``pair``, ``dtype``, G and S as :func:`_tiled_tiles`; ``tile = (BG, WPB)``: batch rows
    per warp, warps per block (a block of ``32 * WPB`` threads).

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

    return forward_tile, backward_tile


def step_kind(B: int) -> str:
    """``"tiled"`` or ``"rowdot"`` for a batch of B rows: ``config.step_kernel``, where
    ``"auto"`` means rowdot up to ``config.rowdot_max_batch`` rows.

    >>> from numbarnn.cuda import config
    >>> from numbarnn.cuda.steps import step_kind
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
    >>> from numbarnn.cuda.steps import step_kernels, step_tiles
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
    build = _rowdot_tiles if kind == "rowdot" else _tiled_tiles
    forward_tile, backward_tile = build(resolve(cell), dtype, cell.gates, cell.states, tile)
    return _wrap_steps(forward_tile, backward_tile, tile, kind)
