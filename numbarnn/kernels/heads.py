"""The output head: a dense projection from hidden states to the vocabulary.

It is the same affine map as the input projection, so it reuses those kernels:

* ``linear_forward(h2d, W, b, out2d)``: ``out2d (N, V) = h2d (N, H) @ W.T + b``;
* ``linear_backward(dout2d, h2d, W, dW, db, dh2d)``: ``dW = dout^T h``, ``db = sum dout``,
  ``dh = dout W``.

W (V, H), b (V,), dW (V, H), db (V,), dout2d (N, V), dh2d (N, H); one float dtype. The
two names are :func:`~numbarnn.kernels.loops.project_dense` and
:func:`~numbarnn.kernels.loops.input_weight_gradients_dense` themselves:

>>> import numpy as np
>>> from numbarnn.kernels.heads import linear_backward, linear_forward
>>> rng = np.random.default_rng(0)
>>> N, H, V = 4, 3, 2
>>> h2d, W, b = rng.normal(size=(N, H)), rng.normal(size=(V, H)), rng.normal(size=V)
>>> out2d = np.empty((N, V))
>>> linear_forward(h2d, W, b, out2d)
>>> np.allclose(out2d, h2d @ W.T + b)
True
>>> dout2d = rng.normal(size=(N, V))
>>> dW, db, dh2d = np.empty((V, H)), np.empty(V), np.empty((N, H))
>>> linear_backward(dout2d, h2d, W, dW, db, dh2d)
>>> np.allclose(dW, dout2d.T @ h2d), np.allclose(db, dout2d.sum(axis=0)), np.allclose(dh2d, dout2d @ W)
(True, True, True)
"""
from .loops import input_weight_gradients_dense as linear_backward
from .loops import project_dense as linear_forward

__all__ = ["linear_forward", "linear_backward"]
