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
from typing import Optional

import numpy as np

from .backends import backend_class, require_device
from .checkpoint_file import save_checkpoint
from .cpu_backend import WORKSPACE_SHAPES
from .errors import NonFiniteLossError
from .fit import fit, sample_lines
from .kernels.batches import time_major_indices
from .kernels.sampling import GREEDY
from .optimizers import UnknownOptionError
from .plugins import get_cell, get_loss, get_optimizer, get_sampler
from .samplers import generation_kernel_args
from .sequence_model import START_INPUT, TASKS, SequenceModel, checked_lengths, layer_param_name

__all__ = ["Trainer", "make_trainer", "make_model", "SequenceModel", "NonFiniteLossError", "layer_param_name",
           "sample_lines", "START_INPUT", "WORKSPACE_SHAPES"]


def make_model(cell="lstm", *, input_size: Optional[int] = None, vocab_size: Optional[int] = None,
               hidden_size: int = 128, output_size: Optional[int] = None, layers: int = 1,
               dropout: float = 0.0, dtype="float32", seed: Optional[int] = None, device: str = "cpu",
               task: str = "lm", embedding: Optional[int] = None, num_classes: Optional[int] = None,
               bidirectional: bool = False):
    """A :class:`SequenceModel` from a registered cell name (on ``device="cuda"``, the same
    model with its weights on the GPU: :class:`numbarnn.cuda.model.CudaSequenceModel`).

    Inputs: give ``vocab_size`` for integer inputs (one-hot, or rows of a learnt
    ``(vocab_size, embedding)`` table ``W_emb`` with ``embedding=E``), or ``input_size`` for
    dense float inputs. ``layers`` stacks recurrent layers with ``dropout`` between them;
    ``bidirectional=True`` gives each layer a reverse direction (PyTorch's semantics). The
    head follows ``task``: ``"lm"`` (default) per-step logits, ``vocab_size`` of them
    (``output_size`` overrides; with ``input_size`` there is no head unless ``output_size``
    is given); ``"classify"`` ``num_classes`` logits per sequence; ``"regress"``
    ``output_size`` outputs per step.

    >>> model = make_model("rnn", vocab_size=27, hidden_size=50, dtype="float64", seed=1)
    >>> sorted(model.params)
    ['W_h', 'W_x', 'W_y', 'b_h', 'b_x', 'b_y']
    >>> model = make_model("lstm", input_size=3, hidden_size=4, task="classify", num_classes=2, bidirectional=True)
    >>> [name for name in model.params if name.startswith("W")]
    ['W_x', 'W_h', 'W_x_reverse', 'W_h_reverse', 'W_y']
    """
    if (input_size is None) == (vocab_size is None):
        raise ValueError("give exactly one of input_size (dense inputs) or vocab_size (integer inputs)")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if embedding is not None and vocab_size is None:
        raise ValueError("embedding=E learns a table for integer inputs: give vocab_size, not input_size "
                         "(dense inputs need no embedding)")
    if num_classes is not None and task != "classify":
        raise ValueError(f"num_classes is for task='classify', not task={task!r}")
    if task == "classify":
        if num_classes is None:
            raise ValueError("task='classify' needs num_classes")
        if output_size is not None:
            raise ValueError("task='classify' takes num_classes, not output_size")
        head = num_classes
    elif task == "regress":
        if output_size is None:
            raise ValueError("task='regress' needs output_size (the width of each step's output)")
        head = output_size
    else:
        head = output_size or vocab_size
    require_device(device)  # a light check that fails before any work
    model = SequenceModel(cell, vocab_size if vocab_size is not None else input_size, hidden_size, head,
                          layers=layers, dropout=dropout, dtype=dtype, seed=seed,
                          index_input=vocab_size is not None, embedding=embedding, bidirectional=bidirectional,
                          task=task)
    if device != "cpu":
        return backend_class(device).model_from(model)
    return model


