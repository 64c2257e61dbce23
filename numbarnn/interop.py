"""Moving weights to and from PyTorch (an optional dependency).

The fused weights are PyTorch's own layout (``weight_ih_l0`` = ``W_x``, ``weight_hh_l0`` =
``W_h``, ``bias_ih_l0`` = ``b_x``, ``bias_hh_l0`` = ``b_h``, gates in PyTorch's order), so a
conversion is a copy. Single-layer, unidirectional ``nn.RNN`` (tanh), ``nn.LSTM`` (no
projection) and any registered cell that names a ``torch_module`` (the GRU plugin: ``nn.GRU``).
"""
from __future__ import annotations

import numpy as np

from .models import RecurrentModel

_TORCH_NAMES = {"W_x": "weight_ih_l0", "W_h": "weight_hh_l0", "b_x": "bias_ih_l0", "b_h": "bias_hh_l0"}


def _torch():
    try:
        import torch
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("numbarnn.interop needs PyTorch: pip install 'numbarnn[torch]'") from error
    return torch


def _known_cells():
    from .plugins import get_cell, list_cells  # every registered cell, plugins included
    return [get_cell(name) for name in list_cells()]


def _cell_for(module):
    kind = type(module).__name__
    for cell in _known_cells():
        if cell.torch_module == kind:
            return cell
    supported = sorted(c.torch_module for c in _known_cells() if c.torch_module)
    raise ValueError(f"no numbarnn cell matches torch.nn.{kind}; supported: {', '.join(supported)}")


def from_torch(module) -> RecurrentModel:
    """A :class:`RecurrentModel` with the weights of a single-layer ``nn.RNN``/``nn.LSTM``/``nn.GRU``.

    ``batch_first`` and the dtype (float32 or float64) are taken from the module; a module
    built with ``bias=False`` gives zero biases. The weights are copies: ``W_x`` (G*H, X) from
    ``weight_ih_l0``, ``W_h`` (G*H, H) from ``weight_hh_l0``, ``b_x``/``b_h`` (G*H,).

    >>> import torch
    >>> module = torch.nn.LSTM(10, 16, batch_first=True)
    >>> model = from_torch(module)
    >>> model.params["W_h"].shape, model.batch_first
    ((64, 16), True)
    """
    torch = _torch()
    if not isinstance(module, torch.nn.RNNBase):
        raise ValueError(f"from_torch expects a torch.nn.RNN, LSTM or GRU, got {type(module).__name__}")
    cell = _cell_for(module)
    if module.num_layers != 1 or module.bidirectional:
        raise ValueError(f"from_torch supports single-layer unidirectional modules, got num_layers="
                         f"{module.num_layers}, bidirectional={module.bidirectional}")
    if getattr(module, "nonlinearity", "tanh") != "tanh":
        raise ValueError(f"numbarnn's rnn cell is tanh; this nn.RNN uses {module.nonlinearity!r}")
    if getattr(module, "proj_size", 0):
        raise ValueError("LSTM projections (proj_size > 0) are not supported")
    W_x = module.weight_ih_l0.detach().cpu().numpy()
    params = {}
    for ours, theirs in _TORCH_NAMES.items():
        tensor = getattr(module, theirs, None)
        params[ours] = (np.zeros(W_x.shape[0], W_x.dtype) if tensor is None
                        else tensor.detach().cpu().numpy().copy())
    return RecurrentModel(cell, module.input_size, module.hidden_size, dtype=W_x.dtype.name,
                          params=params, batch_first=module.batch_first)


def to_torch(model: RecurrentModel):
    """A new ``torch.nn`` module (RNN, LSTM or GRU) with the model's weights, dtype and ``batch_first``.

    Raises ``ValueError`` for a cell without a ``torch_module``.

    >>> import numbarnn, torch
    >>> model = numbarnn.RecurrentModel(numbarnn.get_cell("lstm"), 10, 16, dtype="float32", seed=0)
    >>> to_torch(model)
    LSTM(10, 16)
    """
    torch = _torch()
    if model.cell.torch_module is None:
        raise ValueError(f"cell {model.cell.name!r} has no PyTorch equivalent")
    cls = getattr(torch.nn, model.cell.torch_module)
    dtype = torch.float64 if model.dtype == np.float64 else torch.float32
    module = cls(model.input_size, model.hidden_size, batch_first=model.batch_first, dtype=dtype)
    with torch.no_grad():
        for ours, theirs in _TORCH_NAMES.items():
            getattr(module, theirs).copy_(torch.from_numpy(model.params[ours]))
    return module
