"""The CUDA backend: the same methods as :mod:`numbarnn.cpu_backend`, with everything on the GPU.

A :class:`CudaBackend` copies a CPU model's weights into one flat device buffer
(:class:`~numbarnn.cuda.model.CudaSequenceModel`) and the optimizer's slots into device
buffers (:class:`CudaOptimizer`) and from then on keeps everything on the device:
parameters, gradients, optimizer slots, recurrent state, activations. A training step
copies the batch in (one int64 buffer: inputs, targets and the index segments of the
inputs; plus the mask when it is not all ones) and 16 bytes out (the loss and the squared
gradient norm, which the trainer checks before it asks for the update).

On the device: every model :class:`~numbarnn.sequence_model.SequenceModel` builds (stacked,
bidirectional, embedded or dense inputs, the lm, classify and regress tasks), the
built-in cells (and any plugin cell with a CUDA pair, see
:mod:`numbarnn.cuda.cells`), the losses ``softmax_cross_entropy`` and ``mse``, the
optimizers whose class names a ``cuda_update`` (``sgd``, ``momentum``, ``adagrad``,
``rmsprop``, ``adam``, ``adamw``), clipping by value or norm, and generation with the samplers whose
class declares a ``generation_mode`` (``categorical``, ``greedy``, ``temperature``,
``top_k``, ``top_p``). Beam search and plugin samplers run in the trainer on a host copy
of the model (the same results). Plugin losses and optimizers are a clear
:class:`~numbarnn.cuda.UnsupportedOnCuda` error.

>>> import math, numpy as np, numbarnn
>>> options = dict(vocab_size=3, hidden_size=2, lr=0.5, dtype="float64", seed=0)
>>> cpu = numbarnn.make_trainer("rnn", "softmax_cross_entropy", "sgd", "greedy", **options)
>>> gpu = numbarnn.make_trainer("rnn", "softmax_cross_entropy", "sgd", "greedy", device="cuda", **options)
>>> type(gpu.backend).__name__, gpu.device, type(gpu) is type(cpu)
('CudaBackend', 'cuda', True)
>>> x, y = np.array([[0, 1], [2, 0]]), np.array([[1, 2], [0, 1]])
>>> math.isclose(gpu.train_step(x, y), cpu.train_step(x, y), rel_tol=1e-9)
True
>>> gpu.state
<DeviceState S=1 B=2 H=2>
>>> gpu.generate_indices([0], 2, gpu.sampler) == cpu.generate_indices([0], 2, cpu.sampler)
True
"""
from __future__ import annotations

import importlib
import math
from collections.abc import Mapping

import numpy as np
from numba import cuda

from .. import optimizers as _optimizers
from ..sequence_model import START_INPUT, SequenceModel
from . import arrays as darrays
from . import losses as dlosses
from . import optim as doptim
from . import sampling as dsampling
from . import require
from ._support import check_loss, check_optimizer
from .cells import resolve
from .model import _KEEP_STATE, CudaSequenceModel, DeviceState

__all__ = ["CudaBackend", "CudaOptimizer"]


def _same_device_array(candidate, like) -> bool:
    """Whether ``candidate`` is a device array that can hold a copy of ``like`` (a snapshot to reuse)."""
    return (candidate is not None and hasattr(candidate, "copy_to_host") and candidate is not like
            and tuple(candidate.shape) == tuple(like.shape) and candidate.dtype == like.dtype)


def _cuda_update(optimizer_class):
    """The update function the class names in ``cuda_update`` (``"module:function"``)."""
    module, _, name = optimizer_class.__dict__["cuda_update"].partition(":")
    return getattr(importlib.import_module(module), name)


