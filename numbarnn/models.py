"""One recurrent layer over any :class:`~numbarnn.cells.CellSpec`, forward and BPTT.

Layout is time-major, as PyTorch's default: inputs ``(T, B, X)`` floats or ``(T, B)``
integer indices (one-hot inputs that are never materialised; ``-1`` is an all-zero
input, used for padding and the course's ``None``), outputs ``(T, B, H)``. With
``batch_first=True`` the first two axes are swapped on the way in and out.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .cellcheck import check_cell
from .cells import CellSpec
from .kernels import loops

_DTYPES = {"float32": np.float32, "float64": np.float64}


def resolve_dtype(dtype) -> np.dtype:
    """``"float32"``/``"float64"`` (or the NumPy types) -> np.dtype; anything else is an error.

    >>> resolve_dtype("float32"), resolve_dtype(np.float64)
    (dtype('float32'), dtype('float64'))
    """
    try:
        key = np.dtype(dtype).name
    except TypeError:
        key = str(dtype)
    if key not in _DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return np.dtype(_DTYPES[key])


class RecurrentModel:
    """A single recurrent layer: ``forward`` over a whole sequence, ``backward`` through time.

    Example:
        >>> import numpy as np
        >>> from numbarnn.cells import LSTM
        >>> model = RecurrentModel(LSTM, input_size=3, hidden_size=5, seed=0)
        >>> outputs, (h, c) = model.forward(np.ones((7, 2, 3)))
        >>> outputs.shape, h.shape, c.shape
        ((7, 2, 5), (2, 5), (2, 5))
        >>> grads = model.backward(np.ones_like(outputs))
        >>> sorted(grads)
        ['dW_h', 'dW_x', 'db_h', 'db_x', 'dstate', 'dx']
    """

    def __init__(self, cell: CellSpec, input_size: int, hidden_size: int, *, dtype="float64",
                 seed: Optional[int] = None, params: Optional[dict] = None, batch_first: bool = False):
        for label, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        check_cell(cell)  # a dry run of its kernels, once per process: a bad spec must not reach the loops
        self.cell = cell
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.dtype = resolve_dtype(dtype)
        self.batch_first = bool(batch_first)
        if params is None:
            params = cell.init_params(np.random.default_rng(seed), self.input_size, self.hidden_size, self.dtype)
        self.params = self._checked_params(params)
        GH, H = cell.gates * self.hidden_size, self.hidden_size
        # What the loops get in place of fused weights the cell does not use (see cell_loops):
        # zero projection biases, a (0, H) W_h, and scratch for their gradients.
        self._unused = {"W_h": np.zeros((0, H), self.dtype), "b_x": np.zeros(GH, self.dtype),
                        "b_h": np.zeros(GH, self.dtype)}
        self._unused_grads = {name: np.empty_like(value) for name, value in self._unused.items()}
        # Per training step: which of b_x, W_h, b_h come from params (their key) or are placeholders (None).
        used = cell.fused_param_names
        self._kernel_keys = tuple(name if name in used else None for name in ("b_x", "W_h", "b_h"))
        #: what the last forward saved for backward: (x, is_index, states, cache), kernel layout
        self.context = None

    # -- parameters --------------------------------------------------------------------------
    def param_shapes(self) -> dict:
        """The shape of each weight: ``W_x (G*H, X)``, ``W_h (G*H, H)``, ``b_x`` and ``b_h (G*H,)``
        (those the cell uses), then the cell's own parameters (see ``CellSpec.param_shapes``)."""
        return self.cell.param_shapes(self.input_size, self.hidden_size)

    def _for_kernels(self, values: dict, placeholders: dict):
        """``(b_x, W_h, b_h, own)`` from ``values`` (keyed like ``params``), with ``placeholders``'
        arrays for the fused weights the cell does not use: the weights or the gradients as the
        compiled loops take them."""
        b_x, W_h, b_h = self._kernel_keys
        own = self.cell.own_param_names
        return (values[b_x] if b_x else placeholders["b_x"], values[W_h] if W_h else placeholders["W_h"],
                values[b_h] if b_h else placeholders["b_h"], tuple([values[name] for name in own]) if own else ())

    def _kernel_weights(self):
        """``(W_x, b_x, W_h, b_h, own)`` as the compiled loops take them."""
        b_x, W_h, b_h, own = self._for_kernels(self.params, self._unused)
        return self.params["W_x"], b_x, W_h, b_h, own

    def _kernel_gradients(self, grads: dict):
        """``(dW_x, dW_h, db_x, db_h, d_own)`` as the compiled loops write them, from ``grads``
        keyed like ``params``; scratch for the fused weights the cell does not use."""
        db_x, dW_h, db_h, d_own = self._for_kernels(grads, self._unused_grads)
        return grads["W_x"], dW_h, db_x, db_h, d_own

    def _checked_params(self, params) -> dict:
        out = {}
        for name, shape in self.param_shapes().items():
            if name not in params:
                raise ValueError(f"missing parameter {name!r} (expected shape {shape})")
            value = np.asarray(params[name])
            if value.shape != shape:
                raise ValueError(f"parameter {name!r} has shape {value.shape}, expected {shape}")
            out[name] = np.ascontiguousarray(value, dtype=self.dtype)
        return out

    # -- states --------------------------------------------------------------------------------
    def zero_state(self, batch_size: int):
        """The all-zero initial state in the form ``forward`` returns it."""
        zeros = [np.zeros((batch_size, self.hidden_size), self.dtype) for _ in range(self.cell.states)]
        return self._pack_state(zeros)

    def _pack_state(self, arrays):
        return arrays[0] if self.cell.states == 1 else tuple(arrays)

    def _unpack_state(self, state, batch_size: int, label: str = "state") -> list:
        S, shape = self.cell.states, (batch_size, self.hidden_size)
        if S == 1 and not isinstance(state, (tuple, list)):
            state = (state,)
        if not isinstance(state, (tuple, list)) or len(state) != S:
            raise ValueError(f"{label} for cell {self.cell.name!r} must be "
                             + ("an array" if S == 1 else f"a tuple of {S} arrays {self.cell.state_names}")
                             + f" each of shape {shape}")
        arrays = []
        for name, value in zip(self.cell.state_names, state):
            value = np.asarray(value)
            if value.shape != shape:
                raise ValueError(f"{label} {name!r} has shape {value.shape}, expected {shape} "
                                 "(batch, hidden)")
            arrays.append(value)
        return arrays

    # -- inputs ----------------------------------------------------------------------------------
    def _checked_input(self, x):
        x = np.asarray(x)
        if self.batch_first and x.ndim >= 2:
            x = np.swapaxes(x, 0, 1)
        layout = "(B, T" if self.batch_first else "(T, B"
        if np.issubdtype(x.dtype, np.integer):
            if x.ndim != 2:
                raise ValueError(f"integer inputs must have shape {layout}), got {x.shape}")
            if x.size and (x.min() < -1 or x.max() >= self.input_size):
                bad = x[(x < -1) | (x >= self.input_size)].ravel()[0]
                raise ValueError(f"input index {bad} is outside the vocabulary [0, {self.input_size}) "
                                 "(-1 means an all-zero input)")
            return np.ascontiguousarray(x, dtype=np.int64), True
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"inputs must be floats {layout}, X) or integer indices {layout}), "
                             f"got dtype {x.dtype}")
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"float inputs must have shape {layout}, {self.input_size}), got {x.shape}")
        return np.ascontiguousarray(x, dtype=self.dtype), False

    # -- forward and backward --------------------------------------------------------------------
    def forward(self, x, state=None):
        """Run the whole sequence. Returns ``(outputs (T, B, H), final_state)``.

        ``state`` is the initial state (zeros if None): an array ``(B, H)`` for one-state
        cells, a tuple such as ``(h, c)`` for the LSTM. The final state has the same form,
        so a caller can continue a sequence (truncated BPTT).
        """
        x, is_index = self._checked_input(x)
        T, B = x.shape[0], x.shape[1]
        if T < 1 or B < 1:
            raise ValueError(f"need at least one step and one sequence, got input shape {x.shape}")
        cell, H = self.cell, self.hidden_size
        GH = cell.gates * H
        states = np.empty((cell.states, T + 1, B, H), self.dtype)
        initial = self._unpack_state(state, B, "initial state") if state is not None else None
        for s in range(cell.states):
            states[s, 0] = 0.0 if initial is None else initial[s]
        cache = np.empty((T, B, cell.cache_width * H), self.dtype)
        # integer inputs: each step's rows are gathered into xz[0] just before the step
        xz, hz = np.empty((1 if is_index else T, B, GH), self.dtype), np.empty((B, GH), self.dtype)
        weights = self._kernel_weights()
        if is_index:
            loops.loops_for(cell).forward_indices(x.reshape(T * B), *weights, xz, states, cache, hz)
        else:
            loops.loops_for(cell).forward_dense(x.reshape(T * B, self.input_size), *weights, xz, states, cache, hz)
        self.context = (x, is_index, states, cache)
        outputs = states[0, 1:]
        if self.batch_first:
            outputs = np.swapaxes(outputs, 0, 1)
        return outputs, self._pack_state([states[s, T].copy() for s in range(cell.states)])

    def backward(self, d_outputs=None, d_final_state=None) -> dict:
        """BPTT for the last ``forward``.

        ``d_outputs`` is the upstream gradient of every hidden state ``(T, B, H)`` (zeros if
        None); ``d_final_state`` an extra gradient of the final state (e.g. ``(dh, dc)``).
        Returns ``"d" + name`` for each parameter (``dW_x, dW_h, db_x, db_h`` and the cell's
        own; shapes of the parameters), ``dx`` (same shape as
        a float input; None for integer inputs) and ``dstate`` (gradient of the initial state,
        in the form of ``forward``'s state).
        """
        if self.context is None:
            raise RuntimeError("backward() needs a forward() first")
        x, is_index, states, cache = self.context
        T, B = states.shape[1] - 1, states.shape[2]
        if d_outputs is not None:
            d_outputs = np.asarray(d_outputs)
            expected = (B, T, self.hidden_size) if self.batch_first else (T, B, self.hidden_size)
            if d_outputs.shape != expected:
                raise ValueError(f"d_outputs has shape {d_outputs.shape}, expected {expected}")
            if self.batch_first:
                d_outputs = np.swapaxes(d_outputs, 0, 1)
        grads = self.bptt(x, is_index, states, cache, d_outputs, d_final_state)
        if self.batch_first and grads["dx"] is not None:
            grads["dx"] = np.swapaxes(grads["dx"], 0, 1)
        return grads

    def bptt(self, x, is_index, states, cache, d_outputs=None, d_final_state=None, out=None) -> dict:
        """Backward through time from saved tensors in kernel layout (time-major).

        x: the checked input (``(T, B, X)`` floats or ``(T, B)`` int64); states
        ``(S, T+1, B, H)`` and cache ``(T, B, C*H)`` as the forward kernel wrote them.
        ``backward`` calls this with what ``forward`` saved in ``self.context``;
        :mod:`numbarnn.course` calls it with tensors rebuilt from the course's caches.
        ``out`` optionally gives the arrays to write the weight gradients into, keyed like
        ``params`` (e.g. views of one flat gradient buffer).
        """
        cell, H = self.cell, self.hidden_size
        T, B, GH = states.shape[1] - 1, states.shape[2], cell.gates * H
        if d_outputs is None:
            d_outputs = np.zeros((T, B, H), self.dtype)
        d_outputs = np.ascontiguousarray(d_outputs, dtype=self.dtype)
        dstate = np.zeros((cell.states, B, H), self.dtype)
        if d_final_state is not None:
            for s, value in enumerate(self._unpack_state(d_final_state, B, "d_final_state")):
                dstate[s] = value
        dxz = np.empty((T, B, GH), self.dtype)
        dhz = dxz if cell.shared_gate_grad else np.empty((T, B, GH), self.dtype)
        grads = out if out is not None else {name: np.empty_like(value) for name, value in self.params.items()}
        scratch = (np.empty_like(dstate), dxz, dhz, np.empty((B, H), self.dtype))
        W_x, _, W_h, _, own = self._kernel_weights()
        dweights = self._kernel_gradients(grads)
        dx = None
        if is_index:
            loops.loops_for(cell).backward_indices(x.reshape(T * B), W_h, own, states, cache, d_outputs, dstate,
                                                   *scratch, *dweights)
        else:
            dx = np.empty((T, B, self.input_size), self.dtype)
            loops.loops_for(cell).backward_dense(x.reshape(T * B, self.input_size), W_x, W_h, own, states, cache,
                                                 d_outputs, dstate, *scratch, *dweights,
                                                 dx.reshape(T * B, self.input_size))
        result = {"d" + name: grads[name] for name in cell.param_names}
        result["dx"] = dx
        result["dstate"] = self._pack_state([dstate[s].copy() for s in range(cell.states)])
        return result
