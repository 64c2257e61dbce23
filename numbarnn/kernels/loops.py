"""The time loops shared by every cell, forward and backward through time.

Only the recurrence is sequential. The input projection of all steps is one
matrix product (or a row gather for integer inputs) before the loop, and the
weight gradients are two whole-sequence products after BPTT, as in cuDNN/oneDNN.
The recurrence itself runs in each cell's own compiled copy of the loops,
``loops_for(cell).sequence_forward`` and ``.sequence_backward`` (the template is
:mod:`numbarnn.kernels.cell_loops`), which may also be called from your own ``@njit`` code.
"""
import contextlib
import hashlib
import linecache
import os
import re
import sys
import tempfile
import threading
import types
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
from numba import types as numba_types
from numba.extending import overload

from ..trust import UnsafeCacheWarning, enable_verified_cache, private_directory
from ._jit import jit
from .tiles import VECTOR_BYTES, pack_panels, panel_width, takes_layouts, tiled_product, tiled_product_in_place


# ---- the whole-sequence products ------------------------------------------------------------

#: With AVX-512 tiles (:data:`numbarnn.kernels.tiles.VECTOR_BYTES` 64) the whole-sequence
#: products (the input projection of dense inputs, the head, the weight gradients) take the
#: tiled product too, ``M`` packed at each call, when the product has at least
#: WHOLE_TILED_MIN_ROWS rows of ``out`` (the rows the packing is paid back over), a depth of
#: at least WHOLE_TILED_MIN_DEPTH (shallower products are bound by their stores, where the
#: tiles took 1.4-3x BLAS's time) and at least WHOLE_TILED_MIN_COLUMNS columns (one column
#: wastes all but one lane of a vector: 2.7-4.6x). On one Zen 5 core, float32 and float64,
#: products within these limits (the head's three at H128 V65 over 800 rows, the recurrent
#: weight gradient of an LSTM at H128, 64-3200 rows, 16-3200 deep, 4-1024 columns) took
#: 0.37-0.81x the time of one OpenBLAS thread held to its AVX2 kernels (the environment's
#: ``OPENBLAS_CORETYPE=Haswell``) and 0.6-1.1x of one running its AVX-512 ones. With AVX2 tiles
#: they measured no faster than OpenBLAS's own AVX2 kernels (0.8-1.5x), so there BLAS keeps
#: them. (docs/performance.md, 2026-12-03)
WHOLE_TILED_MIN_ROWS = 64
WHOLE_TILED_MIN_DEPTH = 16
WHOLE_TILED_MIN_COLUMNS = 4
#: And at least this many multiply-adds: a few microseconds of work, where packing is not paid
#: back (64 rows, 200 deep, 20-64 columns: 1.0-2.15x the time of OpenBLAS's AVX-512 kernels).
WHOLE_TILED_MIN_WORK = 1 << 20
#: A whole-sequence product with at most this many rows of ``out`` reads a C-contiguous ``M``
#: in place when its columns are whole strips (:func:`numbarnn.kernels.tiles.tiled_product_in_place`):
#: a weight gradient ``dZ.T @ X`` of 65-128 rows, 800 deep, 64-128 columns took 0.63-0.97x the
#: time of packing ``X`` first; at 512 rows 0.94x float32 but 1.1-1.3x float64.
IN_PLACE_MAX_ROWS = 128
#: A weight gradient's ``dZ.T`` (``a`` transposed) steps ``rows`` elements from one k to the
#: next; from 4 KiB a step the tiles lost to OpenBLAS's AVX-512 kernels (1600 deep, float32:
#: 0.89x and 0.96x BLAS's time at 512 and 768 rows, 1.31x at 1024, 1.15x at 2048; blocking and
#: copying ``a`` did not mend it), so there BLAS keeps the product.
WHOLE_TILED_MAX_STEP_BYTES = 4096


@jit
def takes_tiled_whole_product(rows, depth, columns):
    """Whether a whole-sequence product ``out (rows, columns) = a (rows, depth) @ M`` takes
    the tiled product (the limits above)."""
    return (VECTOR_BYTES == 64 and rows >= WHOLE_TILED_MIN_ROWS and depth >= WHOLE_TILED_MIN_DEPTH
            and columns >= WHOLE_TILED_MIN_COLUMNS and rows * depth * columns >= WHOLE_TILED_MIN_WORK)


