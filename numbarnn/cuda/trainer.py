"""The trainer on the GPU: same public behaviour as :class:`numbarnn.trainer.Trainer`.

:func:`cuda_trainer_from` takes a CPU trainer (built by ``make_trainer`` with the same
registry lookups and seed, hence the same initial weights as ``device="cpu"``), copies its
parameters into one flat device buffer and from then on keeps everything on the device:
parameters, gradients, optimizer slots, recurrent state, activations. A training step
copies the batch in (one int64 buffer: inputs, targets and the index segments of the
inputs; plus the mask when it is not all ones) and 16 bytes out (the loss and the squared
gradient norm, checked for NaN before the update, as on the CPU).

``trainer.model.params_to_host()`` (or ``trainer.params_to_host()``) copies the weights
back as NumPy arrays; ``trainer.model.params`` is a mapping of such copies that writes
through (see :class:`DeviceParams`), so the CPU trainer's ``fit`` and checkpoint code work
unchanged. ``snapshot_params``, ``restore_params`` and ``params_finite`` do the same jobs
without copying weights to the host.

On the device: the built-in cells (and any plugin cell with a CUDA pair, see
:mod:`numbarnn.cuda.cells`), the losses ``softmax_cross_entropy`` and ``mse``, the
optimizers ``sgd``, ``momentum``, ``adagrad``, ``rmsprop`` and ``adam``, clipping by value
or norm, and the samplers ``categorical``, ``greedy``, ``temperature``, ``top_k`` and
``top_p``. Beam search and plugin samplers generate on the host from a CPU copy of the
model (the same results, one copy of the weights per call). Plugin losses and optimizers,
and stacked layers or dropout, are a clear :class:`~numbarnn.cuda.UnsupportedOnCuda` error.

Shapes as on the CPU: a trainer takes integer batches ``(B, T)`` (or ``(T,)``), a model
time-major inputs ``(T, B)``; S states of H units, V the vocabulary. The examples use
float64 so that they can compare with the CPU path to tight tolerances.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from numba import cuda

from .. import optimizers as _optimizers
from ..trainer import START_INPUT, NonFiniteLossError, SequenceModel, Trainer, make_model
from . import require
from ._support import DEVICE_OPTIMIZERS, check_layers, check_loss, check_optimizer
from . import arrays as darrays
from . import heads, loops, steps
from . import losses as dlosses
from . import optim as doptim
from . import sampling as dsampling
from .cells import resolve

__all__ = ["CudaSequenceModel", "CudaTrainer", "DeviceState", "DeviceParams", "cuda_trainer_from", "make_cuda_model",
           "make_cuda_trainer"]


# Marker for forward_device: the states buffer already holds the initial state (generation).
_KEEP_STATE = object()


class DeviceState:
    """A recurrent state kept on the device, ``(S, B, H)``. ``to_host()`` gives the CPU form
    (an array for one-state cells, a tuple such as ``(h, c)`` for the LSTM).

    ``array`` is the (S, B, H) device array, ``states`` is S.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.trainer import DeviceState
    >>> state = DeviceState(cuda.to_device(np.arange(8.0).reshape(2, 2, 2)), 2)  # an LSTM's h and c
    >>> state.shape
    (2, 2, 2)
    >>> h, c = state.to_host()
    >>> c.tolist()
    [[4.0, 5.0], [6.0, 7.0]]
    """

    def __init__(self, array, states: int):
        self.array = array
        self.states = states

    @property
    def shape(self):
        """``(S, B, H)``."""
        return tuple(self.array.shape)

    def to_host(self):
        """Host copies: h (B, H) for a one-state cell, else a tuple of S such arrays."""
        host = self.array.copy_to_host()
        return host[0] if self.states == 1 else tuple(host[s] for s in range(self.states))

    def __repr__(self):
        return f"<DeviceState S={self.array.shape[0]} B={self.array.shape[1]} H={self.array.shape[2]}>"


class _HostParam(np.ndarray):
    """A host copy of one device parameter whose item assignment writes through to the device."""

    def __array_finalize__(self, obj):
        self._owner = None
        if isinstance(obj, _HostParam) and obj._owner is not None and np.may_share_memory(self, obj):
            # A view of a write-through array could be written without reaching the device.
            self.flags.writeable = False

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        if self._owner is not None:
            self._owner[0].upload_param(self._owner[1], np.asarray(self).view(np.ndarray))


class DeviceParams(Mapping):
    """``CudaSequenceModel.params``: host copies that write through (see that property).

    Parameter name to a host copy (a NumPy array of the CPU model's shape); assignment,
    to the mapping or into one of its arrays, uploads to the device.

    >>> import numpy as np
    >>> from numbarnn.cuda.trainer import make_cuda_model
    >>> model = make_cuda_model("rnn", vocab_size=3, hidden_size=2, dtype="float64", seed=0)
    >>> params = model.params
    >>> sorted(params), params["W_x"].shape
    (['W_h', 'W_x', 'W_y', 'b_h', 'b_x', 'b_y'], (2, 3))
    >>> params["b_y"][...] = 1.0  # writes through
    >>> params["b_h"] = np.array([0.5, -0.5])
    >>> model.params_to_host()["b_y"].tolist(), model.params_to_host()["b_h"].tolist()
    ([1.0, 1.0, 1.0], [0.5, -0.5])
    """

    def __init__(self, model):
        self._model = model
        self._host = model.params_to_host()

    def __getitem__(self, name):
        value = self._host[name].view(_HostParam)
        value._owner = (self._model, name)
        return value

    def __setitem__(self, name, value):
        if name not in self._host:
            raise KeyError(f"no parameter {name!r}; parameters: {list(self._host)}")
        self._model.upload_param(name, value)
        self._host[name][...] = value

    def __iter__(self):
        return iter(self._host)

    def __len__(self):
        return len(self._host)


class CudaSequenceModel:
    """A :class:`~numbarnn.trainer.SequenceModel` whose parameters and work live on the GPU.

    Built from a CPU model (its weights are copied, the CPU model is kept only as the
    source of shapes and checks). ``forward``/``backward`` have the CPU model's host
    interface (NumPy in, NumPy out) for tests and interactive use; the trainer uses the
    device methods, which copy nothing.

    Inputs are time-major, indices (T, B) or features (T, B, X); outputs (T, B, V), or
    (T, B, H) without a head. The same results as the CPU model it was built from:

    >>> import numpy as np
    >>> import numbarnn
    >>> from numbarnn.cuda.trainer import CudaSequenceModel
    >>> cpu = numbarnn.make_model("lstm", vocab_size=3, hidden_size=2, dtype="float64", seed=0)
    >>> gpu = CudaSequenceModel(cpu)
    >>> x = np.array([[0, 1], [2, -1]])  # T = 2 steps of B = 2 indices; -1 is a zero input
    >>> (out_gpu, (h, c)), (out_cpu, _) = gpu.forward(x), cpu.forward(x)
    >>> out_gpu.shape, h.shape, np.allclose(out_gpu, out_cpu)
    ((2, 2, 3), (2, 2), True)
    >>> d_outputs = np.random.default_rng(0).normal(size=out_cpu.shape)
    >>> grads_gpu, grads_cpu = gpu.backward(d_outputs), cpu.backward(d_outputs)
    >>> all(np.allclose(grads_gpu[name], grads_cpu[name]) for name in grads_cpu)
    True
    """

    def __init__(self, cpu_model: SequenceModel):
        check_layers(len(getattr(cpu_model, "layers", [None])), float(getattr(cpu_model, "dropout", 0.0)))
        self.cell = cpu_model.cell
        self.pair = resolve(self.cell)  # a cell without CUDA kernels fails here, clearly
        self.dtype = cpu_model.dtype
        self.index_input = cpu_model.index_input
        self.output_size = cpu_model.output_size
        self.input_size = cpu_model.input_size
        self.hidden_size = cpu_model.hidden_size
        self._check_model = cpu_model  # input checks and zero states, shared with the CPU
        self.names = list(cpu_model.params)
        self.shapes = {k: v.shape for k, v in cpu_model.params.items()}
        self.offsets = {}
        offset = 0
        for name in self.names:
            size = int(np.prod(self.shapes[name]))
            self.offsets[name] = (offset, size)
            offset += size
        self.size = offset
        flat = np.concatenate([np.ascontiguousarray(cpu_model.params[k], self.dtype).reshape(-1)
                               for k in self.names])
        self.flat = cuda.to_device(flat)
        self.grad_flat = cuda.device_array(self.size, self.dtype)
        self.p = self._views(self.flat)
        self.g = self._views(self.grad_flat)
        self._buffers = {}
        self._W_hT = None  # W_h transposed, for the rowdot backward (small batches)
        self._last = None  # (buffers, T, B, is_index) of the last forward

    # -- parameters --------------------------------------------------------------------------
    def _views(self, flat) -> dict:
        out = {}
        for name in self.names:
            offset, size = self.offsets[name]
            out[name] = flat[offset:offset + size].reshape(self.shapes[name])
        return out

    def params_to_host(self) -> dict:
        """Copies of every parameter as NumPy arrays, keyed like the CPU model's ``params``."""
        flat = self.flat.copy_to_host()
        out = {}
        for name in self.names:
            offset, size = self.offsets[name]
            out[name] = flat[offset:offset + size].reshape(self.shapes[name]).copy()
        return out

    @property
    def params(self) -> "DeviceParams":
        """The parameters as a mapping of host arrays, copied from the device once per access.

        Writing through it reaches the device: ``model.params[k][...] = v`` (or any item
        assignment on the array it returns) and ``model.params[k] = v`` upload the new
        values. Views and copies taken from those arrays are plain host arrays (views
        read-only, so a write that could not reach the device fails loudly). Prefer
        :meth:`params_to_host` to read and :meth:`load_params` to write many at once.
        """
        return DeviceParams(self)

    def load_params(self, params) -> None:
        """Upload new values for every parameter (same names and shapes as ``params``)."""
        missing = [k for k in self.names if k not in params]
        if missing:
            raise ValueError(f"load_params: missing {missing}")
        flat = np.empty(self.size, self.dtype)
        for name in self.names:
            value = np.asarray(params[name])
            if value.shape != self.shapes[name]:
                raise ValueError(f"parameter {name!r} has shape {value.shape}, expected {self.shapes[name]}")
            offset, size = self.offsets[name]
            flat[offset:offset + size] = value.reshape(-1)
        self.flat.copy_to_device(flat)

    def upload_param(self, name: str, value) -> None:
        """Upload one parameter."""
        value = np.ascontiguousarray(value, self.dtype)
        if value.shape != self.shapes[name]:
            raise ValueError(f"parameter {name!r} has shape {value.shape}, expected {self.shapes[name]}")
        offset, size = self.offsets[name]
        self.flat[offset:offset + size].copy_to_device(value.reshape(-1))

    def grads_to_host(self) -> dict:
        """Copies of every gradient of the last backward as NumPy arrays, keyed like ``params``."""
        flat = self.grad_flat.copy_to_host()
        return {name: flat[o:o + s].reshape(self.shapes[name]).copy() for name, (o, s) in self.offsets.items()}

    def zero_state(self, batch_size: int):
        """The CPU model's zero state for ``batch_size`` sequences (host arrays)."""
        return self._check_model.zero_state(batch_size)

    # -- device buffers, one set per (T, B, input kind) --------------------------------------
    def buffers(self, T: int, B: int, is_index: bool) -> dict:
        """The device arrays of a batch of T steps and B sequences, integer or dense inputs,
        by name (``xz``, ``states``, ``cache``, ``logits``, ...); allocated once per shape."""
        key = (T, B, is_index)
        buf = self._buffers.get(key)
        if buf is not None:
            return buf
        cell, H, dt = self.cell, self.hidden_size, self.dtype
        GH, S, N = cell.gates * H, cell.states, T * B
        V = self.output_size
        buf = {
            "xz": cuda.device_array((T, B, GH), dt),
            "states": cuda.device_array((S, T + 1, B, H), dt),
            "cache": cuda.device_array((T, B, max(cell.cache_width, 1) * H), dt),
            "hz": cuda.device_array((B, GH), dt),
            "dstate": cuda.device_array((S, B, H), dt),
            "dstate_prev": cuda.device_array((S, B, H), dt),
            "dxz": cuda.device_array((T, B, GH), dt),
            "d_hidden": cuda.device_array((T, B, H), dt),
            "scalars": cuda.device_array(2, np.float64),  # 0: loss, 1: grad norm^2 (16 bytes back)
            "partials": cuda.device_array(dlosses.MAX_PARTIALS, np.float64),
            "mask_is_ones": False,
        }
        buf["dhz"] = buf["dxz"] if cell.shared_gate_grad else cuda.device_array((T, B, GH), dt)
        if is_index:
            V_in = self.input_size
            # inputs (N), targets (N), order (N), starts (V_in + 1): one upload per step
            buf["ints"] = cuda.device_array(3 * N + V_in + 1, np.int64)
            ints = buf["ints"]
            buf["x"] = ints[0:N].reshape((T, B))
            buf["y"] = ints[N:2 * N]
            buf["order"] = ints[2 * N:3 * N]
            buf["starts"] = ints[3 * N:3 * N + V_in + 1]
        else:
            buf["x"] = cuda.device_array((T, B, self.input_size), dt)
            buf["y"] = None
        if V is not None:
            buf["logits"] = cuda.device_array((N, V), dt)
            buf["probs"] = cuda.device_array((N, V), dt)
            buf["dlogits"] = cuda.device_array((N, V), dt)
            buf["row_loss"] = cuda.device_array(N, np.float64)
            buf["mask"] = cuda.device_array(N, dt)
        self._buffers[key] = buf
        return buf

    # -- forward and backward on the device -----------------------------------------------------
    def _set_initial_state(self, buf, state, B):
        states = buf["states"]
        S, H = self.cell.states, self.hidden_size
        if state is _KEEP_STATE:
            return
        if state is None:
            for s in range(S):
                darrays.fill(states[s, 0].reshape(B * H), 0)
        elif isinstance(state, DeviceState):
            if state.shape != (S, B, H):
                raise ValueError(f"initial state has shape {state.shape}, expected {(S, B, H)}")
            darrays.state_in(state.array, states, 0)
        else:
            arrays = self._check_model.layer._unpack_state(state, B, "initial state")
            host = np.ascontiguousarray(np.stack([np.asarray(a, self.dtype) for a in arrays]))
            darrays.state_in(cuda.to_device(host), states, 0)

    def forward_device(self, buf, T: int, B: int, is_index: bool, state=None, loop=None):
        """Forward over the batch already in ``buf["x"]``; logits land in ``buf["logits"]``."""
        p, cell, H = self.p, self.cell, self.hidden_size
        GH, N = cell.gates * H, T * B
        xz2d = buf["xz"].reshape((N, GH))
        if is_index:
            loops.project_indices(buf["x"].reshape(N), p["W_x"], p["b_x"], xz2d)
        else:
            loops.project_dense(buf["x"].reshape((N, self.input_size)), p["W_x"], p["b_x"], xz2d)
        self._set_initial_state(buf, state, B)
        kernels = steps.step_kernels(cell, self.dtype, B, H)
        loops.sequence_forward(kernels, buf["xz"], p["W_h"], p["b_h"], buf["states"], buf["cache"], buf["hz"],
                               loop=loop)
        if self.output_size is not None:
            heads.linear_forward(self.hidden2d(buf, T, B), p["W_y"], p["b_y"], buf["logits"])
        self._last = (buf, T, B, is_index)

    def hidden2d(self, buf, T, B):
        """The hidden states h_1..h_T in ``buf`` as a (T*B, H) device view."""
        return buf["states"][0, 1:].reshape((T * B, self.hidden_size))

    def final_state(self, buf, T: int, B: int) -> DeviceState:
        """A device copy of the state after step T in ``buf``, (S, B, H)."""
        out = cuda.device_array((self.cell.states, B, self.hidden_size), self.dtype)
        darrays.state_out(buf["states"], T, out)
        return DeviceState(out, self.cell.states)

    def backward_device(self, d_hidden_ready: bool = False, d_final_state=None, initial_gradient=False,
                        need_dx=False, loop=None):
        """BPTT of the last forward into ``self.g`` (the flat gradient buffer).

        Upstream: ``buf["dlogits"]`` through the head, or, with ``d_hidden_ready`` (no head),
        ``buf["d_hidden"]`` as already filled by the caller.
        """
        if self._last is None:
            raise RuntimeError("backward() needs a forward() first")
        buf, T, B, is_index = self._last
        p, g, cell, H = self.p, self.g, self.cell, self.hidden_size
        GH, N = cell.gates * H, T * B
        if self.output_size is not None and not d_hidden_ready:
            heads.linear_backward(buf["dlogits"], self.hidden2d(buf, T, B), p["W_y"], g["W_y"], g["b_y"],
                                  buf["d_hidden"].reshape((N, H)))
        dstate = buf["dstate"]
        if d_final_state is None:
            darrays.fill(dstate.reshape(dstate.size), 0)
        else:
            dstate.copy_to_device(np.ascontiguousarray(d_final_state, self.dtype))
        kernels = steps.step_kernels(cell, self.dtype, B, H)
        if kernels.backward_wants_transpose and self._W_hT is None:
            self._W_hT = cuda.device_array((H, GH), self.dtype)  # refilled from W_h by every backward
        loops.sequence_backward(kernels, p["W_h"], buf["states"], buf["cache"], buf["d_hidden"], dstate,
                                buf["dstate_prev"], buf["dxz"], buf["dhz"], initial_gradient=initial_gradient,
                                loop=loop, W_hT=self._W_hT)
        loops.recurrent_weight_gradients(buf["dhz"].reshape((N, GH)), buf["states"][0, :T].reshape((N, H)),
                                         g["W_h"], g["b_h"])
        dxz2d = buf["dxz"].reshape((N, GH))
        if is_index:
            loops.input_weight_gradients_indices(dxz2d, buf["order"], buf["starts"], g["W_x"], g["b_x"])
            return None
        dx = cuda.device_array((T, B, self.input_size), self.dtype) if need_dx else None
        loops.input_weight_gradients_dense(dxz2d, buf["x"].reshape((N, self.input_size)), p["W_x"], g["W_x"],
                                           g["b_x"], None if dx is None else dx.reshape((N, self.input_size)))
        return dx

    # -- the CPU model's host interface ------------------------------------------------------
    def upload_inputs(self, x, is_index: bool):
        """Copy checked time-major inputs into this shape's buffers; returns the buffers."""
        T, B = x.shape[0], x.shape[1]
        buf = self.buffers(T, B, is_index)
        if is_index:
            N = T * B
            ints = np.zeros(3 * N + self.input_size + 1, np.int64)
            flat = x.reshape(N)
            ints[0:N] = flat
            order, starts = loops.index_segments(flat, self.input_size)
            ints[2 * N:3 * N] = order
            ints[3 * N:] = starts
            buf["ints"].copy_to_device(ints)
        else:
            buf["x"].copy_to_device(np.ascontiguousarray(x, self.dtype))
        return buf

    def forward(self, inputs, state=None, loop=None):
        """Host in, host out, like :meth:`SequenceModel.forward`: ``(outputs (T, B, V or H), final)``."""
        x, is_index = self._check_model.layer._checked_input(inputs)
        T, B = x.shape[0], x.shape[1]
        if T < 1 or B < 1:
            raise ValueError(f"need at least one step and one sequence, got input shape {x.shape}")
        buf = self.upload_inputs(x, is_index)
        self.forward_device(buf, T, B, is_index, state, loop=loop)
        if self.output_size is None:
            outputs = buf["states"][0, 1:].copy_to_host()
        else:
            outputs = buf["logits"].copy_to_host().reshape(T, B, self.output_size)
        return outputs, self.final_state(buf, T, B).to_host()

    def backward(self, d_outputs, d_final_state=None, loop=None) -> dict:
        """Host gradients named ``"d" + name`` for ``params[name]``, as :meth:`SequenceModel.backward`
        returns them."""
        if self._last is None:
            raise RuntimeError("backward() needs a forward() first")
        buf, T, B, _ = self._last
        d_outputs = np.ascontiguousarray(d_outputs, self.dtype)
        if self.output_size is None:
            buf["d_hidden"].copy_to_device(d_outputs.reshape(T, B, self.hidden_size))
        else:
            buf["dlogits"].copy_to_device(d_outputs.reshape(T * B, self.output_size))
        d_final = None
        if d_final_state is not None:
            arrays = self._check_model.layer._unpack_state(d_final_state, B, "d_final_state")
            d_final = np.stack([np.asarray(a, self.dtype) for a in arrays])
        self.backward_device(d_hidden_ready=self.output_size is None, d_final_state=d_final, loop=loop)
        return {"d" + key: value for key, value in self.grads_to_host().items()}


# ---- optimizers -------------------------------------------------------------------------------


class CudaOptimizer:
    """Mirror of a CPU :class:`~numbarnn.optimizers.Optimizer` with its slots on the device.

    ``options``, ``lr``, ``step_count`` and plain-data ``state_dict()`` /
    ``load_state_dict()`` behave as the CPU optimizer's (the state dict has the same keys,
    so checkpoints move between devices).

    Each slot is one flat device buffer (P,) in the layout of the model's parameters.

    >>> import numpy as np
    >>> import numbarnn
    >>> from numbarnn.cuda.trainer import cuda_trainer_from
    >>> cpu = numbarnn.make_trainer("rnn", "softmax_cross_entropy", "adam", "greedy", vocab_size=3, hidden_size=2,
    ...                             dtype="float64", seed=0)
    >>> gpu = cuda_trainer_from(cpu)
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
        self.cpu = cpu_optimizer  # validated options and the state-dict format
        self.name = cpu_optimizer.name
        self.model = model
        self.slots = DEVICE_OPTIMIZERS[type(cpu_optimizer)]
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
        p, g, o, s = self.model.flat, self.model.grad_flat, self.cpu.options, self.state
        self.step_count += 1
        kind = type(self.cpu)
        if kind is _optimizers.SGD:
            doptim.sgd_update(p, g, o["lr"])
        elif kind is _optimizers.Momentum:
            doptim.momentum_update(p, g, s["velocity"], o["lr"], o["momentum"], o["nesterov"])
        elif kind is _optimizers.Adagrad:
            doptim.adagrad_update(p, g, s["memory"], o["lr"], o["eps"])
        elif kind is _optimizers.RMSprop:
            doptim.rmsprop_update(p, g, s["square_avg"], o["lr"], o["alpha"], o["eps"])
        else:
            doptim.adam_update(p, g, s["exp_avg"], s["exp_avg_sq"], o["lr"], o["beta1"], o["beta2"], o["eps"],
                               self.step_count)

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


# ---- the trainer --------------------------------------------------------------------------------


class CudaTrainer(Trainer):
    """:class:`~numbarnn.trainer.Trainer` on the GPU; see the module docstring.

    ``train_step``, ``evaluate``, ``generate``, ``state``, ``step``, ``last_grad_norm`` and
    ``fit`` behave as on the CPU. ``state`` is a :class:`DeviceState` (pass it back as
    ``state=`` to continue a stream; ``state.to_host()`` gives the CPU form); host arrays
    are accepted too.

    Batches are integer arrays (B, T) or (T,), as on the CPU. The same losses and
    generated indices as the CPU trainer with the same seed:

    >>> import math
    >>> import numpy as np
    >>> import numbarnn
    >>> options = dict(vocab_size=3, hidden_size=2, lr=0.5, dtype="float64", seed=0)
    >>> cpu = numbarnn.make_trainer("rnn", "softmax_cross_entropy", "sgd", "greedy", **options)
    >>> gpu = numbarnn.make_trainer("rnn", "softmax_cross_entropy", "sgd", "greedy", device="cuda", **options)
    >>> type(gpu).__name__, gpu.device
    ('CudaTrainer', 'cuda')
    >>> x, y = np.array([[0, 1], [2, 0]]), np.array([[1, 2], [0, 1]])
    >>> math.isclose(gpu.train_step(x, y), cpu.train_step(x, y), rel_tol=1e-9)
    True
    >>> gpu.state
    <DeviceState S=1 B=2 H=2>
    >>> gpu.generate_indices([0], 2, gpu.sampler) == cpu.generate_indices([0], 2, cpu.sampler)
    True
    """

    device = "cuda"

    def __init__(self, model: CudaSequenceModel, loss, optimizer: "CudaOptimizer", sampler, *, clip, clip_mode,
                 seed, config=None, vocab=None, loop=None):
        check_loss(loss)
        if clip_mode not in _optimizers.CLIP_MODES:
            raise ValueError(f"clip mode must be one of {_optimizers.CLIP_MODES}, got {clip_mode!r}")
        if clip is not None:
            clip = _optimizers.check_real("gradient", "clipping", "clip", clip, low=0.0, low_open=True)
        super().__init__(model, loss, optimizer, sampler, clip=clip, clip_mode=clip_mode, seed=seed,
                         config=config, vocab=vocab)
        self.loop = loop

    def params_to_host(self) -> dict:
        """Copies of every parameter as NumPy arrays (:meth:`CudaSequenceModel.params_to_host`)."""
        return self.model.params_to_host()

    # -- cheap whole-model operations for training loops ---------------------------------------
    def snapshot_params(self):
        """A device copy of every parameter (for :meth:`restore_params`); copies nothing to the host."""
        copy = cuda.device_array(self.model.size, self.model.dtype)
        darrays.copy_flat(self.model.flat, copy)
        return copy

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

    # -- one step --------------------------------------------------------------------------------
    def _device_loss(self, inputs, targets, mask, state):
        """Checks and uploads the batch, runs forward and the loss kernel (gradient included)."""
        model = self.model
        x, y, weights = self._prepare(inputs, targets, mask)  # the CPU trainer's checks
        T, B = x.shape
        N = T * B
        dense_targets = self.loss.targets_kind != "indices"
        buf = model.buffers(T, B, True)
        ints = np.empty(3 * N + model.input_size + 1, np.int64)
        ints[0:N] = x.reshape(N)
        ints[N:2 * N] = 0 if dense_targets else y
        order, starts = loops.index_segments(x.reshape(N), model.input_size)
        ints[2 * N:3 * N] = order
        ints[3 * N:] = starts
        buf["ints"].copy_to_device(ints)
        if bool((weights == 1).all()):
            if not buf["mask_is_ones"]:
                darrays.fill(buf["mask"], 1)
                buf["mask_is_ones"] = True
        else:
            buf["mask"].copy_to_device(weights)
            buf["mask_is_ones"] = False
        if dense_targets:
            if "y_dense" not in buf:
                buf["y_dense"] = cuda.device_array((N, model.output_size), model.dtype)
            buf["y_dense"].copy_to_device(y)
        model.forward_device(buf, T, B, True, state, loop=self.loop)
        scale = model.dtype.type(1.0 / B) if B > 1 else None
        if dense_targets:
            dlosses.squared_error(buf["logits"], buf["y_dense"], buf["mask"], buf["dlogits"], buf["row_loss"],
                                  buf["scalars"], 0, scale=scale, partials=buf["partials"])
        else:
            dlosses.softmax_cross_entropy(buf["logits"], buf["y"], buf["mask"], buf["probs"], buf["dlogits"],
                                          buf["row_loss"], buf["scalars"], 0, scale=scale,
                                          partials=buf["partials"])
        return buf, T, B, weights

    def train_step(self, inputs, targets, mask=None, state=None) -> float:
        """As :meth:`Trainer.train_step`: the loss summed over time, averaged over the batch;
        :class:`~numbarnn.trainer.NonFiniteLossError` (weights untouched) when the loss or
        the gradient norm is not finite."""
        model = self.model
        buf, T, B, _ = self._device_loss(inputs, targets, mask, state)
        model.backward_device(loop=self.loop)
        g, scalars = model.grad_flat, buf["scalars"]
        doptim.sum_of_squares(g, scalars, 1, partials=buf["partials"])
        host = scalars.copy_to_host()  # the one copy back: loss and squared gradient norm
        loss, norm = float(host[0]), math.sqrt(float(host[1]))
        self.last_grad_norm = norm
        if not (math.isfinite(loss) and math.isfinite(norm)):
            raise NonFiniteLossError(f"the loss is {loss} and the gradient norm {norm} at step {self.step + 1}")
        if self.clip is not None:
            if self.clip_mode == "value":
                doptim.clip_by_value(g, self.clip)
            else:
                doptim.clip_by_norm(g, scalars[1:2], self.clip)
        self.optimizer.step()
        self.state = model.final_state(buf, T, B)
        self.step += 1
        return loss / B

    def evaluate(self, inputs, targets, mask=None, state=None):
        """``(summed loss, token count, final state)`` without updating anything."""
        buf, T, B, weights = self._device_loss(inputs, targets, mask, state)
        loss = float(buf["scalars"].copy_to_host()[0])
        return loss, float(weights.sum()), self.model.final_state(buf, T, B)

    # -- generation ------------------------------------------------------------------------------
    def _host_trainer(self) -> Trainer:
        """The CPU trainer's code on a CPU copy of the weights (beam search, plugin samplers)."""
        cpu = self.model._check_model
        for name, value in self.model.params_to_host().items():
            np.copyto(cpu.params[name], value)
        host = Trainer(cpu, self.loss, self.optimizer.cpu, self.sampler, clip=self.clip, clip_mode=self.clip_mode,
                       seed=None, config=self.config, vocab=self.vocab)
        host.rng = self.rng
        return host

    def generate_indices(self, prime: list, length: int, chooser, seed=None, stop_index=None) -> list:
        """As the CPU trainer's: the same indices for the same weights, sampler and seed."""
        if not isinstance(length, (int, np.integer)) or isinstance(length, bool) or length < 1:
            raise ValueError(f"length must be a positive integer, got {length!r}")
        prime = list(prime)
        if prime:
            self._time_major_indices(prime, "inputs", allow_padding=False)
        params = dsampling.sampler_mode(chooser)
        if params is None or getattr(chooser, "is_beam", False):
            return Trainer.generate_indices(self._host_trainer(), prime, length, chooser, seed, stop_index)
        rng = self.rng if seed is None else np.random.default_rng(seed)
        return self._generate_on_device(params, rng, prime, int(length), stop_index)

    def _generate_on_device(self, sampler_params, rng, prime, length, stop_index):
        model = self.model
        V = model.output_size
        draws = sampler_params[0] != dsampling.GREEDY
        rng_state = rng.bit_generator.state
        uniforms = rng.random(length) if draws else np.zeros(1)
        d_uniforms = cuda.to_device(uniforms)
        probs = cuda.device_array(V, np.float64)
        filtered = cuda.device_array(V, np.float64)
        order = cuda.device_array(V, np.int64)
        out = cuda.device_array(length, np.int64)
        first = np.array(prime, np.int64)[:, None] if prime else np.array([[START_INPUT]], np.int64)
        P = first.shape[0]
        pbuf = model.upload_inputs(first, True)
        model.forward_device(pbuf, P, 1, True, None, loop=self.loop)
        step_buf = model.buffers(1, 1, True)  # may be pbuf itself when P == 1
        next_input = step_buf["x"]  # each sampled index is the next step's input, on the device
        dsampling.sample(pbuf["logits"], P - 1, sampler_params, d_uniforms, 0, probs, filtered, order, out,
                         next_input)
        darrays.state_copy(pbuf["states"], P, step_buf["states"], 0)
        for i in range(1, length):
            model.forward_device(step_buf, 1, 1, True, _KEEP_STATE, loop=self.loop)
            dsampling.sample(step_buf["logits"], 0, sampler_params, d_uniforms, i, probs, filtered, order, out,
                             next_input)
            darrays.state_copy(step_buf["states"], 1, step_buf["states"], 0)
        result = [int(v) for v in out.copy_to_host()]
        if dsampling.INVALID in result:
            raise ValueError("sample_categorical: probabilities must be non-negative and not NaN, with a "
                             "finite, positive sum")
        if stop_index is not None and stop_index in result:
            result = result[:result.index(stop_index) + 1]
        if draws and len(result) < length:
            # Leave the Generator where the CPU trainer leaves it: one draw per generated index.
            rng.bit_generator.state = rng_state
            rng.random(len(result))
        return result


# ---- construction --------------------------------------------------------------------------------

def _check_supported(cell, loss, optimizer, layers: int, dropout: float) -> None:
    """Every component at once, before anything is built (the checks live in ``_support``)."""
    resolve(cell)  # a cell without CUDA kernels: a clear error
    check_loss(loss)
    check_optimizer(optimizer)
    check_layers(layers, dropout)


def cuda_trainer_from(trainer: Trainer, loop=None) -> CudaTrainer:
    """A :class:`CudaTrainer` continuing ``trainer`` (a CPU trainer) on the GPU.

    Copies its weights and optimizer state to the device and takes over its components,
    configuration, vocabulary, random generator, step count, history and carried state.
    This is what ``make_trainer(..., device="cuda")`` does with the trainer it builds, so
    the initial weights are the CPU path's for the same seed.

    >>> import numpy as np
    >>> import numbarnn
    >>> from numbarnn.cuda.trainer import cuda_trainer_from
    >>> cpu = numbarnn.make_trainer("lstm", "softmax_cross_entropy", "adam", "greedy", vocab_size=3, hidden_size=2,
    ...                             dtype="float64", seed=0)
    >>> gpu = cuda_trainer_from(cpu)
    >>> gpu.device, all(np.array_equal(gpu.params_to_host()[k], v) for k, v in cpu.model.params.items())
    ('cuda', True)
    >>> gpu.rng is cpu.rng, gpu.optimizer.name
    (True, 'adam')
    """
    require()
    cpu_model = trainer.model
    _check_supported(cpu_model.cell, trainer.loss, trainer.optimizer, len(getattr(cpu_model, "layers", [0])),
                     float(getattr(cpu_model, "dropout", 0.0)))
    model = CudaSequenceModel(cpu_model)
    optimizer = CudaOptimizer(trainer.optimizer, model)
    out = CudaTrainer(model, trainer.loss, optimizer, trainer.sampler, clip=trainer.clip, clip_mode=trainer.clip_mode,
                      seed=trainer.seed, config=dict(getattr(trainer, "config", {}), device="cuda"),
                      vocab=getattr(trainer, "vocab", None), loop=loop)
    out.rng = trainer.rng
    out.step = trainer.step
    out.history = list(getattr(trainer, "history", []))
    out.state = trainer.state
    out.fit_state = dict(trainer.fit_state)  # early stopping continues exactly (a resumed run)
    best = out.fit_state["best_params"]
    if best is not None and not hasattr(best, "copy_to_host"):
        out.fit_state["best_params"] = cuda.to_device(np.ascontiguousarray(best, model.dtype))
    for attr in ("cell_spec", "loss_spec", "optimizer_spec", "sampler_spec"):
        if hasattr(trainer, attr):
            setattr(out, attr, getattr(trainer, attr))
    return out


def make_cuda_model(cell="lstm", *, input_size=None, vocab_size=None, hidden_size=128, output_size=None,
                    dtype="float32", seed=None) -> CudaSequenceModel:
    """:func:`numbarnn.make_model` on the GPU (same arguments, same initial weights).

    Returns a :class:`CudaSequenceModel`; see there for the shapes.

    >>> import numpy as np
    >>> import numbarnn
    >>> from numbarnn.cuda.trainer import make_cuda_model
    >>> gpu = make_cuda_model("rnn", vocab_size=3, hidden_size=2, dtype="float64", seed=0)
    >>> cpu = numbarnn.make_model("rnn", vocab_size=3, hidden_size=2, dtype="float64", seed=0)
    >>> all(np.array_equal(gpu.params_to_host()[k], v) for k, v in cpu.params.items())
    True
    >>> x = np.array([[0, 1], [2, -1]])  # (T, B) indices
    >>> np.allclose(gpu.forward(x)[0], cpu.forward(x)[0])
    True
    """
    require()
    return CudaSequenceModel(make_model(cell, input_size=input_size, vocab_size=vocab_size,
                                        hidden_size=hidden_size, output_size=output_size, dtype=dtype, seed=seed))


def make_cuda_trainer(cell_spec, loss_spec, optimizer_spec, sampler_spec, vocab_size=None, hidden_size=128, lr=None,
                      clip=5.0, clip_mode="value", dtype="float32", seed=None, optimizer_options=None,
                      sampler_options=None, loop=None, **make_trainer_options) -> CudaTrainer:
    """The trainer :func:`numbarnn.make_trainer` builds, on the GPU.

    Takes specs or names (and any further ``make_trainer`` keyword, such as ``vocab`` or
    ``mode``); builds the CPU trainer (so the same checks, options and initial weights)
    and moves it with :func:`cuda_trainer_from`. Raises
    :class:`~numbarnn.cuda.CudaUnavailableError` when the GPU cannot be used and
    :class:`~numbarnn.cuda.UnsupportedOnCuda` for a component without CUDA kernels.

    >>> import math
    >>> import numpy as np
    >>> import numbarnn
    >>> from numbarnn.cuda.trainer import make_cuda_trainer
    >>> options = dict(vocab_size=3, hidden_size=2, lr=0.1, clip=1.0, clip_mode="norm", dtype="float64", seed=0)
    >>> gpu = make_cuda_trainer("lstm", "softmax_cross_entropy", "momentum", "greedy", **options)
    >>> cpu = numbarnn.make_trainer("lstm", "softmax_cross_entropy", "momentum", "greedy", **options)
    >>> x, y = np.array([[0, 1], [2, 0]]), np.array([[1, 2], [0, 1]])  # (B, T)
    >>> math.isclose(gpu.train_step(x, y), cpu.train_step(x, y), rel_tol=1e-9)
    True
    >>> math.isclose(gpu.last_grad_norm, cpu.last_grad_norm, rel_tol=1e-9)
    True
    """
    require()
    from ..trainer import make_trainer

    cpu = make_trainer(cell_spec, loss_spec, optimizer_spec, sampler_spec, vocab_size=vocab_size,
                       hidden_size=hidden_size, lr=lr, clip=clip, clip_mode=clip_mode, dtype=dtype, seed=seed,
                       optimizer_options=optimizer_options, sampler_options=sampler_options, **make_trainer_options)
    return cuda_trainer_from(cpu, loop=loop)
