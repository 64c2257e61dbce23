"""Models and trainers composed from registry names.

``make_model`` stacks recurrent layers of any registered cell (with dropout between them)
under an optional dense output head; ``make_trainer`` adds a loss, an optimizer, gradient
clipping and a sampler, all picked by name::

    >>> import numbarnn
    >>> trainer = numbarnn.make_trainer(cell="lstm", loss="softmax_cross_entropy",
    ...                                 optimizer="adam", sampler="top_p", vocab_size=5,
    ...                                 hidden_size=8, lr=0.01, seed=0)
    >>> loss = trainer.train_step([[0, 1, 2, 3]], [[1, 2, 3, 4]])
    >>> len(trainer.generate(prime=[0], length=6))
    6
"""
from __future__ import annotations

import difflib
import inspect
import math
import sys
import time
from typing import Optional, Sequence

import numpy as np

from .cells import PARAM_NAMES
from .data import printable
from . import losses as _builtin_losses
from .kernels import heads, loops
from .kernels.batches import time_major_indices
from .models import RecurrentModel, resolve_dtype
from .optimizers import UnknownOptionError, clip_flat, clip_gradients
from .plugins import get_cell, get_loss, get_optimizer, get_sampler


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


def make_model(cell="lstm", *, input_size: Optional[int] = None, vocab_size: Optional[int] = None,
               hidden_size: int = 128, output_size: Optional[int] = None, layers: int = 1,
               dropout: float = 0.0, dtype="float32", seed: Optional[int] = None, device: str = "cpu"):
    """A :class:`SequenceModel` from a registered cell name.

    Give ``vocab_size`` for integer (one-hot) inputs, whose head then defaults to
    ``vocab_size`` outputs; or ``input_size`` for dense inputs (no head unless
    ``output_size`` is given). ``layers`` stacks recurrent layers with ``dropout`` between.

    >>> model = make_model("rnn", vocab_size=27, hidden_size=50, dtype="float64", seed=1)
    >>> sorted(model.params)
    ['W_h', 'W_x', 'W_y', 'b_h', 'b_x', 'b_y']
    """
    if (input_size is None) == (vocab_size is None):
        raise ValueError("give exactly one of input_size (dense inputs) or vocab_size (integer inputs)")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda":
        from . import cuda as _cuda

        _cuda.require()
    if vocab_size is not None:
        model = SequenceModel(cell, vocab_size, hidden_size, output_size or vocab_size, layers=layers,
                              dropout=dropout, dtype=dtype, seed=seed, index_input=True)
    else:
        model = SequenceModel(cell, input_size, hidden_size, output_size, layers=layers, dropout=dropout,
                              dtype=dtype, seed=seed, index_input=False)
    if device == "cuda":
        from .cuda.trainer import CudaSequenceModel

        return CudaSequenceModel(model)
    return model


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradients stopped being finite; the weights were not updated.

    >>> issubclass(NonFiniteLossError, FloatingPointError)
    True
    """


class Trainer:
    """One model, one loss, one optimizer, one sampler; see :func:`make_trainer`.

    Batches are batch-first as users hold them (``(T,)`` or ``(B, T)`` integer arrays) and
    turned time-major for the kernels. ``state`` is the final recurrent state of the last
    ``train_step``, to continue a stream (``train_step(..., state=trainer.state)``).
    With a ``vocab`` (:class:`numbarnn.data.Vocabulary`), ``generate`` also takes and
    returns text.

    >>> from numbarnn.data import Vocabulary
    >>> trainer = make_trainer("rnn", vocab=Vocabulary.from_text("ab\\n"), hidden_size=4, seed=0, mode="names")
    >>> isinstance(trainer, Trainer), type(trainer.generate("a", length=5))
    (True, <class 'str'>)
    """

    def __init__(self, model: SequenceModel, loss, optimizer, sampler, *, clip: Optional[float],
                 clip_mode: str, seed: Optional[int], config: Optional[dict] = None, vocab=None):
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.sampler = sampler
        self.clip = clip
        self.clip_mode = clip_mode
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.config = dict(config or {})
        self.vocab = vocab
        self.state = None
        self.step = 0
        self.last_grad_norm = None
        self.history = []  # (step, training loss) of every step fit() ran
        self.reset_early_stopping()
        # The common model (one layer of any cell, integer inputs, a head, the built-in
        # softmax cross-entropy) trains through one compiled call per step.
        self._workspace = {}  # (T, B) -> the compiled step's buffers: views of _workspace_buffer
        self._workspace_buffer = None
        self._compiled_step = (type(model) is SequenceModel and len(model.layers) == 1 and model.index_input
                               and model.output_size is not None
                               and loss.forward_backward is _builtin_losses.softmax_cross_entropy)
        # Element-wise optimizers update the model's one flat buffer in a single call.
        self._flat_optimizer = (getattr(optimizer, "elementwise", False)
                                and getattr(optimizer, "flat_size", None) == model.flat_params.size
                                and list(optimizer.state_keys()) == list(model.params))

    # -- batches -------------------------------------------------------------------------------
    def _time_major_indices(self, array, label, allow_padding):
        array = np.asarray(array)
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{label} must be integers shaped (T,) or (B, T), got "
                             f"{'dtype ' + str(array.dtype) if array.ndim == 2 else 'shape ' + str(array.shape)}")
        if array.size == 0:
            raise ValueError(f"{label} is empty")
        V = self.model.input_size if label == "inputs" else self.model.output_size
        low = -1 if allow_padding else 0
        out = np.empty(array.shape[::-1], np.int64)
        bad = time_major_indices(array, low, V, out)  # range check and transpose, one compiled pass
        if bad >= 0:
            raise ValueError(f"{label} holds {array.reshape(-1)[bad]}, outside the vocabulary [0, {V})"
                             + (" (-1 is padding)" if allow_padding else ""))
        return out

    def _prepare(self, inputs, targets, mask):
        model = self.model
        x = self._time_major_indices(inputs, "inputs", allow_padding=True)
        T, B = x.shape
        if mask is None:
            weights = None
        else:
            weights = np.asarray(mask, dtype=np.float64)
            weights = weights[None, :] if weights.ndim == 1 else weights
            if weights.shape != (B, T):
                raise ValueError(f"mask has shape {np.shape(mask)}, expected {(B, T)} like the inputs")
            weights = np.ascontiguousarray(weights.T)
        if self.loss.targets_kind == "indices":
            y = np.asarray(targets)
            y = y[None, :] if y.ndim == 1 else y
            if y.shape != (B, T):
                raise ValueError(f"targets have shape {np.shape(targets)}, expected {(B, T)} like the inputs")
            if weights is not None:
                y = np.where(weights.T == 0, np.maximum(y, 0), y)  # padded targets are never read
            y = self._time_major_indices(y, "targets", allow_padding=False).reshape(T * B)
        else:
            y = np.asarray(targets, dtype=model.dtype)
            y = y[None] if y.ndim == 2 else y
            if y.shape != (B, T, model.output_size):
                raise ValueError(f"targets have shape {np.shape(targets)}, expected {(B, T, model.output_size)}")
            y = np.ascontiguousarray(np.swapaxes(y, 0, 1)).reshape(T * B, model.output_size)
        if weights is None:
            return x, y, np.ones(T * B, model.dtype)
        return x, y, weights.reshape(T * B).astype(model.dtype)

    def _loss_and_gradient(self, x, y, weights, state, train):
        outputs, final = self.model.forward(x, state, train=train, rng=self.rng)
        T, B, V = outputs.shape
        d_outputs, scratch = np.empty_like(outputs), np.empty_like(outputs)
        loss = self.loss.forward_backward(outputs.reshape(T * B, V), y, weights,
                                          d_outputs.reshape(T * B, V), scratch.reshape(T * B, V))
        return loss, d_outputs, final, B

    def train_step(self, inputs, targets, mask=None, state=None) -> float:
        """One forward, BPTT, clip and update. Returns the loss summed over time steps and
        averaged over the batch.

        inputs, targets: integers ``(T,)`` or ``(B, T)`` (``-1`` in inputs is a zero input,
        e.g. the course's start token or padding); mask: ``(B, T)`` weights, 0 for padding;
        state: the initial recurrent state (zeros if None), e.g. ``trainer.state``.
        Raises :class:`NonFiniteLossError`, leaving the weights untouched, when the loss or
        the gradient norm is not finite.
        """
        x, y, weights = self._prepare(inputs, targets, mask)
        if self._compiled_step:
            loss, final, B = self._language_model_step(x, y, weights, state)
            grads = self.model._grad_views
        else:
            loss, d_outputs, final, B = self._loss_and_gradient(x, y, weights, state, train=True)
            if B > 1:
                d_outputs *= self.model.dtype.type(1.0 / B)
            grads = self.model.backward_into_buffer(d_outputs)
        flat = self._flat_optimizer
        if flat:
            norm = clip_flat(self.model.flat_grads, self.clip, self.clip_mode)
        else:
            norm = clip_gradients(grads, self.clip, self.clip_mode)
        self.last_grad_norm = norm
        if not (math.isfinite(loss) and math.isfinite(norm)):
            raise NonFiniteLossError(f"the loss is {loss} and the gradient norm {norm} at step {self.step + 1} "
                                     f"(cell {self.model.cell.name!r})")
        if flat:
            self.optimizer.step_flat(self.model.flat_params, self.model.flat_grads)
        else:
            self.optimizer.step(self.model.params, grads)
        self.state = final
        self.step += 1
        return loss / B

    def _language_model_step(self, x, y, weights, state):
        """The common model's forward, loss and backward in one compiled call (see
        ``numbarnn.kernels.cell_loops.language_model_step``); buffers are reused between steps (see
        :meth:`_step_workspace`)."""
        model = self.model
        layer, cell, dtype = model.layers[0], model.cell, model.dtype
        T, B = x.shape
        S = cell.states
        work = self._step_workspace(T, B)
        states = work[1]
        initial = layer._unpack_state(state, B, "initial state") if state is not None else None
        for s in range(S):
            states[s, 0] = 0.0 if initial is None else initial[s]
        p, g = model.params, model._grad_views
        loss = loops.loops_for(cell).language_model_step(
            x.reshape(T * B), y, weights, dtype.type(1.0 / B), p["W_x"], p["b_x"], p["W_h"], p["b_h"], p["W_y"],
            p["b_y"], *work, g["W_x"], g["W_h"], g["b_x"], g["b_h"], g["W_y"], g["b_y"])
        final = layer._pack_state([states[s, T].copy() for s in range(S)])
        return float(loss), final, B

    def _step_workspace(self, T, B):
        """The buffers of one compiled step for a ``(T, B)`` batch.

        They are views into one backing buffer that grows to the largest batch seen, so
        memory stays bounded however many sequence lengths the data has; the views of the
        last :data:`WORKSPACE_SHAPES` shapes are kept (most recently used last), as
        rebuilding them costs a little every step."""
        work = self._workspace.pop((T, B), None)
        if work is None:
            model, cell = self.model, self.model.cell
            H, V, GH, S = model.hidden_size, model.output_size, cell.gates * model.hidden_size, cell.states
            shapes = [(T, B, GH), (S, T + 1, B, H), (T, B, cell.cache_width * H), (B, GH), (T * B, V), (T * B, V),
                      (T * B, V), (T, B, H), (S, B, H), (S, B, H), (T, B, GH),
                      None if cell.shared_gate_grad else (T, B, GH), (B, H)]
            sizes = [0 if shape is None else math.prod(shape) for shape in shapes]
            starts = np.cumsum([0] + [-(-n // 16) * 16 for n in sizes])  # 64-byte aligned float32 views
            if self._workspace_buffer is None or self._workspace_buffer.size < starts[-1]:
                self._workspace.clear()  # the old buffer is freed once no view of it is left
                self._workspace_buffer = np.empty(int(starts[-1]), model.dtype)
            views = [None if shape is None else self._workspace_buffer[start:start + n].reshape(shape)
                     for shape, start, n in zip(shapes, starts, sizes)]
            if views[11] is None:
                views[11] = views[10]  # dhz is dxz for cells whose gates take h @ W_h.T + b_h by addition
            work = tuple(views)
        self._workspace[(T, B)] = work
        while len(self._workspace) > WORKSPACE_SHAPES:
            del self._workspace[next(iter(self._workspace))]  # the least recently used
        return work

    def evaluate(self, inputs, targets, mask=None, state=None):
        """``(summed loss, token count, final state)`` without updating anything."""
        x, y, weights = self._prepare(inputs, targets, mask)
        loss, _, final, _ = self._loss_and_gradient(x, y, weights, state, train=False)
        return loss, float(weights.sum()), final

    # -- generation ------------------------------------------------------------------------------
    def generate(self, prime=(), length: int = 100, *, sampler=None, seed=None,
                 stop_index: Optional[int] = None, temperature=None, top_k=None, top_p=None,
                 beam_width=None, n_best: Optional[int] = None, **sampler_options):
        """Sample ``length`` indices (or characters) after ``prime`` (not included).

        ``prime`` is a list of indices, or text when the trainer has a vocabulary (then text
        comes back, and generation stops at the newline in names mode). The first step
        starts from a zero input when there is no prime. ``sampler`` (a registry name) and
        its options override the trainer's sampler for this call; the shorthands pick one:
        ``top_k=5`` is ``sampler="top_k", k=5``, ``top_p=0.9`` is ``"top_p"``,
        ``beam_width=3`` is ``"beam"`` and a lone ``temperature`` is ``"temperature"``.
        ``seed`` makes the call reproducible. With beam search, ``n_best=k`` returns a list of
        the k best distinct continuations, best first (``beam_width`` must be at least k).

        >>> import numbarnn
        >>> trainer = numbarnn.make_trainer("rnn", vocab_size=4, hidden_size=3, seed=0)
        >>> best = trainer.generate(prime=[0], length=3, beam_width=4, n_best=3)
        >>> len(best), len({tuple(s) for s in best}), best[0] == trainer.generate(prime=[0], length=3, beam_width=4)
        (3, 3, True)
        """
        as_text = isinstance(prime, str)
        if as_text:
            if self.vocab is None:
                raise ValueError("text prime needs a trainer with a vocabulary; pass indices instead")
            prime = self.vocab.encode(prime, what="the prime")
            if stop_index is None and self.config.get("mode") == "names":
                stop_index = self.vocab.newline
        chooser = self._sampler_for(sampler, temperature, top_k, top_p, beam_width, sampler_options)
        if n_best is not None:
            if not getattr(chooser, "is_beam", False):
                raise ValueError("n_best needs beam search (beam_width= or sampler='beam')")
            if not isinstance(n_best, (int, np.integer)) or isinstance(n_best, bool) or not 1 <= n_best <= chooser.beam_width:
                raise ValueError(f"n_best must be an integer from 1 to beam_width ({chooser.beam_width}), got {n_best!r}")
            self._check_generation(prime, length)
            best = self._beam_search(list(prime), length, chooser.beam_width, stop_index)[:n_best]
            return [self.vocab.decode(s) for s in best] if as_text else best
        indices = self.generate_indices(list(prime), length, chooser, seed, stop_index)
        return self.vocab.decode(indices) if as_text else indices

    def _sampler_for(self, name, temperature, top_k, top_p, beam_width, options):
        options = dict(options)
        shorthand = [(k, v) for k, v in (("top_k", top_k), ("top_p", top_p), ("beam", beam_width)) if v is not None]
        if len(shorthand) > 1:
            raise ValueError("give at most one of top_k, top_p and beam_width")
        if shorthand:
            kind, value = shorthand[0]
            if name is not None and name != kind:
                raise ValueError(f"sampler={name!r} conflicts with {kind}=")
            name = kind
            options[{"top_k": "k", "top_p": "p", "beam": "beam_width"}[kind]] = value
        if temperature is not None:
            if name is None:
                name = "temperature"
            options["temperature"] = temperature
        if name is None and not options:
            return self.sampler
        return get_sampler(name or self.sampler_spec.name).factory(**options)

    def _check_generation(self, prime, length) -> None:
        if not isinstance(length, (int, np.integer)) or isinstance(length, bool) or length < 1:
            raise ValueError(f"length must be a positive integer, got {length!r}")
        if prime:
            self._time_major_indices(prime, "inputs", allow_padding=False)

    def generate_indices(self, prime: list, length: int, chooser, seed=None, stop_index=None) -> list:
        """:meth:`generate` on indices with a sampler object ``chooser`` (see ``numbarnn.samplers``)."""
        self._check_generation(prime, length)
        if getattr(chooser, "is_beam", False):
            return self._beam_search(prime, length, chooser.beam_width, stop_index)[0]
        rng = self.rng if seed is None else np.random.default_rng(seed)
        model = self.model
        mode = _FAST_SAMPLERS.get(type(chooser).__name__) if type(chooser).__module__ == "numbarnn.samplers" else None
        if mode is not None and type(model) is SequenceModel and len(model.layers) == 1 and model.output_size:
            return self._generate_compiled(prime, length, chooser, mode, rng, stop_index)
        x = np.array([[START_INPUT]])
        logits, state = model.forward(np.array(prime)[:, None] if prime else x)
        last = logits[-1, 0]
        out = []
        for _ in range(length):
            idx = int(chooser.choose(np.asarray(last, np.float64), rng))
            out.append(idx)
            if stop_index is not None and idx == stop_index:
                break
            x[0, 0] = idx
            logits, state = model.forward(x, state)
            last = logits[0, 0]
        return out

    def _generate_compiled(self, prime, length, chooser, mode, rng, stop_index):
        """The whole generation in one compiled call: identical to stepping ``forward`` and
        calling the sampler, including what the generator draws (the uniforms are drawn
        ahead from a copy of its state, then exactly the used ones from the generator)."""
        model, layer = self.model, self.model.layers[0]
        cell, H, dtype = model.cell, model.hidden_size, model.dtype
        options = chooser.options
        state_before = rng.bit_generator.state
        uniforms = rng.random(length) if mode != 1 else np.zeros(1)
        rng.bit_generator.state = state_before
        out = np.empty(length, np.int64)
        p = model.params
        n, used = loops.loops_for(cell).generate(
            np.asarray(prime, np.int64), length, p["W_x"], p["b_x"], p["W_h"], p["b_h"], p["W_y"], p["b_y"], mode,
            float(options.get("temperature", 1.0)), int(options.get("k", 1)), float(options.get("p", 1.0)), uniforms,
            -2 if stop_index is None else int(stop_index), out, np.zeros((cell.states, 2, 1, H), dtype),
            np.empty((1, 1, cell.cache_width * H), dtype), np.empty((1, 1, cell.gates * H), dtype),
            np.empty((1, cell.gates * H), dtype), np.empty((1, model.output_size), dtype),
            np.empty(model.output_size), np.empty(model.output_size), np.empty(1, np.int64))
        if used:
            rng.random(used)  # advance the generator past exactly the draws that were used
        return out[:n].tolist()

    def _beam_search(self, prime, length, width, stop_index):
        """The continuations kept among ``width`` beams, distinct, highest total log-probability first."""
        model = self.model
        logits, state = model.forward(np.array(prime)[:, None] if prime else np.array([[START_INPUT]]))
        beams = [([], 0.0, state, logits[-1, 0].astype(np.float64), False)]
        for _ in range(length):
            candidates = []
            for seq, score, st, last, done in beams:
                if done:
                    candidates.append((seq, score, st, last, True))
                    continue
                logp = last - last.max()
                logp = logp - np.log(np.exp(logp).sum())
                for idx in np.argsort(-logp, kind="stable")[:width]:
                    candidates.append((seq + [int(idx)], score + float(logp[idx]), st, None,
                                       stop_index is not None and idx == stop_index))
            candidates.sort(key=lambda c: -c[1])
            beams = []
            for seq, score, st, last, done in candidates[:width]:
                if last is None and not done:
                    logits, st = model.forward(np.array([[seq[-1]]]), st)
                    last = logits[0, 0].astype(np.float64)
                beams.append((seq, score, st, last, done))
            if all(b[4] for b in beams):
                break
        return [b[0] for b in beams]  # sorted by score, and distinct: no two beams share a path

    # -- training loop -----------------------------------------------------------------------------
    def save(self, path, batches=None):
        """Write this trainer (weights, optimizer state, random state, step and, with
        ``batches``, the data position) to the checkpoint ``path``; returns the path.
        :func:`numbarnn.load` reads it back, and resuming from it is exact.

        >>> import pathlib, tempfile, numbarnn
        >>> trainer = numbarnn.make_trainer("rnn", vocab_size=5, hidden_size=4, seed=0)
        >>> path = trainer.save(pathlib.Path(tempfile.mkdtemp()) / "tiny.ckpt")
        >>> numbarnn.load(path).generate(prime=[0], length=5, seed=1) == trainer.generate(prime=[0], length=5, seed=1)
        True
        """
        from .checkpoint import save_checkpoint

        return save_checkpoint(self, path, batches)

    def snapshot_params(self):
        """A copy of every weight (one flat array), for :meth:`restore_params`."""
        return self.model.flat_params.copy()

    def restore_params(self, snapshot) -> None:
        """Put back the weights :meth:`snapshot_params` copied."""
        self.model.flat_params[...] = snapshot

    def params_finite(self) -> bool:
        """True when no weight is NaN or infinite."""
        return bool(np.isfinite(self.model.flat_params).all())

    def reset_early_stopping(self) -> None:
        """Forget ``fit``'s early-stopping state (e.g. before validating on other data).

        ``fit_state`` holds ``best_val_loss``, ``evals_since_best``, ``best_params`` (a
        :meth:`snapshot_params` of the best weights) and ``val_loss`` (the latest evaluation).
        It carries over from one ``fit`` call to the next and is saved in checkpoints, so a
        run interrupted and resumed stops at the same step with the same weights.
        """
        self.fit_state = {"best_val_loss": math.inf, "evals_since_best": 0, "best_params": None, "val_loss": None}

    def fit(self, batches, *, steps: Optional[int] = None, epochs: Optional[float] = None,
            validation=None, eval_every: int = 200, sample_every: int = 500, samples: int = 5,
            patience: Optional[int] = None, progress: bool = True, checkpoint: Optional[str] = None,
            checkpoint_every: Optional[int] = None, print_fn=print) -> dict:
        """Train on ``batches`` (:class:`numbarnn.data.NamesBatches` or ``StreamBatches``).

        Runs ``steps`` more steps (or ``epochs`` more passes). Shows a progress bar (step,
        smoothed loss, tokens/s), prints ``samples`` generated texts every ``sample_every``
        steps, evaluates the ``validation`` batches every ``eval_every`` steps (loss per
        token and perplexity) and stops early after ``patience`` evaluations without
        improvement, keeping the best weights. The early-stopping state (best loss, evaluations
        without improvement, best weights: ``fit_state``) continues from the previous ``fit``
        call or the loaded checkpoint; after an early stop a further ``fit`` gets ``patience``
        evaluations again. A non-finite loss stops training and restores
        the last good weights; Ctrl-C saves ``checkpoint`` (if given) before returning.
        Returns a summary dict: ``stopped`` ("done", "early-stop", "non-finite",
        "interrupted"), ``reason``, ``steps``, ``loss`` (smoothed), ``val_loss``, ``val_perplexity``.
        """
        from .checkpoint import save_checkpoint

        if steps is None:
            steps = max(1, int(round((epochs or 1.0) * batches.steps_per_epoch())))
        early = self.fit_state  # continues across fit calls and checkpoints: resume is exact
        last_val = early["val_loss"]
        summary = {"stopped": "done", "reason": f"ran {steps} steps", "val_loss": last_val,
                   "val_perplexity": None if last_val is None else math.exp(min(last_val, 700))}
        bar = _progress_bar(steps, progress)
        smooth = self.config.get("smoothed_loss")
        # tokens/s over the steps on the clock: all but the first, without the phases that compiled
        rate_tokens, started, off_clock = 0, time.perf_counter(), 0.0
        write = bar.write if bar is not None else print_fn
        note = _note_writer(bar)
        phases = set()  # the phases (step, validation, samples) run once already
        try:
            for _ in range(steps):
                # The first step loads (or compiles) the kernels: its time is not a step's.
                clock = _first_time(self, "step", phases, bar, note)
                inputs, targets, mask, carry = batches.next_batch()
                state = self.state if carry else None
                snapshot, good_step = self.snapshot_params(), self.step
                try:
                    loss = self.train_step(inputs, targets, mask, state=state)
                    if not self.params_finite():
                        raise NonFiniteLossError(f"the weights stopped being finite at step {self.step} "
                                                 f"(cell {self.model.cell.name!r})")
                except NonFiniteLossError as error:
                    self.restore_params(snapshot)
                    self.step = good_step  # the undone update is not a step (history, checkpoints)
                    summary.update(stopped="non-finite",
                                   reason=f"stopped: {error}; restored the weights of the last good step "
                                          "(try a lower --lr or a smaller --clip)")
                    write(summary["reason"])
                    break
                self.history.append((self.step, loss))
                smooth = loss if smooth is None else 0.98 * smooth + 0.02 * loss
                self.config["smoothed_loss"] = smooth
                if bar is not None:
                    if clock is None:
                        rate_tokens += batches.tokens(mask)
                    off_clock += _off_the_clock(bar, clock)
                    postfix = f"loss {smooth:.3f}"
                    if rate_tokens:
                        rate = rate_tokens / max(time.perf_counter() - started - off_clock, 1e-9)
                        postfix += f", {rate:,.0f} tok/s"
                    bar.set_postfix_str(postfix, refresh=False)
                    bar.update(1)
                if sample_every and self.step % sample_every == 0 and self.vocab is not None:
                    clock = _first_time(self, "samples", phases, bar, note)
                    texts = self.sample_texts(samples, seed=self.step)
                    off_clock += _off_the_clock(bar, clock)
                    write(f"-- step {self.step}, loss {smooth:.3f}, samples:")
                    for line in sample_lines(texts, names=self.config.get("mode") == "names", indent="   "):
                        write(line)
                if validation is not None and eval_every and self.step % eval_every == 0:
                    clock = _first_time(self, "validation", phases, bar, note)
                    val = self.validation_loss(validation)
                    off_clock += _off_the_clock(bar, clock)
                    summary.update(val_loss=val, val_perplexity=math.exp(min(val, 700)))
                    write(f"-- step {self.step}: validation loss {val:.4f} per token, perplexity "
                          f"{summary['val_perplexity']:.2f}")
                    early["val_loss"] = val
                    if val < early["best_val_loss"] - 1e-6:
                        early.update(best_val_loss=val, evals_since_best=0, best_params=self.snapshot_params())
                    else:
                        early["evals_since_best"] += 1
                        if patience is not None and early["evals_since_best"] >= patience:
                            best = early["best_val_loss"]
                            if early["best_params"] is not None:  # None only if no evaluation was finite
                                self.restore_params(early["best_params"])
                            # The weights are the best ones again; a later fit starts a new patience window.
                            early.update(val_loss=best, evals_since_best=0)
                            summary.update(stopped="early-stop", val_loss=best,
                                           val_perplexity=math.exp(min(best, 700)),
                                           reason=f"early stop at step {self.step}: no validation improvement "
                                                  f"in {patience} evaluations; kept the best weights "
                                                  f"(validation loss {best:.4f})")
                            write(summary["reason"])
                            break
                if checkpoint and checkpoint_every and self.step % checkpoint_every == 0:
                    save_checkpoint(self, checkpoint, batches)
        except KeyboardInterrupt:
            summary.update(stopped="interrupted", reason=f"interrupted at step {self.step}")
            if checkpoint:
                save_checkpoint(self, checkpoint, batches)
                summary["reason"] += f"; checkpoint saved to {checkpoint}"
            write(summary["reason"])
        finally:
            if bar is not None:
                bar.close()
        summary.update(steps=self.step, loss=smooth)
        return summary

    def sample_texts(self, n: int, *, seed: Optional[int] = None, length: Optional[int] = None, prime: str = "",
                     **sampler_kwargs) -> list:
        """``n`` generated texts (names, in names mode), reproducible from ``seed``.

        Uses its own generator, so sampling never changes the training random stream.
        """
        names = self.config.get("mode") == "names"
        length = length or (50 if names else 200)
        rng = np.random.default_rng([0 if seed is None else seed, 7])
        out = []
        for _ in range(n):
            text = self.generate(prime, length, seed=int(rng.integers(2**31)), **sampler_kwargs)
            out.append(prime + (text.rstrip("\n") if names else text))
        return out

    def validation_loss(self, validation) -> float:
        """Mean loss per token over ``validation``: a list of ``(inputs, targets, mask, carry)`` batches."""
        total, count, state = 0.0, 0.0, None
        for inputs, targets, mask, carry in validation:
            loss, n, state = self.evaluate(inputs, targets, mask, state=state if carry else None)
            total, count = total + loss, count + n
        return total / max(count, 1.0)


START_INPUT = -1
#: Batch shapes whose compiled-step buffers a trainer keeps (they share one backing buffer).
WORKSPACE_SHAPES = 8
# Built-in samplers the compiled generation loop implements (the sampler mode it takes).
_FAST_SAMPLERS = {"CategoricalSampler": 0, "GreedySampler": 1, "TemperatureSampler": 2, "TopKSampler": 3,
                  "TopPSampler": 4}


def _progress_bar(total, enabled):
    """fit's tqdm bar on stderr (None when disabled). Phases that compile kernels are kept off
    its clock (:func:`_first_time`, :func:`_off_the_clock`), so its rate and ETA are training's."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", dynamic_ncols=True, mininterval=0.5)