#: What :func:`whole_product_path` answers.
BLAS, TILES, TILES_IN_PLACE = 0, 1, 2


def _reads_in_place(a, M):
    """Whether ``M`` may be read in place for this ``a``: a weight gradient's (``a`` the
    transposed view ``dZ.T``, ``M`` C-contiguous). In ``@njit`` code a constant of the types,
    so the other products (the C-contiguous ``a`` of a projection or ``dX``) do not compile
    that path."""
    return bool(a.flags.f_contiguous and not a.flags.c_contiguous and M.flags.c_contiguous)


def _in_place_types(a, M):
    return (isinstance(a, numba_types.Array) and a.layout == "F" and isinstance(M, numba_types.Array)
            and M.layout == "C")


@overload(_reads_in_place)
def _reads_in_place_overload(a, M):
    answer = _in_place_types(a, M)
    return lambda a, M: answer


@jit
def whole_product_path(a, M, out):
    """How :func:`whole_product` takes ``out = a @ M``: :data:`BLAS`, :data:`TILES` (``M``
    packed) or :data:`TILES_IN_PLACE`, by the limits above and the arrays' layouts (the tiles
    take ``a`` C-contiguous or the transposed view of a C-contiguous array, as the weight
    gradients pass ``dZ.T``; other layouts go to BLAS, never to the tiles' plain loop; ``M``
    is read in place only for such a weight gradient)."""
    R, K = a.shape
    C = out.shape[1]
    if not (takes_layouts(a, out) and takes_tiled_whole_product(R, K, C)
            and a.strides[1] < WHOLE_TILED_MAX_STEP_BYTES):
        return BLAS
    if _reads_in_place(a, M) and R <= IN_PLACE_MAX_ROWS and C % panel_width(M.itemsize) == 0:
        return TILES_IN_PLACE
    return TILES


def _tiled_whole(a, M, out, in_place):
    """The tiles' side of :func:`whole_product` (``in_place``: ``M`` read where it lies)."""
    if in_place:
        tiled_product_in_place(a, M, out)
    else:
        tiled_product(a, pack_panels(M), out)


@overload(_tiled_whole)
def _tiled_whole_overload(a, M, out, in_place):
    if _in_place_types(a, M):  # compile the in-place path only where it can be taken
        return _tiled_whole
    return lambda a, M, out, in_place: tiled_product(a, pack_panels(M), out)


@jit
def whole_product(a, M, out):
    """out (R, C) = a (R, K) @ M (K, C), a whole-sequence product: the tiled product where
    :func:`whole_product_path` says so, else one BLAS product.

    >>> import numpy as np
    >>> from numbarnn.kernels.loops import whole_product
    >>> rng = np.random.default_rng(0)
    >>> dZ, X = rng.normal(size=(100, 70)), rng.normal(size=(100, 20))
    >>> dW = np.empty((70, 20))
    >>> whole_product(dZ.T, X, dW)   # a weight gradient: 70 rows, 100 deep
    >>> np.allclose(dW, dZ.T @ X)
    True
    """
    path = whole_product_path(a, M, out)
    if path == BLAS:
        np.dot(a, M, out)
    else:
        _tiled_whole(a, M, out, path == TILES_IN_PLACE)


# ---- input projection: XZ = X @ W_x.T + b_x for all steps at once -------------------------

@jit
def project_dense(x2d, W_x, b_x, xz2d):
    """x2d (N, X) -> xz2d (N, G*H); N = T*B.

    ``xz2d = x2d @ W_x.T + b_x`` with W_x ``(G*H, X)`` and b_x ``(G*H,)``; all C-contiguous,
    one float dtype.

    >>> import numpy as np
    >>> from numbarnn.kernels.loops import project_dense
    >>> rng = np.random.default_rng(0)
    >>> x2d, W_x, b_x = rng.normal(size=(4, 3)), rng.normal(size=(2, 3)), rng.normal(size=2)
    >>> xz2d = np.empty((4, 2))
    >>> project_dense(x2d, W_x, b_x, xz2d)
    >>> np.allclose(xz2d, x2d @ W_x.T + b_x)
    True
    """
    whole_product(x2d, W_x.T, xz2d)
    N, GH = xz2d.shape
    for n in range(N):
        for k in range(GH):
            xz2d[n, k] += b_x[k]


