"""Cells as data: a gate count, a state count and two pointwise ``@njit`` kernels.

:class:`CellSpec` is the whole protocol a cell plugin implements; the shared time
loops (:mod:`numbarnn.kernels.loops`), batching, BPTT, gradient checks, losses,
optimizers and samplers come for free. A cell may also declare parameters of its own
(:class:`ParamSpec`: gains, element-wise recurrent weights, biases added after a
normalisation), which its kernels receive and whose gradients they accumulate. See
``docs/plugins.md``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Mapping, Optional

import numpy as np

from .kernels import cells as _k

#: The fused projection weights, in their order in a model's parameters. A cell uses all four
#: unless it says otherwise (``recurrent_weights``, ``projection_biases``).
PARAM_NAMES = ("W_x", "W_h", "b_x", "b_h")

#: The sizes a parameter's shape may name: input features, hidden units, gates, gate rows.
SHAPE_SYMBOLS = ("X", "H", "G", "G*H")


def fused_param_shapes(gates: int, input_size: int, hidden_size: int) -> dict:
    """The shapes of all four fused weights of a layer with ``gates`` gate blocks.

    >>> fused_param_shapes(4, input_size=3, hidden_size=2)
    {'W_x': (8, 3), 'W_h': (8, 2), 'b_x': (8,), 'b_h': (8,)}
    """
    GH = gates * hidden_size
    return {"W_x": (GH, input_size), "W_h": (GH, hidden_size), "b_x": (GH,), "b_h": (GH,)}


def uniform_init(rng: np.random.Generator, input_size: int, hidden_size: int, gates: int,
                 dtype) -> dict:
    """PyTorch's default: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)).

    Returns ``{"W_x": (G*H, X), "W_h": (G*H, H), "b_x": (G*H,), "b_h": (G*H,)}`` in ``dtype``.

    >>> params = uniform_init(np.random.default_rng(0), input_size=3, hidden_size=4, gates=4, dtype=np.float32)
    >>> {name: value.shape for name, value in params.items()}
    {'W_x': (16, 3), 'W_h': (16, 4), 'b_x': (16,), 'b_h': (16,)}
    >>> bool(np.abs(params["W_h"]).max() <= 0.5)
    True
    """
    k = 1.0 / np.sqrt(hidden_size)
    shapes = fused_param_shapes(gates, input_size, hidden_size)
    return {name: rng.uniform(-k, k, size=shape).astype(dtype) for name, shape in shapes.items()}


# ---- initialisers of a cell's own parameters: init(rng, shape, hidden_size) -> float64 array ----

def zeros(rng, shape, hidden_size):
    """All zeros (biases, shifts)."""
    return np.zeros(shape)


def ones(rng, shape, hidden_size):
    """All ones (gains)."""
    return np.ones(shape)


@dataclass(frozen=True)
class _Uniform:
    """``U(low, high)``: what :func:`uniform` returns (a class, so that a spec holding it pickles)."""

    low: float
    high: float

    def __call__(self, rng, shape, hidden_size):
        return rng.uniform(self.low, self.high, size=shape)

    def __repr__(self):
        return f"uniform({self.low!r}, {self.high!r})"


def uniform(low: float, high: float) -> Callable:
    """An initialiser drawing ``U(low, high)``.

    >>> init = uniform(0.0, 1.0)
    >>> values = init(np.random.default_rng(0), (3,), 4)
    >>> values.shape, bool(((0 <= values) & (values < 1)).all()), init
    ((3,), True, uniform(0.0, 1.0))
    """
    if not (np.isfinite(low) and np.isfinite(high) and low <= high):
        raise ValueError(f"uniform({low!r}, {high!r}): need finite low <= high")
    return _Uniform(float(low), float(high))


def uniform_hidden(rng, shape, hidden_size):
    """``U(-1/sqrt(H), 1/sqrt(H))``, PyTorch's default for recurrent weights."""
    k = 1.0 / np.sqrt(hidden_size)
    return rng.uniform(-k, k, size=shape)


