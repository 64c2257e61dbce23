"""A learnt embedding table: its forward is a row gather, its gradient a scatter-add.

No one-hot vector is ever built: a step's input is one row of the ``(V, E)`` table, and its
gradient adds that step's ``(E,)`` gradient into the same row.

* ``embedding_forward(idx, W, out2d)``: ``out2d[n] = W[idx[n]]`` (zeros where ``idx[n] == -1``,
  the all-zero input used for padding and the start of generation);
* ``embedding_backward(idx, dout2d, dW)``: ``dW = 0``, then ``dW[idx[n]] += dout2d[n]`` for
  every ``idx[n] >= 0``.

idx (N,) int64 in [-1, V) (checked by the caller: the kernels index unchecked); W, dW (V, E);
out2d, dout2d (N, E); one float dtype.

>>> import numpy as np
>>> from numbarnn.kernels.embedding import embedding_backward, embedding_forward
>>> W = np.arange(6.0).reshape(3, 2)
>>> idx = np.array([2, -1, 2, 0], np.int64)
>>> out = np.empty((4, 2))
>>> embedding_forward(idx, W, out)
>>> out.tolist()
[[4.0, 5.0], [0.0, 0.0], [4.0, 5.0], [0.0, 1.0]]
>>> dW = np.empty_like(W)
>>> embedding_backward(idx, np.ones((4, 2)), dW)   # row 2 is used twice, row 1 never
>>> dW.tolist()
[[1.0, 1.0], [0.0, 0.0], [2.0, 2.0]]
"""
import numpy as np

from ._jit import jit

__all__ = ["embedding_forward", "embedding_backward", "fold_input_weights", "unfold_input_gradient"]


@jit
def embedding_forward(idx, W, out2d):
    """out2d (N, E): row n is ``W[idx[n]]``, or zeros for ``idx[n] == -1``."""
    N, E = out2d.shape
    for n in range(N):
        i = idx[n]
        if i < 0:
            for e in range(E):
                out2d[n, e] = 0.0
        else:
            for e in range(E):
                out2d[n, e] = W[i, e]


@jit
def embedding_backward(idx, dout2d, dW):
    """dW (V, E) = the scatter-add of dout2d's rows into the rows ``idx`` names (-1: none)."""
    V, E = dW.shape
    for v in range(V):
        for e in range(E):
            dW[v, e] = 0.0
    for n in range(idx.shape[0]):
        i = idx[n]
        if i >= 0:
            for e in range(E):
                dW[i, e] += dout2d[n, e]


@jit
def fold_input_weights(W_x, W_emb, W_in):
    """``W_in = W_x @ W_emb.T``: the input projection of a one-hot index through the table.

    W_x (G*H, E), W_emb (V, E) -> W_in (G*H, V). Column v of ``W_in`` is what the layer's
    input projection makes of row v of the table, so the one-hot loops run an embedding
    model unchanged. (In numba, so the product runs on the BLAS the loops use: numpy's own
    BLAS threads, spinning after a call, would steal the core the loops run on.)

    >>> import numpy as np
    >>> W_x, W_emb, W_in = np.ones((4, 2)), np.arange(6.0).reshape(3, 2), np.empty((4, 3))
    >>> fold_input_weights(W_x, W_emb, W_in)
    >>> W_in[0].tolist()
    [1.0, 5.0, 9.0]
    """
    W_in[...] = np.dot(W_x, W_emb.T)


@jit
def unfold_input_gradient(dW_in, W_x, W_emb, dW_x, dW_emb):
    """The chain rule through :func:`fold_input_weights`: ``dW_x = dW_in @ W_emb`` and
    ``dW_emb = dW_in.T @ W_x``. dW_in (G*H, V); W_x, dW_x (G*H, E); W_emb, dW_emb (V, E).

    >>> import numpy as np
    >>> dW_x, dW_emb = np.empty((4, 2)), np.empty((3, 2))
    >>> unfold_input_gradient(np.ones((4, 3)), np.ones((4, 2)), np.arange(6.0).reshape(3, 2), dW_x, dW_emb)
    >>> dW_x[0].tolist(), dW_emb[0].tolist()
    ([6.0, 9.0], [4.0, 4.0])
    """
    dW_x[...] = np.dot(dW_in, W_emb)
    dW_emb[...] = np.dot(dW_in.T, W_x)
