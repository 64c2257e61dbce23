"""A register-tiled matrix product for the per-step recurrent products of small batches.

``tiled_product(a, panels, out)`` writes ``out = a @ M`` for C-contiguous 2-D float arrays of
one dtype, ``a`` (B, K) and ``out`` (B, N), where ``panels = pack_panels(M)`` is ``M`` (K, N)
laid out for the kernel once. It exists because OpenBLAS's gemm packs all of ``M`` into its
own layout at every call, which a time loop pays T times for the same ``W_h``: at B 16,
H 128, float32 that packing is most of the call (a single-threaded gemm took 70-85 us, 8
rows about as long as 16). Here the loop packs ``M`` once (``W_h.T`` forward, ``W_h`` in
BPTT) and every step reads the panels in place.

The kernel is written in LLVM IR, as :mod:`numbarnn_layernorm_lstm.reductions` writes its
sums: Numba gives plain loops no way to keep a block of ``out`` in registers. A tile is R
rows by two vectors of columns: its 2R accumulators stay in registers over all K, and each
step of k loads two vectors of ``M``'s row k, broadcasts ``a[b, k]`` for the R rows and
does 2R fused multiply-adds. The vectors are the widest registers the CPU Numba compiles for
has (:data:`VECTOR_BYTES`): on AVX2, 8 float32 or 4 float64 and tiles of 6 rows (16
registers); with AVX-512, 16 float32 or 8 float64 and tiles of 8 rows (32 registers), which
on a Zen 5 core took half the time (B16 H128 float32: 8.4 against 16.5 us, 250 GFLOP/s on
one core, where OpenBLAS's sgemm held to its Haswell kernels by ``OPENBLAS_CORETYPE`` reaches
122; see docs/performance.md). Rows
left over take tiles of 4, 2 and 1; columns left over (N not a multiple of the tile width)
tiles one vector wide, read from ``out`` and written back a lane at a time.

The same tiles take the whole-sequence products with AVX-512
(:func:`numbarnn.kernels.loops.whole_product`: the head, the weight gradients), for which
``a`` may also be the transposed view of a C-contiguous array (a weight gradient's
``dZ.T``: a tile's rows of ``a`` are then adjacent elements of one row of ``dZ``), and
:func:`tiled_product_in_place` reads an unpacked ``M`` whose columns are whole strips.

The panels: ``M``'s columns in strips one tile wide, each strip's K rows stored one after
the other, ``panels[s, k, :] = M[k, s*width:(s+1)*width]`` (the last strip zero-padded). A
tile then reads one contiguous stretch. Read in place from ``M``, a tile's rows of ``M`` lie
N elements apart: at N 512 float32 (2 KiB) they all fall in 2 of L1's 64 sets, so only 16
of a block's 128 rows stay in L1 for the next tile of rows. Packed, the same products took
0.78-0.84x the time (float32 B16 H128, forward and BPTT) and 0.5-0.8x in float64, with the
same bits.

Every element is one sum over k in ascending order, each term a fused multiply-add
(``llvm.fma``: one rounding per term), so a row's bits do not depend on the other rows, the
tile, the vector width, ``a``'s layout or whether ``M`` was packed. They differ from BLAS's
in the last bits, as any two gemms do (and from the plain loop's that takes other layouts,
a multiply and an add per term).

>>> import numpy as np
>>> from numba import njit
>>> from numbarnn.kernels.tiles import pack_panels, panel_width, tiled_product
>>> rng = np.random.default_rng(0)
>>> a, M = rng.normal(size=(7, 5)), rng.normal(size=(5, 19))   # a tile and rows left over, columns too
>>> panels = pack_panels(M)
>>> width = panel_width(8)   # float64 columns a strip: 8 with AVX2, 16 with AVX-512
>>> panels.shape == (-(-19 // width), 5, width)   # the last strip padded
True
>>> out = np.empty((7, 19))
>>> njit(lambda a, panels, out: tiled_product(a, panels, out))(a, panels, out)
>>> bool(np.allclose(out, a @ M))
True
"""
import numpy as np
from llvmlite import ir
from numba import typeof, types
from numba.core import cgutils, config
from numba.core.codegen import get_host_cpu_features
from numba.extending import intrinsic, overload