@dataclass(frozen=True)
class ParamSpec:
    """A parameter of a cell's own, beyond the fused projection weights.

    Attributes:
        name: its key in a model's ``params`` (a Python identifier, not one of
            ``W_x, W_h, b_x, b_h`` that the cell uses, and without a ``_l<k>`` or
            ``_reverse`` ending: those name deeper layers and reverse directions).
        shape: a tuple of sizes, each an int or one of ``"X"``, ``"H"``, ``"G"``, ``"G*H"``.
        init: ``init(rng, shape, hidden_size) -> array`` (float64, cast to the model's dtype):
            :func:`zeros`, :func:`ones`, :func:`uniform(low, high) <uniform>`,
            :func:`uniform_hidden`, or a function of your own.

    >>> gain = ParamSpec("gamma_c", ("H",), ones)
    >>> gain.resolve_shape(input_size=3, hidden_size=5, gates=4)
    (5,)
    >>> ParamSpec("W_big", ("G*H", "X"), uniform_hidden).resolve_shape(3, 5, 4)
    (20, 3)
    """

    name: str
    shape: tuple
    init: Callable = zeros

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"parameter name must be a Python identifier, got {self.name!r}")
        if re.search(r"(_l\d+|_reverse)$", self.name) or self.name.startswith("W_emb") or self.name in ("W_y", "b_y"):
            raise ValueError(f"parameter name {self.name!r} is reserved: names ending in _l<k> or _reverse "
                             "name deeper layers and reverse directions, W_emb, W_y and b_y belong to the model")
        if not isinstance(self.shape, tuple) or not self.shape:
            raise ValueError(f"parameter {self.name!r}: shape must be a non-empty tuple, got {self.shape!r}")
        for size in self.shape:
            ok = size in SHAPE_SYMBOLS if isinstance(size, str) else (
                isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size >= 1)
            if not ok:
                raise ValueError(f"parameter {self.name!r}: each size in its shape must be a positive int or one of "
                                 f"{SHAPE_SYMBOLS}, got {size!r}")
        if not callable(self.init):
            raise ValueError(f"parameter {self.name!r}: init must be callable (rng, shape, hidden_size) -> array")

    def resolve_shape(self, input_size: int, hidden_size: int, gates: int) -> tuple:
        """The shape in numbers for a layer of these sizes."""
        sizes = {"X": input_size, "H": hidden_size, "G": gates, "G*H": gates * hidden_size}
        return tuple(sizes[s] if isinstance(s, str) else int(s) for s in self.shape)


