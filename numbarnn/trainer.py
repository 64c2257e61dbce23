"""Models and trainers composed from registry names.

``make_model`` puts a recurrent layer (any registered cell) and an optional dense output
head together; ``make_trainer`` adds a loss, an optimizer, gradient clipping and a sampler,
all picked by name::

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
from typing import Optional, Sequence

import numpy as np

from .cells import PARAM_NAMES
from .kernels import heads
from .models import RecurrentModel, resolve_dtype
from .optimizers import UnknownOptionError, clip_gradients
from .plugins import get_cell, get_loss, get_optimizer, get_sampler

HEAD_NAMES = ("W_y", "b_y")


class SequenceModel:
    """A recurrent layer plus an optional dense head ``logits = h @ W_y.T + b_y``.

    ``params`` is one flat dict (``W_x, W_h, b_x, b_h`` and, with a head, ``W_y, b_y``)
    that optimizers update in place. Inputs are time-major here: ``(T, B)`` indices or
    ``(T, B, X)`` floats; outputs ``(T, B, V)`` (or the hidden states without a head).
    """

    def __init__(self, cell, input_size: int, hidden_size: int, output_size: Optional[int], *,
                 dtype="float32", seed: Optional[int] = None, index_input: bool = True):
        self.cell = get_cell(cell)
        self.dtype = resolve_dtype(dtype)
        self.index_input = index_input
        self.layer = RecurrentModel(self.cell, input_size, hidden_size, dtype=self.dtype, seed=seed)
        self.params = self.layer.params  # the layer's arrays themselves: updates reach it
        self.output_size = output_size
        if output_size is not None:
            if not isinstance(output_size, (int, np.integer)) or output_size < 1:
                raise ValueError(f"output_size must be a positive integer, got {output_size!r}")
            rng = np.random.default_rng(None if seed is None else seed + 1)
            k = 1.0 / np.sqrt(hidden_size)
            self.params["W_y"] = rng.uniform(-k, k, size=(output_size, hidden_size)).astype(self.dtype)
            self.params["b_y"] = np.zeros(output_size, self.dtype)
        self._hidden = None

    @property
    def input_size(self):
        return self.layer.input_size

    @property
    def hidden_size(self):
        return self.layer.hidden_size

    def zero_state(self, batch_size: int):
        return self.layer.zero_state(batch_size)

    def forward(self, inputs, state=None):
        """-> (outputs (T, B, V or H), final state)."""
        hidden, final = self.layer.forward(inputs, state)
        self._hidden = hidden
        if self.output_size is None:
            return hidden, final
        T, B, H = hidden.shape
        logits = np.empty((T, B, self.output_size), self.dtype)
        heads.linear_forward(hidden.reshape(T * B, H), self.params["W_y"], self.params["b_y"],
                             logits.reshape(T * B, self.output_size))
        return logits, final

    def backward(self, d_outputs, d_final_state=None) -> dict:
        """Gradients of every parameter, keyed like ``params`` (``dx``/``dstate`` are not included)."""
        if self._hidden is None:
            raise RuntimeError("backward() needs a forward() first")
        grads = {}
        if self.output_size is None:
            d_hidden = d_outputs
        else:
            T, B, H = self._hidden.shape
            V = self.output_size
            grads["W_y"], grads["b_y"] = np.empty_like(self.params["W_y"]), np.empty_like(self.params["b_y"])
            d_hidden = np.empty((T, B, H), self.dtype)
            heads.linear_backward(np.ascontiguousarray(d_outputs, self.dtype).reshape(T * B, V),
                                  self._hidden.reshape(T * B, H), self.params["W_y"],
                                  grads["W_y"], grads["b_y"], d_hidden.reshape(T * B, H))
        layer_grads = self.layer.backward(d_hidden, d_final_state)
        for name in PARAM_NAMES:
            grads[name] = layer_grads["d" + name]
        return grads


def make_model(cell="lstm", *, input_size: Optional[int] = None, vocab_size: Optional[int] = None,
               hidden_size: int = 128, output_size: Optional[int] = None, dtype="float32",
               seed: Optional[int] = None) -> SequenceModel:
    """A :class:`SequenceModel` from a registered cell name.

    Give ``vocab_size`` for integer (one-hot) inputs, whose head then defaults to
    ``vocab_size`` outputs; or ``input_size`` for dense inputs (no head unless
    ``output_size`` is given).

    >>> model = make_model("rnn", vocab_size=27, hidden_size=50, dtype="float64", seed=1)
    >>> sorted(model.params)
    ['W_h', 'W_x', 'W_y', 'b_h', 'b_x', 'b_y']
    """
    if (input_size is None) == (vocab_size is None):
        raise ValueError("give exactly one of input_size (dense inputs) or vocab_size (integer inputs)")
    if vocab_size is not None:
        return SequenceModel(cell, vocab_size, hidden_size, output_size or vocab_size, dtype=dtype,
                             seed=seed, index_input=True)
    return SequenceModel(cell, input_size, hidden_size, output_size, dtype=dtype, seed=seed,
                         index_input=False)


class Trainer:
    """One model, one loss, one optimizer, one sampler; see :func:`make_trainer`.

    Batches are batch-first as users hold them (``(T,)`` or ``(B, T)`` integer arrays) and
    turned time-major for the kernels. ``state`` is the final recurrent state of the last
    ``train_step``, to continue a stream (``train_step(..., state=trainer.state)``).
    """

    def __init__(self, model: SequenceModel, loss, optimizer, sampler, *, clip: Optional[float],
                 clip_mode: str, seed: Optional[int]):
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.sampler = sampler
        self.clip = clip
        self.clip_mode = clip_mode
        self.rng = np.random.default_rng(seed)
        self.state = None
        self.step = 0
        self.last_grad_norm = None

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
        bad = (array < low) | (array >= V)
        if bad.any():
            raise ValueError(f"{label} holds {array[bad][0]}, outside the vocabulary [0, {V})"
                             + (" (-1 is padding)" if allow_padding else ""))
        return np.ascontiguousarray(array.T, dtype=np.int64)

    def train_step(self, inputs, targets, mask=None, state=None) -> float:
        """One forward, BPTT, clip and update. Returns the loss summed over time steps and
        averaged over the batch.

        inputs, targets: integers ``(T,)`` or ``(B, T)`` (``-1`` in inputs is a zero input,
        e.g. the course's start token or padding); mask: ``(B, T)`` weights, 0 for padding;
        state: the initial recurrent state (zeros if None), e.g. ``trainer.state``.
        """
        model = self.model
        x = self._time_major_indices(inputs, "inputs", allow_padding=True)
        T, B = x.shape
        if mask is None:
            weights = np.ones((T, B), np.float64)
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
            y = np.where(weights.T == 0, np.maximum(y, 0), y)  # padded targets are never read
            y = self._time_major_indices(y, "targets", allow_padding=False).reshape(T * B)
        else:
            y = np.asarray(targets, dtype=model.dtype)
            y = y[None] if y.ndim == 2 else y
            if y.shape != (B, T, model.output_size):
                raise ValueError(f"targets have shape {np.shape(targets)}, expected {(B, T, model.output_size)}")
            y = np.ascontiguousarray(np.swapaxes(y, 0, 1)).reshape(T * B, model.output_size)
        outputs, final = model.forward(x, state)
        V = outputs.shape[2]
        d_outputs = np.empty_like(outputs)
        scratch = np.empty_like(outputs)
        loss = self.loss.forward_backward(outputs.reshape(T * B, V), y, weights.reshape(T * B).astype(model.dtype),
                                          d_outputs.reshape(T * B, V), scratch.reshape(T * B, V))
        if B > 1:
            d_outputs *= model.dtype.type(1.0 / B)
        grads = model.backward(d_outputs)
        self.last_grad_norm = clip_gradients(grads, self.clip, self.clip_mode)
        self.optimizer.step(model.params, grads)
        self.state = final
        self.step += 1
        return loss / B

    # -- generation ------------------------------------------------------------------------------
    def generate(self, prime: Sequence[int] = (), length: int = 100, *, sampler=None, seed=None,
                 stop_index: Optional[int] = None, **sampler_options) -> list:
        """Sample ``length`` indices after ``prime`` (not included in the result).

        The first character is sampled from a zero input when there is no prime. ``sampler``
        (a registry name) and ``sampler_options`` override the trainer's for this call;
        ``seed`` makes the draw reproducible; generation stops after ``stop_index`` if given.
        """
        if not isinstance(length, (int, np.integer)) or length < 1:
            raise ValueError(f"length must be a positive integer, got {length!r}")
        if sampler is None and not sampler_options:
            chooser = self.sampler
        else:
            spec = get_sampler(sampler or self.sampler_spec.name)
            chooser = spec.factory(**sampler_options)
        rng = self.rng if seed is None else np.random.default_rng(seed)
        prime = list(prime)
        if prime:
            self._time_major_indices(prime, "inputs", allow_padding=False)
        if getattr(chooser, "is_beam", False):
            return self._beam_search(prime, length, chooser.beam_width, stop_index)
        model = self.model
        state = None
        x = np.array([[-1]])
        if prime:
            logits, state = model.forward(np.array(prime)[:, None])
            last = logits[-1, 0]
        else:
            logits, state = model.forward(x)
            last = logits[0, 0]
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

    def _beam_search(self, prime, length, width, stop_index):
        """Highest total log-probability continuation kept among ``width`` beams."""
        model = self.model
        if prime:
            logits, state = model.forward(np.array(prime)[:, None])
        else:
            logits, state = model.forward(np.array([[-1]]))
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
        return beams[0][0]


_TRAINER_KINDS = ("cell", "loss", "optimizer", "sampler")


def make_trainer(cell="lstm", loss="softmax_cross_entropy", optimizer="adam", sampler="categorical", *,
                 vocab_size: int, hidden_size: int = 128, lr: Optional[float] = None,
                 clip: Optional[float] = 5.0, clip_mode: str = "value", dtype="float32",
                 seed: Optional[int] = None, optimizer_options=None, sampler_options=None,
                 **options) -> Trainer:
    """A :class:`Trainer` composed from registry names (or spec objects).

    ``lr`` defaults to the optimizer's own default. ``clip`` clips gradients by value (the
    course's, ``clip_mode="value"``) or by global norm (``clip_mode="norm"``); None turns
    clipping off. Further keyword options go to the one component that accepts them (e.g.
    ``momentum=0.9`` to the optimizer, ``top_p=...`` is spelled ``p=0.8`` for ``top_p``);
    an option no component accepts is an error listing what each accepts.
    """
    cell_spec, loss_spec = get_cell(cell), get_loss(loss)
    opt_spec, sampler_spec = get_optimizer(optimizer), get_sampler(sampler)
    opt_opts, smp_opts = dict(optimizer_options or {}), dict(sampler_options or {})
    for key, value in options.items():
        owners = [spec for spec in (opt_spec, sampler_spec) if key in spec.defaults]
        if not owners:
            accepted = "; ".join(f"{kind} {spec.name!r}: {', '.join(spec.defaults) or 'none'}"
                                 for kind, spec in (("optimizer", opt_spec), ("sampler", sampler_spec)))
            close = difflib.get_close_matches(key, [*opt_spec.defaults, *sampler_spec.defaults], n=3)
            hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
            raise UnknownOptionError(f"make_trainer got an unknown option {key!r}{hint}; accepted: {accepted}")
        if len(owners) > 1:
            raise ValueError(f"option {key!r} is accepted by both the optimizer and the sampler: pass it "
                             "in optimizer_options= or sampler_options=")
        (opt_opts if owners[0] is opt_spec else smp_opts)[key] = value
    if lr is not None:
        opt_opts["lr"] = lr
    model = make_model(cell_spec, vocab_size=vocab_size, hidden_size=hidden_size, dtype=dtype, seed=seed)
    trainer = Trainer(model, loss_spec, opt_spec.factory(model.params, **opt_opts),
                      sampler_spec.factory(**smp_opts), clip=clip, clip_mode=clip_mode, seed=seed)
    trainer.cell_spec, trainer.loss_spec = cell_spec, loss_spec
    trainer.optimizer_spec, trainer.sampler_spec = opt_spec, sampler_spec
    return trainer
