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
from . import heads, loops, sequences, steps
from . import losses as dlosses
from ..sequence_model import checked_lengths, direction_param_name, reverse_order
from .cells import resolve
from .matmul import gemm

__all__ = ["CudaSequenceModel", "DeviceParams", "DeviceState"]


#: Batch shapes whose device buffers a model keeps (the least recently used go first), as the
#: CPU backend's :data:`~numbarnn.cpu_backend.WORKSPACE_SHAPES`.
BUFFER_SHAPES = 8

# Marker for forward_device: the states buffer already holds the initial state (generation).
_KEEP_STATE = object()


class DeviceState:
    """A recurrent state kept on the device, ``(L*S, B, H)``: the S state arrays of layer 0,
    then those of layer 1, ... (the order of
    :meth:`~numbarnn.sequence_model.SequenceModel.state_arrays`; a bidirectional layer
    counts as two, its forward direction then its reverse one, PyTorch's ``layers *
    directions``). ``to_host()`` gives the CPU form: for one layer an array for one-state
    cells, a tuple such as ``(h, c)`` for the LSTM; for L stacked layers a list of L such
    layer states.

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
    source of shapes and checks), with everything the CPU model has: stacked layers (layer
    0 reads the inputs, each layer above the outputs of the one below, through dropout when
    training with a generator: the CPU model's masks, drawn on the host and applied on the
    device), bidirectional layers (the reverse direction runs over each sequence reversed
    within its length; the two outputs are concatenated), an embedding table, and the
    heads of the three tasks (per-step for "lm" and "regress", the last real step's
    features for "classify"). ``forward``/``backward`` have the CPU model's host interface
    (NumPy in, NumPy out) for tests and interactive use; the trainer uses the device
    methods, which copy nothing.

    Inputs are time-major, indices (T, B) or features (T, B, X); outputs (T, B, V), (B, C)
    for a classifier, or (T, B, D*H) without a head. The same results as the CPU model it
    was built from:

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
    >>> cpu = numbarnn.make_model("gru", task="classify", vocab_size=5, embedding=3, num_classes=2, hidden_size=2,
    ...                           bidirectional=True, dtype="float64", seed=0)
    >>> x, lengths = np.array([[0, 4], [2, -1], [1, -1]]), np.array([3, 1])
    >>> (logits_gpu, _), (logits_cpu, _) = CudaSequenceModel(cpu).forward(x, lengths=lengths), cpu.forward(x, lengths=lengths)
    >>> logits_gpu.shape, np.allclose(logits_gpu, logits_cpu)
    ((2, 2), True)
    """

    def __init__(self, cpu_model):
        self.cell = cpu_model.cell
        self.pair = resolve(self.cell)  # a cell without CUDA kernels fails here, clearly
        self.dtype = cpu_model.dtype
        self.index_input = cpu_model.index_input
        self.output_size = cpu_model.output_size
        self.input_size = cpu_model.input_size  # the vocabulary for indices (embedded or not)
        self.embedding_size = cpu_model.embedding_size
        self.hidden_size = cpu_model.hidden_size
        self.task = cpu_model.task
        self.directions = cpu_model.directions
        self.num_layers = len(cpu_model.layers)
        self.num_slots = self.num_layers * self.directions  # PyTorch's layers * directions
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
        self._folded = None  # with an embedding: per direction (W_x @ W_emb.T, its gradient), (G*H, V)
        self._last = None  # (buffers, T, B, is_index, dropped, with_lengths) of the last forward

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
        expected = self.num_slots * self.cell.states
        if len(arrays) != expected:
            what = f"{self.num_layers} layers" + (" x 2 directions" if self.directions == 2 else "")
            raise ValueError(f"a state of this model is {expected} arrays ({what} of {self.cell.states}), "
                             f"got {len(arrays)}")
        host = np.ascontiguousarray(np.stack([np.asarray(a, self.dtype) for a in arrays]))
        return DeviceState(cuda.to_device(host), self.cell.states)

    def _host_state_stack(self, state, B: int, what: str) -> np.ndarray:
        """A state in the CPU model's form (checked as the CPU checks it) as one (L*D*S, B, H) array."""
        arrays = []
        for recurrent, slot_state in zip(self._check_model._slots, self._check_model._per_layer(state)):
            arrays.extend(recurrent._unpack_state(slot_state, B, what))
        return np.ascontiguousarray(np.stack([np.asarray(a, self.dtype) for a in arrays]))

    # -- device buffers, one set per (T, B, input kind) --------------------------------------
    def buffers(self, T: int, B: int, is_index: bool) -> dict:
        """The device arrays of a batch of T steps and B sequences, integer or dense inputs,
        by name, allocated once per shape (the last :data:`BUFFER_SHAPES` shapes are kept): the inputs (``x``, and ``ints`` with the targets
        ``y`` and the index segments), ``seq`` (each sequence's length, then the reverse
        order of bidirectional layers), the head's (``logits``, ``probs``, ``dlogits``,
        ``mask``, ...; one row per sequence for a classifier), and ``slots``, one dict per
        layer and direction in PyTorch's order (``xz``, ``states``, ``cache``,
        ``d_hidden``, ...). Bidirectional layers add ``outputs`` and ``d_outputs`` (each
        layer's (T, B, 2H) output and its gradient) and ``gates`` (a (T, B, G*H) scratch).
        Dropout's masks come with the first forward that drops (:meth:`forward_device`)."""
        key = (T, B, is_index)
        buf = self._buffers.pop(key, None)
        if buf is not None:
            self._buffers[key] = buf  # the most recently used last
            return buf
        while len(self._buffers) >= BUFFER_SHAPES:  # names batches come in many lengths: keep the device bounded
            del self._buffers[next(iter(self._buffers))]
        dt, N, V, D, H = self.dtype, T * B, self.output_size, self.directions, self.hidden_size
        rows = B if self.task == "classify" else N  # the loss's rows
        buf = {
            "slots": [self._slot_buffers(T, B) for _ in range(self.num_slots)],
            "scalars": cuda.device_array(2, np.float64),  # 0: loss, 1: grad norm^2 (16 bytes back)
            "partials": cuda.device_array(dlosses.MAX_PARTIALS, np.float64),
            "mask_is_ones": False,
            "seq": cuda.device_array(B + (N if D == 2 else 0), np.int64),  # lengths (B), reverse order (T, B)
        }
        buf["lengths"] = buf["seq"][:B]
        if is_index:
            V_in = self.input_size
            # inputs (N), targets (N), order (N), starts (V_in + 1): one upload per step
            buf["ints"] = cuda.device_array(3 * N + V_in + 1, np.int64)
            ints = buf["ints"]
            buf["x"] = ints[0:N].reshape((T, B))
            buf["y"] = ints[N:N + rows]
            buf["order"] = ints[2 * N:3 * N]
            buf["starts"] = ints[3 * N:3 * N + V_in + 1]
        else:
            buf["x"] = cuda.device_array((T, B, self.input_size), dt)
            buf["ints"] = buf["y"] = cuda.device_array(rows, np.int64)  # index targets, if any
        if D == 2:
            buf["order_steps"] = buf["seq"][B:].reshape((T, B))
            buf["outputs"] = cuda.device_array((self.num_layers, T, B, D * H), dt)
            buf["d_outputs"] = cuda.device_array((self.num_layers, T, B, D * H), dt)
            buf["gates"] = cuda.device_array((T, B, self.cell.gates * H), dt)
            if self.num_layers > 1:
                buf["dx_reverse"] = cuda.device_array((T, B, D * H), dt)
        if self.task == "classify":
            buf["features"] = cuda.device_array((B, D * H), dt)
            buf["d_features"] = cuda.device_array((B, D * H), dt)
        if V is not None:
            buf["logits"] = cuda.device_array((rows, V), dt)
            buf["probs"] = cuda.device_array((rows, V), dt)
            buf["dlogits"] = cuda.device_array((rows, V), dt)
            buf["row_loss"] = cuda.device_array(rows, np.float64)
            buf["mask"] = cuda.device_array(rows, dt)
        self._buffers[key] = buf
        return buf

    def _slot_buffers(self, T: int, B: int) -> dict:
        """One recurrent layer's (or direction's) device arrays for T steps of B sequences."""
        cell, H, dt = self.cell, self.hidden_size, self.dtype
        GH, S = cell.gates * H, cell.states
        slot = {
            "xz": cuda.device_array((T, B, GH), dt),
            "states": cuda.device_array((S, T + 1, B, H), dt),
            "cache": cuda.device_array((T, B, max(cell.cache_width, 1) * H), dt),
            "hz": cuda.device_array((B, GH), dt),
            "dstate": cuda.device_array((S, B, H), dt),
            "dstate_prev": cuda.device_array((S, B, H), dt),
            "dxz": cuda.device_array((T, B, GH), dt),
            "d_hidden": cuda.device_array((T, B, H), dt),
        }
        slot["dhz"] = slot["dxz"] if cell.shared_gate_grad else cuda.device_array((T, B, GH), dt)
        return slot

    def _fold_embedding(self) -> None:
        """With an embedding table, each direction of layer 0 takes integer inputs through
        ``W_x @ W_emb.T`` (G*H, V): an index's embedding times ``W_x`` is that matrix's
        column, so the one-hot projection and its segment-sum gradient run unchanged (as
        the CPU's fused step does)."""
        GH, V = self.cell.gates * self.hidden_size, self.input_size
        if self._folded is None:
            self._folded = [(cuda.device_array((GH, V), self.dtype), cuda.device_array((GH, V), self.dtype))
                            for _ in range(self.directions)]
            if self.directions == 2:
                self._emb_scratch = cuda.device_array(self.shapes["W_emb"], self.dtype)
        for d, (W_in, _) in enumerate(self._folded):
            gemm(self.p[direction_param_name("W_x", 0, d == 1)], self.p["W_emb"], W_in, trans_b=True)

    # -- forward and backward on the device -----------------------------------------------------
    def _set_initial_state(self, buf, state, B):
        S, H, K = self.cell.states, self.hidden_size, self.num_slots
        slots = buf["slots"]
        if state is _KEEP_STATE:
            return
        if state is None:
            for slot in slots:
                for s in range(S):
                    darrays.fill(slot["states"][s, 0].reshape(B * H), 0)
            return
        if isinstance(state, DeviceState):
            if state.shape != (K * S, B, H):
                raise ValueError(f"initial state has shape {state.shape}, expected {(K * S, B, H)}")
            array = state.array
        else:
            array = cuda.to_device(self._host_state_stack(state, B, "initial state"))
        for k, slot in enumerate(slots):
            darrays.state_in(array[k * S:(k + 1) * S], slot["states"], 0)

    def _draw_dropout(self, buf, T: int, B: int, rng) -> None:
        """The CPU model's dropout masks, drawn from ``rng`` in the same order (layer by layer,
        each ``(T, B, D*H)``), uploaded in one copy."""
        DH, L, dt = self.directions * self.hidden_size, self.num_layers, self.dtype
        if "drop_masks" not in buf:
            buf["drop_masks"] = cuda.device_array((L - 1, T, B, DH), dt)
            buf["dropped"] = cuda.device_array((L - 1, T, B, DH), dt)  # each layer's input above the first
        keep = 1.0 - self.dropout
        masks = np.empty((L - 1, T, B, DH), dt)
        for l in range(L - 1):  # SequenceModel.forward's expression, so the same numbers
            masks[l] = (rng.random((T, B, DH)) < keep).astype(dt) / dt.type(keep)
        buf["drop_masks"].copy_to_device(masks)

    def _output(self, buf, l: int):
        """Layer l's output (T, B, D*H): its hidden states, both directions' concatenated."""
        if self.directions == 2:
            return buf["outputs"][l]
        return buf["slots"][l]["states"][0, 1:]

    def _d_output(self, buf, l: int):
        """Where the gradient of layer l's output goes (T, B, D*H)."""
        if self.directions == 2:
            return buf["d_outputs"][l]
        return buf["slots"][l]["d_hidden"]

    def _layer_input2d(self, buf, l: int, N: int, dropped: bool):
        """The (N, D*H) dense input of layer l >= 1: the outputs below, after dropout."""
        DH = self.directions * self.hidden_size
        if dropped:
            return buf["dropped"][l - 1].reshape((N, DH))
        return self._output(buf, l - 1).reshape((N, DH))

    def _input_weights(self, l: int, d: int, is_index: bool):
        """Layer l, direction d's input weights: ``W_x``, or the folded table for embedded indices."""
        if l == 0 and is_index and self.embedding_size is not None:
            return self._folded[d][0]
        return self.p[direction_param_name("W_x", l, d == 1)]

    def forward_device(self, buf, T: int, B: int, is_index: bool, state=None, loop=None, *, train: bool = False,
                       rng=None, with_lengths: bool = False, fold: bool = True):
        """Forward over the batch already in ``buf`` (:meth:`upload_batch`); outputs land in
        ``buf["logits"]``, or the top layer's output without a head.

        Layer 0 reads the inputs, each layer above the outputs of the one below, the head
        the top layer's (each sequence's last real step for a classifier). As on the CPU,
        dropout applies between layers only with ``train=True`` and a generator ``rng``
        (the masks are drawn from it on the host). ``with_lengths``: ``buf["lengths"]``
        holds real lengths, so the final state is taken at each sequence's last real step.
        ``fold=False`` reuses the embedding folded by the previous call (generation, where
        the weights do not change)."""
        p, cell, H, D = self.p, self.cell, self.hidden_size, self.directions
        GH, N = cell.gates * H, T * B
        dropped = train and self.dropout > 0.0 and rng is not None and self.num_layers > 1
        if dropped:
            self._draw_dropout(buf, T, B, rng)
        self._set_initial_state(buf, state, B)
        if self.embedding_size is not None and is_index and (fold or self._folded is None):
            self._fold_embedding()
        kernels = steps.step_kernels(cell, self.dtype, B, H)
        for l in range(self.num_layers):
            for d in range(D):
                slot = buf["slots"][l * D + d]
                W_x = self._input_weights(l, d, is_index)
                b_x = p[direction_param_name("b_x", l, d == 1)]
                xz = slot["xz"] if d == 0 else buf["gates"]  # the reverse direction's, reordered below
                xz2d = xz.reshape((N, GH))
                if l > 0:
                    loops.project_dense(self._layer_input2d(buf, l, N, dropped), W_x, b_x, xz2d)
                elif is_index:
                    loops.project_indices(buf["x"].reshape(N), W_x, b_x, xz2d)
                else:
                    loops.project_dense(buf["x"].reshape((N, self.input_size)), W_x, b_x, xz2d)
                if d == 1:  # a step's projection needs no other step: reverse after projecting
                    sequences.reorder_steps(buf["gates"], buf["order_steps"], slot["xz"])
                loops.sequence_forward(kernels, slot["xz"], p[direction_param_name("W_h", l, d == 1)],
                                       p[direction_param_name("b_h", l, d == 1)], slot["states"], slot["cache"],
                                       slot["hz"], loop=loop)
            if D == 2:
                out = buf["outputs"][l]
                sequences.copy_steps(buf["slots"][l * D]["states"][0, 1:], out[:, :, :H])
                sequences.reorder_steps(buf["slots"][l * D + 1]["states"][0, 1:], buf["order_steps"], out[:, :, H:])
            if dropped and l < self.num_layers - 1:
                size = N * D * H
                darrays.multiply(self._output(buf, l).reshape(size), buf["drop_masks"][l].reshape(size),
                                 buf["dropped"][l].reshape(size))
        if self.output_size is not None:
            if self.task == "classify":
                sequences.last_step_features(self._output(buf, self.num_layers - 1), buf["lengths"], H,
                                             buf["features"])
                heads.linear_forward(buf["features"], p["W_y"], p["b_y"], buf["logits"])
            else:
                heads.linear_forward(self.hidden2d(buf, T, B), p["W_y"], p["b_y"], buf["logits"])
        self._last = (buf, T, B, is_index, dropped, with_lengths)

    def hidden2d(self, buf, T, B):
        """The top layer's output in ``buf`` as a (T*B, D*H) device view."""
        return self._output(buf, self.num_layers - 1).reshape((T * B, self.directions * self.hidden_size))

    def final_state(self, buf, T: int, B: int, with_lengths: bool = False) -> DeviceState:
        """A device copy of the state after step T in ``buf`` (after each sequence's last real
        step, ``buf["lengths"]``, with ``with_lengths``), (L*D*S, B, H)."""
        S = self.cell.states
        out = cuda.device_array((self.num_slots * S, B, self.hidden_size), self.dtype)
        for k, slot in enumerate(buf["slots"]):
            if with_lengths:
                sequences.states_at(slot["states"], buf["lengths"], out[k * S:(k + 1) * S])
            else:
                darrays.state_out(slot["states"], T, out[k * S:(k + 1) * S])
        return DeviceState(out, S)

    def carry_state(self, src_buf, t: int, dst_buf) -> None:
        """Every layer's state after step t of ``src_buf`` becomes the initial state of
        ``dst_buf`` (they may be the same buffers), on the device."""
        for src, dst in zip(src_buf["slots"], dst_buf["slots"]):
            darrays.state_copy(src["states"], t, dst["states"], 0)

    def backward_device(self, d_hidden_ready: bool = False, d_final_state=None, initial_gradient=False,
                        need_dx=False, loop=None):
        """BPTT of the last forward into ``self.g`` (the flat gradient buffer), top layer first.

        Upstream: ``buf["dlogits"]`` through the head, or, with ``d_hidden_ready`` (no head),
        the gradient of the top layer's output as already filled by the caller (see
        :meth:`backward`). ``d_final_state``: a host (L*D*S, B, H) array or None. Each layer
        above the first passes the gradient of its input (both directions' summed) down to
        the layer below (through the dropout mask). Returns the gradient of dense inputs
        (T, B, X) with ``need_dx``, else None.
        """
        if self._last is None:
            raise RuntimeError("backward() needs a forward() first")
        buf, T, B, is_index, dropped = self._last[:5]
        p, g, cell, H, D = self.p, self.g, self.cell, self.hidden_size, self.directions
        GH, N, S, DH, L = cell.gates * H, T * B, cell.states, D * H, self.num_layers
        slots = buf["slots"]
        if self.output_size is not None and not d_hidden_ready:
            if self.task == "classify":
                heads.linear_backward(buf["dlogits"], buf["features"], p["W_y"], g["W_y"], g["b_y"],
                                      buf["d_features"])
                sequences.last_step_features_backward(buf["d_features"], buf["lengths"], H, self._d_output(buf, L - 1))
            else:
                heads.linear_backward(buf["dlogits"], self.hidden2d(buf, T, B), p["W_y"], g["W_y"], g["b_y"],
                                      self._d_output(buf, L - 1).reshape((N, DH)))
        kernels = steps.step_kernels(cell, self.dtype, B, H)
        if kernels.backward_wants_transpose and self._W_hT is None:
            self._W_hT = cuda.device_array((H, GH), self.dtype)  # refilled from W_h by every backward
        d_final = None if d_final_state is None else np.ascontiguousarray(d_final_state, self.dtype)
        dx = None
        for l in range(L - 1, -1, -1):
            if D == 2:  # the output's gradient, split between the directions (the reverse one reordered)
                d_out = buf["d_outputs"][l]
                sequences.copy_steps(d_out[:, :, :H], slots[l * D]["d_hidden"])
                sequences.reorder_steps(d_out[:, :, H:], buf["order_steps"], slots[l * D + 1]["d_hidden"])
            for d in range(D):
                k = l * D + d
                slot = slots[k]
                W_x, W_h, b_x, b_h = (direction_param_name(base, l, d == 1) for base in ("W_x", "W_h", "b_x", "b_h"))
                dstate = slot["dstate"]
                if d_final is None:
                    darrays.fill(dstate.reshape(dstate.size), 0)
                else:
                    dstate.copy_to_device(d_final[k * S:(k + 1) * S])
                loops.sequence_backward(kernels, p[W_h], slot["states"], slot["cache"], slot["d_hidden"],
                                        dstate, slot["dstate_prev"], slot["dxz"], slot["dhz"],
                                        initial_gradient=initial_gradient, loop=loop, W_hT=self._W_hT)
                loops.recurrent_weight_gradients(slot["dhz"].reshape((N, GH)), slot["states"][0, :T].reshape((N, H)),
                                                 g[W_h], g[b_h])
                dxz = slot["dxz"]
                if d == 1:  # back to the inputs' order
                    sequences.reorder_steps(slot["dxz"], buf["order_steps"], buf["gates"])
                    dxz = buf["gates"]
                dxz2d = dxz.reshape((N, GH))
                if l > 0:
                    below = self._d_output(buf, l - 1).reshape((N, DH))
                    target = below if d == 0 else buf["dx_reverse"].reshape((N, DH))
                    loops.input_weight_gradients_dense(dxz2d, self._layer_input2d(buf, l, N, dropped), p[W_x],
                                                       g[W_x], g[b_x], target)
                    if d == 1:
                        darrays.add(target.reshape(N * DH), below.reshape(N * DH))
                elif is_index and self.embedding_size is not None:
                    self._embedding_gradients(d, dxz2d, buf)
                elif is_index:
                    loops.input_weight_gradients_indices(dxz2d, buf["order"], buf["starts"], g[W_x], g[b_x])
                else:
                    X = self.input_size
                    if need_dx and dx is None:
                        dx = cuda.device_array((T, B, X), self.dtype)
                    target = None
                    if need_dx:
                        target = dx if d == 0 else cuda.device_array((T, B, X), self.dtype)
                    loops.input_weight_gradients_dense(dxz2d, buf["x"].reshape((N, X)), p[W_x], g[W_x], g[b_x],
                                                       None if target is None else target.reshape((N, X)))
                    if need_dx and d == 1:
                        darrays.add(target.reshape(N * X), dx.reshape(N * X))
            if l > 0 and dropped:
                below = self._d_output(buf, l - 1).reshape(N * DH)
                darrays.multiply(below, buf["drop_masks"][l - 1].reshape(N * DH), below)
        return dx

    def _embedding_gradients(self, d: int, dxz2d, buf) -> None:
        """Direction d of layer 0 with an embedding: the folded weights' gradient (a
        segment sum over the inputs, as for one-hot inputs), then the chain rule through
        ``W_in = W_x @ W_emb.T`` into ``W_x``'s and ``W_emb``'s (both directions' summed)."""
        p, g = self.p, self.g
        W_x, b_x = direction_param_name("W_x", 0, d == 1), direction_param_name("b_x", 0, d == 1)
        dW_in = self._folded[d][1]
        loops.input_weight_gradients_indices(dxz2d, buf["order"], buf["starts"], dW_in, g[b_x])
        gemm(dW_in, p["W_emb"], g[W_x])
        if d == 0:
            gemm(dW_in, p[W_x], g["W_emb"], trans_a=True)
        else:
            gemm(dW_in, p[W_x], self._emb_scratch, trans_a=True)
            size = self._emb_scratch.size
            darrays.add(self._emb_scratch.reshape(size), g["W_emb"].reshape(size))

    # -- the CPU model's host interface ------------------------------------------------------
    def upload_batch(self, x, is_index: bool, targets=None, lengths=None):
        """Copy a checked time-major batch into this shape's buffers; returns the buffers.

        ``x`` (T, B) int64 indices or (T, B, X) floats; ``targets`` None, int64 indices (one
        per loss row), or floats (rows, V), which go to ``buf["y_dense"]``; ``lengths`` None or
        (B,) int64 in [1, T] (each sequence's real steps). One copy for the integers."""
        T, B = x.shape[0], x.shape[1]
        N = T * B
        buf = self.buffers(T, B, is_index)
        index_targets = targets is not None and np.issubdtype(np.asarray(targets).dtype, np.integer)
        if is_index:
            ints = np.zeros(buf["ints"].size, np.int64)
            flat = x.reshape(N)
            ints[0:N] = flat
            if index_targets:
                ints[N:N + targets.size] = targets.reshape(-1)
            order, starts = loops.index_segments(flat, self.input_size)
            ints[2 * N:3 * N] = order
            ints[3 * N:] = starts
            buf["ints"].copy_to_device(ints)
        else:
            buf["x"].copy_to_device(np.ascontiguousarray(x, self.dtype))
            if index_targets:
                buf["y"].copy_to_device(np.ascontiguousarray(targets, np.int64).reshape(-1))
        if targets is not None and not index_targets:
            if "y_dense" not in buf:
                buf["y_dense"] = cuda.device_array(buf["logits"].shape, self.dtype)
            buf["y_dense"].copy_to_device(np.ascontiguousarray(targets, self.dtype))
        if self.directions == 2 or self.task == "classify" or lengths is not None:
            seq = np.empty(buf["seq"].size, np.int64)
            seq[:B] = T if lengths is None else lengths
            if self.directions == 2:
                seq[B:] = reverse_order(T, B, lengths).reshape(N)
            buf["seq"].copy_to_device(seq)
        return buf

    def _checked_inputs(self, inputs):
        """Time-major inputs checked as the CPU model checks them: ``(x, is_index)``."""
        if self.embedding_size is None:
            return self._check_model.layer._checked_input(inputs)
        return self._check_model.checked_embedding_input(inputs), True

    def forward(self, inputs, state=None, loop=None, *, train: bool = False, rng=None, lengths=None):
        """Host in, host out, like :meth:`SequenceModel.forward`: ``(outputs, final)``, outputs
        (T, B, V or D*H), or (B, C) for a classifier (dropout between layers with
        ``train=True`` and a generator, the CPU's masks; ``lengths`` as on the CPU)."""
        x, is_index = self._checked_inputs(inputs)
        T, B = x.shape[0], x.shape[1]
        if T < 1 or B < 1:
            raise ValueError(f"need at least one step and one sequence, got input shape {x.shape}")
        if lengths is not None:
            lengths = checked_lengths(lengths, T, B)
        buf = self.upload_batch(x, is_index, lengths=lengths)
        self.forward_device(buf, T, B, is_index, state, loop=loop, train=train, rng=rng,
                            with_lengths=lengths is not None)
        if self.output_size is None:
            outputs = self._output(buf, self.num_layers - 1).copy_to_host()
        elif self.task == "classify":
            outputs = buf["logits"].copy_to_host()
        else:
            outputs = buf["logits"].copy_to_host().reshape(T, B, self.output_size)
        return outputs, self.final_state(buf, T, B, lengths is not None).to_host()

    def backward(self, d_outputs, d_final_state=None, loop=None) -> dict:
        """Host gradients named ``"d" + name`` for ``params[name]``, as :meth:`SequenceModel.backward`
        returns them."""
        if self._last is None:
            raise RuntimeError("backward() needs a forward() first")
        buf, T, B = self._last[:3]
        if d_final_state is not None and self._last[5]:
            raise ValueError("d_final_state is not supported after a forward with lengths")
        d_outputs = np.ascontiguousarray(d_outputs, self.dtype)
        if self.output_size is None:
            self._d_output(buf, self.num_layers - 1).copy_to_device(
                d_outputs.reshape(T, B, self.directions * self.hidden_size))
        else:
            buf["dlogits"].copy_to_device(d_outputs.reshape(buf["dlogits"].shape))
        d_final = None
        if d_final_state is not None:
            d_final = self._host_state_stack(d_final_state, B, "d_final_state")
        self.backward_device(d_hidden_ready=self.output_size is None, d_final_state=d_final, loop=loop)
        return {"d" + key: value for key, value in self.grads_to_host().items()}
