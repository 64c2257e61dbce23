"""numbarnn-gru: a GRU cell for numbarnn, registered through the ``numbarnn`` entry point.

PyTorch's ``nn.GRU`` equations and fused layout (gate rows r, z, n)::

    r  = sigmoid(xz_r + hz_r)
    z  = sigmoid(xz_z + hz_z)
    n  = tanh(xz_n + r * hz_n)         # hz_n = W_hn h_{t-1} + b_hn, bias included
    h  = (1 - z) * n + z * h_{t-1}

with ``xz = x @ W_x.T + b_x`` and ``hz = h_{t-1} @ W_h.T + b_h``. The pointwise kernels
are in :mod:`numbarnn_gru.kernels`; numbarnn's shared time loops do the rest.
"""
import numbarnn
from numbarnn.cells import CellSpec

from .kernels import gru_backward, gru_forward

__version__ = "0.1.0"

__all__ = ["GRU", "gru_forward", "gru_backward", "register_cells", "__version__"]

GRU = CellSpec(
    name="gru",
    description="GRU with PyTorch's gate equations (gate order r, z, n; reset applied to W_hn h + b_hn)",
    gates=3,
    states=1,
    cache_width=4,  # r, z, n, hz_n
    forward=gru_forward,
    backward=gru_backward,
    shared_gate_grad=False,
    torch_module="GRU",
    state_names=("h",),
    cuda_pointwise="numbarnn_gru.cuda:GRU_CUDA",  # imported only for device="cuda"
)


@numbarnn.hookimpl
def register_cells(register):
    """The ``register_cells`` hook (see :mod:`numbarnn.hookspecs`): registers :data:`GRU`.

    numbarnn calls it once, through the entry point ``gru = "numbarnn_gru"``, with a
    ``register`` that adds the spec to the registry. Called directly, with a list's
    ``append`` as the callback:

    >>> import numbarnn_gru
    >>> specs = []
    >>> numbarnn_gru.register_cells(specs.append)
    >>> [spec.name for spec in specs], specs[0] is numbarnn_gru.GRU
    (['gru'], True)
    >>> spec = specs[0]   # G = 3 gate blocks (r, z, n), S = 1 state (h), C = 4 cached blocks
    >>> spec.gates, spec.states, spec.cache_width, spec.state_names
    (3, 1, 4, ('h',))
    """
    register(GRU)