class CudaOptimizer:
    """Mirror of a CPU :class:`~numbarnn.optimizers.Optimizer` with its slots on the device.

    ``options``, ``lr``, ``step_count`` and plain-data ``state_dict()`` /
    ``load_state_dict()`` behave as the CPU optimizer's (the state dict has the same keys,
    so checkpoints move between devices). The slots are the class's ``slots`` and the
    update the function its ``cuda_update`` names: adding an optimizer to the GPU is
    those two class attributes and the kernel.

    Each slot is one flat device buffer (P,) in the layout of the model's parameters.

    >>> import numpy as np
    >>> import numbarnn
    >>> cpu = numbarnn.make_trainer("rnn", "softmax_cross_entropy", "adam", "greedy", vocab_size=3, hidden_size=2,
    ...                             dtype="float64", seed=0)
    >>> gpu = cpu.to("cuda")
    >>> gpu.optimizer
    <CudaOptimizer 'adam' step=0>
    >>> x, y = np.array([[0, 1], [2, 0]]), np.array([[1, 2], [0, 1]])
    >>> _ = gpu.train_step(x, y), cpu.train_step(x, y)
    >>> state = gpu.optimizer.state_dict()
    >>> state["step"], sorted(state) == sorted(cpu.optimizer.state_dict())
    (1, True)
    >>> np.allclose(state["exp_avg_sq.W_h"], cpu.optimizer.state_dict()["exp_avg_sq.W_h"])
    True
    """

    def __init__(self, cpu_optimizer, model: CudaSequenceModel):
        check_optimizer(cpu_optimizer)
        kind = type(cpu_optimizer)
        # A private CPU optimizer of the same kind: validated options and the state-dict format,
        # never shared with the trainer this one was copied from.
        self.cpu = kind(model.params_to_host(), **cpu_optimizer.options)
        self.cpu.load_state_dict(cpu_optimizer.state_dict())
        self.name = cpu_optimizer.name
        self.model = model
        self.slots = kind.slots
        self._update = _cuda_update(kind)
        # The CPU optimizer's current slots (zeros when fresh), so a trained trainer moves as it is.
        self.state = {slot: cuda.to_device(np.concatenate(
            [np.asarray(cpu_optimizer.state[slot][name], model.dtype).reshape(-1) for name in model.names]))
            for slot in self.slots}
        self.step_count = cpu_optimizer.step_count

    @property
    def options(self):
        """The CPU optimizer's options (``lr``, ``beta1``, ...)."""
        return self.cpu.options

    @property
    def lr(self):
        """The learning rate; setting it sets the CPU optimizer's."""
        return self.cpu.lr

    @lr.setter
    def lr(self, value):
        self.cpu.lr = value

    def __repr__(self):
        return f"<CudaOptimizer {self.name!r} step={self.step_count}>"

    def step(self) -> None:
        """One update of the model's flat parameters from its flat gradients, on the device."""
        self.step_count += 1
        self._update(self.model.flat, self.model.grad_flat, self.state, self.cpu.options, self.step_count)

    def snapshot(self, reuse=None):
        """``(step, options, {slot: device copy})``, for :meth:`restore`; copies on the device
        only, into ``reuse``'s buffers when that is an earlier snapshot."""
        earlier = reuse[2] if isinstance(reuse, tuple) and len(reuse) == 3 and isinstance(reuse[2], dict) else {}
        copies = {}
        for slot, array in self.state.items():
            copy = earlier.get(slot)
            copies[slot] = copy if _same_device_array(copy, array) else cuda.device_array(array.shape, array.dtype)
            darrays.copy_flat(array, copies[slot])
        return self.step_count, dict(self.cpu.options), copies

    def restore(self, snapshot) -> None:
        """Put back what :meth:`snapshot` returned."""
        step, options, copies = snapshot
        for slot, array in copies.items():
            darrays.copy_flat(array, self.state[slot])
        self.step_count = self.cpu.step_count = step
        self.cpu.options.update(options)

    def state_dict(self) -> dict:
        """The CPU optimizer's format: ``step``, the options, ``"<slot>.<param>"`` host arrays."""
        out = {"step": self.step_count}
        out.update(self.cpu.options)
        for slot in self.slots:
            flat = self.state[slot].copy_to_host()
            for name, (offset, size) in self.model.offsets.items():
                out[f"{slot}.{name}"] = flat[offset:offset + size].reshape(self.model.shapes[name]).copy()
        return out

    def load_state_dict(self, state) -> None:
        """Restore a state dict (from either device); checked by the CPU optimizer first."""
        self.cpu.load_state_dict(state)
        for slot in self.slots:
            flat = np.concatenate([np.asarray(self.cpu.state[slot][name], self.model.dtype).reshape(-1)
                                   for name in self.model.names])
            self.state[slot].copy_to_device(flat)
        self.step_count = self.cpu.step_count


