"""Row sums for the layer norms: ``row_sum(a)``, ``row_dot(a, b)`` and ``row_dot_pair(a, b, c)``
of 1-D float arrays, callable from ``@njit`` code, vectorised without fastmath.

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
>>> from numbarnn_layernorm_lstm.reductions import row_dot, row_dot_pair, row_sum
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
>>> njit(lambda a, b, c: row_dot_pair(a, b, c))(a, b, np.full(100, 2.0))   # sum(a b), sum(a b c)
(2475.0, 4950.0)
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


def _reduce(context, builder, arrays, array_types, products):
    """LLVM IR for the sums ``sum_i prod_{k in product} arrays[k][i]``, one for each product
    (a tuple of array indices), over contiguous 1-D arrays of one length, in one pass and each
    in the fixed order of the module docstring. Returns the list of sums."""
    fty = context.get_value_type(array_types[0].dtype)
    vty = ir.VectorType(fty, LANES)
    align = context.get_abi_sizeof(fty)  # the rows are element-aligned, not vector-aligned
    arys = [context.make_array(ty)(context, builder, a) for ty, a in zip(array_types, arrays)]
    n = builder.extract_value(arys[0].shape, 0)
    intp = n.type
    chunk = ir.Constant(intp, VECTORS * LANES)
    whole = builder.mul(builder.sdiv(n, chunk), chunk)

    def terms(i, load):  # each product's value at i (vectors or scalars)
        values = [load(builder.gep(ary.data, [i])) for ary in arys]
        out = []
        for product in products:
            value = values[product[0]]
            for k in product[1:]:
                value = builder.fmul(value, values[k])
            out.append(value)
        return out

    def load_vector(ptr):
        return builder.load(builder.bitcast(ptr, vty.as_pointer()), align=align)

    zero_vector, zero = ir.Constant(vty, None), ir.Constant(fty, 0.0)
    accs = [[cgutils.alloca_once_value(builder, zero_vector) for _ in range(VECTORS)] for _ in products]
    with cgutils.for_range_slice(builder, ir.Constant(intp, 0), whole, chunk, intp) as (i, _):
        for v in range(VECTORS):
            at = builder.add(i, ir.Constant(intp, v * LANES))
            for acc, term in zip(accs, terms(at, load_vector)):
                builder.store(builder.fadd(builder.load(acc[v]), term), acc[v])
    tails = [cgutils.alloca_once_value(builder, zero) for _ in products]
    with cgutils.for_range_slice(builder, whole, n, ir.Constant(intp, 1), intp) as (i, _):
        for tail, term in zip(tails, terms(i, builder.load)):
            builder.store(builder.fadd(builder.load(tail), term), tail)
    sums = []
    for acc, tail in zip(accs, tails):
        vectors = [builder.load(a) for a in acc]
        while len(vectors) > 1:
            vectors = [builder.fadd(vectors[k], vectors[k + 1]) for k in range(0, len(vectors), 2)]
        lanes = [builder.extract_element(vectors[0], ir.Constant(ir.IntType(32), k)) for k in range(LANES)]
        while len(lanes) > 1:
            lanes = [builder.fadd(lanes[k], lanes[k + 1]) for k in range(0, len(lanes), 2)]
        sums.append(builder.fadd(lanes[0], builder.load(tail)))
    return sums


def row_dot_pair(a, b, c):
    """``(sum(a * b), sum(a * b * c))`` of three 1-D float arrays of one dtype and length, in
    one pass (for ``@njit`` code): the two sums of a layer norm's backward."""
    return (a * b).sum(), (a * b * c).sum()


def _contiguous_floats(*arrays):
    return all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" and isinstance(a.dtype, types.Float)
               and a.dtype == arrays[0].dtype for a in arrays)


@intrinsic
def _vector_sum(typingctx, a):
    if _contiguous_floats(a):
        return a.dtype(a), lambda context, builder, sig, args: _reduce(context, builder, args, sig.args, [(0,)])[0]


@intrinsic
def _vector_dot(typingctx, a, b):
    if _contiguous_floats(a, b):
        return a.dtype(a, b), lambda context, builder, sig, args: _reduce(context, builder, args, sig.args,
                                                                          [(0, 1)])[0]


@intrinsic
def _vector_dot_pair(typingctx, a, b, c):
    if _contiguous_floats(a, b, c):
        def codegen(context, builder, sig, args):
            sums = _reduce(context, builder, args, sig.args, [(0, 1), (0, 1, 2)])
            return context.make_tuple(builder, sig.return_type, sums)
        return types.UniTuple(a.dtype, 2)(a, b, c), codegen


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


def _plain_dot_pair(a, b, c):
    p = q = a.dtype.type(0.0)
    for i in range(a.shape[0]):
        e = a[i] * b[i]
        p += e
        q += e * c[i]
    return p, q


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


@overload(row_dot_pair, inline="always")
def _row_dot_pair_overload(a, b, c):
    if all(_is_float_vector(v) for v in (a, b, c)) and a.dtype == b.dtype == c.dtype:
        if a.layout == b.layout == c.layout == "C":
            return lambda a, b, c: _vector_dot_pair(a, b, c)
        return _plain_dot_pair
