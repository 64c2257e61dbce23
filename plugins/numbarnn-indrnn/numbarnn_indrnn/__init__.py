"""numbarnn-indrnn: the IndRNN cell (Li et al. 2018) for numbarnn, registered through the
``numbarnn`` entry point.

::

    h_t = relu(W_x x_t + b_x + u * h_{t-1})

``u`` (H,) is an element-wise recurrent weight: the cell has no ``W_h`` (its spec sets
``recurrent_weights=False``, so numbarnn's loops do no recurrent product), and ``u`` is a
parameter of the cell's own (a :class:`numbarnn.cells.ParamSpec`) that its kernels receive
and whose gradient they accumulate. ``b_x`` is the input projection's bias, added by the
loops. A model's parameters are ``W_x`` (H, X), ``b_x`` (H,) and ``u`` (H,), initialised
as in the paper's reference code: ``W_x`` uniform in ±1/sqrt(H), ``b_x`` zero, ``u`` uniform
in (0, 1). The pointwise kernels are in :mod:`numbarnn_indrnn.kernels`.
"""
import numpy as np

import numbarnn
from numbarnn.cells import CellSpec, ParamSpec, uniform

from .kernels import indrnn_backward, indrnn_forward

__version__ = "0.1.0"

__all__ = ["INDRNN", "indrnn_forward", "indrnn_backward", "init_projection", "register_cells", "__version__"]


def init_projection(rng, input_size, hidden_size, gates, dtype):
    """The fused weights IndRNN uses: ``W_x`` (G*H, X) uniform in ±1/sqrt(H), ``b_x`` zero.

    The spec's ``init`` (see :class:`numbarnn.cells.CellSpec`); ``u`` is drawn after it,
    from the same generator, by its own :class:`~numbarnn.cells.ParamSpec`.

    >>> import numpy as np
    >>> p = init_projection(np.random.default_rng(0), input_size=3, hidden_size=4, gates=1, dtype=np.float32)
    >>> {name: (a.shape, a.dtype.name) for name, a in p.items()}
    {'W_x': ((4, 3), 'float32'), 'b_x': ((4,), 'float32')}
    >>> bool(np.abs(p["W_x"]).max() <= 0.5), p["b_x"].tolist()
    (True, [0.0, 0.0, 0.0, 0.0])
    """
    k = 1.0 / np.sqrt(hidden_size)
    W_x = rng.uniform(-k, k, size=(gates * hidden_size, input_size))
    return {"W_x": W_x.astype(dtype), "b_x": np.zeros(gates * hidden_size, dtype)}


INDRNN = CellSpec(
    name="indrnn",
    description="IndRNN (Li et al. 2018): h = relu(W_x x + b_x + u * h_prev), u element-wise, no W_h",
    gates=1,
    states=1,
    cache_width=0,  # relu's gradient needs only h_t, which the states keep
    forward=indrnn_forward,
    backward=indrnn_backward,
    shared_gate_grad=True,  # no W_h: the loops pass one array as dxz_t and dhz_t
    init=init_projection,
    params=(ParamSpec("u", ("H",), uniform(0.0, 1.0)),),
    recurrent_weights=False,
    projection_biases=True,  # b_x
    state_names=("h",),
)


@numbarnn.hookimpl
def register_cells(register):
    """The ``register_cells`` hook (see :mod:`numbarnn.hookspecs`): registers :data:`INDRNN`.

    numbarnn calls it once, through the entry point ``indrnn = "numbarnn_indrnn"``. Called
    directly, with a list's ``append`` as the callback:

    >>> import numbarnn_indrnn
    >>> specs = []
    >>> numbarnn_indrnn.register_cells(specs.append)
    >>> [spec.name for spec in specs], specs[0] is numbarnn_indrnn.INDRNN
    (['indrnn'], True)
    >>> spec = specs[0]   # one gate block, one state (h), nothing cached, no W_h
    >>> spec.gates, spec.states, spec.cache_width, spec.recurrent_weights
    (1, 1, 0, False)
    >>> spec.param_shapes(input_size=3, hidden_size=5)   # the issue's names and shapes
    {'W_x': (5, 3), 'b_x': (5,), 'u': (5,)}
    """
    register(INDRNN)