def _checked_mask(mask, T, B, dtype=np.float64) -> np.ndarray:
    """``mask`` as a ``(B, T)`` array (a ``(T,)`` mask is one sequence's), else a ValueError
    naming the shape given."""
    array = np.asarray(mask, dtype=dtype)
    array = array[None, :] if array.ndim == 1 else array
    if array.shape != (B, T):
        raise ValueError(f"mask has shape {np.shape(mask)}, expected {(B, T)} like the inputs")
    return array


def _lengths_from_mask(mask, T, B) -> np.ndarray:
    """A classification mask ``(B, T)`` (nonzero over each sequence's real steps, then zeros)
    as lengths ``(B,)``; a mask with a gap, or a sequence with no real step, is a ValueError."""
    mask = _checked_mask(mask, T, B, dtype=None)
    real = mask != 0
    lengths = real.sum(axis=1)
    gaps = (real != (np.arange(T)[None, :] < lengths[:, None])).any(axis=1) | (lengths == 0)
    if gaps.any():
        b = int(np.argmax(gaps))
        raise ValueError(f"for task='classify' a mask marks each sequence's real steps: nonzero, then zeros for "
                         f"the padding at its end; row {b} is {mask[b].tolist()!r:.80}")
    return lengths.astype(np.int64)


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
                 clip_mode: str, seed: Optional[int], config: Optional[dict] = None, vocab=None,
                 device: str = "cpu"):
        self.loss = loss
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
        # One rank of a data-parallel run (numbarnn.distributed.DataParallel), or None.
        self.distributed = None
        # The device's side of training: the model's weights and gradients, the optimizer's
        # slots, the step's buffers (model and optimizer here are the CPU ones it starts from).
        self.backend = backend_class(device)(model, loss, optimizer, clip=clip, clip_mode=clip_mode)

    @property
    def device(self) -> str:
        """Where this trainer runs: ``"cpu"`` or ``"cuda"`` (see :meth:`to`)."""
        return self.backend.device

    @property
    def model(self):
        """The model on this trainer's device (a :class:`SequenceModel` on the CPU)."""
        return self.backend.model

    @property
    def optimizer(self):
        """The optimizer on this trainer's device (its ``state_dict`` is the same on all)."""
        return self.backend.optimizer

    def to(self, device: str) -> "Trainer":
        """This trainer on ``device`` ("cpu" or "cuda"): the same trainer when it is there
        already, else a new one that continues it exactly (weights, optimizer state, step,
        history, carried state, early stopping, and the same random generator object, so use
        one of the two from then on). ``numbarnn train --resume CKPT --device ...`` uses it.

        >>> import numpy as np, numbarnn
        >>> trainer = numbarnn.make_trainer("rnn", vocab_size=3, hidden_size=2, seed=0)
        >>> trainer.to("cpu") is trainer, trainer.device
        (True, 'cpu')
        """
        require_device(device)
        if device == self.device:
            return self
        if self.distributed is not None:
            raise ValueError("a distributed trainer runs on the CPU; save it and load the checkpoint on "
                             f"{device!r} in one process")
        model, optimizer = self.backend.to_host()
        moved = Trainer(model, self.loss, optimizer, self.sampler, clip=self.clip, clip_mode=self.clip_mode,
                        seed=self.seed, config=self.config, vocab=self.vocab, device=device)
        moved.rng = self.rng
        moved.step = self.step
        moved.history = list(self.history)
        moved.last_grad_norm = self.last_grad_norm
        moved.state = None if self.state is None else moved.backend.state_to_device(
            self.backend.state_to_host(self.state))
        moved.fit_state = dict(self.fit_state)
        moved.fit_state["best_params"] = moved.backend.snapshot_to_device(
            None if self.fit_state["best_params"] is None else self.backend.snapshot_to_host(self.fit_state["best_params"]))
        for attr in ("cell_spec", "loss_spec", "optimizer_spec", "sampler_spec", "checkpoint_meta", "schedule"):
            if hasattr(self, attr):
                setattr(moved, attr, getattr(self, attr))
        return moved

    def params_to_host(self) -> dict:
        """Copies of every parameter as NumPy arrays, keyed like ``model.params``."""
        return self.backend.params_to_host()

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

    @property
    def task(self) -> str:
        """What the model is for: ``"lm"``, ``"classify"`` or ``"regress"`` (see :func:`make_trainer`)."""
        return getattr(self.model, "task", "lm")

    def _time_major_inputs(self, inputs):
        """Checked time-major inputs: ``(T, B)`` int64 indices, or ``(T, B, X)`` floats for a
        model with dense inputs (given batch-first, ``(B, T, X)``, or ``(T, X)`` for one sequence)."""
        if getattr(self.model, "index_input", True):
            return self._time_major_indices(inputs, "inputs", allow_padding=True)
        X = self.model.input_size
        array = np.asarray(inputs)
        if array.dtype == bool or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
            raise ValueError(f"inputs must be real numbers shaped (B, T, {X}) (dense inputs), got dtype {array.dtype}")
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3 or array.shape[2] != X:
            raise ValueError(f"inputs must be shaped (B, T, {X}) or (T, {X}): this model takes input_size={X}, "
                             f"got shape {array.shape}")
        if array.size == 0:
            raise ValueError("inputs is empty")
        return np.ascontiguousarray(np.swapaxes(array, 0, 1), dtype=self.model.dtype)

    def _prepare(self, inputs, targets, mask, lengths=None):
        """Checked, time-major ``(x, y, weights, lengths)`` for the backend; ``lengths`` is None
        unless the model needs it (classification, or the reverse direction of a regression)."""
        x = self._time_major_inputs(inputs)
        T, B = x.shape[:2]
        task = self.task
        if lengths is not None:
            lengths = checked_lengths(lengths, T, B)
        if task == "classify":
            if lengths is None and mask is not None:
                lengths = _lengths_from_mask(mask, T, B)
            elif mask is not None:
                raise ValueError("give lengths or a mask, not both (for task='classify' a mask only marks "
                                 "each sequence's real steps)")
            return x, self._class_targets(targets, B), np.ones(B, self.model.dtype), lengths
        if lengths is not None:  # padding after each sequence's length: no loss there
            real = np.arange(T)[None, :] < lengths[:, None]
            if mask is None:
                mask = real
            else:
                mask = _checked_mask(mask, T, B)
                mask = mask * real
        x, y, weights = self._prepare_steps(x, targets, mask)
        if task == "lm":
            return x, y, weights, None  # causal: padding at the end changes no real step's output
        if lengths is None and mask is not None:
            # A regression mask's trailing zeros are padding: the reverse direction starts at
            # the last weighted step (zeros inside a sequence only drop those steps' loss).
            real = weights.reshape(T, B) != 0
            last = T - np.argmax(real[::-1], axis=0)
            lengths = np.where(real.any(axis=0), last, 1).astype(np.int64)
            if (lengths == T).all():
                lengths = None
        return x, y, weights, lengths

    def _class_targets(self, targets, B):
        y = np.atleast_1d(np.asarray(targets))
        C = self.model.output_size
        if y.shape != (B,) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"targets for task='classify' must be ({B},) class indices in [0, {C}), one per "
                             f"sequence; got {'shape ' + str(y.shape) if y.shape != (B,) else 'dtype ' + str(y.dtype)}")
        bad = (y < 0) | (y >= C)
        if bad.any():
            raise ValueError(f"targets holds {y[bad][0]}, outside the classes [0, {C}) (num_classes={C})")
        return y.astype(np.int64)

    def _prepare_steps(self, x, targets, mask):
        model = self.model
        T, B = x.shape[:2]
        if mask is None:
            weights = None
        else:
            weights = np.ascontiguousarray(_checked_mask(mask, T, B).T)
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

    def train_step(self, inputs, targets, mask=None, state=None, *, lengths=None) -> float:
        """One forward, BPTT, clip and update. Returns the loss summed over time steps (over
        the sequence's one output, for classify) and averaged over the batch.

        inputs: integers ``(T,)`` or ``(B, T)`` (``-1`` is a zero input, e.g. the course's
        start token or padding), or floats ``(B, T, X)`` for a model with ``input_size``;
        targets: ``(B, T)`` next tokens for "lm", ``(B,)`` classes for "classify",
        ``(B, T, O)`` for "regress"; mask: ``(B, T)`` weights, 0 for padding (for "classify",
        ones over each sequence's real steps then zeros); lengths: ``(B,)`` real steps of
        each sequence, the rest padding (see :meth:`SequenceModel.forward`);
        state: the initial recurrent state (zeros if None), e.g. ``trainer.state``.
        Raises :class:`NonFiniteLossError`, leaving the weights untouched, when the loss or
        the gradient norm is not finite. On a distributed trainer (:mod:`numbarnn.distributed`)
        every rank passes the same global batch and trains on its rows of it; ``state`` and
        ``trainer.state`` then hold this rank's rows.
        """
        x, y, weights, lengths = self._prepare(inputs, targets, mask, lengths)
        if self.distributed is not None:  # data-parallel: this rank's rows, the global batch's gradient
            loss, norm, final, B = self.distributed.gradients(self, x, y, weights, state, lengths)
        else:
            loss, norm, final, B = self.backend.gradients(x, y, weights, state, self.rng, lengths=lengths)
        self.last_grad_norm = norm
        if not (math.isfinite(loss) and math.isfinite(norm)):
            raise NonFiniteLossError(f"the loss is {loss} and the gradient norm {norm} at step {self.step + 1} "
                                     f"(cell {self.model.cell.name!r})")
        self.backend.update()
        self.state = final
        self.step += 1
        return loss / B

    def evaluate(self, inputs, targets, mask=None, state=None, *, lengths=None):
        """``(summed loss, count, final state)`` without updating anything; the count is of
        weighted steps (tokens), or of sequences for "classify". Arguments as :meth:`train_step`;
        :meth:`score` gives the mean loss and a classifier's accuracy."""
        x, y, weights, lengths = self._prepare(inputs, targets, mask, lengths)
        loss, final = self.backend.evaluate(x, y, weights, state, lengths=lengths)
        return loss, float(weights.sum()), final

    def predict(self, inputs, lengths=None, state=None):
        """The model's outputs for a batch, batch-first, nothing updated: class probabilities
        ``(B, C)`` (softmax of the logits) for "classify", else per-step outputs ``(B, T, O)``
        (the logits, for "lm"). Arguments as :meth:`train_step`.

        >>> import numpy as np, numbarnn
        >>> trainer = numbarnn.make_trainer("gru", task="classify", input_size=2, num_classes=3, hidden_size=4, seed=0)
        >>> probs = trainer.predict(np.zeros((5, 7, 2)), lengths=[7, 1, 2, 3, 4])
        >>> probs.shape, bool(np.allclose(probs.sum(axis=1), 1.0))
        ((5, 3), True)
        """
        x = self._time_major_inputs(inputs)
        T, B = x.shape[:2]
        extra = {}
        if lengths is not None:
            lengths = checked_lengths(lengths, T, B)
            if self.task != "lm":  # causal: lengths change nothing an lm predicts
                extra["lengths"] = lengths
        outputs, _ = self.backend.host_model().forward(x, state, **extra)
        if self.task != "classify":
            return np.swapaxes(outputs, 0, 1)
        shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def score(self, inputs, targets, mask=None, *, lengths=None) -> dict:
        """``{"loss": mean loss, "count": n}`` over a batch (per sequence for "classify", per
        weighted step otherwise), with ``"accuracy"`` (the fraction of sequences whose most
        likely class is the target) for "classify". Arguments as :meth:`train_step`."""
        x, y, weights, lengths = self._prepare(inputs, targets, mask, lengths)
        count = float(weights.sum())
        if self.task != "classify":
            loss, _ = self.backend.evaluate(x, y, weights, None, lengths=lengths)
            return {"loss": loss / max(count, 1.0), "count": count}
        loss, logits = self.backend.loss_and_outputs(x, y, weights, lengths=lengths)  # one forward for both
        # the most likely class: the largest logit
        return {"loss": loss / max(count, 1.0), "count": count, "accuracy": float((logits.argmax(axis=1) == y).mean())}

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
        if self.task != "lm":
            raise ValueError(f"generation needs a language model (task='lm'); this trainer's task is {self.task!r}: "
                             "use predict")
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
        kernel_args = generation_kernel_args(chooser)
        if kernel_args is not None:
            # One compiled call on the device. It takes the uniforms ahead, drawn from a copy of
            # the generator's state; the generator then draws exactly the ones used, so it ends
            # where stepping the model and calling the sampler would leave it.
            state_before = rng.bit_generator.state
            uniforms = rng.random(length) if kernel_args[0] != GREEDY else np.zeros(1)
            rng.bit_generator.state = state_before
            result = self.backend.generate(list(prime), int(length), kernel_args, uniforms, stop_index)
            if result is not None:
                indices, used = result
                if used:
                    rng.random(used)
                return indices
        model = self.backend.host_model()
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

    def _beam_search(self, prime, length, width, stop_index):
        """The continuations kept among ``width`` beams, distinct, highest total log-probability first."""
        model = self.backend.host_model()
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
        if self.distributed is not None:  # every rank calls it; rank 0 writes
            return self.distributed.save(self, path, batches)
        return save_checkpoint(self, path, batches)

    def snapshot_params(self, reuse=None):
        """A copy of every weight (one flat array, on the device), for :meth:`restore_params`.
        ``reuse``: an earlier snapshot of this trainer to overwrite instead of allocating a new
        one (the non-finite guard takes one every step)."""
        return self.backend.snapshot_params(reuse)

    def restore_params(self, snapshot) -> None:
        """Put back the weights :meth:`snapshot_params` copied (or a dict of host arrays)."""
        self.backend.restore_params(snapshot)

    def snapshot_optimizer(self, reuse=None):
        """A copy of the optimizer's state (slots, step count, options), kept on the device,
        for :meth:`restore_optimizer` (the non-finite guard takes one before every step);
        ``reuse`` as in :meth:`snapshot_params`."""
        return self.backend.snapshot_optimizer(reuse)

    def restore_optimizer(self, snapshot) -> None:
        """Put back the optimizer's state :meth:`snapshot_optimizer` copied."""
        self.backend.restore_optimizer(snapshot)

    def params_finite(self) -> bool:
        """True when no weight is NaN or infinite (checked on the device)."""
        return self.backend.params_finite()

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
            checkpoint_every: Optional[int] = None, print_fn=print, callbacks=()) -> dict:
        """Train on ``batches``; see :func:`numbarnn.fit.fit` for the options, the ``callbacks``
        (:class:`numbarnn.fit.Callback`) and the summary it returns."""
        return fit(self, batches, steps=steps, epochs=epochs, validation=validation, eval_every=eval_every,
                   sample_every=sample_every, samples=samples, patience=patience, progress=progress,
                   checkpoint=checkpoint, checkpoint_every=checkpoint_every, print_fn=print_fn,
                   callbacks=callbacks)

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
            out.append(self.vocab.join(prime, text.rstrip("\n") if names else text))  # words: spaced
        return out

    def validation_loss(self, validation) -> float:
        """Mean loss per token over ``validation``: a list of ``(inputs, targets, mask, carry)`` batches
        (on a distributed trainer, sharded over the ranks: each evaluates its rows)."""
        if self.distributed is not None:
            return self.distributed.validation_loss(self, validation)
        total, count, state = 0.0, 0.0, None
        for inputs, targets, mask, carry in validation:
            loss, n, state = self.evaluate(inputs, targets, mask, state=state if carry else None)
            total, count = total + loss, count + n
        return total / max(count, 1.0)


