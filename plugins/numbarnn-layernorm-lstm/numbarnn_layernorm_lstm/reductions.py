"""Row sums for the layer norms: ``row_sum(a)`` and ``row_dot(a, b)`` of 1-D float arrays,
callable from ``@njit`` code, vectorised without fastmath.

A plain loop ``s += a[i]`` stays scalar without fastmath (the compiler may not reorder one
running sum) and waits on the add latency at every element; at 4H = 512 the layer norms'
sums were half of the cell's pointwise time. Here the order is fixed by hand instead: for a
contiguous array, lane ``l`` of four 8-wide vector accumulators adds the elements
``i = l (mod 32)``, each add an ordinary IEEE add, then the four vectors are added
lane-wise, the 8 lanes as a tree, and the leftover ``n mod 32`` elements last (a plain
running sum). The same bits on every machine, whatever its vector width; NaN and inf
propagate as in any sum. A non-contiguous array takes a plain loop (same order as numpy's
naive sum, not these bits).

>>> import numpy as np
>>> from numba import njit
>>> from numbarnn_layernorm_lstm.reductions import row_dot, row_sum
>>> @njit
... def sums(a, b):
...     return row_sum(a), row_dot(a, b)
>>> a, b = np.arange(100.0), np.full(100, 0.5)
>>> sums(a, b)
(4950.0, 2475.0)
>>> sums(a.astype(np.float32), b.astype(np.float32))   # float32 sums (numba returns Python floats)
(4950.0, 2475.0)
>>> float(sums(a[::2], b[::2])[1])   # strided views work too
1225.0
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

LANES = 8  # one AVX2 register of float32
VECTORS = 4  # independent accumulators: four adds in flight hide the add latency


def row_sum(a):
    """sum(a) of a 1-D float array, in its dtype (for ``@njit`` code; plain NumPy from Python)."""
    return a.sum()


def row_dot(a, b):
    """sum(a * b) of two 1-D float arrays of one dtype and length (for ``@njit`` code)."""
    return (a * b).sum()


def _reduce(context, builder, arrays, array_types):
    """LLVM IR for ``sum_i prod_k arrays[k][i]`` over contiguous 1-D arrays, in the fixed
    order of the module docstring."""
    fty = context.get_value_type(array_types[0].dtype)
    vty = ir.VectorType(fty, LANES)
    align = context.get_abi_sizeof(fty)  # the rows are element-aligned, not vector-aligned
    arys = [context.make_array(ty)(context, builder, a) for ty, a in zip(array_types, arrays)]
    n = builder.extract_value(arys[0].shape, 0)
    intp = n.type
    chunk = ir.Constant(intp, VECTORS * LANES)
    whole = builder.mul(builder.sdiv(n, chunk), chunk)

    def term(i, load):  # the product of the arrays' values at i (a vector or a scalar)
        value = None
        for ary in arys:
            v = load(builder.gep(ary.data, [i]))
            value = v if value is None else builder.fmul(value, v)
        return value

    def load_vector(ptr):
        return builder.load(builder.bitcast(ptr, vty.as_pointer()), align=align)

    accs = [cgutils.alloca_once_value(builder, ir.Constant(vty, None)) for _ in range(VECTORS)]  # zeros
    with cgutils.for_range_slice(builder, ir.Constant(intp, 0), whole, chunk, intp) as (i, _):
        for k, acc in enumerate(accs):
            at = builder.add(i, ir.Constant(intp, k * LANES))
            builder.store(builder.fadd(builder.load(acc), term(at, load_vector)), acc)
    tail = cgutils.alloca_once_value(builder, ir.Constant(fty, 0.0))
    with cgutils.for_range_slice(builder, whole, n, ir.Constant(intp, 1), intp) as (i, _):
        builder.store(builder.fadd(builder.load(tail), term(i, builder.load)), tail)
    vectors = [builder.load(acc) for acc in accs]
    while len(vectors) > 1:
        vectors = [builder.fadd(vectors[k], vectors[k + 1]) for k in range(0, len(vectors), 2)]
    lanes = [builder.extract_element(vectors[0], ir.Constant(ir.IntType(32), k)) for k in range(LANES)]
    while len(lanes) > 1:
        lanes = [builder.fadd(lanes[k], lanes[k + 1]) for k in range(0, len(lanes), 2)]
    return builder.fadd(lanes[0], builder.load(tail))


def _contiguous_floats(*arrays):
    return all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" and isinstance(a.dtype, types.Float)
               and a.dtype == arrays[0].dtype for a in arrays)


@intrinsic
def _vector_sum(typingctx, a):
    if _contiguous_floats(a):
        return a.dtype(a), lambda context, builder, sig, args: _reduce(context, builder, args, sig.args)


@intrinsic
def _vector_dot(typingctx, a, b):
    if _contiguous_floats(a, b):
        return a.dtype(a, b), lambda context, builder, sig, args: _reduce(context, builder, args, sig.args)


def _plain_sum(a):
    s = a.dtype.type(0.0)
    for i in range(a.shape[0]):
        s += a[i]
    return s


def _plain_dot(a, b):
    s = a.dtype.type(0.0)
    for i in range(a.shape[0]):
        s += a[i] * b[i]
    return s


def _is_float_vector(a):
    return isinstance(a, types.Array) and a.ndim == 1 and isinstance(a.dtype, types.Float)


@overload(row_sum, inline="always")
def _row_sum_overload(a):
    if _is_float_vector(a):
        return (lambda a: _vector_sum(a)) if a.layout == "C" else _plain_sum


@overload(row_dot, inline="always")
def _row_dot_overload(a, b):
    if _is_float_vector(a) and _is_float_vector(b) and a.dtype == b.dtype:
        if a.layout == "C" and b.layout == "C":
            return lambda a, b: _vector_dot(a, b)
        return _plain_dot
