"""The model on the GPU: :class:`CudaSequenceModel` keeps a
:class:`~numbarnn.sequence_model.SequenceModel`'s weights in one flat device buffer and runs
forward and backward through time there; :class:`DeviceState` is a recurrent state on the
device and :class:`DeviceParams` the host view of the weights that writes through.

Shapes as on the CPU: time-major inputs ``(T, B)`` indices or ``(T, B, X)`` features, S
states of H units, V outputs. The examples use float64 so that they can compare with the
CPU model to tight tolerances.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numba import cuda

from ._support import check_layers
from . import arrays as darrays
from . import heads, loops, steps
from . import losses as dlosses
from .cells import resolve

__all__ = ["CudaSequenceModel", "DeviceParams", "DeviceState"]


# Marker for forward_device: the states buffer already holds the initial state (generation).
_KEEP_STATE = object()


class DeviceState:
    """A recurrent state kept on the device, ``(S, B, H)``. ``to_host()`` gives the CPU form
    (an array for one-state cells, a tuple such as ``(h, c)`` for the LSTM).

    ``array`` is the (S, B, H) device array, ``states`` is S.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.model import DeviceState
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
    >>> from numbarnn.cuda.model import make_cuda_model
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
    """A :class:`~numbarnn.sequence_model.SequenceModel` whose parameters and work live on the GPU.

    Built from a CPU model (its weights are copied, the CPU model is kept only as the
    source of shapes and checks). ``forward``/``backward`` have the CPU model's host
    interface (NumPy in, NumPy out) for tests and interactive use; the trainer uses the
    device methods, which copy nothing.

    Inputs are time-major, indices (T, B) or features (T, B, X); outputs (T, B, V), or
    (T, B, H) without a head. The same results as the CPU model it was built from:

    >>> import numpy as np
    >>> import numbarnn
    >>> from numbarnn.cuda.model import CudaSequenceModel
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

    def __init__(self, cpu_model):
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

    def state_arrays(self, state) -> list:
        """A state (a :class:`DeviceState` or the CPU form) as a flat list of host ``(B, H)``
        arrays, as :meth:`numbarnn.sequence_model.SequenceModel.state_arrays` (checkpoints)."""
        if isinstance(state, DeviceState):
            state = state.to_host()
        return self._check_model.state_arrays(state)

    def state_from_arrays(self, arrays: list) -> "DeviceState":
        """Inverse of :meth:`state_arrays`: the state on the device."""
        host = np.ascontiguousarray(np.stack([np.asarray(a, self.dtype) for a in arrays]))
        return DeviceState(cuda.to_device(host), self.cell.states)

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
