"""numbarnn-layernorm-lstm: the layer-normalised LSTM (Ba et al. 2016, as in haste) for
numbarnn, registered through the ``numbarnn`` entry point.

::

    z   = LN(W_x x_t) * gamma_x + LN(W_h h_{t-1}) * gamma_h + b_x     LN over the 4H gate vector
    i, f, g, o = the four H-wide blocks of z, in that order
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
    h_t = sigmoid(o) * tanh(LN(c_t) * gamma_c + beta_c)             LN over H

``LN(a) = (a - mean(a)) / sqrt(biased variance(a) + 1e-5)``, with no gain or shift of its
own. The projections carry no bias (the spec sets ``projection_biases=False``: a bias
before a layer norm would cancel); ``b_x`` is added after the norms, so it is a parameter
of the cell's own, with the gains and the shift. A model's parameters are ``W_x`` (4H, X),
``W_h`` (4H, H), ``b_x``, ``gamma_x``, ``gamma_h`` (4H,), ``gamma_c``, ``beta_c`` (H,);
the weights are initialised uniform in ±1/sqrt(H), the gammas to 1, ``b_x`` and ``beta_c``
to 0. The pointwise kernels are in :mod:`numbarnn_layernorm_lstm.kernels`.
"""
import numbarnn
from numbarnn.cells import CellSpec, ParamSpec, ones, uniform_init, zeros

from .kernels import CACHE_WIDTH, layernorm_lstm_backward, layernorm_lstm_forward

__version__ = "0.1.0"

__all__ = ["LAYERNORM_LSTM", "layernorm_lstm_forward", "layernorm_lstm_backward", "register_cells",
           "__version__"]

LAYERNORM_LSTM = CellSpec(
    name="layernorm_lstm",
    description="layer-normalised LSTM (Ba et al. 2016, as in haste): LN of each projection and of c, with gains",
    gates=4,
    states=2,
    cache_width=CACHE_WIDTH,
    forward=layernorm_lstm_forward,
    backward=layernorm_lstm_backward,
    shared_gate_grad=False,  # the projections pass through different layer norms
    init=uniform_init,  # W_x and W_h kept (the biases it also draws are dropped)
    params=(
        ParamSpec("b_x", ("G*H",), zeros),
        ParamSpec("gamma_x", ("G*H",), ones),
        ParamSpec("gamma_h", ("G*H",), ones),
        ParamSpec("gamma_c", ("H",), ones),
        ParamSpec("beta_c", ("H",), zeros),
    ),
    recurrent_weights=True,
    projection_biases=False,
    state_names=("h", "c"),
)


@numbarnn.hookimpl
def register_cells(register):
    """The ``register_cells`` hook (see :mod:`numbarnn.hookspecs`): registers :data:`LAYERNORM_LSTM`.

    numbarnn calls it once, through the entry point ``layernorm_lstm = "numbarnn_layernorm_lstm"``.
    Called directly, with a list's ``append`` as the callback:

    >>> import numbarnn_layernorm_lstm
    >>> specs = []
    >>> numbarnn_layernorm_lstm.register_cells(specs.append)
    >>> [spec.name for spec in specs], specs[0] is numbarnn_layernorm_lstm.LAYERNORM_LSTM
    (['layernorm_lstm'], True)
    >>> spec = specs[0]
    >>> spec.gates, spec.states, spec.cache_width, spec.projection_biases
    (4, 2, 17, False)
    >>> spec.param_shapes(input_size=3, hidden_size=2)   # the issue's names and shapes
    {'W_x': (8, 3), 'W_h': (8, 2), 'b_x': (8,), 'gamma_x': (8,), 'gamma_h': (8,), 'gamma_c': (2,), 'beta_c': (2,)}
    """
    register(LAYERNORM_LSTM)