@jit
def project_indices(idx, W_x, b_x, xz2d):
    """idx (N,) integer inputs (one-hot, never materialised); -1 is an all-zero input.

    W_x ``(G*H, V)``, b_x ``(G*H,)``, xz2d ``(N, G*H)``: row n is ``W_x[:, idx[n]] + b_x``.

    >>> import numpy as np
    >>> from numbarnn.kernels.loops import project_indices
    >>> rng = np.random.default_rng(0)
    >>> idx = np.array([2, -1, 0], np.int64)
    >>> W_x, b_x = rng.normal(size=(2, 3)), rng.normal(size=2)
    >>> xz2d = np.empty((3, 2))
    >>> project_indices(idx, W_x, b_x, xz2d)
    >>> onehot = np.eye(3)[idx] * (idx >= 0)[:, None]
    >>> np.allclose(xz2d, onehot @ W_x.T + b_x)
    True
    """
    N = xz2d.shape[0]
    if gathers_in_place(N, W_x):
        for n in range(N):
            _gather_row(idx[n], W_x.T, b_x, xz2d[n])
        return
    # Gather rows of W_x.T: a column of W_x is strided by X, a row of its transpose is contiguous.
    W_xT = np.ascontiguousarray(W_x.T)
    for n in range(N):
        _gather_row(idx[n], W_xT, b_x, xz2d[n])


@jit(inline="always")
def gathers_in_place(rows, W_x):
    """Whether gathering ``rows`` inputs reads W_x's columns in place rather than rows of a
    contiguous copy of W_x.T: for a few rows (generation feeds one index a step) the copy of
    all of W_x would cost more than the strided reads (5 us vs under 1 us per character at
    H 128)."""
    return 8 * rows < W_x.shape[1]


@jit(inline="always")
def _gather_row(i, W_rows, b_x, out):
    """out = W_rows[i] + b_x, or b_x alone for i = -1 (the all-zero input)."""
    if i < 0:
        for k in range(out.shape[0]):
            out[k] = b_x[k]
    else:
        for k in range(out.shape[0]):
            out[k] = W_rows[i, k] + b_x[k]


# ---- the per-step recurrent products -------------------------------------------------------

#: Batches of 2 to this many rows take one matrix-vector product per row instead of one
#: matrix product (when the tiled product below does not apply). OpenBLAS's gemm packs all
#: of W_h at every call, which a few rows do not pay back: against the per-row products
#: (float32 and float64, H 16 to 512) it took 1.5-8x the time at 2 rows, 1.05-5.7x at 3,
#: 0.8-3.4x at 4 (below 1 only at H16, microseconds), 0.94-3.0x at 5 and 6 rows (float32
#: 1.2-3.0x). From 7 rows float64 loses (0.67-0.88x at some sizes), and from 8 gemm is
#: mostly ahead. One row is left to gemm, which OpenBLAS forwards to gemv itself.
#: (benchmarks/small_batch_products.py; docs/performance.md)
GEMV_MAX_ROWS = 6

