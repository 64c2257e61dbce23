"""The CPU backend: trains a :class:`~numbarnn.sequence_model.SequenceModel` in place with
the Numba kernels.

A backend owns what a device needs for training: the model's weights and gradients, the
optimizer's slots, the step's buffers, the fused training step, compiled generation and
the optimizer update. :class:`~numbarnn.trainer.Trainer` is the same on every device and
calls a backend through these methods (:mod:`numbarnn.cuda.backend` has the same ones):

- ``gradients(x, y, weights, state, rng) -> (loss_sum, grad_norm, final_state, B)``:
  forward, loss, backward and clipping for a checked time-major batch; no update. Also
  ``lengths=`` (B,) or None, for the models that need them (classifiers, bidirectional
  layers over padded sequences; see ``SequenceModel.forward``).
- ``update()``: the optimizer step with the gradients of the last ``gradients`` call.
- ``evaluate(x, y, weights, state, lengths=None) -> (loss_sum, final_state)``: no gradients.
- ``loss_and_outputs(x, y, weights, lengths=None) -> (loss_sum, outputs)``: one forward
  from a zero state, the outputs on the host as the host model's ``forward`` gives them
  (a classifier's score takes its accuracy from them).
- ``generate(prime, length, kernel_args, uniforms, stop_index) -> (indices, draws_used)``
  in one compiled call, or None when this model or sampler has no such kernel (the
  trainer then steps :meth:`host_model` itself).
- ``host_model()``, ``params_to_host()``, ``snapshot_params()``, ``restore_params()``,
  ``params_finite()``, ``state_arrays(state)``, ``state_from_arrays(arrays)``,
  ``state_to_host(state)``, ``kernels_to_compile(phase, sampler)`` and ``to_host()``
  (the CPU model and optimizer with the current values, to move to another device).

Shapes: a batch is time-major, ``x (T, B)`` int64 indices (or ``(T, B, X)`` floats), ``y (T*B,)``
indices or ``(T*B, V)`` floats (``(B,)`` classes for a classifier), ``weights (T*B,)`` (``(B,)``);
``state`` a model state (see ``SequenceModel``).

>>> import numpy as np, numbarnn
>>> trainer = numbarnn.make_trainer("rnn", vocab_size=3, hidden_size=2, seed=0)
>>> type(trainer.backend).__name__, trainer.backend.compiled_step
('CpuBackend', True)
"""
from __future__ import annotations

import contextlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numba
import numpy as np

from . import losses as _builtin_losses
from .kernels import embedding, loops
from .kernels.loops import compile_state
from .optimizers import clip_flat, clip_gradients
from .samplers import generation_kernel_args
from .sequence_model import SequenceModel, one_blas_thread

#: Batch shapes whose compiled-step buffers a backend keeps (they share one backing buffer).
WORKSPACE_SHAPES = 8

#: A compiled step of at least this many sequences runs as two halves at once (see
#: ``CpuBackend.split_steps``). At H128 float32 a B16 step in halves of 8 took 8.1 ms
#: against 10.9 whole (``benchmarks/breakdown.py --batch 16``, 2026-12-02).
SPLIT_MIN_ROWS = 16