@dataclass(frozen=True)
class CellSpec:
    """Everything the shared loops need to run a recurrent cell.

    Attributes:
        name: registry name, e.g. ``"lstm"``.
        description: one line for ``numbarnn list cells``.
        gates: G, the number of H-wide gate blocks in the fused weights (RNN 1, LSTM 4, GRU 3).
        states: S, the number of H-wide states carried between steps (h only: 1; h and c: 2).
            ``states[0]`` is always the hidden state h that is the cell's output.
        cache_width: C, how many H-wide blocks the forward kernel saves per step for the backward.
        forward, backward: the pointwise ``@njit`` kernels (see :mod:`numbarnn.kernels.cells`).
        shared_gate_grad: True when ``h @ W_h.T + b_h`` enters the gates only by addition, so
            the gradients of the two projections are equal and one buffer serves both.
        init: ``init(rng, input_size, hidden_size, gates, dtype) -> {W_x, W_h, b_x, b_h}``
            (those of the four the cell uses; others it returns are dropped).
        params: the cell's own parameters (:class:`ParamSpec`), initialised after the fused
            weights from the same generator, in this order. A cell with own parameters has
            kernels that take them (see :mod:`numbarnn.kernels.cells`, "own parameters").
        recurrent_weights: False for a cell with no ``W_h``/``b_h`` (e.g. IndRNN's element-wise
            recurrence): the loops then skip the recurrent product, ``hz_t`` is zeros and the
            backward writes the whole gradient of ``h_{t-1}``.
        projection_biases: False for a cell whose projections carry no bias (``xz_t = x_t @
            W_x.T`` and ``hz_t = h_{t-1} @ W_h.T`` exactly; e.g. a normalisation comes first and
            the cell adds a bias of its own after it).
        torch_module: the ``torch.nn`` class with the same equations and fused layout, if any.
        to_course, from_course: conversions to and from the course's named matrices, if any.
        state_names: names of the states, for messages and docs.
        defaults: default options, shown by ``numbarnn list cells``.
        cuda_pointwise: where the cell's CUDA pointwise pair lives, as a dotted path
            ``"package.module:NAME"`` (NAME a :class:`numbarnn.cuda.cells.CudaPointwise` of two
            ``@cuda.jit(device=True)`` functions), imported only when ``device="cuda"`` is
            asked for, so importing the cell never imports numba.cuda. None: CPU only
            (``device="cuda"`` is then a clear error). See ``docs/gpu.md``.

    Example, the built-in LSTM and a variant of the RNN under another name:
        >>> LSTM.gates, LSTM.states, LSTM.cache_width, LSTM.torch_module
        (4, 2, 5, 'LSTM')
        >>> import dataclasses
        >>> variant = dataclasses.replace(RNN, name="my_rnn", description="the rnn kernels, another name")
        >>> variant.name, variant.forward is RNN.forward
        ('my_rnn', True)
    """

    name: str
    description: str
    gates: int
    states: int
    cache_width: int
    forward: Callable
    backward: Callable
    shared_gate_grad: bool = True
    init: Callable = uniform_init
    torch_module: Optional[str] = None
    to_course: Optional[Callable[[Mapping[str, np.ndarray]], dict]] = None
    from_course: Optional[Callable[[Mapping[str, np.ndarray]], dict]] = None
    state_names: tuple = ("h",)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    cuda_pointwise: Optional[str] = None
    params: tuple = ()
    recurrent_weights: bool = True
    projection_biases: bool = True

    def __post_init__(self):
        for attr in ("gates", "states", "cache_width"):
            value = getattr(self, attr)
            if not isinstance(value, int) or value < (0 if attr == "cache_width" else 1):
                raise ValueError(f"cell {self.name!r}: {attr} must be a positive integer, got {value!r}")
        if len(self.state_names) != self.states:
            raise ValueError(f"cell {self.name!r}: state_names {self.state_names} do not match "
                             f"states={self.states}")
        for attr in ("recurrent_weights", "projection_biases", "shared_gate_grad"):
            if not isinstance(getattr(self, attr), (bool, np.bool_)):
                raise ValueError(f"cell {self.name!r}: {attr} must be True or False, got {getattr(self, attr)!r}")
        if not isinstance(self.params, tuple) or not all(isinstance(p, ParamSpec) for p in self.params):
            raise ValueError(f"cell {self.name!r}: params must be a tuple of numbarnn.cells.ParamSpec, "
                             f"got {self.params!r}")
        names = [p.name for p in self.params]
        clash = sorted({n for n in names if names.count(n) > 1} | (set(names) & set(self.fused_param_names)))
        if clash:
            raise ValueError(f"cell {self.name!r}: parameter name(s) {clash} declared twice (or also a fused "
                             f"weight the cell uses: {self.fused_param_names})")
        if not self.recurrent_weights and not self.shared_gate_grad:
            raise ValueError(f"cell {self.name!r}: a cell without recurrent weights has no recurrent gradient "
                             "of its own: set shared_gate_grad=True")

    # cached_property writes the instance's __dict__ directly, which a frozen dataclass allows: the
    # names are asked for on every training step.
    @cached_property
    def fused_param_names(self) -> tuple:
        """Which of ``W_x, W_h, b_x, b_h`` the cell uses, in that order.

        >>> LSTM.fused_param_names
        ('W_x', 'W_h', 'b_x', 'b_h')
        """
        names = ["W_x"] + (["W_h"] if self.recurrent_weights else [])
        if self.projection_biases:
            names += ["b_x"] + (["b_h"] if self.recurrent_weights else [])
        return tuple(n for n in PARAM_NAMES if n in names)

    @cached_property
    def own_param_names(self) -> tuple:
        """The names of the cell's own parameters, in declared order."""
        return tuple(p.name for p in self.params)

    @cached_property
    def param_names(self) -> tuple:
        """Every parameter of one layer of this cell: the fused weights it uses, then its own."""
        return self.fused_param_names + self.own_param_names

    def param_shapes(self, input_size: int, hidden_size: int) -> dict:
        """``{name: shape}`` of one layer's parameters, in :attr:`param_names` order.

        >>> LSTM.param_shapes(input_size=3, hidden_size=2)
        {'W_x': (8, 3), 'W_h': (8, 2), 'b_x': (8,), 'b_h': (8,)}
        """
        fused = fused_param_shapes(self.gates, input_size, hidden_size)
        shapes = {name: fused[name] for name in self.fused_param_names}
        for p in self.params:
            shapes[p.name] = p.resolve_shape(input_size, hidden_size, self.gates)
        return shapes

    def init_params(self, rng: np.random.Generator, input_size: int, hidden_size: int, dtype) -> dict:
        """Fresh parameters of one layer: :attr:`init` for the fused weights, then each own
        parameter's initialiser, from ``rng`` in that order; checked against :meth:`param_shapes`."""
        fused = self.init(rng, input_size, hidden_size, self.gates, dtype)
        out = {}
        for name, shape in self.param_shapes(input_size, hidden_size).items():
            if name in self.fused_param_names:
                if name not in fused:
                    raise ValueError(f"cell {self.name!r}: its init returned no {name!r}")
                value = fused[name]
            else:
                spec = next(p for p in self.params if p.name == name)
                value = spec.init(rng, shape, hidden_size)
            value = np.asarray(value)
            if value.shape != shape:
                raise ValueError(f"cell {self.name!r}: the initial {name!r} has shape {value.shape}, expected {shape}")
            out[name] = np.ascontiguousarray(value, dtype=dtype)
        return out


