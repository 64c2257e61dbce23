"""Moving weights to and from PyTorch (an optional dependency).

The fused weights are PyTorch's own layout (``weight_ih_l0`` = ``W_x``, ``weight_hh_l0`` =
``W_h``, ``bias_ih_l0`` = ``b_x``, ``bias_hh_l0`` = ``b_h``, gates in PyTorch's order; layer k's
are ``..._lk`` and a reverse direction's ``..._reverse`` on both sides), so a conversion is a
copy. ``nn.RNN`` (tanh), ``nn.LSTM`` (no projection) and any registered cell that names a
``torch_module`` (the GRU plugin: ``nn.GRU``), stacked and bidirectional; with an
``nn.Embedding`` in front and an ``nn.Linear`` head on top, a whole
:class:`~numbarnn.sequence_model.SequenceModel` (``W_emb`` and ``W_y``, ``b_y``).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from .cells import PARAM_NAMES
from .models import RecurrentModel
from .sequence_model import SequenceModel, direction_param_name

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


class TorchStack(NamedTuple):
    """What :func:`to_torch` gives for a model with an embedding or a head: the three
    ``torch.nn`` modules in the order they run (``embedding`` and ``head`` may be None)."""
    embedding: Optional[object]
    rnn: object
    head: Optional[object]


def _checked_module(module):
    torch = _torch()
    if not isinstance(module, torch.nn.RNNBase):
        raise ValueError(f"from_torch expects a torch.nn.RNN, LSTM or GRU, got {type(module).__name__}")
    cell = _cell_for(module)
    if getattr(module, "nonlinearity", "tanh") != "tanh":
        raise ValueError(f"numbarnn's rnn cell is tanh; this nn.RNN uses {module.nonlinearity!r}")
    if getattr(module, "proj_size", 0):
        raise ValueError("LSTM projections (proj_size > 0) are not supported")
    return cell


def _numpy(tensor, like=None):
    if tensor is None:  # bias=False
        return np.zeros(like.shape[0], like.dtype)
    return tensor.detach().cpu().numpy().copy()


def from_torch(module, *, embedding=None, head=None, task: Optional[str] = None):
    """numbarnn's model with the weights of ``nn.RNN``/``nn.LSTM``/``nn.GRU`` (copies).

    A single-layer unidirectional module alone gives a :class:`RecurrentModel` (below).
    Stacked (``num_layers``) or bidirectional modules, or any module with an ``embedding``
    (an ``nn.Embedding`` in front: integer inputs) or a ``head`` (an ``nn.Linear`` on the
    outputs), give a :class:`~numbarnn.sequence_model.SequenceModel` (time-major whatever
    ``batch_first`` says). Its ``task`` defaults to ``"lm"`` for a unidirectional model with
    an embedding and ``"regress"`` otherwise (per-step outputs, the hidden states without a
    head); pass ``task="classify"`` for a head on PyTorch's ``h_n`` (the last layer's
    directions, concatenated).

    >>> import torch
    >>> stack = from_torch(torch.nn.GRU(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64),
    ...                    head=torch.nn.Linear(8, 2, dtype=torch.float64), task="classify")
    >>> type(stack).__name__, stack.task, [name for name in stack.params if name.startswith("W_x")]
    ('SequenceModel', 'classify', ['W_x', 'W_x_reverse', 'W_x_l1', 'W_x_l1_reverse'])
    """
    cell = _checked_module(module)
    if module.num_layers == 1 and not module.bidirectional and embedding is None and head is None:
        if task is not None:
            raise ValueError("task= is for a model with a head or an embedding (a SequenceModel)")
        return _layer_from_torch(module, cell)
    torch = _torch()
    if embedding is not None and not isinstance(embedding, torch.nn.Embedding):
        raise ValueError(f"embedding must be a torch.nn.Embedding, got {type(embedding).__name__}")
    if head is not None and not isinstance(head, torch.nn.Linear):
        raise ValueError(f"head must be a torch.nn.Linear, got {type(head).__name__}")
    D, H = (2 if module.bidirectional else 1), module.hidden_size
    if embedding is not None and embedding.embedding_dim != module.input_size:
        raise ValueError(f"the embedding's width {embedding.embedding_dim} is not the module's input_size "
                         f"{module.input_size}")
    if head is not None and head.in_features != D * H:
        raise ValueError(f"the head takes {head.in_features} features but the module gives {D * H} "
                         f"({D} direction(s) of {H})")
    if task is None:
        task = "lm" if embedding is not None and D == 1 else "regress"
    W_x = module.weight_ih_l0.detach().cpu().numpy()
    dtype = W_x.dtype.name
    out = None if head is None else head.out_features
    model = SequenceModel(cell, embedding.num_embeddings if embedding is not None else module.input_size, H, out,
                          layers=module.num_layers, dtype=dtype, index_input=embedding is not None,
                          embedding=None if embedding is None else embedding.embedding_dim,
                          bidirectional=module.bidirectional, task=task)
    for name in model.params:
        if name == "W_emb":
            value = _numpy(embedding.weight)
        elif name in ("W_y", "b_y"):
            value = _numpy(head.weight) if name == "W_y" else _numpy(head.bias, like=head.weight)
        else:
            weight = getattr(module, _torch_name(name).replace("bias", "weight"))
            value = _numpy(getattr(module, _torch_name(name), None), like=weight)
        if value.shape != model.params[name].shape:
            raise ValueError(f"{name}: shape {value.shape}, expected {model.params[name].shape}")
        model.params[name][...] = value
    return model


def _torch_name(name: str) -> str:
    """numbarnn's parameter name -> PyTorch's (``W_x_l1_reverse`` -> ``weight_ih_l1_reverse``)."""
    reverse = name.endswith("_reverse")
    base = name[:-len("_reverse")] if reverse else name
    base, _, layer = base.partition("_l")
    layer = layer or "0"
    return _TORCH_NAMES[base].replace("_l0", f"_l{layer}") + ("_reverse" if reverse else "")


def _layer_from_torch(module, cell) -> RecurrentModel:
    """A :class:`RecurrentModel` with the weights of a single-layer ``nn.RNN``/``nn.LSTM``/``nn.GRU``.

    ``batch_first`` and the dtype (float32 or float64) are taken from the module; a module
    built with ``bias=False`` gives zero biases. The weights are copies: ``W_x`` (G*H, X) from
    ``weight_ih_l0``, ``W_h`` (G*H, H) from ``weight_hh_l0``, ``b_x``/``b_h`` (G*H,).

    >>> import torch
    >>> module = torch.nn.LSTM(10, 16, batch_first=True)
    >>> model = from_torch(module)
    >>> type(model).__name__, model.params["W_h"].shape, model.batch_first
    ('RecurrentModel', (64, 16), True)
    """
    W_x = module.weight_ih_l0.detach().cpu().numpy()
    params = {}
    for ours, theirs in _TORCH_NAMES.items():
        tensor = getattr(module, theirs, None)
        params[ours] = (np.zeros(W_x.shape[0], W_x.dtype) if tensor is None
                        else tensor.detach().cpu().numpy().copy())
    return RecurrentModel(cell, module.input_size, module.hidden_size, dtype=W_x.dtype.name,
                          params=params, batch_first=module.batch_first)


def to_torch(model, *, batch_first: Optional[bool] = None):
    """New ``torch.nn`` modules with the model's weights and dtype.

    A :class:`RecurrentModel` gives one RNN, LSTM or GRU module (``batch_first`` as the
    model's). A :class:`~numbarnn.sequence_model.SequenceModel` gives the recurrent module
    (``num_layers``, ``bidirectional``; ``batch_first`` False unless asked) when it has no
    embedding and no head, else a :class:`TorchStack` ``(embedding, rnn, head)``: an
    ``nn.Embedding`` from ``W_emb`` (or None), the module, an ``nn.Linear`` from ``W_y``,
    ``b_y`` (or None). Raises ``ValueError`` for a cell without a ``torch_module``.

    >>> import numbarnn, torch
    >>> model = numbarnn.RecurrentModel(numbarnn.get_cell("lstm"), 10, 16, dtype="float32", seed=0)
    >>> to_torch(model)
    LSTM(10, 16)
    >>> to_torch(numbarnn.make_model("lstm", vocab_size=27, embedding=8, hidden_size=16, layers=2, seed=0))
    TorchStack(embedding=Embedding(27, 8), rnn=LSTM(8, 16, num_layers=2), head=Linear(in_features=16, out_features=27, bias=True))
    """
    torch = _torch()
    if model.cell.torch_module is None:
        raise ValueError(f"cell {model.cell.name!r} has no PyTorch equivalent")
    cls = getattr(torch.nn, model.cell.torch_module)
    dtype = torch.float64 if model.dtype == np.float64 else torch.float32

    def copy(tensor, value):
        tensor.copy_(torch.from_numpy(np.ascontiguousarray(value)))

    if isinstance(model, RecurrentModel):
        module = cls(model.input_size, model.hidden_size, batch_first=model.batch_first if batch_first is None
                     else batch_first, dtype=dtype)
        with torch.no_grad():
            for ours, theirs in _TORCH_NAMES.items():
                copy(getattr(module, theirs), model.params[ours])
        return module
    if not isinstance(model, SequenceModel):
        raise ValueError(f"to_torch takes a RecurrentModel or a SequenceModel, got {type(model).__name__}")
    first = model.embedding_size if model.embedding_size is not None else model.input_size
    module = cls(first, model.hidden_size, num_layers=len(model.stack), bidirectional=model.bidirectional,
                 batch_first=bool(batch_first), dtype=dtype)
    with torch.no_grad():
        for i in range(len(model.stack)):
            for reverse in (False, True)[:model.directions]:
                for name in PARAM_NAMES:
                    ours = direction_param_name(name, i, reverse)
                    copy(getattr(module, _torch_name(ours)), model.params[ours])
    if model.embedding_size is None and model.output_size is None:
        return module
    embedding = head = None
    with torch.no_grad():
        if model.embedding_size is not None:
            embedding = torch.nn.Embedding(model.vocab_rows, model.embedding_size, dtype=dtype)
            copy(embedding.weight, model.params["W_emb"])
        if model.output_size is not None:
            head = torch.nn.Linear(model.directions * model.hidden_size, model.output_size, dtype=dtype)
            copy(head.weight, model.params["W_y"])
            copy(head.bias, model.params["b_y"])
    return TorchStack(embedding, module, head)