from ._jit import jit


def compiled_vector_bytes(features=None) -> int:
    """64 (one AVX-512 register) when the CPU features Numba compiles for include AVX-512F,
    else 32 (AVX2). ``features``: LLVM's comma-separated ``+name``/``-name`` list; by default
    the ones Numba's CPU code generation uses (``NUMBA_CPU_FEATURES``, else the host's). Numba
    keys its on-disk cache by those same features, so cached code and the panels it packs
    always agree on the width.

    >>> from numbarnn.kernels.tiles import compiled_vector_bytes
    >>> compiled_vector_bytes("+avx,+avx2,+fma,-avx512f"), compiled_vector_bytes("+avx2,+avx512f,+fma")
    (32, 64)
    """
    if features is None:
        features = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()
    return 64 if "+avx512f" in str(features).split(",") else 32


#: The bytes of one vector register of the tiles: 32 (AVX2), or 64 where AVX-512 is there.
VECTOR_BYTES = compiled_vector_bytes()
#: The rows of a full tile: 2R accumulators + 2 vectors of M + 1 broadcast in the registers,
#: 15 of AVX2's 16 (R = 6) or 19 of AVX-512's 32 (R = 8: 8 and 16 rows in whole tiles; 10 and
#: 12 rows a tile were no faster at 8-32 rows).
MAX_TILE_ROWS = 8 if VECTOR_BYTES == 64 else 6
BLOCK_BYTES = 512  # k in blocks of 128 float32 (64 float64): 32 rows of a and a tile of M fit in L1 (32 KiB)


