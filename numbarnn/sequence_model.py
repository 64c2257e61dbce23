"""The model: recurrent layers of one registered cell stacked under an optional dense head.

:class:`SequenceModel` holds the weights (one flat buffer, views per parameter) and runs
forward and backward through time on the CPU kernels. It knows nothing of losses,
optimizers or devices: a backend (:mod:`numbarnn.cpu_backend`, :mod:`numbarnn.cuda.backend`)
trains it, and :func:`numbarnn.make_model` builds it from registry names.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .cells import PARAM_NAMES
from .kernels import heads
from .models import RecurrentModel, resolve_dtype
from .plugins import get_cell

#: The input index of a zero input (padding, the first step of generation without a prime).
START_INPUT = -1


def layer_param_name(name: str, layer: int) -> str:
    """``W_x`` for the first layer, ``W_x_l1`` for the second, as PyTorch's ``_l1``.

    >>> layer_param_name("W_h", 0), layer_param_name("W_h", 2)
    ('W_h', 'W_h_l2')
    """
    return name if layer == 0 else f"{name}_l{layer}"


class SequenceModel:
    """Stacked recurrent layers plus an optional dense head ``logits = h @ W_y.T + b_y``.

    ``params`` is one flat dict (``W_x, W_h, b_x, b_h``, then ``W_x_l1, ...`` for deeper
    layers, and ``W_y, b_y`` with a head) holding the layers' own arrays, which optimizers
    update in place. Inputs are time-major: ``(T, B)`` indices or ``(T, B, X)`` floats;
    outputs ``(T, B, V)`` (the top layer's hidden states without a head). A state is the
    cell's state for one layer (an array, or a tuple such as ``(h, c)``) and a list of
    those for several layers. Dropout (inverted, between layers) applies only when
    ``forward`` gets ``train=True`` and a generator.

    >>> import numpy as np
    >>> model = SequenceModel("lstm", 5, 8, 5, layers=2, dtype="float64", seed=0)
    >>> logits, state = model.forward(np.zeros((3, 2), dtype=int))   # (T, B) indices
    >>> logits.shape, len(state), model.flat_params.size == sum(v.size for v in model.params.values())
    ((3, 2, 5), 2, True)
    >>> sorted(model.backward(np.ones_like(logits)))[:3]
    ['dW_h', 'dW_h_l1', 'dW_x']
    """

    def __init__(self, cell, input_size: int, hidden_size: int, output_size: Optional[int], *,
                 layers: int = 1, dropout: float = 0.0, dtype="float32", seed: Optional[int] = None,
                 index_input: bool = True):
        self.cell = get_cell(cell)
        self.dtype = resolve_dtype(dtype)
        if not isinstance(layers, (int, np.integer)) or isinstance(layers, bool) or layers < 1:
            raise ValueError(f"layers must be a positive integer, got {layers!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        self.index_input = index_input
        self.layers = [RecurrentModel(self.cell, input_size if i == 0 else hidden_size, hidden_size,
                                      dtype=self.dtype, seed=None if seed is None else seed + (i + 1 if i else 0))
                       for i in range(layers)]
        self.params = {layer_param_name(name, i): layer.params[name]
                       for i, layer in enumerate(self.layers) for name in PARAM_NAMES}
        self.output_size = output_size
        if output_size is not None:
            if not isinstance(output_size, (int, np.integer)) or output_size < 1:
                raise ValueError(f"output_size must be a positive integer, got {output_size!r}")
            rng = np.random.default_rng(None if seed is None else seed + 1)
            k = 1.0 / np.sqrt(hidden_size)
            self.params["W_y"] = rng.uniform(-k, k, size=(output_size, hidden_size)).astype(self.dtype)
            self.params["b_y"] = np.zeros(output_size, self.dtype)
        self._flatten()
        self._hidden = None
        self._dropout_masks = []

    def _flatten(self):
        """Move every parameter into one contiguous buffer and keep views of it.

        ``flat_params`` (P,) holds all weights in ``params`` order and ``flat_grads`` all
        gradients: the optimizer updates and the clip work on the whole buffer in one kernel
        call each, instead of one call per array.
        """
        total = sum(v.size for v in self.params.values())
        self.flat_params = np.empty(total, self.dtype)
        self.flat_grads = np.zeros(total, self.dtype)
        self._grad_views, offset = {}, 0
        for key, value in list(self.params.items()):
            view = self.flat_params[offset:offset + value.size].reshape(value.shape)
            view[...] = value
            self.params[key] = view
            self._grad_views[key] = self.flat_grads[offset:offset + value.size].reshape(value.shape)
            offset += value.size
        for i, layer in enumerate(self.layers):
            for name in PARAM_NAMES:
                layer.params[name] = self.params[layer_param_name(name, i)]

    @property
    def layer(self) -> RecurrentModel:
        """The first recurrent layer."""
        return self.layers[0]

    @property
    def input_size(self):
        """X: the vocabulary size for integer inputs, the width of dense ones."""
        return self.layers[0].input_size

    @property
    def hidden_size(self):
        """H: hidden units of every layer."""
        return self.layers[0].hidden_size

    def zero_state(self, batch_size: int):
        """The all-zero state for ``batch_size`` sequences (a list of layer states when stacked)."""
        states = [layer.zero_state(batch_size) for layer in self.layers]
        return states[0] if len(states) == 1 else states

    def _per_layer(self, state):
        if state is None:
            return [None] * len(self.layers)
        if len(self.layers) == 1:
            return [state]
        if not isinstance(state, list) or len(state) != len(self.layers):
            raise ValueError(f"the state of a {len(self.layers)}-layer model is a list of "
                             f"{len(self.layers)} layer states")
        return state

    def state_arrays(self, state) -> list:
        """The state as a flat list of ``(B, H)`` arrays (for checkpoints)."""
        out = []
        for layer_state in self._per_layer(state):
            out.extend([layer_state] if self.cell.states == 1 else list(layer_state))
        return out

    def state_from_arrays(self, arrays: list):
        """Inverse of :meth:`state_arrays`."""
        S = self.cell.states
        per_layer = [arrays[i * S] if S == 1 else tuple(arrays[i * S:(i + 1) * S])
                     for i in range(len(self.layers))]
        return per_layer[0] if len(per_layer) == 1 else per_layer

    def forward(self, inputs, state=None, *, train: bool = False, rng=None):
        """-> (outputs (T, B, V or H), final state)."""
        finals, self._dropout_masks = [], []
        h = inputs
        drop = train and self.dropout > 0.0 and rng is not None
        for i, (layer, layer_state) in enumerate(zip(self.layers, self._per_layer(state))):
            h, final = layer.forward(h, layer_state)
            finals.append(final)
            mask = None
            if drop and i < len(self.layers) - 1:
                keep = 1.0 - self.dropout
                mask = (rng.random(h.shape) < keep).astype(self.dtype) / self.dtype.type(keep)
                h = h * mask
            self._dropout_masks.append(mask)
        self._hidden = h
        final = finals[0] if len(finals) == 1 else finals
        if self.output_size is None:
            return h, final
        T, B, H = h.shape
        logits = np.empty((T, B, self.output_size), self.dtype)
        heads.linear_forward(h.reshape(T * B, H), self.params["W_y"], self.params["b_y"],
                             logits.reshape(T * B, self.output_size))
        return logits, final

    def backward(self, d_outputs, d_final_state=None) -> dict:
        """Gradients of every parameter (new arrays): ``grads["d" + name]`` belongs to
        ``params[name]``, the naming of :meth:`RecurrentModel.backward` and of the course."""
        return {"d" + key: value.copy()
                for key, value in self.backward_into_buffer(d_outputs, d_final_state).items()}

    def backward_into_buffer(self, d_outputs, d_final_state=None) -> dict:
        """Like :meth:`backward`, but the gradients are views of ``flat_grads`` keyed like
        ``params`` (as optimizers take them), overwritten by the next call (what the trainer
        uses: no copies)."""
        if self._hidden is None:
            raise RuntimeError("backward() needs a forward() first")
        grads = self._grad_views
        if self.output_size is None:
            d_hidden = d_outputs
        else:
            T, B, H = self._hidden.shape
            V = self.output_size
            d_hidden = np.empty((T, B, H), self.dtype)
            heads.linear_backward(np.ascontiguousarray(d_outputs, self.dtype).reshape(T * B, V),
                                  self._hidden.reshape(T * B, H), self.params["W_y"],
                                  grads["W_y"], grads["b_y"], d_hidden.reshape(T * B, H))
        d_finals = self._per_layer(d_final_state)
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            x, is_index, states, cache = layer.context
            out = {name: grads[layer_param_name(name, i)] for name in PARAM_NAMES}
            layer_grads = layer.bptt(x, is_index, states, cache, d_hidden, d_finals[i], out=out)
            if i > 0:
                d_hidden = layer_grads["dx"]
                if self._dropout_masks[i - 1] is not None:
                    d_hidden = d_hidden * self._dropout_masks[i - 1]
        return grads
