"""Scalar activations, inlined into the pointwise kernels."""
import math

from numba import njit


@njit(inline="always")
def sigmoid(z):
    # Branch on the sign so exp never overflows (exp(-z) for very negative z).
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@njit(inline="always")
def tanh(z):
    return math.tanh(z)