def make_trainer(cell="lstm", loss=None, optimizer="adam", sampler="categorical", *,
                 vocab_size: Optional[int] = None, input_size: Optional[int] = None, embedding: Optional[int] = None,
                 task: str = "lm", num_classes: Optional[int] = None, output_size: Optional[int] = None,
                 hidden_size: int = 128, layers: int = 1, bidirectional: bool = False,
                 dropout: float = 0.0, lr: Optional[float] = None, clip: Optional[float] = 5.0,
                 clip_mode: str = "value", dtype="float32", seed: Optional[int] = None, vocab=None,
                 mode: Optional[str] = None, optimizer_options=None, sampler_options=None,
                 device: str = "cpu", distributed: Optional[str] = None, **options) -> Trainer:
    """A :class:`Trainer` composed from registry names (or spec objects).

    ``vocab_size`` (or a ``vocab``, a :class:`numbarnn.data.Vocabulary`, which also lets
    ``generate`` speak text) sets the input and output size. ``task`` picks the model's job:

    * ``"lm"`` (default): the next token at every step, inputs and outputs ``vocab_size``
      wide; ``loss`` defaults to ``softmax_cross_entropy``;
    * ``"classify"``: one of ``num_classes`` per sequence, from its state at its last real
      step (``lengths=`` or a mask in ``train_step``), softmax cross-entropy;
    * ``"regress"``: ``output_size`` outputs at every step, ``loss`` ``"mse"`` (the default)
      or any registered loss with dense targets.

    The inputs of "classify" and "regress" are integers (``vocab_size``) or dense floats
    ``(B, T, X)`` (``input_size=X``), exactly one of the two; ``embedding=E`` learns an
    E-wide embedding of integer inputs (any task). ``bidirectional=True`` gives every layer
    a reverse direction, as PyTorch's (not for "lm": it cannot be causal). ``lr`` defaults to the
    optimizer's own default. ``clip`` clips gradients by value (the course's,
    ``clip_mode="value"``) or by global norm (``clip_mode="norm"``); None turns clipping off.
    ``layers`` stacks recurrent layers with ``dropout`` between them. Further keyword options
    go to the one component that accepts them (e.g. ``momentum=0.9`` to the optimizer,
    ``p=0.8`` to ``top_p``); an option no component accepts is an error listing what each
    accepts. ``mode`` ("names" or "stream") is recorded for generation and checkpoints.
    ``device="cuda"`` runs the same trainer on an NVIDIA GPU (``pip install "numbarnn[cuda]"``;
    see ``docs/gpu.md``); without the package, a driver or a GPU it says which is missing.
    ``distributed="mpi"`` makes the trainer one rank of a data-parallel run over MPI (every
    rank calls ``make_trainer`` alike; ``pip install "numbarnn[mpi]"``; see
    :mod:`numbarnn.distributed`); with one process it changes nothing.

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
    >>> make_trainer(vocab_size=5, momentum=0.9)   # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    numbarnn.optimizers.UnknownOptionError: make_trainer got an unknown option 'momentum'; accepted: model and trainer: vocab_size, input_size, embedding, task, num_classes, output_size, hidden_size, layers, bidirectional, dropout, lr, clip, clip_mode, dtype, seed, vocab, mode, optimizer_options, sampler_options, device, distributed; optimizer 'adam': lr, beta1, beta2, eps...; sampler 'categorical': none
    """
    require_device(device)  # a light check that fails before any work
    if distributed not in (None, "mpi"):
        raise ValueError(f"distributed must be None or 'mpi', got {distributed!r}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if loss is None:
        loss = "mse" if task == "regress" else "softmax_cross_entropy"
    cell_spec, loss_spec = get_cell(cell), get_loss(loss)
    opt_spec, sampler_spec = get_optimizer(optimizer), get_sampler(sampler)
    if vocab is not None:
        if task != "lm":
            raise ValueError(f"vocab is for generating text (task='lm'); for task={task!r} encode the text with "
                             "vocab.encode and give vocab_size=len(vocab)")
        if vocab_size is not None and vocab_size != len(vocab):
            unit = "tokens" if getattr(vocab, "kind", "chars") == "words" else "characters"  # a word vocabulary
            raise ValueError(f"vocab_size={vocab_size} but the vocabulary has {len(vocab)} {unit}")
        vocab_size = len(vocab)
    if task == "lm":
        if input_size is not None:
            raise ValueError("input_size (dense inputs) is for task='classify' or task='regress'; a language "
                             "model (task='lm', the default) takes vocab_size")
        if output_size is not None:
            raise ValueError("task='lm' predicts the next token, vocab_size wide: output_size is for task='regress'")
        if vocab_size is None:
            raise ValueError("make_trainer needs vocab_size (or a vocab)")
    elif (vocab_size is None) == (input_size is None):
        raise ValueError(f"task={task!r} needs exactly one of vocab_size (integer inputs) or input_size "
                         "(dense inputs)")
    wanted = {"classify": "indices", "regress": "dense"}.get(task)
    if wanted is not None and loss_spec.targets_kind != wanted:
        raise ValueError(f"task={task!r} needs a loss with {wanted} targets "
                         f"({'softmax_cross_entropy' if wanted == 'indices' else 'mse'}, ...); "
                         f"{loss_spec.name!r} takes {loss_spec.targets_kind} targets")
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
    model = make_model(cell_spec, vocab_size=vocab_size, input_size=input_size, hidden_size=hidden_size,
                       output_size=output_size, layers=layers, dropout=dropout, dtype=dtype, seed=seed, task=task,
                       embedding=embedding, num_classes=num_classes, bidirectional=bidirectional)
    config = {"cell": cell_spec.name, "loss": loss_spec.name, "optimizer": opt_spec.name,
              "sampler": sampler_spec.name, "task": task,
              "vocab_size": None if vocab_size is None else int(vocab_size),
              "input_size": None if input_size is None else int(input_size),
              "embedding": None if embedding is None else int(embedding),
              "num_classes": None if num_classes is None else int(num_classes),
              "output_size": None if output_size is None else int(output_size),
              "bidirectional": bool(bidirectional), "hidden_size": int(hidden_size),
              "layers": int(layers), "dropout": float(dropout), "clip": clip, "clip_mode": clip_mode,
              "dtype": model.dtype.name, "seed": seed, "mode": mode, "optimizer_options": opt_opts,
              "sampler_options": smp_opts}
    optimizer, chooser = opt_spec.factory(model.params, **opt_opts), sampler_spec.factory(**smp_opts)
    if device != "cpu":  # every component's support on the device, before anything is allocated there
        backend_class(device).check_supported(model, loss_spec, optimizer, clip, clip_mode)
    trainer = Trainer(model, loss_spec, optimizer, chooser, clip=clip, clip_mode=clip_mode, seed=seed,
                      config=config, vocab=vocab, device=device)
    trainer.cell_spec, trainer.loss_spec = cell_spec, loss_spec
    trainer.optimizer_spec, trainer.sampler_spec = opt_spec, sampler_spec
    if distributed is not None:  # imports mpi4py: only when asked for
        from .distributed import distribute

        trainer = distribute(trainer)
    return trainer


# make_trainer's own keyword options, listed when an option matches no component.
_MAKE_TRAINER_OPTIONS = [name for name, p in inspect.signature(make_trainer).parameters.items()
                         if p.kind is inspect.Parameter.KEYWORD_ONLY]
