"""Scalar activations for the pointwise kernels: ``sigmoid`` and ``tanh`` (public API for plugins).

The libm ``exp``/``tanh`` are scalar calls that stop the compiler from vectorising a
kernel's loop, and at LSTM sizes the pointwise work then costs more than the matrix
products. So ``exp`` is computed here from plain arithmetic the compiler can vectorise:
``x = n ln2 + r`` with ``|r| <= ln2 / 2`` (Cody-Waite), a Taylor polynomial for ``exp(r)``
and ``2**n`` assembled from its bits. Accuracy: ``exp`` within 1 ulp of libm in float64 (a
degree-13 polynomial); ``sigmoid`` and ``tanh`` within 1e-15 relative in float64 and 4e-7 in
float32 (degree 7), tested in ``tests/test_activations.py``.
``tanh`` goes through ``expm1`` so that small arguments keep full relative precision.

Each function has a float32 and a float64 implementation, picked by the argument's type
at compile time; NaN propagates (a NaN pre-activation must reach the NaN guard).
"""
import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from ._jit import jit


@intrinsic
def _bits_as_float64(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


@intrinsic
def _bits_as_float32(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@intrinsic
def _divide(typingctx, a, b):
    """a / b as IEEE division: no zero check, whatever the caller's error model.

    Under Numba's default error model every ``/`` tests for a zero divisor, and that
    branch keeps the loop around it from being vectorised.
    """
    def codegen(context, builder, signature, args):
        return builder.fdiv(args[0], args[1])
    if isinstance(a, types.Float) and a == b:
        return a(a, b), codegen


# ---- float64 ------------------------------------------------------------------------------------

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that n * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_EXPM1_SMALL = 0.34657359027997264  # ln(2) / 2


@jit(inline="always")
def _exp_reduced64(x):
    """exp(x) for x already clamped to [-708, 709] (or NaN)."""
    n = np.floor(x * _LOG2E + 0.5)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * _bits_as_float64((np.int64(n) + 1023) << 52)


@jit(inline="always")
def _clamp64(x):
    return np.minimum(np.maximum(x, -708.0), 709.0)  # NumPy's min/max let a NaN through


@jit(inline="always")
def _expm1_64(x):
    """exp(x) - 1 with full relative precision near 0; x <= 0 here."""
    # Taylor series x + x^2/2! + ... + x^14/14! in Horner form, for |x| <= ln2 / 2.
    # (Literal constants: a tuple of them here kept Numba from vectorising the loop.)
    # The polynomial sees x clamped to the small range, so the unused side of the blend
    # below stays finite (0 * inf would be NaN).
    xs = x
    x = np.minimum(np.maximum(x, -_EXPM1_SMALL), _EXPM1_SMALL)
    q = 1.0 / 87178291200.0
    q = q * x + 1.0 / 6227020800.0
    q = q * x + 1.0 / 479001600.0
    q = q * x + 1.0 / 39916800.0
    q = q * x + 1.0 / 3628800.0
    q = q * x + 1.0 / 362880.0
    q = q * x + 1.0 / 40320.0
    q = q * x + 1.0 / 5040.0
    q = q * x + 1.0 / 720.0
    q = q * x + 1.0 / 120.0
    q = q * x + 1.0 / 24.0
    q = q * x + 1.0 / 6.0
    q = q * x + 0.5
    q = q * x + 1.0
    small = q * x
    x = xs
    large = _exp_reduced64(_clamp64(x)) - 1.0
    # A blend, not a branch: Numba inlines branch-free code cleanly and the loop stays vectorised.
    use_small = np.float64(abs(x) < _EXPM1_SMALL)
    return use_small * small + (1.0 - use_small) * large


@jit(inline="always")
def _exp_nonpositive64(x):
    # Below the clamp exp is exactly 0 (a -inf logit keeps probability 0): libm would give a
    # subnormal down to -745. A NaN passes np.maximum and makes the product NaN.
    return _exp_reduced64(np.maximum(x, -708.0)) * np.float64(x >= -708.0)


@jit(inline="always")
def _sigmoid64(z):
    return _divide(1.0, 1.0 + _exp_reduced64(_clamp64(-z)))


@jit(inline="always")
def _tanh64(z):
    em = _expm1_64(-2.0 * abs(z))  # in (-1, 0]
    return math.copysign(_divide(-em, 2.0 + em), z)


# ---- float32 ------------------------------------------------------------------------------------

_LOG2E32 = np.float32(1.44269504)
_LN2_HI32 = np.float32(0.693359375)
_LN2_LO32 = np.float32(-2.12194440e-4)
_HALF32 = np.float32(0.5)
_ONE32 = np.float32(1.0)
_TWO32 = np.float32(2.0)
_LOW32 = np.float32(-87.0)
_HIGH32 = np.float32(88.0)
_EXPM1_SMALL32 = np.float32(0.34657359)
_C32 = tuple(np.float32(1.0 / math.factorial(k)) for k in range(9))


@jit(inline="always")
def _exp_reduced32(x):
    n = np.floor(x * _LOG2E32 + _HALF32)
    r = (x - n * _LN2_HI32) - n * _LN2_LO32
    p = _C32[7]
    p = p * r + _C32[6]
    p = p * r + _C32[5]
    p = p * r + _C32[4]
    p = p * r + _C32[3]
    p = p * r + _C32[2]
    p = p * r + _C32[1]
    p = p * r + _C32[0]
    return p * _bits_as_float32((np.int32(n) + np.int32(127)) << np.int32(23))


@jit(inline="always")
def _clamp32(x):
    return np.minimum(np.maximum(x, _LOW32), _HIGH32)


@jit(inline="always")
def _expm1_32(x):
    xs = x
    x = np.minimum(np.maximum(x, -_EXPM1_SMALL32), _EXPM1_SMALL32)
    c = _C32
    q = c[8]
    q = q * x + c[7]
    q = q * x + c[6]
    q = q * x + c[5]
    q = q * x + c[4]
    q = q * x + c[3]
    q = q * x + c[2]
    q = q * x + c[1]
    small = q * x
    x = xs
    large = _exp_reduced32(_clamp32(x)) - _ONE32
    use_small = np.float32(abs(x) < _EXPM1_SMALL32)
    return use_small * small + (_ONE32 - use_small) * large


@jit(inline="always")
def _exp_nonpositive32(x):
    return _exp_reduced32(np.maximum(x, _LOW32)) * np.float32(x >= _LOW32)


@jit(inline="always")
def _sigmoid32(z):
    return _divide(_ONE32, _ONE32 + _exp_reduced32(_clamp32(-z)))


@jit(inline="always")
def _tanh32(z):
    em = _expm1_32(np.float32(-2.0) * abs(z))
    return math.copysign(_divide(-em, _TWO32 + em), z)


# ---- the public, type-generic functions ----------------------------------------------------------

def sigmoid(z):
    """1 / (1 + exp(-z)), in the argument's precision (float32 or float64).

    A scalar in, a scalar of the same dtype out. Meant for ``@njit`` code, where it
    compiles to the vectorisable form above (called from Python it is plain ``math``):

    >>> import numpy as np
    >>> from numba import njit
    >>> from numbarnn.kernels.activations import sigmoid
    >>> @njit
    ... def sigmoid_all(z, out):
    ...     for i in range(z.shape[0]):
    ...         out[i] = sigmoid(z[i])
    >>> z = np.linspace(-4.0, 4.0, 5)
    >>> out = np.empty_like(z)
    >>> sigmoid_all(z, out)
    >>> np.allclose(out, 1 / (1 + np.exp(-z)), rtol=1e-15, atol=0)
    True
    >>> z32, out32 = z.astype(np.float32), np.empty(5, np.float32)
    >>> sigmoid_all(z32, out32)
    >>> np.allclose(out32, 1 / (1 + np.exp(-z32)), rtol=4e-7, atol=0)
    True
    """
    return 1.0 / (1.0 + math.exp(-z))


def tanh(z):
    """tanh(z), in the argument's precision (float32 or float64).

    A scalar in, a scalar of the same dtype out; for ``@njit`` code, like :func:`sigmoid`.
    Small arguments keep their relative precision:

    >>> import numpy as np
    >>> from numba import njit
    >>> from numbarnn.kernels.activations import tanh
    >>> @njit
    ... def tanh_all(z, out):
    ...     for i in range(z.shape[0]):
    ...         out[i] = tanh(z[i])
    >>> z = np.array([-3.0, -0.5, 1e-10, 0.5, 20.0])
    >>> out = np.empty_like(z)
    >>> tanh_all(z, out)
    >>> np.allclose(out, np.tanh(z), rtol=1e-15, atol=0)
    True
    """
    return math.tanh(z)


@overload(sigmoid, inline="always")
def _sigmoid_overload(z):
    if isinstance(z, types.Float):
        return (lambda z: _sigmoid32(z)) if z.bitwidth == 32 else (lambda z: _sigmoid64(z))


@overload(tanh, inline="always")
def _tanh_overload(z):
    if isinstance(z, types.Float):
        return (lambda z: _tanh32(z)) if z.bitwidth == 32 else (lambda z: _tanh64(z))


def exp_nonpositive(x):
    """exp(x) for x <= 0 (a max-shifted logit), in the argument's precision; vectorisable.

    Exactly 0 below -708 (float64) or -87 (float32), where libm's exp would still give a
    subnormal; NaN stays NaN. For ``@njit`` code (called from Python it is plain ``math``):

    >>> import numpy as np
    >>> from numba import njit
    >>> from numbarnn.kernels.activations import exp_nonpositive
    >>> @njit
    ... def exp_all(x, out):
    ...     for i in range(x.shape[0]):
    ...         out[i] = exp_nonpositive(x[i])
    >>> x = np.array([0.0, -1e-300, -0.5, -30.0, -700.0, -800.0, -np.inf, np.nan])
    >>> out = np.empty_like(x)
    >>> exp_all(x, out)
    >>> np.allclose(out[:5], np.exp(x[:5]), rtol=3e-16, atol=0), out[5:].tolist()
    (True, [0.0, 0.0, nan])
    """
    return math.exp(x)


@overload(exp_nonpositive, inline="always")
def _exp_nonpositive_overload(x):
    if isinstance(x, types.Float):
        return (lambda x: _exp_nonpositive32(x)) if x.bitwidth == 32 else (lambda x: _exp_nonpositive64(x))