# ---- conversions to and from the course's named matrices -----------------------------------

def _rnn_to_course(p):
    return {"Wax": p["W_x"].copy(), "Waa": p["W_h"].copy(), "ba": (p["b_x"] + p["b_h"])[:, None]}


def _rnn_from_course(c):
    ba = c["ba"] if "ba" in c else c["b"]
    return {"W_x": np.array(c["Wax"]), "W_h": np.array(c["Waa"]),
            "b_x": np.array(ba).reshape(-1), "b_h": np.zeros(np.shape(ba)[0], dtype=np.asarray(ba).dtype)}


_LSTM_COURSE_ORDER = (("i", 0), ("f", 1), ("c", 2), ("o", 3))  # course gate name -> fused block


def _lstm_to_course(p):
    H = p["W_h"].shape[1]
    out = {}
    for name, k in _LSTM_COURSE_ORDER:
        rows = slice(k * H, (k + 1) * H)
        out["W" + name] = np.hstack([p["W_h"][rows], p["W_x"][rows]])  # concat = [a_prev; xt]
        out["b" + name] = (p["b_x"][rows] + p["b_h"][rows])[:, None]
    return out


def _lstm_from_course(c):
    H = np.shape(c["Wf"])[0]
    W = [np.asarray(c["W" + name]) for name, _ in _LSTM_COURSE_ORDER]
    b = [np.asarray(c["b" + name]).reshape(-1) for name, _ in _LSTM_COURSE_ORDER]
    W_x = np.vstack([w[:, H:] for w in W])
    return {"W_x": W_x, "W_h": np.vstack([w[:, :H] for w in W]),
            "b_x": np.concatenate(b), "b_h": np.zeros(4 * H, dtype=W_x.dtype)}


RNN = CellSpec(
    name="rnn", description="Elman RNN with tanh: h = tanh(W_x x + b_x + W_h h_prev + b_h)",
    gates=1, states=1, cache_width=0, forward=_k.rnn_forward, backward=_k.rnn_backward,
    torch_module="RNN", to_course=_rnn_to_course, from_course=_rnn_from_course,
    cuda_pointwise="numbarnn.cuda.cells:RNN_CUDA",
)

LSTM = CellSpec(
    name="lstm", description="LSTM with PyTorch's gate equations (gate order i, f, g, o)",
    gates=4, states=2, cache_width=5, forward=_k.lstm_forward, backward=_k.lstm_backward,
    torch_module="LSTM", to_course=_lstm_to_course, from_course=_lstm_from_course,
    state_names=("h", "c"), cuda_pointwise="numbarnn.cuda.cells:LSTM_CUDA",
)

BUILTIN_CELLS = (RNN, LSTM)