class CpuBackend:
    """Training on the CPU; see the module docstring for the methods a trainer calls.

    ``model`` and ``optimizer`` are used in place (the trainer's ``model`` is this model).
    """

    #: Split a compiled step of at least :data:`SPLIT_MIN_ROWS` sequences into two halves of
    #: the batch that run at once, the second on a thread the backend owns, each its own
    #: forward, loss and BPTT (the loops release the GIL), with BLAS at one thread per call
    #: meanwhile; the loss and the gradients are the halves' sums. Only when two CPUs and two
    #: Numba threads are there (``numbarnn.set_threads(1)`` turns it off) and the halves' per-step
    #: products take the tiled product (see :meth:`_halves_take_tiles`). The sums run in
    #: another order than one call's, so the last bits differ from an unsplit step's.
    split_steps = True

    device = "cpu"

    def __init__(self, model: SequenceModel, loss, optimizer, *, clip, clip_mode):
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.clip = clip
        self.clip_mode = clip_mode
        self._grads = None  # the gradients of the last gradients() call, for update()
        # Data-parallel training (numbarnn.distributed) sets this: (flat_grads, loss, B) ->
        # (loss, B) of the global batch, called between backward and clipping.
        self.reduce_gradients = None
        # The common model (one layer of any cell, one-hot integer inputs, a per-step head,
        # the built-in softmax cross-entropy) trains through one compiled call per step.
        # The compiled step's buffers, one set per half of a split step (see _step_workspace).
        self._workspaces = [_Workspace(), _Workspace()]
        self._second_half = None  # the second half's gradient buffers (see _second_half_gradients)
        self._pool = None  # the one thread that runs a split step's second half, made on first use
        # With an embedding table the step folds it into the input weights (see _input_weights).
        self.compiled_step = (type(model) is SequenceModel and len(model.layers) == 1 and model.index_input
                              and model.output_size is not None and model.task == "lm"
                              and loss.forward_backward is _builtin_losses.softmax_cross_entropy)
        self._folded = None  # an embedding model's (W_x @ W_emb.T, its gradient), (G*H, V)
        # Element-wise optimizers update the model's one flat buffer in a single call.
        self.flat_optimizer = (getattr(optimizer, "elementwise", False)
                               and getattr(optimizer, "flat_size", None) == model.flat_params.size
                               and list(optimizer.state_keys()) == list(model.params))

    # -- a training step -------------------------------------------------------------------------
    def gradients(self, x, y, weights, state, rng, lengths=None):
        """Forward, loss and backward into ``model.flat_grads``, then clipping; returns
        ``(loss summed over the batch, gradient norm before clipping, final state, B)``.
        ``lengths`` (B,) gives each sequence's real steps (see ``SequenceModel.forward``)."""
        if self.compiled_step and lengths is None:
            loss, final, B = self._language_model_step(x, y, weights, state)
            grads = self.model._grad_views
        else:
            loss, d_outputs, final, B = self._loss_and_gradient(x, y, weights, state, train=True, rng=rng,
                                                                lengths=lengths)
            if B > 1:
                d_outputs *= self.model.dtype.type(1.0 / B)
            grads = self.model.backward_into_buffer(d_outputs)
        if self.reduce_gradients is not None:  # distributed: the clip sees the global batch's gradient
            loss, B = self.reduce_gradients(self.model.flat_grads, loss, B)
        if self.flat_optimizer:
            norm = clip_flat(self.model.flat_grads, self.clip, self.clip_mode)
        else:
            norm = clip_gradients(grads, self.clip, self.clip_mode)
        self._grads = grads
        return loss, norm, final, B

    def update(self) -> None:
        """The optimizer step with the last :meth:`gradients`."""
        if self.flat_optimizer:
            self.optimizer.step_flat(self.model.flat_params, self.model.flat_grads)
        else:
            self.optimizer.step(self.model.params, self._grads)

    def evaluate(self, x, y, weights, state, lengths=None):
        """``(loss summed over the batch, final state)``; nothing is updated."""
        loss, _, final, _ = self._loss_and_gradient(x, y, weights, state, train=False, rng=None, lengths=lengths)
        return loss, final

    def loss_and_outputs(self, x, y, weights, lengths=None):
        """``(loss summed over the batch, outputs)`` of one forward from a zero state, the
        outputs as ``model.forward`` gives them ((B, C) for a classifier); nothing is updated."""
        outputs, _ = self._forward(x, None, train=False, rng=None, lengths=lengths)
        return self._loss_of(outputs, y, weights)[0], outputs

    def _forward(self, x, state, train, rng, lengths):
        return self.model.forward(x, state, train=train, rng=rng, **({} if lengths is None else {"lengths": lengths}))

    def _loss_of(self, outputs, y, weights):
        """``(summed loss, its gradient w.r.t. outputs)``. Outputs are (T, B, V) per step, or
        (B, C) for a classifier: the loss sees N rows either way."""
        V = outputs.shape[-1]
        N = outputs.size // V
        d_outputs, scratch = np.empty_like(outputs), np.empty_like(outputs)
        loss = self.loss.forward_backward(outputs.reshape(N, V), y, weights,
                                          d_outputs.reshape(N, V), scratch.reshape(N, V))
        return loss, d_outputs

    def _loss_and_gradient(self, x, y, weights, state, train, rng, lengths=None):
        outputs, final = self._forward(x, state, train, rng, lengths)
        loss, d_outputs = self._loss_of(outputs, y, weights)
        return loss, d_outputs, final, outputs.shape[-2]

    def _language_model_step(self, x, y, weights, state):
        """The common model's forward, loss and backward in one compiled call (see
        ``numbarnn.kernels.cell_loops.language_model_step``), or two at once on the two
        halves of the batch (see :attr:`split_steps`); buffers are reused between steps (see
        :meth:`_step_workspace`)."""
        model = self.model
        layer, dtype = model.layers[0], model.dtype
        T, B = x.shape
        initial = layer._unpack_state(state, B, "initial state") if state is not None else None
        p, g = model.params, model._grad_views
        pool = self._split_pool(B)
        # Split: BLAS at one thread from here on, the embedding's fold and unfold included (a
        # 2-thread call just before leaves OpenBLAS's second thread spinning on a core).
        with one_blas_thread() if pool is not None else contextlib.nullcontext(False) as single:
            W_in, dW_in = self._input_weights()
            _, b_x, W_h, b_h, own = layer._kernel_weights()
            weights_in = (W_in, b_x, W_h, b_h, own, p["W_y"], p["b_y"])
            _, dW_h, db_x, db_h, d_own = layer._kernel_gradients(g)
            grads_out = (dW_in, dW_h, db_x, db_h, d_own, g["W_y"], g["b_y"])
            scale = dtype.type(1.0 / B)
            if single:
                loss, final = self._split_step(pool, x, y, weights, initial, scale, weights_in, grads_out)
            else:
                loss, final = self._rows_step(0, x, y, weights, initial, scale, weights_in, grads_out)()
            if model.embedding_size is not None:  # the chain rule through W_in = W_x @ W_emb.T
                embedding.unfold_input_gradient(dW_in, p["W_x"], p["W_emb"], g["W_x"], g["W_emb"])
        return float(loss), layer._pack_state(final), B

    def _split_step(self, pool, x, y, weights, initial, scale, weights_in, grads_out):
        """:meth:`_rows_step` over the two halves of the batch at once, the second half on
        ``pool``'s thread into buffers of its own, then added into ``grads_out`` (and
        ``model.flat_grads``); returns ``(summed loss, [final state arrays])``."""
        T, B = x.shape
        half = B - B // 2
        second_grads, second_flat, second_dW_in = self._second_half_gradients(grads_out[0])

        def rows(a, lo, hi):  # sequences lo to hi of a time-major (T, B) or (T*B,) array, in its form
            part = np.ascontiguousarray(a.reshape(T, B)[:, lo:hi])
            return part if a.ndim == 2 else part.reshape(-1)

        def step(which, lo, hi, grads):
            return self._rows_step(which, rows(x, lo, hi), rows(y, lo, hi), rows(weights, lo, hi),
                                   None if initial is None else [s[lo:hi] for s in initial], scale, weights_in, grads)

        # Both halves made ready here first: the worker then only makes the compiled call and
        # does not wait for the GIL while this thread prepares its own half.
        second, first = step(1, half, B, second_grads), step(0, 0, half, grads_out)
        future = pool.submit(second)
        try:
            loss, final = first()
        finally:
            other_loss, other_final = future.result()  # waits for it, even when this half failed
        self.model.flat_grads += second_flat
        if second_dW_in is not None:  # the folded input weights' gradient is outside flat_grads
            np.add(grads_out[0], second_dW_in, out=grads_out[0])
        return loss + other_loss, [np.concatenate([a, b]) for a, b in zip(final, other_final)]

    def _rows_step(self, half, x, y, weights, initial, scale, weights_in, grads_out):
        """One compiled step over the sequences of ``x`` (T, B') into ``grads_out``, with the
        buffers of ``half``, made ready to run: returns a function of no arguments that makes
        the call and returns ``(summed loss, [final state arrays])``."""
        T, B = x.shape
        work = self._step_workspace(T, B, half)
        states = work[1]
        for s in range(states.shape[0]):
            states[s, 0] = 0.0 if initial is None else initial[s]
        W_in, b_x, W_h, b_h, own, W_y, b_y = weights_in
        dW_in, dW_h, db_x, db_h, d_own, dW_y, db_y = grads_out
        compiled = loops.loops_for(self.model.cell).language_model_step
        args = (x.reshape(T * B), y, weights, scale, W_in, b_x, W_h, b_h, own, W_y, b_y, *work, dW_in, dW_h, db_x,
                db_h, d_own, dW_y, db_y)

        def run():
            loss = compiled(*args)
            return loss, [states[s, T].copy() for s in range(states.shape[0])]
        return run

    def _split_pool(self, B: int):
        """The thread for a split step's second half, or None: run the step whole (see
        :attr:`split_steps`)."""
        if not self.split_steps or B < SPLIT_MIN_ROWS or not self._halves_take_tiles(B) or not _two_threads():
            return None
        if self._pool is None:
            try:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="numbarnn-half")
            except RuntimeError:  # no thread could be started
                return None
        return self._pool

    def _halves_take_tiles(self, B: int) -> bool:
        """Whether the per-step products of a half of ``B`` rows take the tiled product (see
        :func:`numbarnn.kernels.loops.tiled_operand`), or the cell has none. Where they take
        BLAS instead, two halves each packing ``W_h`` on one thread lost to one 2-thread call
        (LSTM H512 B64, before the tiled product took it: 300 vs 265 ms a step)."""
        model = self.model
        H = model.hidden_size
        return (not model.cell.recurrent_weights
                or loops.takes_tiled_product(B - B // 2, model.cell.gates * H * H, model.dtype.itemsize))

    def _second_half_gradients(self, dW_in):
        """``(grads_out, flat, dW_in)`` for a split step's second half: the compiled step's
        gradient arguments as views of ``flat``, a zeroed copy of the layout of
        ``model.flat_grads``, and with an embedding the (G*H, V) input gradient of the
        folded weights (else None: it is in ``flat``)."""
        model = self.model
        if self._second_half is None:
            layer = model.layers[0]
            flat = np.zeros_like(model.flat_grads)
            views = model._views(flat)
            scratch = {name: np.empty_like(value) for name, value in layer._unused_grads.items()}
            db_x, dW_h, db_h, d_own = layer._for_kernels(views, scratch)
            folded = np.empty_like(dW_in) if model.embedding_size is not None else None
            grads_out = (views["W_x"] if folded is None else folded, dW_h, db_x, db_h, d_own, views["W_y"],
                         views["b_y"])
            self._second_half = (grads_out, flat, folded)
        return self._second_half

    def __getstate__(self):
        # copy.deepcopy and pickle: a copy makes its own thread when it needs one
        state = self.__dict__.copy()
        state["_pool"] = None
        return state

    def _input_weights(self):
        """``(W_in, dW_in)``, the (G*H, V) input weights of the one-hot loops and where their
        gradient goes. Without an embedding: ``W_x`` and its gradient. With one, the table
        folded in: an index's row of the table times ``W_x`` is a column of
        ``W_x @ W_emb.T``, so the fused step and the compiled generation run as for one-hot
        inputs (the fold costs one (G*H, E, V) product per call)."""
        model = self.model
        p, g = model.params, model._grad_views
        if model.embedding_size is None:
            return p["W_x"], g["W_x"]
        if self._folded is None:
            shape = (p["W_x"].shape[0], model.vocab_rows)
            self._folded = (np.empty(shape, model.dtype), np.empty(shape, model.dtype))
        W_in, dW_in = self._folded
        embedding.fold_input_weights(p["W_x"], p["W_emb"], W_in)
        return W_in, dW_in

    def _step_workspace(self, T, B, half=0):
        """The buffers of one compiled step for a ``(T, B)`` batch (``half`` 1: a split step's
        second half, which has buffers of its own); see :class:`_Workspace`."""
        return self._workspaces[half].views(self.model, T, B)

    # -- generation ------------------------------------------------------------------------------
    def can_generate(self) -> bool:
        """Whether :meth:`generate` has a compiled loop for this model (one layer, one-hot
        inputs, a per-step head)."""
        model = self.model
        return (type(model) is SequenceModel and len(model.layers) == 1 and model.output_size is not None
                and model.index_input and model.task == "lm")

    def generate(self, prime, length, kernel_args, uniforms, stop_index):
        """The whole generation in one compiled call, or None without a loop for this model.

        ``kernel_args`` is ``(mode, temperature, k, p)`` (see
        :func:`numbarnn.samplers.generation_kernel_args`), ``uniforms`` the ``length``
        draws it may use. Returns ``(indices, draws used)``."""
        if not self.can_generate():
            return None
        model = self.model
        cell, H, dtype = model.cell, model.hidden_size, model.dtype
        mode, temperature, k, p_keep = kernel_args
        out = np.empty(length, np.int64)
        p = model.params
        _, b_x, W_h, b_h, own = model.layers[0]._kernel_weights()
        n, used = loops.loops_for(cell).generate(
            np.asarray(prime, np.int64), length, self._input_weights()[0], b_x, W_h, b_h, own, p["W_y"],
            p["b_y"], mode,
            temperature, k, p_keep, uniforms, -2 if stop_index is None else int(stop_index), out,
            np.zeros((cell.states, 2, 1, H), dtype), np.empty((1, 1, cell.cache_width * H), dtype),
            np.empty((1, 1, cell.gates * H), dtype), np.empty((1, cell.gates * H), dtype),
            np.empty((1, model.output_size), dtype), np.empty(model.output_size), np.empty(model.output_size),
            np.empty(1, np.int64))
        return out[:n].tolist(), int(used)

    # -- whole-model operations --------------------------------------------------------------------
    def host_model(self) -> SequenceModel:
        """The model as a CPU :class:`SequenceModel` with the current weights (itself here)."""
        return self.model

    def to_host(self):
        """``(model, optimizer)``: the CPU objects holding the current values (these ones)."""
        return self.model, self.optimizer

    def params_to_host(self) -> dict:
        """Copies of every parameter, keyed like ``model.params``."""
        return {name: value.copy() for name, value in self.model.params.items()}

    def snapshot_params(self, reuse=None):
        """A copy of every weight (one flat array), for :meth:`restore_params`; written into
        ``reuse`` when that is an earlier snapshot of this model."""
        flat = self.model.flat_params
        if isinstance(reuse, np.ndarray) and reuse.shape == flat.shape and reuse.dtype == flat.dtype:
            reuse[...] = flat
            return reuse
        return flat.copy()

    def snapshot_optimizer(self, reuse=None):
        """The optimizer's state (copies), for :meth:`restore_optimizer` (new host arrays:
        cheap next to a step here, so ``reuse`` is not needed)."""
        return self.optimizer.state_dict()

    def restore_optimizer(self, snapshot) -> None:
        """Put back what :meth:`snapshot_optimizer` returned."""
        self.optimizer.load_state_dict(snapshot)

    def restore_params(self, snapshot) -> None:
        """Put back the weights :meth:`snapshot_params` copied (or a dict of arrays)."""
        if isinstance(snapshot, dict):
            for name, value in snapshot.items():
                self.model.params[name][...] = value
        else:
            self.model.flat_params[...] = snapshot

    def params_finite(self) -> bool:
        """True when no weight is NaN or infinite."""
        return bool(np.isfinite(self.model.flat_params).all())

    def state_arrays(self, state) -> list:
        """A state as a flat list of host ``(B, H)`` arrays (checkpoints)."""
        return self.model.state_arrays(state)

    def state_from_arrays(self, arrays):
        """Inverse of :meth:`state_arrays`."""
        return self.model.state_from_arrays(arrays)

    def state_to_host(self, state):
        """The state in the CPU model's form (it is already)."""
        return state

    def state_to_device(self, state):
        """A host state in this backend's form (the same here)."""
        return state

    def snapshot_to_host(self, snapshot):
        """A :meth:`snapshot_params` result as a host array (it is already)."""
        return snapshot

    def snapshot_to_device(self, snapshot):
        """A host snapshot (one flat array) in this backend's form."""
        return None if snapshot is None else np.asarray(snapshot, self.model.dtype)

    def kernels_to_compile(self, phase: str, sampler) -> Optional[str]:
        """See :func:`numbarnn.runtime.kernels_to_compile`: whether ``phase`` of ``fit``
        ("step", "validation", "samples" with the trainer's ``sampler``) compiles loops first."""
        if phase not in ("step", "validation", "samples"):
            raise ValueError(f"phase must be 'step', 'validation' or 'samples', got {phase!r}")
        model = self.model
        if type(model) is not SequenceModel or not model.index_input or model.embedding_size is not None \
                or model.task != "lm":
            return None  # no note for these: their first steps compile the dense loops too
        deeper = ["forward_dense"] if len(model.layers) > 1 else []  # the layers above the first
        if phase == "step":
            names = (["language_model_step"] if self.compiled_step
                     else ["forward_indices", "backward_indices"] + (deeper and ["forward_dense", "backward_dense"]))
        elif phase == "validation":
            names = ["forward_indices"] + deeper
        else:  # what Trainer.generate_indices runs for the trainer's own sampler
            fast = generation_kernel_args(sampler) is not None and self.can_generate()
            names = ["generate"] if fast else ["forward_indices"] + deeper
        module = loops.loops_for(model.cell)
        found = [compile_state(getattr(module, name), model.dtype) for name in names]
        return "uncached" if "uncached" in found else "cached" if "cached" in found else None


def _two_threads() -> bool:
    """Whether this process may run two threads at once: two CPUs and two Numba threads."""
    if numba.get_num_threads() < 2:
        return False
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cpus >= 2


class _Workspace:
    """The buffers of the compiled step for ``(T, B)`` batches.

    They are views into one backing buffer that grows to the largest batch seen, so memory
    stays bounded however many sequence lengths the data has; the views of the last
    :data:`WORKSPACE_SHAPES` shapes are kept (most recently used last), as rebuilding them
    costs a little every step."""

    def __init__(self):
        self.shapes = {}  # (T, B) -> the step's buffers: views of buffer
        self.buffer = None

    def views(self, model, T, B):
        work = self.shapes.pop((T, B), None)
        if work is None:
            cell = model.cell
            H, V, GH, S = model.hidden_size, model.output_size, cell.gates * model.hidden_size, cell.states
            shapes = [(1, B, GH), (S, T + 1, B, H), (T, B, cell.cache_width * H), (B, GH), (T * B, V), (T * B, V),
                      (T * B, V), (T, B, H), (S, B, H), (S, B, H), (T, B, GH),
                      None if cell.shared_gate_grad else (T, B, GH), (B, H)]
            sizes = [0 if shape is None else math.prod(shape) for shape in shapes]
            starts = np.cumsum([0] + [-(-n // 16) * 16 for n in sizes])  # 64-byte aligned float32 views
            if self.buffer is None or self.buffer.size < starts[-1]:
                self.shapes.clear()  # the old buffer is freed once no view of it is left
                self.buffer = np.empty(int(starts[-1]), model.dtype)
            views = [None if shape is None else self.buffer[start:start + n].reshape(shape)
                     for shape, start, n in zip(shapes, starts, sizes)]
            if views[11] is None:
                views[11] = views[10]  # dhz is dxz for cells whose gates take h @ W_h.T + b_h by addition
            work = tuple(views)
        self.shapes[(T, B)] = work
        while len(self.shapes) > WORKSPACE_SHAPES:
            del self.shapes[next(iter(self.shapes))]  # the least recently used
        return work