#: The tiled product (:mod:`numbarnn.kernels.tiles`, one thread, ``M`` packed once per loop)
#: takes the per-step products when the batch is small, 2 rows to TILED_MAX_ROW_BYTES bytes
#: of a row's worth of elements (32 rows float32, 16 float64; AVX-512: 64, 32), and ``M`` has at most
#: TILED_MAX_BYTES. At float32 H128 it took 0.35-0.8x the time of OpenBLAS's gemm on 2
#: threads (8 rows 17.5 vs 42 us, 16 rows 29 vs 54 us, 32 rows 67-71 vs 85-95 us). Larger
#: ``M`` (the limit was 256 KiB until 2026-12-02): at 8 and 16 rows it took 0.6-1.0x gemm's
#: time on one thread or two (float32 H192-512, float64 H128-256), at 32 rows 1.1-1.2x;
#: and the training steps it lets split (see ``numbarnn.cpu_backend``), LSTM, GRU and the
#: layer-normalised LSTM at H192-512 float32 (B16-64) and float64 H128, took 0.6-0.9x the
#: time of the whole step on 2-thread gemm. An unsplit loop of 17-32 rows (a forward-only
#: pass) pays the 1.1-1.2x on its products. Beyond 4 MiB (float32 H512 for 4 gates) it is
#: not measured. (benchmarks/small_batch_products.py; docs/performance.md)
#: With AVX-512 tiles (:data:`numbarnn.kernels.tiles.VECTOR_BYTES` 64, a Zen 5 core) the rows
#: go to 256 bytes (64 float32, 32 float64): there the tiles took 0.36-0.45x the time of one
#: OpenBLAS thread held to AVX2 and 0.65-0.85x of one running its AVX-512 kernels at 32-128
#: rows (against two threads: 0.64-0.87x and 1.16-1.7x from 48 rows), and the training steps
#: this lets split took 0.50-0.84x the time (LSTM B96-128 at H128-512 float32, B48-64 at H128
#: float64; an unsplit forward-only pass of 64 rows, H128 float32, now tiled on one thread:
#: 0.73-1.24x, noise with no direction in four pairs).
TILED_MAX_BYTES = 4 * 1024 * 1024
TILED_MAX_ROW_BYTES = 256 if VECTOR_BYTES == 64 else 128


@jit
def takes_tiled_product(rows, elements, itemsize):
    """Whether ``rows`` rows times an ``M`` of ``elements`` items of ``itemsize`` bytes take
    the tiled product (the limits above); callable from Python too (the CPU backend asks it
    before it splits a step)."""
    return 2 <= rows and rows * itemsize <= TILED_MAX_ROW_BYTES and elements * itemsize <= TILED_MAX_BYTES


@jit
def tiled_operand(M, rows):
    """What :func:`recurrent_product` takes as ``tiled_M`` for ``rows`` rows times ``M``:
    ``M`` packed for the tiled product (:func:`numbarnn.kernels.tiles.pack_panels`, once per
    loop) when the tiled product applies, else an empty ``(0, 0, 0)`` array (then BLAS takes
    the product)."""
    if takes_tiled_product(rows, M.size, M.itemsize):
        return pack_panels(M)
    return np.empty((0, 0, 0), M.dtype)


@jit
def recurrent_product(a, M, out, tiled_M):
    """out (B, N) = a (B, K) @ M (K, N): the recurrent product of each step, ``h @ W_h.T``
    forward (M the transposed view ``W_h.T``) and ``dhz @ W_h`` in BPTT.

    ``tiled_M`` is :func:`tiled_operand` ``(M, B)``: when it is not empty, the tiled product
    reads it (M packed in panels); otherwise one BLAS matrix product, or one
    matrix-vector product per row for 2 to :data:`GEMV_MAX_ROWS` rows.

    >>> import numpy as np
    >>> from numbarnn.kernels.loops import recurrent_product, tiled_operand
    >>> rng = np.random.default_rng(0)
    >>> W_h = rng.normal(size=(8, 2))
    >>> for B in (1, 3, 40):   # 3 rows take the tiled product (float64: up to 16 rows, 32 with AVX-512)
    ...     h, hz, dhz, dh = rng.normal(size=(B, 2)), np.empty((B, 8)), rng.normal(size=(B, 8)), np.empty((B, 2))
    ...     recurrent_product(h, W_h.T, hz, tiled_operand(W_h.T, B))
    ...     recurrent_product(dhz, W_h, dh, tiled_operand(W_h, B))
    ...     print(B, tiled_operand(W_h, B).size > 0, np.allclose(hz, h @ W_h.T), np.allclose(dh, dhz @ W_h))
    1 False True True
    3 True True True
    40 False True True
    """
    B = a.shape[0]
    if tiled_M.shape[0] > 0:
        tiled_product(a, tiled_M, out)
    elif 1 < B <= GEMV_MAX_ROWS:
        for b in range(B):
            np.dot(a[b], M, out[b])
    else:
        np.dot(a, M, out)


# ---- weight gradients, hoisted out of the loop ---------------------------------------------