def sample_lines(texts, *, names: bool, indent: str = "   ") -> list:
    """Samples as printed while training, one line each, escaped (no raw ESC, BEL, ...):
    names as they are; text with its newlines shown as `` / ``, trailing spaces dropped and
    each sample numbered, so one long sample is not mistaken for two.

    >>> sample_lines(["ab", "ba"], names=True)
    ['   ab', '   ba']
    >>> sample_lines(["one  \\ntwo   ", "three\\n\\n"], names=False, indent="  ")
    ['  [1] one / two', '  [2] three']
    """
    if names:
        return [indent + printable(text.rstrip().replace("\n", " / ")) for text in texts]
    return [f"{indent}[{k}] " + printable(" / ".join(line.rstrip() for line in text.rstrip().split("\n")))
            for k, text in enumerate(texts, 1)]


_COMPILING = {"step": "compiling kernels", "validation": "compiling the validation kernels",
              "samples": "compiling the sampling kernels"}


def _note_writer(bar):
    """Where fit's notes about itself go: stderr, with the progress bar (not among the results)."""
    if bar is not None:
        return lambda text: bar.write(text, file=sys.stderr)
    return lambda text: print(text, file=sys.stderr, flush=True)


def _first_time(trainer, phase, seen: set, bar, note):
    """Before ``phase`` of fit ("step", "validation" or "samples") runs for the first time, say
    so when its kernels must compile first (seconds of silence otherwise). Returns the time
    (``time.perf_counter()``) when the phase is to be kept off the bar's clock (see
    :func:`_off_the_clock`): the first step always (it loads the kernels), a phase that
    compiles; else None."""
    if phase in seen:
        return None
    seen.add(phase)
    from .runtime import kernels_to_compile

    pending = kernels_to_compile(trainer, phase)
    if pending == "cached":
        note(f"{_COMPILING[phase]} (first run only, cached afterwards)")
    elif pending == "uncached":
        note(f"{_COMPILING[phase]} (in every process: this cell's kernels are not importable, so not cached)")
    if bar is None or not (pending or phase == "step"):
        return None
    return time.perf_counter()