@jit
def panel_width(itemsize):
    """The columns of one strip of panels (one tile): 16 float32, 8 float64 (AVX-512: 32, 16)."""
    return 2 * (VECTOR_BYTES // itemsize)


@jit
def pack_panels(M):
    """``M`` (K, N), any layout, as the tiled product reads it: a new C-contiguous array
    ``(ceil(N / width), K, width)`` of strips of ``width = panel_width(M.itemsize)`` columns,
    the last strip's columns beyond N zero. Called once per loop, from Python or ``@njit``."""
    K, N = M.shape
    width = panel_width(M.itemsize)
    strips = (N + width - 1) // width
    panels = np.empty((strips, K, width), M.dtype)
    # Read M along its contiguous axis: a fifth of the time one loop order took for either
    # layout (a training step packs W_h twice per call, W_h.T forward and W_h in BPTT).
    if M.strides[0] >= M.strides[1]:  # rows contiguous (W_h): runs of one strip's width
        for s in range(strips):
            lo = s * width
            for k in range(K):
                row, panel_row = M[k], panels[s, k]
                for w in range(min(width, N - lo)):
                    panel_row[w] = row[lo + w]
    else:  # columns contiguous (W_h.T): down each column
        for j in range(N):
            column, s, w = M[:, j], j // width, j % width
            for k in range(K):
                panels[s, k, w] = column[k]
    if N % width:  # the last strip's columns beyond N
        panels[strips - 1, :, N % width:] = 0.0
    return panels


def tiled_product(a, panels, out):
    """``out[...] = a @ M`` with ``panels = pack_panels(M)``, for 2-D float arrays ``a`` (B, K)
    and ``out`` (B, N) of the panels' dtype (``@njit`` code; from Python, NumPy)."""
    N = out.shape[1]
    M = panels.transpose(1, 0, 2).reshape(panels.shape[1], -1)[:, :N]
    np.dot(a, M, out)


def _tile_codegen(rows, tail, a_layout):
    """The IR of ``out[b0:b0+rows, columns] (+)= a[b0:b0+rows, k0:k1] @ M[k0:k1, columns]``:
    ``=`` when k0 is 0, else ``+=`` (the accumulators start from ``out``: the sums over k
    go on in the same order, whatever the blocks).

    ``columns``: the strip's ``width`` columns from j0 (two vectors); with ``tail``, the
    ``count`` (1 to one vector's lanes) columns from ``j0 + first_lane`` (one vector of the
    strip, ``first_lane`` 0 or one vector in), the columns left over past the last whole
    strip, read from ``out`` and written back a lane at a time. ``a_layout`` "C": ``a[b, k]``
    at ``b * K + k``; "F" (the transposed view of a C-contiguous (K, B) array, a weight
    gradient's ``dZ.T``): at ``k * B + b``."""
    def codegen(context, builder, sig, args):
        element = context.get_value_type(sig.args[0].dtype)
        size = context.get_abi_sizeof(element)
        lanes = VECTOR_BYTES // size
        vector = ir.VectorType(element, lanes)
        vectors = 1 if tail else 2
        a, M, out = (context.make_array(ty)(context, builder, value) for ty, value in zip(sig.args[:3], args[:3]))
        b0, j0, k0, k1, first_lane, count = args[5:11]  # after a, M, out and the constants rows, tail
        B = builder.extract_value(a.shape, 0)
        K = builder.extract_value(a.shape, 1)
        N = builder.extract_value(out.shape, 1)
        intp = K.type

        def const(n):
            return ir.Constant(intp, n)

        def vector_pointer(data, index):  # the rows are element-aligned, not vector-aligned
            return builder.bitcast(builder.gep(data, [index]), vector.as_pointer())

        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3),
                                             f"llvm.fma.v{lanes}f{size * 8}")
        # Allocas in the entry block, which LLVM promotes to registers.
        accumulators = [[cgutils.alloca_once(builder, vector) for _ in range(vectors)] for _ in range(rows)]
        spill = cgutils.alloca_once(builder, vector) if tail else None  # a tail's lanes to and from out
        first = builder.icmp_signed("==", k0, const(0))
        zero = ir.Constant(vector, None)
        column0 = builder.add(j0, first_lane) if tail else j0
        out_rows = [builder.add(builder.mul(builder.add(b0, const(r)), N), column0) for r in range(rows)]
        for r in range(rows):  # the first block starts from zero, the later ones from out
            for v in range(vectors):
                builder.store(zero, accumulators[r][v])
        with builder.if_then(builder.not_(first)):
            for r in range(rows):
                if tail:
                    builder.store(zero, spill)
                    lane_pointer = builder.bitcast(spill, element.as_pointer())
                    with cgutils.for_range(builder, count) as loop:
                        value = builder.load(builder.gep(out.data, [builder.add(out_rows[r], loop.index)]))
                        builder.store(value, builder.gep(lane_pointer, [loop.index]))
                    builder.store(builder.load(spill), accumulators[r][0])
                else:
                    for v in range(2):
                        so_far = builder.load(vector_pointer(out.data, builder.add(out_rows[r], const(v * lanes))),
                                              align=size)
                        builder.store(so_far, accumulators[r][v])
        if a_layout == "C":
            a_rows = [builder.mul(builder.add(b0, const(r)), K) for r in range(rows)]
        undefined = ir.Constant(vector, ir.Undefined)
        lane0 = ir.Constant(ir.IntType(32), 0)
        splat_mask = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
        if sig.args[1].ndim == 3:  # panels: strip s (j0 = s * width) from element s * K * width, rows width apart
            strip, m_stride = builder.mul(j0, K), const(2 * lanes)
        else:  # M itself, C-contiguous (K, N) with whole strips: rows N apart
            strip, m_stride = j0, builder.extract_value(M.shape, 1)
        if tail:
            strip = builder.add(strip, first_lane)
        with cgutils.for_range_slice(builder, k0, k1, const(1), intp) as (k, _):
            m_row = builder.add(strip, builder.mul(k, m_stride))
            m = [builder.load(vector_pointer(M.data, builder.add(m_row, const(v * lanes))), align=size)
                 for v in range(vectors)]
            a_column = builder.mul(k, B) if a_layout == "F" else None
            for r in range(rows):
                if a_layout == "C":
                    index = builder.add(a_rows[r], k)
                else:
                    index = builder.add(a_column, builder.add(b0, const(r)))
                scalar = builder.load(builder.gep(a.data, [index]))
                splat = builder.shuffle_vector(builder.insert_element(undefined, scalar, lane0), undefined,
                                               splat_mask)
                for v in range(vectors):
                    acc = accumulators[r][v]
                    builder.store(builder.call(fma, [splat, m[v], builder.load(acc)]), acc)
        for r in range(rows):
            if tail:
                builder.store(builder.load(accumulators[r][0]), spill)
                lane_pointer = builder.bitcast(spill, element.as_pointer())
                with cgutils.for_range(builder, count) as loop:
                    builder.store(builder.load(builder.gep(lane_pointer, [loop.index])),
                                  builder.gep(out.data, [builder.add(out_rows[r], loop.index)]))
            else:
                for v in range(2):
                    builder.store(builder.load(accumulators[r][v]),
                                  vector_pointer(out.data, builder.add(out_rows[r], const(v * lanes))), align=size)
        return context.get_dummy_value()
    return codegen


