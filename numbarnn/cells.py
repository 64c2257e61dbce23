"""Cells as data: a gate count, a state count and two pointwise ``@njit`` kernels.

:class:`CellSpec` is the whole protocol a cell plugin implements; the shared time
loops (:mod:`numbarnn.kernels.loops`), batching, BPTT, gradient checks, losses,
optimizers and samplers come for free. See ``docs/plugins.md``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import numpy as np

from .kernels import cells as _k

PARAM_NAMES = ("W_x", "W_h", "b_x", "b_h")


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
    shapes = {"W_x": (gates * hidden_size, input_size), "W_h": (gates * hidden_size, hidden_size),
              "b_x": (gates * hidden_size,), "b_h": (gates * hidden_size,)}
    return {name: rng.uniform(-k, k, size=shape).astype(dtype) for name, shape in shapes.items()}


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
        init: ``init(rng, input_size, hidden_size, gates, dtype) -> {W_x, W_h, b_x, b_h}``.
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

    def __post_init__(self):
        for attr in ("gates", "states", "cache_width"):
            value = getattr(self, attr)
            if not isinstance(value, int) or value < (0 if attr == "cache_width" else 1):
                raise ValueError(f"cell {self.name!r}: {attr} must be a positive integer, got {value!r}")
        if len(self.state_names) != self.states:
            raise ValueError(f"cell {self.name!r}: state_names {self.state_names} do not match "
                             f"states={self.states}")


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