@jit
def recurrent_weight_gradients(dhz2d, h_prev2d, dW_h, db_h, with_bias=True):
    """dW_h = dHZ^T H_prev, db_h = sum dHZ over all steps; dhz2d (N, G*H), h_prev2d (N, H).

    Writes dW_h ``(G*H, H)`` and db_h ``(G*H,)``; db_h only ``with_bias`` (the loops leave
    out the sum, a pass over all of dHZ, where the cell has no b_h or db_x holds the same).

    >>> import numpy as np
    >>> from numbarnn.kernels.loops import recurrent_weight_gradients
    >>> rng = np.random.default_rng(0)
    >>> dhz2d, h_prev2d = rng.normal(size=(4, 2)), rng.normal(size=(4, 3))
    >>> dW_h, db_h = np.empty((2, 3)), np.empty(2)
    >>> recurrent_weight_gradients(dhz2d, h_prev2d, dW_h, db_h)
    >>> np.allclose(dW_h, dhz2d.T @ h_prev2d), np.allclose(db_h, dhz2d.sum(axis=0))
    (True, True)
    """
    whole_product(dhz2d.T, h_prev2d, dW_h)
    if with_bias:
        column_sums(dhz2d, db_h)


@jit
def input_weight_gradients_dense(dxz2d, x2d, W_x, dW_x, db_x, dx2d, with_bias=True):
    """dW_x = dXZ^T X, db_x = sum dXZ, dX = dXZ W_x.

    dxz2d ``(N, G*H)``, x2d (N, X), W_x ``(G*H, X)``; writes dW_x ``(G*H, X)``, db_x
    ``(G*H,)`` (only ``with_bias``) and dx2d (N, X). Also the output head's backward
    (:mod:`numbarnn.kernels.heads`).

    >>> import numpy as np
    >>> from numbarnn.kernels.loops import input_weight_gradients_dense
    >>> rng = np.random.default_rng(0)
    >>> dxz2d, x2d, W_x = rng.normal(size=(4, 2)), rng.normal(size=(4, 3)), rng.normal(size=(2, 3))
    >>> dW_x, db_x, dx2d = np.empty((2, 3)), np.empty(2), np.empty((4, 3))
    >>> input_weight_gradients_dense(dxz2d, x2d, W_x, dW_x, db_x, dx2d)
    >>> np.allclose(dW_x, dxz2d.T @ x2d), np.allclose(db_x, dxz2d.sum(axis=0)), np.allclose(dx2d, dxz2d @ W_x)
    (True, True, True)
    """
    whole_product(dxz2d.T, x2d, dW_x)
    if with_bias:
        column_sums(dxz2d, db_x)
    whole_product(dxz2d, W_x, dx2d)


@jit
def input_weight_gradients_indices(dxz2d, idx, dW_x, db_x, with_bias=True):
    """Scatter-add version of dW_x = dXZ^T onehot(idx); inputs -1 contribute nothing.

    dxz2d ``(N, G*H)``, idx (N,) integers in [-1, V); writes dW_x ``(G*H, V)`` and db_x
    ``(G*H,)`` (only ``with_bias``).

    >>> import numpy as np
    >>> from numbarnn.kernels.loops import input_weight_gradients_indices
    >>> rng = np.random.default_rng(0)
    >>> dxz2d, idx = rng.normal(size=(4, 2)), np.array([1, -1, 1, 0], np.int64)
    >>> dW_x, db_x = np.empty((2, 3)), np.empty(2)
    >>> input_weight_gradients_indices(dxz2d, idx, dW_x, db_x)
    >>> onehot = np.eye(3)[idx] * (idx >= 0)[:, None]
    >>> np.allclose(dW_x, dxz2d.T @ onehot), np.allclose(db_x, dxz2d.sum(axis=0))
    (True, True)
    """
    N, GH = dxz2d.shape
    # Accumulate into rows of dW_x.T (contiguous), then transpose once: the same sums in the
    # same order as adding into the strided columns of dW_x, several times faster.
    # db_x in the same pass, row by row as column_sums adds them (the same bits), not in a
    # second pass over all of dXZ.
    dW_xT = np.zeros((dW_x.shape[1], GH), dW_x.dtype)
    if with_bias:
        db_x[:] = 0.0
    for n in range(N):
        row, i = dxz2d[n], idx[n]
        if i >= 0:
            into = dW_xT[i]
            for k in range(GH):
                into[k] += row[k]
        if with_bias:
            for k in range(GH):
                db_x[k] += row[k]
    dW_x[:, :] = dW_xT.T


