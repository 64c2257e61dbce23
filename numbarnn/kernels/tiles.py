"""A register-tiled matrix product for the per-step recurrent products of small batches.

``tiled_product(a, M, out)`` writes ``out = a @ M`` for C-contiguous 2-D float arrays of one
dtype: ``a`` (B, K), ``M`` (K, N), ``out`` (B, N). It exists because OpenBLAS's gemm packs
all of ``M`` into its own layout at every call, which a time loop pays T times for the same
``W_h``: at B 16, H 128, float32 that packing is most of the call (a single-threaded gemm
took 70-85 us, 8 rows about as long as 16). Here ``M`` is read in place, so a loop that
makes ``M`` contiguous once (``W_h.T`` forward, ``W_h`` itself in BPTT) pays nothing per step.

The kernel is written in LLVM IR, as :mod:`numbarnn_layernorm_lstm.reductions` writes its
sums: Numba gives plain loops no way to keep a block of ``out`` in registers. A tile is R
rows (6, and 4, 2 or 1 for the rows left over) by two vectors of columns (2 x 8 float32 or 2 x 4 float64, one AVX2 register
each): its 2R accumulators stay in registers over all K, and each step of k loads two
vectors of ``M``'s row k, broadcasts ``a[b, k]`` for the R rows and does 2R fused
multiply-adds. Columns left over (N not a multiple of the tile width) take a plain loop.

Every element is one sum over k in ascending order, each term a fused multiply-add
(``llvm.fma``: one rounding per term; the columns left over take a plain multiply and add),
so a row's bits do not depend on the other rows, the tile or the machine's vector width;
they differ from BLAS's in the last bits, as any two gemms do.

>>> import numpy as np
>>> from numba import njit
>>> from numbarnn.kernels.tiles import tiled_product
>>> rng = np.random.default_rng(0)
>>> a, M = rng.normal(size=(7, 5)), rng.normal(size=(5, 19))   # 6 + 1 rows, 16 + 3 columns (float64: 8 + 8 + 3)
>>> out = np.empty((7, 19))
>>> njit(lambda a, M, out: tiled_product(a, M, out))(a, M, out)
>>> bool(np.allclose(out, a @ M))
True
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

VECTOR_BYTES = 32  # one AVX2 register; on wider machines LLVM still emits these 256-bit operations
MAX_TILE_ROWS = 6  # 12 accumulators + 2 vectors of M + 1 broadcast: 15 of AVX2's 16 registers
BLOCK_BYTES = 512  # k in blocks of 128 float32 (64 float64): 32 rows of a and a tile of M fit in L1 (32 KiB)


def tiled_product(a, M, out):
    """``out[...] = a @ M`` for C-contiguous 2-D float arrays of one dtype (``@njit`` code;
    a plain ``np.dot`` from Python)."""
    np.dot(a, M, out)


def _tile_codegen(rows):
    """The IR of ``out[b0:b0+rows, j0:j0+width] (+)= a[b0:b0+rows, k0:k1] @ M[k0:k1, j0:j0+width]``:
    ``=`` when k0 is 0, else ``+=`` (the accumulators start from ``out``: the sums over k
    go on in the same order, whatever the blocks)."""
    def codegen(context, builder, sig, args):
        element = context.get_value_type(sig.args[0].dtype)
        size = context.get_abi_sizeof(element)
        lanes = VECTOR_BYTES // size
        vector = ir.VectorType(element, lanes)
        a, M, out = (context.make_array(ty)(context, builder, value) for ty, value in zip(sig.args[:3], args[:3]))
        b0, j0, k0, k1 = args[3], args[4], args[5], args[6]
        K = builder.extract_value(a.shape, 1)
        N = builder.extract_value(M.shape, 1)
        intp = K.type

        def const(n):
            return ir.Constant(intp, n)

        def vector_pointer(data, index):  # the rows are element-aligned, not vector-aligned
            return builder.bitcast(builder.gep(data, [index]), vector.as_pointer())

        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3),
                                             f"llvm.fma.v{lanes}f{size * 8}")
        # Allocas in the entry block, which LLVM promotes to registers.
        accumulators = [[cgutils.alloca_once(builder, vector) for _ in range(2)] for _ in range(rows)]
        first = builder.icmp_signed("==", k0, const(0))
        zero = ir.Constant(vector, None)
        for r in range(rows):  # out is the caller's array: reading it before the first block is harmless
            out_row = builder.add(builder.mul(builder.add(b0, const(r)), N), j0)
            for v in range(2):
                so_far = builder.load(vector_pointer(out.data, builder.add(out_row, const(v * lanes))), align=size)
                builder.store(builder.select(first, zero, so_far), accumulators[r][v])
        a_rows = [builder.mul(builder.add(b0, const(r)), K) for r in range(rows)]
        undefined = ir.Constant(vector, ir.Undefined)
        lane0 = ir.Constant(ir.IntType(32), 0)
        splat_mask = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
        with cgutils.for_range_slice(builder, k0, k1, const(1), intp) as (k, _):
            m_row = builder.add(builder.mul(k, N), j0)
            m = [builder.load(vector_pointer(M.data, builder.add(m_row, const(v * lanes))), align=size)
                 for v in range(2)]
            for r in range(rows):
                scalar = builder.load(builder.gep(a.data, [builder.add(a_rows[r], k)]))
                splat = builder.shuffle_vector(builder.insert_element(undefined, scalar, lane0), undefined,
                                               splat_mask)
                for v in range(2):
                    acc = accumulators[r][v]
                    builder.store(builder.call(fma, [splat, m[v], builder.load(acc)]), acc)
        for r in range(rows):
            out_row = builder.add(builder.mul(builder.add(b0, const(r)), N), j0)
            for v in range(2):
                builder.store(builder.load(accumulators[r][v]),
                              vector_pointer(out.data, builder.add(out_row, const(v * lanes))), align=size)
        return context.get_dummy_value()
    return codegen


def _contiguous_floats(*arrays):
    return all(isinstance(x, types.Array) and x.ndim == 2 and x.layout == "C" and isinstance(x.dtype, types.Float)
               and x.dtype == arrays[0].dtype for x in arrays)


def _tile_intrinsic(rows):
    @intrinsic
    def tile(typingctx, a, M, out, b0, j0, k0, k1):
        if _contiguous_floats(a, M, out) and all(isinstance(i, types.Integer) for i in (b0, j0, k0, k1)):
            return types.void(a, M, out, types.intp, types.intp, types.intp, types.intp), _tile_codegen(rows)
    tile.__name__ = f"tile_{rows}_rows"
    return tile


_tile1, _tile2, _tile4, _tile6 = (_tile_intrinsic(rows) for rows in (1, 2, 4, MAX_TILE_ROWS))


def _tiled(a, M, out):
    B, K = a.shape
    N = M.shape[1]
    width = 2 * (VECTOR_BYTES // a.itemsize)
    depth = BLOCK_BYTES // a.itemsize
    whole = N - N % width
    for k0 in range(0, K, depth):  # a block of a's columns and M's rows stays in L1 for all the tiles
        k1 = min(k0 + depth, K)
        for j0 in range(0, whole, width):
            b0 = 0
            while B - b0 >= 6:
                _tile6(a, M, out, b0, j0, k0, k1)
                b0 += 6
            if B - b0 >= 4:  # the rows left: 5 as 4 + 1, 3 as 2 + 1 (fewer kernels to compile)
                _tile4(a, M, out, b0, j0, k0, k1)
                b0 += 4
            if B - b0 >= 2:
                _tile2(a, M, out, b0, j0, k0, k1)
                b0 += 2
            if B - b0 == 1:
                _tile1(a, M, out, b0, j0, k0, k1)
    for b in range(B):
        for j in range(whole, N):
            total = a.dtype.type(0.0)
            for k in range(K):
                total += a[b, k] * M[k, j]
            out[b, j] = total


def _dot(a, M, out):
    np.dot(a, M, out)


@overload(tiled_product)
def _tiled_product_overload(a, M, out):
    if _contiguous_floats(a, M, out):
        return _tiled
    return _dot  # any other layout: BLAS (the loops only ever pass contiguous arrays)