def _floats(a, panels, out, panels_ndim=3):
    """Whether the kernel takes these types: C-contiguous 2-D ``out`` and ``panels`` (3-D, or
    2-D: ``M`` read in place), and a 2-D ``a`` C- or F-contiguous (the transposed view of a
    C-contiguous array), all of one float dtype."""
    return (isinstance(a, types.Array) and a.ndim == 2 and a.layout in "CF" and isinstance(a.dtype, types.Float)
            and all(isinstance(x, types.Array) and x.ndim == ndim and x.layout == "C" and x.dtype == a.dtype
                    for x, ndim in ((panels, panels_ndim), (out, 2))))


def takes_layouts(a, out):
    """Whether the tiles take arrays like these (``a`` C- or F-contiguous, ``out``
    C-contiguous, one float dtype); in ``@njit`` code a constant, which the whole-sequence
    products ask before they pack (other layouts go to BLAS there, not to the plain loop)."""
    return _layouts_fit(typeof(a), typeof(out))


def _layouts_fit(a, out):
    return isinstance(a, types.Array) and _floats(a, types.Array(a.dtype, 3, "C"), out)


@overload(takes_layouts)
def _takes_layouts_overload(a, out):
    answer = _layouts_fit(a, out)
    return lambda a, out: answer


@intrinsic
def _tile(typingctx, a, M, out, rows, tail, b0, j0, k0, k1, first_lane, count):
    """One tile of ``rows`` rows (a whole strip, or with ``tail`` one vector of the last);
    ``rows`` and ``tail`` are constants, each pair compiled once per layout (see
    :func:`_tile_codegen`)."""
    indices = (b0, j0, k0, k1, first_lane, count)
    if (isinstance(rows, types.IntegerLiteral) and isinstance(tail, types.BooleanLiteral)
            and _floats(a, M, out, getattr(M, "ndim", 3)) and all(isinstance(i, types.Integer) for i in indices)):
        return (types.void(a, M, out, rows, tail, *[types.intp] * len(indices)),
                _tile_codegen(rows.literal_value, tail.literal_value, a.layout))