@jit
def column_sums(a2d, out):
    """out (K,) = a2d (N, K) summed over its rows.

    >>> import numpy as np
    >>> from numbarnn.kernels.loops import column_sums
    >>> out = np.empty(3)
    >>> column_sums(np.arange(6.0).reshape(2, 3), out)
    >>> out.tolist()
    [3.0, 5.0, 7.0]
    """
    N, K = a2d.shape
    out[:] = 0.0
    for n in range(N):
        for k in range(K):
            out[k] += a2d[n, k]



# ---- per-cell loops, compiled and cached on disk -----------------------------------------------

_CELL_LOOPS = {}
_BUILD_LOCK = threading.Lock()
_TEMPLATE = Path(__file__).with_name("cell_loops.py")
_MARK = "# CELL KERNELS"
_CALL_MARK = "# CELL CALL"
_SHAPE_MARK = "# CELL SHAPE"


def _importable(fn):
    """(module, name) when ``fn`` is a module-level attribute of an importable module, else None."""
    py = getattr(fn, "py_func", fn)
    module = sys.modules.get(getattr(py, "__module__", None) or "")
    name = getattr(py, "__name__", None)
    if module is None or name is None or getattr(module, name, None) is not fn or module.__name__ == "__main__":
        return None
    return module.__name__, name


def cache_dir() -> Path:
    """Where the per-cell loop modules go: ``$NUMBARNN_CACHE_DIR``, else ``$NUMBA_CACHE_DIR/numbarnn``,
    else the user cache directory (``~/.cache/numbarnn``).

    >>> import os
    >>> from unittest import mock
    >>> from numbarnn.kernels.loops import cache_dir
    >>> with mock.patch.dict(os.environ, {"NUMBARNN_CACHE_DIR": "/tmp/loops"}):
    ...     print(cache_dir().as_posix())
    /tmp/loops
    >>> with mock.patch.dict(os.environ, {"NUMBARNN_CACHE_DIR": "", "NUMBA_CACHE_DIR": "/tmp/numba"}):
    ...     print(cache_dir().as_posix())
    /tmp/numba/numbarnn
    """
    if os.environ.get("NUMBARNN_CACHE_DIR"):
        return Path(os.environ["NUMBARNN_CACHE_DIR"])
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"]) / "numbarnn"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "numbarnn"


def _cell_source(cell, forward=None, backward=None):
    """The template's text for this cell: importing its kernels (``forward``, ``backward``:
    (module, name); None keeps the template's import, for a caller that sets the kernels in
    the module's namespace), passing its own parameters to them when it has any, and
    without the recurrent product when it has no ``W_h``."""
    own = bool(cell.params)
    lines = []
    for line in _TEMPLATE.read_text().splitlines():
        if line.endswith(_MARK) and forward is not None:
            role = "forward" if "cell_kernel_forward" in line else "backward"
            module, name = forward if role == "forward" else backward
            line = f"from {module} import {name} as cell_kernel_{role}  {_MARK}"
        elif line.endswith(_CALL_MARK) and own:
            extra = "own" if "cell_kernel_forward" in line else "own, d_own"
            line = line.replace(f")  {_CALL_MARK}", f", {extra})  {_CALL_MARK}")
        elif line.endswith(_SHAPE_MARK):
            flag = line.partition(" =")[0]
            value = {"RECURRENT": cell.recurrent_weights, "OWN_PARAMS": own, "BIASES": cell.projection_biases,
                     "SHARED_GRADIENT": cell.shared_gate_grad}[flag]
            line = f"{flag} = {bool(value)}  {_SHAPE_MARK}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _loops_key(cell):
    """What the compiled loops depend on: the kernels and how the loops call them."""
    return (cell.forward, cell.backward, bool(cell.params), bool(cell.recurrent_weights),
            bool(cell.projection_biases), bool(cell.shared_gate_grad))


