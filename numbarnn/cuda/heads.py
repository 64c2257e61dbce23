"""The output head on the GPU: the mirror of :mod:`numbarnn.kernels.heads`.

The same affine map as the input projection, so it reuses the same products:

* ``linear_forward(h2d, W, b, out2d)``: ``out2d (N, V) = h2d (N, H) @ W.T + b``;
* ``linear_backward(dout2d, h2d, W, dW, db, dh2d)``: ``dW = dout^T h``, ``db = sum dout``,
  ``dh = dout W`` (dh2d may be None).

Device arrays of one float dtype: W (V, H), b (V,), dW (V, H), db (V,), dout2d (N, V),
dh2d (N, H). Each takes a ``stream`` keyword too. The two names are
:func:`numbarnn.cuda.loops.project_dense` and
:func:`numbarnn.cuda.loops.input_weight_gradients_dense` themselves:

>>> import numpy as np
>>> from numba import cuda
>>> from numbarnn.cuda.heads import linear_backward, linear_forward
>>> rng = np.random.default_rng(0)
>>> N, H, V = 4, 3, 2
>>> h2d, W, b, dout2d = rng.normal(size=(N, H)), rng.normal(size=(V, H)), rng.normal(size=V), rng.normal(size=(N, V))
>>> d_h2d, d_W = cuda.to_device(h2d), cuda.to_device(W)
>>> out2d = cuda.device_array((N, V))
>>> linear_forward(d_h2d, d_W, cuda.to_device(b), out2d)
>>> np.allclose(out2d.copy_to_host(), h2d @ W.T + b)
True
>>> dW, db, dh2d = cuda.device_array((V, H)), cuda.device_array(V), cuda.device_array((N, H))
>>> linear_backward(cuda.to_device(dout2d), d_h2d, d_W, dW, db, dh2d)
>>> [np.allclose(a.copy_to_host(), e) for a, e in [(dW, dout2d.T @ h2d), (db, dout2d.sum(axis=0)), (dh2d, dout2d @ W)]]
[True, True, True]
"""
from .loops import input_weight_gradients_dense as linear_backward
from .loops import project_dense as linear_forward

__all__ = ["linear_forward", "linear_backward"]
