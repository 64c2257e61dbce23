"""The model on the GPU: :class:`CudaSequenceModel` keeps a
:class:`~numbarnn.sequence_model.SequenceModel`'s weights in one flat device buffer and runs
forward and backward through time there; :class:`DeviceState` is a recurrent state on the
device and :class:`DeviceParams` the host view of the weights that writes through.

Shapes as on the CPU: time-major inputs ``(T, B)`` indices or ``(T, B, X)`` features, L
layers of S states of H units, V outputs. The examples use float64 so that they can compare with the
CPU model to tight tolerances.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numba import cuda

from . import arrays as darrays
from . import heads, loops, steps
from . import losses as dlosses
from ..sequence_model import layer_param_name
from .cells import resolve

__all__ = ["CudaSequenceModel", "DeviceParams", "DeviceState"]


# Marker for forward_device: the states buffer already holds the initial state (generation).
_KEEP_STATE = object()


class DeviceState:
    """A recurrent state kept on the device, ``(L*S, B, H)``: the S state arrays of layer 0,
    then those of layer 1, ... (the order of
    :meth:`~numbarnn.sequence_model.SequenceModel.state_arrays`). ``to_host()`` gives the
    CPU form: for one layer an array for one-state cells, a tuple such as ``(h, c)`` for the
    LSTM; for L stacked layers a list of L such layer states.

    ``array`` is the (L*S, B, H) device array, ``states`` is S and ``layers`` L.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.model import DeviceState
    >>> state = DeviceState(cuda.to_device(np.arange(8.0).reshape(2, 2, 2)), 2)  # an LSTM's h and c
    >>> state.shape, state.layers
    ((2, 2, 2), 1)
    >>> h, c = state.to_host()
    >>> c.tolist()
    [[4.0, 5.0], [6.0, 7.0]]
    >>> stacked = DeviceState(cuda.to_device(np.arange(16.0).reshape(4, 2, 2)), 2)  # two LSTM layers
    >>> stacked
    <DeviceState L=2 S=2 B=2 H=2>
    >>> (h0, c0), (h1, c1) = stacked.to_host()
    >>> h1.tolist()
    [[8.0, 9.0], [10.0, 11.0]]
    """

    def __init__(self, array, states: int):
        if array.shape[0] % states:
            raise ValueError(f"a state array of {array.shape[0]} rows is not whole layers of {states} states")
        self.array = array
        self.states = states
        self.layers = array.shape[0] // states

    @property
    def shape(self):
        """``(L*S, B, H)``."""
        return tuple(self.array.shape)

    def to_host(self):
        """Host copies in the CPU model's form (see the class)."""
        host = self.array.copy_to_host()
        S = self.states
        per_layer = [host[l * S] if S == 1 else tuple(host[l * S + s] for s in range(S)) for l in range(self.layers)]
        return per_layer[0] if self.layers == 1 else per_layer

    def __repr__(self):
        L = f"L={self.layers} " if self.layers > 1 else ""
        return f"<DeviceState {L}S={self.states} B={self.array.shape[1]} H={self.array.shape[2]}>"


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
    >>> import numbarnn
    >>> model = numbarnn.make_model("rnn", vocab_size=3, hidden_size=2, dtype="float64", seed=0, device="cuda")
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
    source of shapes and checks), any number of stacked layers: layer 0 reads the inputs,
    each layer above the hidden states of the one below (through dropout, when training
    with a generator: the CPU model's masks, drawn on the host and applied on the device),
    the head the top layer's. ``forward``/``backward`` have the CPU model's host
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
        self.cell = cpu_model.cell
        self.pair = resolve(self.cell)  # a cell without CUDA kernels fails here, clearly
        self.dtype = cpu_model.dtype
        self.index_input = cpu_model.index_input
        self.output_size = cpu_model.output_size
        self.input_size = cpu_model.input_size
        self.hidden_size = cpu_model.hidden_size
        self.num_layers = len(cpu_model.layers)
        self.dropout = cpu_model.dropout
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
        self._last = None  # (buffers, T, B, is_index, dropped) of the last forward

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
        expected = self.num_layers * self.cell.states
        if len(arrays) != expected:
            raise ValueError(f"a state of this model is {expected} arrays ({self.num_layers} layers of "
                             f"{self.cell.states}), got {len(arrays)}")
        host = np.ascontiguousarray(np.stack([np.asarray(a, self.dtype) for a in arrays]))
        return DeviceState(cuda.to_device(host), self.cell.states)

    def _host_state_stack(self, state, B: int, what: str) -> np.ndarray:
        """A state in the CPU model's form (checked as the CPU checks it) as one (L*S, B, H) array."""
        arrays = []
        for layer, layer_state in zip(self._check_model.layers, self._check_model._per_layer(state)):
            arrays.extend(layer._unpack_state(layer_state, B, what))
        return np.ascontiguousarray(np.stack([np.asarray(a, self.dtype) for a in arrays]))

    # -- device buffers, one set per (T, B, input kind) --------------------------------------
    def buffers(self, T: int, B: int, is_index: bool) -> dict:
        """The device arrays of a batch of T steps and B sequences, integer or dense inputs,
        by name, allocated once per shape: the inputs (``x``, and ``ints`` with the targets
        ``y`` and the index segments), the head's (``logits``, ``probs``, ``dlogits``,
        ``mask``, ...), and ``layers``, one dict per recurrent layer (``xz``, ``states``,
        ``cache``, ``d_hidden``, ...). Dropout's masks come with the first forward that
        drops (:meth:`forward_device`)."""
        key = (T, B, is_index)
        buf = self._buffers.get(key)
        if buf is not None:
            return buf
        dt, N, V = self.dtype, T * B, self.output_size
        buf = {
            "layers": [self._layer_buffers(T, B) for _ in range(self.num_layers)],
            "scalars": cuda.device_array(2, np.float64),  # 0: loss, 1: grad norm^2 (16 bytes back)
            "partials": cuda.device_array(dlosses.MAX_PARTIALS, np.float64),
            "mask_is_ones": False,
        }
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

    def _layer_buffers(self, T: int, B: int) -> dict:
        """One recurrent layer's device arrays for T steps of B sequences."""
        cell, H, dt = self.cell, self.hidden_size, self.dtype
        GH, S = cell.gates * H, cell.states
        layer = {
            "xz": cuda.device_array((T, B, GH), dt),
            "states": cuda.device_array((S, T + 1, B, H), dt),
            "cache": cuda.device_array((T, B, max(cell.cache_width, 1) * H), dt),
            "hz": cuda.device_array((B, GH), dt),
            "dstate": cuda.device_array((S, B, H), dt),
            "dstate_prev": cuda.device_array((S, B, H), dt),
            "dxz": cuda.device_array((T, B, GH), dt),
            "d_hidden": cuda.device_array((T, B, H), dt),
        }
        layer["dhz"] = layer["dxz"] if cell.shared_gate_grad else cuda.device_array((T, B, GH), dt)
        return layer

    # -- forward and backward on the device -----------------------------------------------------
    def _set_initial_state(self, buf, state, B):
        S, H, L = self.cell.states, self.hidden_size, self.num_layers
        layers = buf["layers"]
        if state is _KEEP_STATE:
            return
        if state is None:
            for layer in layers:
                for s in range(S):
                    darrays.fill(layer["states"][s, 0].reshape(B * H), 0)
            return
        if isinstance(state, DeviceState):
            if state.shape != (L * S, B, H):
                raise ValueError(f"initial state has shape {state.shape}, expected {(L * S, B, H)}")
            array = state.array
        else:
            array = cuda.to_device(self._host_state_stack(state, B, "initial state"))
        for l, layer in enumerate(layers):
            darrays.state_in(array[l * S:(l + 1) * S], layer["states"], 0)

    def _draw_dropout(self, buf, T: int, B: int, rng) -> None:
        """The CPU model's dropout masks, drawn from ``rng`` in the same order (layer by layer,
        each ``(T, B, H)``), uploaded in one copy."""
        H, L, dt = self.hidden_size, self.num_layers, self.dtype
        if "drop_masks" not in buf:
            buf["drop_masks"] = cuda.device_array((L - 1, T, B, H), dt)
            buf["dropped"] = cuda.device_array((L - 1, T, B, H), dt)  # each layer's input above the first
        keep = 1.0 - self.dropout
        masks = np.empty((L - 1, T, B, H), dt)
        for l in range(L - 1):  # SequenceModel.forward's expression, so the same numbers
            masks[l] = (rng.random((T, B, H)) < keep).astype(dt) / dt.type(keep)
        buf["drop_masks"].copy_to_device(masks)

    def _layer_input2d(self, buf, l: int, N: int, dropped: bool):
        """The (N, H) dense input of layer l >= 1: the hidden states below, after dropout."""
        if dropped:
            return buf["dropped"][l - 1].reshape((N, self.hidden_size))
        return buf["layers"][l - 1]["states"][0, 1:].reshape((N, self.hidden_size))

    def forward_device(self, buf, T: int, B: int, is_index: bool, state=None, loop=None, *, train: bool = False,
                       rng=None):
        """Forward over the batch already in ``buf["x"]``; logits land in ``buf["logits"]``.

        Layer 0 reads the inputs, each layer above the hidden states of the one below, the
        head the top layer's. As on the CPU, dropout applies between layers only with
        ``train=True`` and a generator ``rng`` (the masks are drawn from it on the host)."""
        p, cell, H = self.p, self.cell, self.hidden_size
        GH, N = cell.gates * H, T * B
        dropped = train and self.dropout > 0.0 and rng is not None and self.num_layers > 1
        if dropped:
            self._draw_dropout(buf, T, B, rng)
        self._set_initial_state(buf, state, B)
        kernels = steps.step_kernels(cell, self.dtype, B, H)
        for l, layer in enumerate(buf["layers"]):
            W_x, b_x = p[layer_param_name("W_x", l)], p[layer_param_name("b_x", l)]
            xz2d = layer["xz"].reshape((N, GH))
            if l > 0:
                loops.project_dense(self._layer_input2d(buf, l, N, dropped), W_x, b_x, xz2d)
            elif is_index:
                loops.project_indices(buf["x"].reshape(N), W_x, b_x, xz2d)
            else:
                loops.project_dense(buf["x"].reshape((N, self.input_size)), W_x, b_x, xz2d)
            loops.sequence_forward(kernels, layer["xz"], p[layer_param_name("W_h", l)],
                                   p[layer_param_name("b_h", l)], layer["states"], layer["cache"], layer["hz"],
                                   loop=loop)
            if dropped and l < self.num_layers - 1:
                darrays.multiply(layer["states"][0, 1:].reshape(N * H), buf["drop_masks"][l].reshape(N * H),
                                 buf["dropped"][l].reshape(N * H))
        if self.output_size is not None:
            heads.linear_forward(self.hidden2d(buf, T, B), p["W_y"], p["b_y"], buf["logits"])
        self._last = (buf, T, B, is_index, dropped)

    def hidden2d(self, buf, T, B):
        """The top layer's hidden states h_1..h_T in ``buf`` as a (T*B, H) device view."""
        return buf["layers"][-1]["states"][0, 1:].reshape((T * B, self.hidden_size))

    def final_state(self, buf, T: int, B: int) -> DeviceState:
        """A device copy of the state after step T in ``buf``, (L*S, B, H)."""
        S = self.cell.states
        out = cuda.device_array((self.num_layers * S, B, self.hidden_size), self.dtype)
        for l, layer in enumerate(buf["layers"]):
            darrays.state_out(layer["states"], T, out[l * S:(l + 1) * S])
        return DeviceState(out, S)

    def carry_state(self, src_buf, t: int, dst_buf) -> None:
        """Every layer's state after step t of ``src_buf`` becomes the initial state of
        ``dst_buf`` (they may be the same buffers), on the device."""
        for src, dst in zip(src_buf["layers"], dst_buf["layers"]):
            darrays.state_copy(src["states"], t, dst["states"], 0)

    def backward_device(self, d_hidden_ready: bool = False, d_final_state=None, initial_gradient=False,
                        need_dx=False, loop=None):
        """BPTT of the last forward into ``self.g`` (the flat gradient buffer), top layer first.

        Upstream: ``buf["dlogits"]`` through the head, or, with ``d_hidden_ready`` (no head),
        the top layer's ``d_hidden`` as already filled by the caller. ``d_final_state``: a
        host (L*S, B, H) array or None. Each layer above the first passes the gradient of
        its input down as the ``d_hidden`` of the layer below (through the dropout mask).
        Returns the gradient of dense inputs (T, B, X) with ``need_dx``, else None.
        """
        if self._last is None:
            raise RuntimeError("backward() needs a forward() first")
        buf, T, B, is_index, dropped = self._last
        p, g, cell, H = self.p, self.g, self.cell, self.hidden_size
        GH, N, S = cell.gates * H, T * B, cell.states
        layers = buf["layers"]
        if self.output_size is not None and not d_hidden_ready:
            heads.linear_backward(buf["dlogits"], self.hidden2d(buf, T, B), p["W_y"], g["W_y"], g["b_y"],
                                  layers[-1]["d_hidden"].reshape((N, H)))
        kernels = steps.step_kernels(cell, self.dtype, B, H)
        if kernels.backward_wants_transpose and self._W_hT is None:
            self._W_hT = cuda.device_array((H, GH), self.dtype)  # refilled from W_h by every backward
        d_final = None if d_final_state is None else np.ascontiguousarray(d_final_state, self.dtype)
        for l in range(self.num_layers - 1, -1, -1):
            layer = layers[l]
            W_x, W_h, b_x, b_h = (layer_param_name(base, l) for base in ("W_x", "W_h", "b_x", "b_h"))
            dstate = layer["dstate"]
            if d_final is None:
                darrays.fill(dstate.reshape(dstate.size), 0)
            else:
                dstate.copy_to_device(d_final[l * S:(l + 1) * S])
            loops.sequence_backward(kernels, p[W_h], layer["states"], layer["cache"], layer["d_hidden"],
                                    dstate, layer["dstate_prev"], layer["dxz"], layer["dhz"],
                                    initial_gradient=initial_gradient, loop=loop, W_hT=self._W_hT)
            loops.recurrent_weight_gradients(layer["dhz"].reshape((N, GH)), layer["states"][0, :T].reshape((N, H)),
                                             g[W_h], g[b_h])
            dxz2d = layer["dxz"].reshape((N, GH))
            if l > 0:
                below = layers[l - 1]["d_hidden"].reshape((N, H))
                loops.input_weight_gradients_dense(dxz2d, self._layer_input2d(buf, l, N, dropped), p[W_x],
                                                   g[W_x], g[b_x], below)
                if dropped:
                    darrays.multiply(below.reshape(N * H), buf["drop_masks"][l - 1].reshape(N * H),
                                     below.reshape(N * H))
            elif is_index:
                loops.input_weight_gradients_indices(dxz2d, buf["order"], buf["starts"], g["W_x"], g["b_x"])
                return None
            else:
                dx = cuda.device_array((T, B, self.input_size), self.dtype) if need_dx else None
                loops.input_weight_gradients_dense(dxz2d, buf["x"].reshape((N, self.input_size)), p["W_x"],
                                                   g["W_x"], g["b_x"],
                                                   None if dx is None else dx.reshape((N, self.input_size)))
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

    def forward(self, inputs, state=None, loop=None, *, train: bool = False, rng=None):
        """Host in, host out, like :meth:`SequenceModel.forward`: ``(outputs (T, B, V or H), final)``
        (dropout between layers with ``train=True`` and a generator, the CPU's masks)."""
        x, is_index = self._check_model.layer._checked_input(inputs)
        T, B = x.shape[0], x.shape[1]
        if T < 1 or B < 1:
            raise ValueError(f"need at least one step and one sequence, got input shape {x.shape}")
        buf = self.upload_inputs(x, is_index)
        self.forward_device(buf, T, B, is_index, state, loop=loop, train=train, rng=rng)
        if self.output_size is None:
            outputs = buf["layers"][-1]["states"][0, 1:].copy_to_host()
        else:
            outputs = buf["logits"].copy_to_host().reshape(T, B, self.output_size)
        return outputs, self.final_state(buf, T, B).to_host()

    def backward(self, d_outputs, d_final_state=None, loop=None) -> dict:
        """Host gradients named ``"d" + name`` for ``params[name]``, as :meth:`SequenceModel.backward`
        returns them."""
        if self._last is None:
            raise RuntimeError("backward() needs a forward() first")
        buf, T, B = self._last[:3]
        d_outputs = np.ascontiguousarray(d_outputs, self.dtype)
        if self.output_size is None:
            buf["layers"][-1]["d_hidden"].copy_to_device(d_outputs.reshape(T, B, self.hidden_size))
        else:
            buf["dlogits"].copy_to_device(d_outputs.reshape(T * B, self.output_size))
        d_final = None
        if d_final_state is not None:
            d_final = self._host_state_stack(d_final_state, B, "d_final_state")
        self.backward_device(d_hidden_ready=self.output_size is None, d_final_state=d_final, loop=loop)
        return {"d" + key: value for key, value in self.grads_to_host().items()}
