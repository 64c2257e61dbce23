"""The output head on the GPU: the mirror of :mod:`numbarnn.kernels.heads`.

The same affine map as the input projection, so it reuses the same products:

* ``linear_forward(h2d, W, b, out2d)``: ``out2d (N, V) = h2d (N, H) @ W.T + b``;
* ``linear_backward(dout2d, h2d, W, dW, db, dh2d)``: ``dW = dout^T h``, ``db = sum dout``,
  ``dh = dout W``.
"""
from .loops import input_weight_gradients_dense as linear_backward
from .loops import project_dense as linear_forward

__all__ = ["linear_forward", "linear_backward"]