@jit(inline="always")
def _check_shapes(a, panels, out):
    """The kernel reads without bounds checks: shapes that do not fit raise here instead."""
    B, K = a.shape
    width = panel_width(a.itemsize)
    if (out.shape[0] != B or panels.shape[1] != K or panels.shape[2] != width
            or panels.shape[0] != (out.shape[1] + width - 1) // width):
        raise ValueError("tiled_product: a (B, K), panels = pack_panels(M) of M (K, N) and out (B, N) do not fit")


@jit(inline="always")
def _plain_columns(a, panels, out):
    """``out`` as plain sums, a multiply and an add per term in ascending k: the arrays the
    tiles do not take."""
    width = panels.shape[2]
    for b in range(a.shape[0]):
        for j in range(out.shape[1]):
            total = a.dtype.type(0.0)
            for k in range(a.shape[1]):
                total += a[b, k] * panels[j // width, k, j % width]
            out[b, j] = total


@jit(inline="always")
def _strip(a, panels, out, j0, k0, k1, first_lane, count, tail):
    """One strip's tiles over all of a's rows; with ``tail`` (a constant), one vector of the
    last strip: ``count`` columns from ``j0 + first_lane``."""
    B = a.shape[0]
    b0 = 0
    while B - b0 >= MAX_TILE_ROWS and not (MAX_TILE_ROWS == 6 and B - b0 == 8):
        _tile(a, panels, out, MAX_TILE_ROWS, tail, b0, j0, k0, k1, first_lane, count)
        b0 += MAX_TILE_ROWS
    # The rows left: 8 as 4 + 4 on AVX2 (0.87x the time of 6 + 2), 5 as 4 + 1, 3 as 2 + 1
    # (fewer kernels to compile).
    while B - b0 >= 4:
        _tile(a, panels, out, 4, tail, b0, j0, k0, k1, first_lane, count)
        b0 += 4
    if B - b0 >= 2:
        _tile(a, panels, out, 2, tail, b0, j0, k0, k1, first_lane, count)
        b0 += 2
    if B - b0 == 1:
        _tile(a, panels, out, 1, tail, b0, j0, k0, k1, first_lane, count)


def _tiled(a, panels, out):
    _check_shapes(a, panels, out)
    K = a.shape[1]
    N = out.shape[1]
    width = panel_width(a.itemsize)
    lanes = width // 2
    depth = BLOCK_BYTES // a.itemsize
    whole = N - N % width
    for k0 in range(0, K, depth):  # a block of a's columns and M's rows stays in L1 for all the tiles
        k1 = min(k0 + depth, K)
        for j0 in range(0, whole, width):
            _strip(a, panels, out, j0, k0, k1, 0, 0, False)
        # The columns left over: one vector of the last strip at a time, its lanes past N unwritten.
        for first_lane in range(0, N - whole, lanes):
            _strip(a, panels, out, whole, k0, k1, first_lane, min(lanes, N - whole - first_lane), True)


def _plain(a, panels, out):
    """Any other layout (the loops only ever pass contiguous arrays)."""
    _check_shapes(a, panels, out)
    _plain_columns(a, panels, out)


@overload(tiled_product)
def _tiled_product_overload(a, panels, out):
    if _floats(a, panels, out):
        return _tiled
    return _plain


def tiled_product_in_place(a, M, out):
    """``out[...] = a @ M`` with the tiles reading ``M`` (K, N) where it lies, unpacked: for a
    C-contiguous ``M`` whose N is a multiple of :func:`panel_width` (the tiles' rows of ``M``
    are then N elements apart, not one strip's width). It saves the packing of an ``M`` used
    once, a weight gradient's ``X`` in ``dZ.T @ X``; the strided rows cost L1 misses, which
    few rows of ``out`` pay back less than many (see
    :data:`numbarnn.kernels.loops.IN_PLACE_MAX_ROWS`). Other arrays: NumPy's product."""
    np.dot(a, M, out)


#: The depth of a block of k when M is read in place: 64 of its rows (over 8 float32 rows of
#: 128 columns each; 64 took 0.84-0.95x the time of 128 at 65-128 rows of out, float32).
IN_PLACE_DEPTH = 64


def _tiled_in_place(a, M, out):
    B, K = a.shape
    N = out.shape[1]
    width = panel_width(a.itemsize)
    if out.shape[0] != B or M.shape[0] != K or M.shape[1] != N or N % width:
        raise ValueError("tiled_product_in_place: a (B, K), M (K, N) with N a multiple of the panel width "
                         "and out (B, N) do not fit")
    for k0 in range(0, K, IN_PLACE_DEPTH):
        k1 = min(k0 + IN_PLACE_DEPTH, K)
        for j0 in range(0, N, width):
            _strip(a, M, out, j0, k0, k1, 0, 0, False)


@overload(tiled_product_in_place)
def _tiled_product_in_place_overload(a, M, out):
    if _floats(a, M, out, 2):
        return _tiled_in_place
    return lambda a, M, out: np.dot(a, M, out)
