"""The output head: a dense projection from hidden states to the vocabulary."""
import numpy as np
from numba import njit

from .loops import column_sums


@njit(cache=True)
def linear_forward(h2d, W, b, out2d):
    """out2d (N, V) = h2d (N, H) @ W.T (V, H) + b (V,)."""
    np.dot(h2d, W.T, out2d)
    N, V = out2d.shape
    for n in range(N):
        for k in range(V):
            out2d[n, k] += b[k]


@njit(cache=True)
def linear_backward(h2d, W, dout2d, dW, db, dh2d):
    """dW = dout^T h, db = sum dout, dh = dout W."""
    np.dot(dout2d.T, h2d, dW)
    column_sums(dout2d, db)
    np.dot(dout2d, W, dh2d)