# Packages whose code is pinned by the versions hashed below: their files are not read.
_VERSIONED = {"numpy", "numba", "scipy", "llvmlite"}


def _kernel_files(functions) -> list:
    """The source files of the modules holding ``functions`` and of every module those reach
    through their globals (a plugin's kernels importing its own helpers), transitively;
    the standard library and the packages in ``_VERSIONED`` stop the walk."""
    stop = set(getattr(sys, "stdlib_module_names", ())) | _VERSIONED
    seen, files, todo = set(), set(), [getattr(f, "py_func", f).__module__ for f in functions]
    while todo:
        name = todo.pop()
        if name in seen or name is None or name.partition(".")[0] in stop:
            continue
        seen.add(name)
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if not path or not path.endswith(".py"):
            continue
        files.add(path)
        for value in vars(module).values():
            if isinstance(value, types.ModuleType):
                todo.append(value.__name__)
            else:
                todo.append(getattr(getattr(value, "py_func", value), "__module__", None))
    return sorted(files)


def _fingerprint(source, files) -> str:
    """Changes whenever anything compiled into the loops changes: the template, every module the
    cell's kernels reach, numbarnn's kernels, NumPy, Numba or Python."""
    import numba

    digest = hashlib.sha256(source.encode())
    for path in sorted(set(Path(__file__).parent.glob("*.py")) | {Path(f) for f in files}):
        digest.update(str(path).encode())
        digest.update(path.read_bytes())
    digest.update(f"{numba.__version__} {np.__version__} {sys.version}".encode())
    return digest.hexdigest()[:16]


_KEEP_OTHER_BUILDS = 3  # other fingerprints kept per cell: a few installs may share one cache


def _prune(directory: Path, cell_prefix: str, current: str) -> None:
    """Remove all but the newest few other builds of this cell's loops (their .py and Numba files)."""
    builds = {}
    for path in directory.glob(f"{cell_prefix}*"):
        fingerprint = path.name[len(cell_prefix):].partition(".")[0]
        if fingerprint != current and len(fingerprint) == 16:
            with contextlib.suppress(OSError):
                builds[fingerprint] = max(builds.get(fingerprint, 0), path.stat().st_mtime)
    for fingerprint in sorted(builds, key=builds.get, reverse=True)[_KEEP_OTHER_BUILDS:]:
        for path in directory.glob(f"{cell_prefix}{fingerprint}.*"):
            with contextlib.suppress(OSError):
                path.unlink()


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600 (a copy for readers: nothing imports it)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _without_numba_cache(source: str) -> str:
    r"""The template's ``@njit(cache=True, ...)`` decorators without ``cache=True``, other options kept
    (``nogil=True`` on the entry points): the caller caches the generated module itself.

    >>> _without_numba_cache("@njit(cache=True)\n@njit(cache=True, nogil=True)")
    '@njit\n@njit(nogil=True)'
    """
    return source.replace("@njit(cache=True)", "@njit").replace("@njit(cache=True, ", "@njit(")


def _module_from_source(name: str, source: str, filename: str):
    """Execute ``source`` (text numbarnn generated and holds in memory) as module ``name``.

    The file on disk is never read back: no bytecode cache, no window between a check and an
    import. ``cache=True`` is replaced by numbarnn's verified cache in the caller's directory."""
    module = types.ModuleType(name)
    module.__file__ = filename
    # Tracebacks and inspect.getsource show this text, not whatever the file holds now.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    sys.modules[name] = module
    exec(compile(_without_numba_cache(source), filename, "exec"), module.__dict__)
    return module


def _disk_cached_module(cell, forward, backward):
    """The cell's loops with their machine code cached in a private directory (see numbarnn.trust)."""
    source = _cell_source(cell, forward, backward)
    fingerprint = _fingerprint(source, _kernel_files((cell.forward, cell.backward)))
    prefix = "numbarnn_loops_" + re.sub(r"\W", "_", cell.name) + "_"
    name = prefix + fingerprint
    directory = private_directory(cache_dir(), "loops")
    path = directory / f"{name}.py"
    _write_private(path, source)
    _prune(directory, prefix, fingerprint)
    module = _module_from_source(name, source, str(path))
    stamp = hashlib.sha256(source.encode()).hexdigest()
    for value in list(vars(module).values()):
        if getattr(value, "__module__", None) == name and hasattr(value, "py_func"):
            enable_verified_cache(value, directory, stamp)
    return module