def _off_the_clock(bar, mark) -> float:
    """Keep the seconds since ``mark`` (a ``time.perf_counter()``) out of ``bar``'s elapsed
    time, rate and ETA, as tqdm's ``unpause`` does for a pause; returns them (0.0 when
    ``mark`` is None: nothing to do)."""
    if bar is None or mark is None:
        return 0.0
    spent = time.perf_counter() - mark
    bar.start_t += spent
    bar.last_print_t += spent
    return spent


def make_trainer(cell="lstm", loss="softmax_cross_entropy", optimizer="adam", sampler="categorical", *,
                 vocab_size: Optional[int] = None, hidden_size: int = 128, layers: int = 1,
                 dropout: float = 0.0, lr: Optional[float] = None, clip: Optional[float] = 5.0,
                 clip_mode: str = "value", dtype="float32", seed: Optional[int] = None, vocab=None,
                 mode: Optional[str] = None, optimizer_options=None, sampler_options=None,
                 device: str = "cpu", **options) -> Trainer:
    """A :class:`Trainer` composed from registry names (or spec objects).

    ``vocab_size`` (or a ``vocab``, a :class:`numbarnn.data.Vocabulary`, which also lets
    ``generate`` speak text) sets the input and output size. ``lr`` defaults to the
    optimizer's own default. ``clip`` clips gradients by value (the course's,
    ``clip_mode="value"``) or by global norm (``clip_mode="norm"``); None turns clipping off.
    ``layers`` stacks recurrent layers with ``dropout`` between them. Further keyword options
    go to the one component that accepts them (e.g. ``momentum=0.9`` to the optimizer,
    ``p=0.8`` to ``top_p``); an option no component accepts is an error listing what each
    accepts. ``mode`` ("names" or "stream") is recorded for generation and checkpoints.
    ``device="cuda"`` runs the same trainer on an NVIDIA GPU (``pip install "numbarnn[cuda]"``;
    see ``docs/gpu.md``); without the package, a driver or a GPU it says which is missing.

    Shapes: with V = ``vocab_size`` and H = ``hidden_size``, a cell with G gate blocks
    gets ``W_x (G*H, V)``, ``W_h (G*H, H)``, ``b_x, b_h (G*H,)`` and the head
    ``W_y (V, H)``, ``b_y (V,)``; ``train_step`` takes ``(B, T)`` (or ``(T,)``) integer
    inputs and targets. A tanh RNN (G = 1) with momentum and top-k sampling, each option
    routed to the component that accepts it:

    >>> trainer = make_trainer("rnn", "softmax_cross_entropy", "momentum", "top_k", vocab_size=5,
    ...                        hidden_size=8, lr=0.1, momentum=0.5, k=2, seed=0)
    >>> trainer.config["optimizer_options"], trainer.config["sampler_options"]
    ({'momentum': 0.5, 'lr': 0.1}, {'k': 2})
    >>> {name: p.shape for name, p in trainer.model.params.items()}
    {'W_x': (8, 5), 'W_h': (8, 8), 'b_x': (8,), 'b_h': (8,), 'W_y': (5, 8), 'b_y': (5,)}
    >>> inputs, targets = [[0, 1, 2], [3, 4, 0]], [[1, 2, 3], [4, 0, 1]]   # (B, T) = (2, 3)
    >>> losses = [trainer.train_step(inputs, targets) for _ in range(20)]
    >>> losses[-1] < losses[0] / 2
    True
    >>> make_trainer(vocab_size=5, momentum=0.9)   # adam and categorical take no momentum
    Traceback (most recent call last):
    ...
    numbarnn.optimizers.UnknownOptionError: make_trainer got an unknown option 'momentum'; accepted: model and trainer: vocab_size, hidden_size, layers, dropout, lr, clip, clip_mode, dtype, seed, vocab, mode, optimizer_options, sampler_options, device; optimizer 'adam': lr, beta1, beta2, eps; sampler 'categorical': none
    """
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda":
        from . import cuda as _cuda

        _cuda.require()  # a light check that fails before any work
    cell_spec, loss_spec = get_cell(cell), get_loss(loss)
    opt_spec, sampler_spec = get_optimizer(optimizer), get_sampler(sampler)
    if vocab is not None:
        if vocab_size is not None and vocab_size != len(vocab):
            raise ValueError(f"vocab_size={vocab_size} but the vocabulary has {len(vocab)} characters")
        vocab_size = len(vocab)
    if vocab_size is None:
        raise ValueError("make_trainer needs vocab_size (or a vocab)")
    opt_opts, smp_opts = dict(optimizer_options or {}), dict(sampler_options or {})
    for key, value in options.items():
        owners = [spec for spec in (opt_spec, sampler_spec) if key in spec.defaults]
        if not owners:
            accepted = "; ".join([f"model and trainer: {', '.join(_MAKE_TRAINER_OPTIONS)}"] + [
                f"{kind} {spec.name!r}: {', '.join(spec.defaults) or 'none'}"
                for kind, spec in (("optimizer", opt_spec), ("sampler", sampler_spec))])
            close = difflib.get_close_matches(key, [*_MAKE_TRAINER_OPTIONS, *opt_spec.defaults,
                                                    *sampler_spec.defaults], n=3)
            hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
            raise UnknownOptionError(f"make_trainer got an unknown option {key!r}{hint}; accepted: {accepted}")
        if len(owners) > 1:
            raise ValueError(f"option {key!r} is accepted by both the optimizer and the sampler: pass it "
                             "in optimizer_options= or sampler_options=")
        (opt_opts if owners[0] is opt_spec else smp_opts)[key] = value
    if lr is not None:
        opt_opts["lr"] = lr
    model = make_model(cell_spec, vocab_size=vocab_size, hidden_size=hidden_size, layers=layers,
                       dropout=dropout, dtype=dtype, seed=seed)
    config = {"cell": cell_spec.name, "loss": loss_spec.name, "optimizer": opt_spec.name,
              "sampler": sampler_spec.name, "vocab_size": int(vocab_size), "hidden_size": int(hidden_size),
              "layers": int(layers), "dropout": float(dropout), "clip": clip, "clip_mode": clip_mode,
              "dtype": model.dtype.name, "seed": seed, "mode": mode, "optimizer_options": opt_opts,
              "sampler_options": smp_opts}
    trainer = Trainer(model, loss_spec, opt_spec.factory(model.params, **opt_opts),
                      sampler_spec.factory(**smp_opts), clip=clip, clip_mode=clip_mode, seed=seed,
                      config=config, vocab=vocab)
    trainer.cell_spec, trainer.loss_spec = cell_spec, loss_spec
    trainer.optimizer_spec, trainer.sampler_spec = opt_spec, sampler_spec
    if device == "cuda":
        from .cuda.trainer import cuda_trainer_from

        trainer = cuda_trainer_from(trainer)
    return trainer


# make_trainer's own keyword options, listed when an option matches no component.
_MAKE_TRAINER_OPTIONS = [name for name, p in inspect.signature(make_trainer).parameters.items()
                         if p.kind is inspect.Parameter.KEYWORD_ONLY]