class CudaBackend:
    """Training on an NVIDIA GPU; the methods of :mod:`numbarnn.cpu_backend`.

    ``model`` and ``optimizer`` are the CPU ones the trainer starts from: their values are
    copied to the device and they are not changed afterwards. ``loop`` picks the launch
    scheme of the recurrent loops (see :func:`numbarnn.cuda.loops.sequence_forward`;
    None: chosen per shape).
    """

    device = "cuda"

    @staticmethod
    def check_supported(model, loss, optimizer, clip, clip_mode) -> None:
        """Every component at once, before anything is allocated on the device."""
        require()
        resolve(model.cell)  # a cell without CUDA kernels: a clear error
        check_loss(loss)
        check_optimizer(optimizer)
        if clip_mode not in _optimizers.CLIP_MODES:
            raise ValueError(f"clip mode must be one of {_optimizers.CLIP_MODES}, got {clip_mode!r}")
        if clip is not None:
            _optimizers.check_real("gradient", "clipping", "clip", clip, low=0.0, low_open=True)

    @staticmethod
    def model_from(model: SequenceModel) -> CudaSequenceModel:
        """``model`` (a CPU :class:`SequenceModel`) with its weights copied to the device."""
        require()
        return CudaSequenceModel(model)

    def __init__(self, model: SequenceModel, loss, optimizer, *, clip, clip_mode, loop=None):
        self.check_supported(model, loss, optimizer, clip, clip_mode)
        self.model = CudaSequenceModel(model)
        self.optimizer = CudaOptimizer(optimizer, self.model)
        self.loss = loss
        self.clip = None if clip is None else float(clip)
        self.clip_mode = clip_mode
        self.loop = loop
        self._host = None  # a CPU model for host-side work (beam search, plugin samplers, moves)

    # -- a training step -------------------------------------------------------------------------
    def _device_loss(self, x, y, weights, state, rng=None, lengths=None):
        """Uploads the checked batch, runs forward (dropout between layers with a generator,
        as the CPU trains) and the loss kernel (gradient included)."""
        model = self.model
        T, B = x.shape[:2]
        buf = model.upload_batch(x, model.index_input, targets=y, lengths=lengths)
        if bool((weights == 1).all()):
            if not buf["mask_is_ones"]:
                darrays.fill(buf["mask"], 1)
                buf["mask_is_ones"] = True
        else:
            buf["mask"].copy_to_device(weights)
            buf["mask_is_ones"] = False
        model.forward_device(buf, T, B, model.index_input, state, loop=self.loop, train=rng is not None, rng=rng,
                             with_lengths=lengths is not None)
        scale = model.dtype.type(1.0 / B) if B > 1 else None
        if self.loss.targets_kind != "indices":
            dlosses.squared_error(buf["logits"], buf["y_dense"], buf["mask"], buf["dlogits"], buf["row_loss"],
                                  buf["scalars"], 0, scale=scale, partials=buf["partials"])
        else:
            dlosses.softmax_cross_entropy(buf["logits"], buf["y"], buf["mask"], buf["probs"], buf["dlogits"],
                                          buf["row_loss"], buf["scalars"], 0, scale=scale,
                                          partials=buf["partials"])
        return buf, T, B

    def gradients(self, x, y, weights, state, rng, lengths=None):
        """Forward, loss, backward and clipping on the device; returns ``(loss summed over the
        batch, gradient norm before clipping, final state (a DeviceState), B)``. ``lengths``
        (B,) as on the CPU."""
        model = self.model
        buf, T, B = self._device_loss(x, y, weights, state, rng, lengths)
        model.backward_device(loop=self.loop)
        g, scalars = model.grad_flat, buf["scalars"]
        doptim.sum_of_squares(g, scalars, 1, partials=buf["partials"])
        host = scalars.copy_to_host()  # the one copy back: loss and squared gradient norm
        loss, norm = float(host[0]), math.sqrt(float(host[1]))
        if self.clip is not None and math.isfinite(norm):
            if self.clip_mode == "value":
                doptim.clip_by_value(g, self.clip)
            else:
                doptim.clip_by_norm(g, scalars[1:2], self.clip)
        return loss, norm, model.final_state(buf, T, B, lengths is not None), B

    def update(self) -> None:
        """The optimizer step with the last :meth:`gradients`, on the device."""
        self.optimizer.step()

    def evaluate(self, x, y, weights, state, lengths=None):
        """``(loss summed over the batch, final state)``; nothing is updated."""
        buf, T, B = self._device_loss(x, y, weights, state, lengths=lengths)
        return float(buf["scalars"].copy_to_host()[0]), self.model.final_state(buf, T, B, lengths is not None)

    def loss_and_outputs(self, x, y, weights, lengths=None):
        """``(loss summed over the batch, outputs)`` of one forward from a zero state, the
        outputs on the host as :meth:`CudaSequenceModel.forward` gives them; nothing is updated."""
        buf, T, B = self._device_loss(x, y, weights, None, lengths=lengths)
        logits = buf["logits"].copy_to_host()
        outputs = logits if self.model.task == "classify" else logits.reshape(T, B, self.model.output_size)
        return float(buf["scalars"].copy_to_host()[0]), outputs

    # -- generation ------------------------------------------------------------------------------
    def generate(self, prime, length, kernel_args, uniforms, stop_index):
        """The whole generation on the device (one sampled index per step feeds the next step
        there); returns ``(indices, draws used)``. The same indices as the CPU's."""
        model = self.model
        V = model.output_size
        if V is None or model.task != "lm":
            return None
        draws = kernel_args[0] != dsampling.GREEDY
        d_uniforms = cuda.to_device(uniforms)
        probs = cuda.device_array(V, np.float64)
        filtered = cuda.device_array(V, np.float64)
        order = cuda.device_array(V, np.int64)
        out = cuda.device_array(length, np.int64)
        first = np.array(prime, np.int64)[:, None] if prime else np.array([[START_INPUT]], np.int64)
        P = first.shape[0]
        pbuf = model.upload_batch(first, True)
        model.forward_device(pbuf, P, 1, True, None, loop=self.loop)  # folds an embedding once
        step_buf = model.buffers(1, 1, True)  # may be pbuf itself when P == 1
        next_input = step_buf["x"]  # each sampled index is the next step's input, on the device
        dsampling.sample(pbuf["logits"], P - 1, kernel_args, d_uniforms, 0, probs, filtered, order, out, next_input)
        model.carry_state(pbuf, P, step_buf)
        for i in range(1, length):
            model.forward_device(step_buf, 1, 1, True, _KEEP_STATE, loop=self.loop, fold=False)
            dsampling.sample(step_buf["logits"], 0, kernel_args, d_uniforms, i, probs, filtered, order, out,
                             next_input)
            model.carry_state(step_buf, 1, step_buf)
        result = [int(v) for v in out.copy_to_host()]
        if dsampling.INVALID in result:
            raise ValueError("sample_categorical: probabilities must be non-negative and not NaN, with a "
                             "finite, positive sum")
        if stop_index is not None and stop_index in result:
            result = result[:result.index(stop_index) + 1]
        return result, len(result) if draws else 0  # one draw per generated index, as on the CPU

    # -- whole-model operations --------------------------------------------------------------------
    def host_model(self) -> SequenceModel:
        """A CPU :class:`SequenceModel` holding a copy of the current weights (its own arrays)."""
        source = self.model._check_model
        if self._host is None:
            self._host = SequenceModel(source.cell, source.input_size, source.hidden_size, source.output_size,
                                       layers=len(source.layers), dropout=source.dropout, dtype=source.dtype,
                                       index_input=source.index_input, embedding=source.embedding_size,
                                       bidirectional=source.bidirectional, task=source.task)
        for name, value in self.model.params_to_host().items():
            self._host.params[name][...] = value
        return self._host

    def to_host(self):
        """``(model, optimizer)`` on the CPU with the current values: new objects, not shared."""
        model = self.host_model()
        self._host = None  # handed over: the next host_model() builds its own
        optimizer = type(self.optimizer.cpu)(model.params, **self.optimizer.options)
        optimizer.load_state_dict(self.optimizer.state_dict())
        return model, optimizer

    def params_to_host(self) -> dict:
        """Copies of every parameter as NumPy arrays (:meth:`CudaSequenceModel.params_to_host`)."""
        return self.model.params_to_host()

    def snapshot_params(self, reuse=None):
        """A device copy of every parameter (for :meth:`restore_params`); copies nothing to the
        host. Written into ``reuse`` when that is an earlier snapshot of this model (no new
        device allocation: the non-finite guard takes one every step)."""
        flat = self.model.flat
        copy = reuse if _same_device_array(reuse, flat) else cuda.device_array(self.model.size, self.model.dtype)
        darrays.copy_flat(flat, copy)
        return copy

    def snapshot_optimizer(self, reuse=None):
        """A device copy of the optimizer's slots with its step count and options (nothing
        comes to the host), into ``reuse``'s buffers when that is an earlier one."""
        return self.optimizer.snapshot(reuse)

    def restore_optimizer(self, snapshot) -> None:
        """Put back what :meth:`snapshot_optimizer` returned."""
        self.optimizer.restore(snapshot)

    def restore_params(self, snapshot) -> None:
        """Put back what :meth:`snapshot_params` returned (or a dict of host arrays)."""
        if isinstance(snapshot, Mapping):
            self.model.load_params(snapshot)
        else:
            darrays.copy_flat(snapshot, self.model.flat)

    def params_finite(self) -> bool:
        """Whether every parameter is finite, checked on the device (8 bytes come back)."""
        out = cuda.device_array(1, np.float64)
        dlosses.reduce_sum(self.model.flat, out, 0, mode=dlosses.NONFINITE)
        return math.isfinite(float(out.copy_to_host()[0]))

    def state_arrays(self, state) -> list:
        """A state as a flat list of host ``(B, H)`` arrays (checkpoints)."""
        return self.model.state_arrays(state)

    def state_from_arrays(self, arrays):
        """Inverse of :meth:`state_arrays`: a :class:`DeviceState`."""
        return self.model.state_from_arrays(arrays)

    def state_to_host(self, state):
        """The state in the CPU model's form (an array, or a tuple such as ``(h, c)``)."""
        return state.to_host() if isinstance(state, DeviceState) else state

    def state_to_device(self, state):
        """A host state (the CPU model's form) as a :class:`DeviceState`."""
        return self.model.state_from_arrays(self.model._check_model.state_arrays(state))

    def snapshot_to_host(self, snapshot):
        """A :meth:`snapshot_params` result as one flat host array."""
        return snapshot.copy_to_host() if hasattr(snapshot, "copy_to_host") else np.asarray(snapshot)

    def snapshot_to_device(self, snapshot):
        """A host snapshot (one flat array) on the device."""
        if snapshot is None or hasattr(snapshot, "copy_to_host"):
            return snapshot
        return cuda.to_device(np.ascontiguousarray(snapshot, self.model.dtype))

    def kernels_to_compile(self, phase: str, sampler):
        """None: the CUDA kernels compile at the first launch, with no disk cache to look at."""
        if phase not in ("step", "validation", "samples"):
            raise ValueError(f"phase must be 'step', 'validation' or 'samples', got {phase!r}")
        return None