def loops_for(cell):
    """The compiled loops of ``cell`` (a module with ``forward_indices``, ``forward_dense``,
    ``backward_indices``, ``backward_dense``, ``generate``, ``language_model_step``,
    ``sequence_forward`` and ``sequence_backward``), built once per pair of kernels.

    Kernels defined at module level in an importable module get a generated module in
    :func:`cache_dir`, cached on disk by Numba like any ``cache=True`` code. Others (a
    notebook's, a closure's) get the same code in memory, compiled once per process.
    The functions are documented in :mod:`numbarnn.kernels.cell_loops`, the template.

    >>> import numpy as np
    >>> import numbarnn
    >>> from numbarnn.kernels.loops import loops_for
    >>> rnn = loops_for(numbarnn.get_cell("rnn"))
    >>> rnn is loops_for(numbarnn.get_cell("rnn"))  # built once
    True
    >>> T, B, H = 2, 1, 2
    >>> xz, states = np.full((T, B, H), 0.5), np.zeros((1, T + 1, B, H))
    >>> rnn.sequence_forward(xz, np.zeros((H, H)), np.zeros(H), (), states, np.empty((T, B, 0)), np.empty((B, H)))
    >>> np.allclose(states[0, 1:], np.tanh(0.5))  # W_h = 0: every step sees only its input
    True
    """
    key = _loops_key(cell)
    if key in _CELL_LOOPS:
        module = _CELL_LOOPS[key]
        # Numba imports a function's module by name when it compiles a new specialisation:
        # keep it importable even if someone pruned sys.modules.
        sys.modules.setdefault(module.__name__, module)
        return module
    with _BUILD_LOCK:  # two threads (a bidirectional layer's directions) may ask first at once: build once
        if key not in _CELL_LOOPS:
            _CELL_LOOPS[key] = _build_loops(cell)
    return _CELL_LOOPS[key]


def _build_loops(cell):
    """The module :func:`loops_for` returns, built: on disk when the cell's kernels are importable."""
    forward, backward = _importable(cell.forward), _importable(cell.backward)
    module = None
    if forward and backward:
        try:
            module = _disk_cached_module(cell, forward, backward)
        except OSError as error:  # no private cache directory: compile in memory below
            warnings.warn(f"numbarnn: {error}; compiling the {cell.name} loops in memory for this process",
                          UnsafeCacheWarning, stacklevel=3)  # loops_for's caller
            module = None
    if module is None:
        module = types.ModuleType(f"numbarnn_loops_{cell.name}_in_memory")
        source = _without_numba_cache(_cell_source(cell))
        namespace = module.__dict__
        exec(compile(source, str(_TEMPLATE), "exec"), namespace)
        namespace["cell_kernel_forward"], namespace["cell_kernel_backward"] = cell.forward, cell.backward
    return module


def compile_state(dispatcher, dtype) -> Optional[str]:
    """None when ``dispatcher`` has a ``dtype`` specialisation loaded or in its disk cache,
    else "cached" or "uncached" (no disk cache). Numba's cache index is internal API: anything
    unexpected reads as None (no claim made)."""
    def fits(signature):  # the first 2-D array is a weight matrix in every loop's signature
        matrices = [t for t in signature if getattr(t, "ndim", 0) == 2]
        return bool(matrices) and str(matrices[0].dtype) == dtype.name

    try:
        if any(fits(signature) for signature in dispatcher.signatures):
            return None
        cache_file = getattr(dispatcher._cache, "_cache_file", None)
        if cache_file is None:
            return "uncached"
        magic = dispatcher.targetctx.codegen().magic_tuple()
        load_index = cache_file._load_index
    except Exception:
        return None
    try:
        index = load_index()
    except Exception:  # unreadable: numbarnn.trust drops it and compiles afresh
        return "cached"
    try:  # index keys are (signature, the machine's codegen tuple, source hashes)
        return None if any(key[1] == magic and fits(key[0]) for key in index) else "cached"
    except Exception:
        return None
