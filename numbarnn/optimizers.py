"""Optimizers as data: a frozen :class:`OptimizerSpec` per entry, and gradient clipping.

An optimizer owns one state array per parameter and slot (Adam's ``exp_avg`` and
``exp_avg_sq``, ...), allocated at construction from the parameters it will update.
``step(params, grads)`` updates the parameters in place through the flat kernels of
:mod:`numbarnn.kernels.optim`. ``state_dict()`` is plain data (arrays and numbers,
no pickle) and ``load_state_dict`` restores it, so a checkpoint resumes bit-exactly.

Example:
    >>> import numpy as np, numbarnn
    >>> params = {"w": np.ones(3)}
    >>> opt = numbarnn.get_optimizer("adam").factory(params, lr=0.1)
    >>> opt.step(params, {"w": np.array([1.0, -1.0, 0.0])})
    >>> params["w"].round(6).tolist()
    [0.9, 1.1, 1.0]
"""
from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional

import numpy as np

from .kernels import optim as _k

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ---- options: shared by optimizers and samplers --------------------------------------------

class UnknownOptionError(TypeError, ValueError):
    """An option name the entry does not accept. Both a TypeError (what Python raises for an
    unexpected keyword) and a ValueError (what a bad configuration raises).

    >>> SGD({"w": np.zeros(2)}, learning_rate=0.1)
    Traceback (most recent call last):
    ...
    numbarnn.optimizers.UnknownOptionError: optimizer 'sgd' got an unknown option 'learning_rate'; accepted options: lr, weight_decay
    """


def resolve_options(kind: str, name: str, options: Mapping[str, Any],
                    defaults: Mapping[str, Any]) -> dict:
    """``defaults`` updated with ``options``; an unknown option is an error naming it,
    suggesting close matches and listing the accepted ones (never silently dropped).

    >>> resolve_options("sampler", "top_k", {"k": 3}, {"k": 10, "temperature": 1.0})
    {'k': 3, 'temperature': 1.0}
    >>> resolve_options("sampler", "top_k", {"kk": 3}, {"k": 10, "temperature": 1.0})
    Traceback (most recent call last):
    ...
    numbarnn.optimizers.UnknownOptionError: sampler 'top_k' got an unknown option 'kk' (did you mean 'k'?); accepted options: k, temperature
    """
    unknown = [key for key in options if key not in defaults]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(defaults), n=3)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        accepted = ", ".join(defaults) if defaults else "none"
        raise UnknownOptionError(f"{kind} {name!r} got an unknown option {key!r}{hint}; "
                                 f"accepted options: {accepted}")
    out = dict(defaults)
    out.update(options)
    return out


def check_real(kind: str, name: str, key: str, value, *, low: float = -math.inf,
               high: float = math.inf, low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a float inside the interval, else ValueError naming the option and value.

    >>> check_real("optimizer", "adam", "beta1", 0.9, low=0.0, high=1.0, high_open=True)
    0.9
    >>> check_real("optimizer", "adam", "beta1", 1.0, low=0.0, high=1.0, high_open=True)
    Traceback (most recent call last):
    ...
    ValueError: optimizer 'adam': option 'beta1' must be in [0, 1), got 1.0
    """
    lb = "(" if low_open else "["
    rb = ")" if high_open else "]"
    interval = f"{lb}{low:g}, {high:g}{rb}"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{kind} {name!r}: option {key!r} must be a number in {interval}, "
                         f"got {value!r}")
    x = float(value)
    ok = (x > low if low_open else x >= low) and (x < high if high_open else x <= high)
    if not ok:  # NaN fails every comparison
        raise ValueError(f"{kind} {name!r}: option {key!r} must be in {interval}, got {value!r}")
    return x


def check_int(kind: str, name: str, key: str, value, *, low: int = 1) -> int:
    """``value`` as an int >= low (bools and floats refused), else ValueError.

    >>> check_int("sampler", "top_k", "k", 5)
    5
    >>> check_int("sampler", "top_k", "k", 2.5)
    Traceback (most recent call last):
    ...
    ValueError: sampler 'top_k': option 'k' must be an integer >= 1, got 2.5
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{kind} {name!r}: option {key!r} must be an integer >= {low}, "
                         f"got {value!r}")
    if value < low:
        raise ValueError(f"{kind} {name!r}: option {key!r} must be an integer >= {low}, "
                         f"got {value!r}")
    return int(value)


def check_bool(kind: str, name: str, key: str, value) -> bool:
    """``value`` as a bool (True, False or a NumPy bool; nothing else), else ValueError.

    >>> check_bool("optimizer", "momentum", "nesterov", np.True_)
    True
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{kind} {name!r}: option {key!r} must be True or False, got {value!r}")
    return bool(value)


def _as_number(key: str, value):
    """A number from a state dict: Python or NumPy scalar, or a 0-d array (np.load gives those)."""
    if isinstance(value, np.ndarray):
        if value.ndim != 0:
            raise ValueError(f"state entry {key!r} must be a number, got an array of shape {value.shape}")
        value = value.item()
    elif isinstance(value, np.generic):
        value = value.item()
    return value


# ---- the spec -------------------------------------------------------------------------------

@dataclass(frozen=True)
class OptimizerSpec:
    """A registered optimizer.

    Attributes:
        name: registry name, e.g. ``"adam"``.
        description: one line for ``numbarnn list optimizers``.
        defaults: every accepted option with its default value.
        factory: ``factory(params: dict[str, ndarray], **options) -> Optimizer``.

    Example:
        >>> import numbarnn
        >>> spec = numbarnn.get_optimizer("sgd")
        >>> spec.factory({"w": np.zeros(3)}, lr=0.5).options
        {'lr': 0.5, 'weight_decay': 0.0}
    """

    name: str
    description: str
    defaults: Mapping[str, Any]
    factory: Callable[..., "Optimizer"]

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"optimizer name must be a non-empty string, got {self.name!r}")
        if not callable(self.factory):
            raise ValueError(f"optimizer {self.name!r}: factory must be callable")


# ---- the optimizers -------------------------------------------------------------------------

class Optimizer:
    """Base class: per-parameter state slots, a step counter and plain-data state dicts.

    Subclasses set ``name``, ``defaults`` (every option with its default), ``slots`` (names
    of the per-parameter state arrays, zero-initialised, same shape and dtype as the
    parameter), and implement ``_validate(options) -> options`` and
    ``_update(p, g, *state)`` on flat (P,) views.

    ``Optimizer(params, **options)``: ``params`` maps names to float32 or float64 arrays of
    any shape (the optimizer keeps their shapes and dtypes); ``state[slot][name]`` has the
    parameter's shape.

    >>> params = {"w": np.ones(2)}
    >>> opt = Momentum(params, lr=0.1, momentum=0.5)
    >>> opt.step(params, {"w": np.array([1.0, -1.0])}); opt.step(params, {"w": np.array([1.0, -1.0])})
    >>> params["w"].tolist(), opt.state["velocity"]["w"].tolist(), opt.step_count
    ([0.75, 1.25], [1.5, -1.5], 2)
    """

    name: str = "optimizer"
    defaults: Mapping[str, Any] = MappingProxyType({})
    slots: tuple = ()
    #: Where this class's CUDA update lives, ``"module:function"`` taking
    #: ``(params, grads, slots, options, step)`` on flat device arrays, or None (CPU only).
    #: Read from the class itself, never inherited: a subclass with another ``_update``
    #: must not run its parent's kernel on the GPU. The slots are ``slots`` above.
    cuda_update: Optional[str] = None

    def __init__(self, params: Mapping[str, np.ndarray], **options):
        self.options = self._validate(resolve_options("optimizer", self.name, options, self.defaults))
        if not isinstance(params, Mapping) or not params:
            raise ValueError(f"optimizer {self.name!r} needs a non-empty dict of parameter arrays")
        self._layout = {}
        for key, p in params.items():
            if not isinstance(p, np.ndarray) or p.dtype not in _FLOAT_DTYPES:
                raise ValueError(f"parameter {key!r} must be a float32 or float64 ndarray, "
                                 f"got {type(p).__name__} {getattr(p, 'dtype', '')}")
            self._layout[key] = (p.shape, p.dtype)
        # Each state slot is one flat buffer in ``params`` order, with a view per parameter,
        # so element-wise optimizers can update everything in one call (``step_flat``).
        dtypes = {dtype for _, dtype in self._layout.values()}
        flat_dtype = dtypes.pop() if len(dtypes) == 1 else None
        self.flat_size = sum(int(np.prod(shape)) for shape, _ in self._layout.values()) if flat_dtype else None
        self._flat_state, self.state = {}, {}
        for slot in self.slots:
            if flat_dtype is None:
                self.state[slot] = {key: np.zeros(shape, dtype) for key, (shape, dtype) in self._layout.items()}
                continue
            flat = self._flat_state[slot] = np.zeros(self.flat_size, flat_dtype)
            self.state[slot], offset = {}, 0
            for key, (shape, _) in self._layout.items():
                size = int(np.prod(shape))
                self.state[slot][key] = flat[offset:offset + size].reshape(shape)
                offset += size
        self.step_count = 0

    # -- options ----------------------------------------------------------------------------
    def _validate(self, options: dict) -> dict:
        options["lr"] = check_real("optimizer", self.name, "lr", options["lr"], low=0.0, low_open=True)
        if "weight_decay" in options:  # the built-ins' L2 penalty (AdamW's decoupled decay)
            options["weight_decay"] = check_real("optimizer", self.name, "weight_decay", options["weight_decay"],
                                                 low=0.0, high=math.inf, high_open=True)
        return options

    @property
    def lr(self) -> float:
        """The learning rate; assign to it for a schedule (validated like the option)."""
        return self.options["lr"]

    @lr.setter
    def lr(self, value):
        # For learning-rate schedules; validated like the option.
        self.options["lr"] = check_real("optimizer", self.name, "lr", value, low=0.0, low_open=True)

    def __repr__(self):
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"<{type(self).__name__} {self.name!r} {opts} step={self.step_count}>"

    # -- the update -------------------------------------------------------------------------
    def step(self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
        """Update every parameter in place from the gradient under the same key.

        Everything is checked before anything is written, so a bad call changes nothing.
        """
        missing = [k for k in self._layout if k not in params]
        extra = [k for k in params if k not in self._layout]
        if missing or extra:
            raise ValueError(f"optimizer {self.name!r} was built for parameters {list(self._layout)}; "
                             f"step() got missing {missing}, unexpected {extra}")
        if set(grads) != set(self._layout):
            raise ValueError(f"grads must have the keys of params {list(self._layout)}; got {list(grads)}")
        work = []
        for key, (shape, dtype) in self._layout.items():
            p = params[key]
            if not isinstance(p, np.ndarray) or p.shape != shape or p.dtype != dtype:
                raise ValueError(f"parameter {key!r} must be an ndarray of shape {shape} and dtype "
                                 f"{dtype}, got {getattr(p, 'shape', None)} {getattr(p, 'dtype', type(p))}")
            if not p.flags.c_contiguous or not p.flags.writeable:
                raise ValueError(f"parameter {key!r} must be C-contiguous and writeable "
                                 "(it is updated in place through a flat view)")
            g = np.asarray(grads[key], dtype=dtype)
            if g.shape != shape:
                raise ValueError(f"gradient {key!r} has shape {g.shape}, expected {shape}")
            work.append((p.reshape(-1), g.reshape(-1), [self.state[s][key].reshape(-1) for s in self.slots]))
        self.step_count += 1
        for p, g, state in work:
            self._update(p, g, *state)

    def _update(self, p, g, *state):
        raise NotImplementedError

    #: True when the update of each element depends only on that element (and the step):
    #: then one call over a flat buffer of every parameter equals one call per parameter.
    elementwise = False

    def state_keys(self):
        """The parameter names, in the order of the flat state buffers."""
        return self._layout.keys()

    def step_flat(self, flat_params: np.ndarray, flat_grads: np.ndarray) -> None:
        """:meth:`step` on one flat buffer holding every parameter in ``params`` order.

        Only for element-wise optimizers built on parameters of one dtype; the trainer
        uses it with the model's ``flat_params`` / ``flat_grads``.
        """
        if not self.elementwise or self.flat_size is None:
            raise ValueError(f"optimizer {self.name!r} cannot update a flat buffer")
        dtype = next(iter(self._layout.values()))[1]
        for label, array in (("flat_params", flat_params), ("flat_grads", flat_grads)):
            if array.shape != (self.flat_size,) or array.dtype != dtype or not array.flags.c_contiguous:
                raise ValueError(f"{label} must be a contiguous ({self.flat_size},) {dtype} array, got "
                                 f"{array.shape} {array.dtype}")
        self.step_count += 1
        self._update(flat_params, flat_grads, *(self._flat_state[s] for s in self.slots))

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Plain data: ``step``, every option, and ``"<slot>.<param>"`` arrays (copies)."""
        out = {"step": self.step_count}
        out.update(self.options)
        for slot in self.slots:
            for key, arr in self.state[slot].items():
                out[f"{slot}.{key}"] = arr.copy()
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (options included, as PyTorch does).

        Keys must match exactly; arrays must have the parameters' shapes. Nothing changes
        unless everything checks.
        """
        expected = ["step", *self.options, *(f"{s}.{k}" for s in self.slots for k in self._layout)]
        missing = [k for k in expected if k not in state]
        extra = [k for k in state if k not in expected]
        if missing or extra:
            raise ValueError(f"optimizer {self.name!r} state dict: missing keys {missing}, "
                             f"unexpected keys {extra}")
        step = _as_number("step", state["step"])
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or not 0 <= step < 2**62:
            # the kernels take it as a 64-bit integer (and add to it)
            raise ValueError(f"state entry 'step' must be an integer in [0, 2**62), got {step!r}")
        options = self._validate({k: _as_number(k, state[k]) for k in self.options})
        arrays = {}
        for slot in self.slots:
            for key, (shape, _) in self._layout.items():
                value = np.asarray(state[f"{slot}.{key}"])
                if value.shape != shape:
                    raise ValueError(f"state entry '{slot}.{key}' has shape {value.shape}, "
                                     f"expected {shape}")
                arrays[slot, key] = value
        for (slot, key), value in arrays.items():
            np.copyto(self.state[slot][key], value)
        self.options = options
        self.step_count = int(step)


class SGD(Optimizer):
    """Plain gradient descent: p -= lr * g (with ``weight_decay``, g + weight_decay * p for g,
    as every built-in but ``adamw`` does: PyTorch's L2 penalty).

    >>> params = {"w": np.ones(2)}
    >>> SGD(params, lr=0.5).step(params, {"w": np.array([1.0, 2.0])})
    >>> params["w"].tolist()
    [0.5, 0.0]
    """

    name = "sgd"
    cuda_update = "numbarnn.cuda.optim:sgd_step"
    elementwise = True
    defaults = MappingProxyType({"lr": 0.01, "weight_decay": 0.0})

    def _update(self, p, g):
        _k.sgd_update(p, g, self.options["lr"], self.options["weight_decay"])


class Momentum(Optimizer):
    """PyTorch's SGD with momentum (dampening 0), optionally Nesterov.

    ``velocity = momentum * velocity + g``; ``p -= lr * velocity`` (with Nesterov,
    ``p -= lr * (g + momentum * velocity)``).

    >>> params = {"w": np.ones(1)}
    >>> Momentum(params, lr=0.1, nesterov=True).step(params, {"w": np.ones(1)})
    >>> params["w"].round(6).tolist()
    [0.81]
    """

    name = "momentum"
    cuda_update = "numbarnn.cuda.optim:momentum_step"
    elementwise = True
    defaults = MappingProxyType({"lr": 0.01, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0})
    slots = ("velocity",)

    def _validate(self, options):
        options = super()._validate(options)
        options["momentum"] = check_real("optimizer", self.name, "momentum", options["momentum"],
                                         low=0.0, high=1.0, high_open=True)
        options["nesterov"] = check_bool("optimizer", self.name, "nesterov", options["nesterov"])
        if options["nesterov"] and options["momentum"] == 0.0:
            raise ValueError(f"optimizer {self.name!r}: option 'nesterov' needs momentum > 0, "
                             f"got momentum={options['momentum']!r}")
        return options

    def _update(self, p, g, velocity):
        o = self.options
        _k.momentum_update(p, g, velocity, o["lr"], o["momentum"], o["nesterov"], o["weight_decay"])


class Adagrad(Optimizer):
    """min-char-rnn's Adagrad: memory += g*g; p -= lr * g / sqrt(memory + eps).

    >>> params = {"w": np.ones(1)}
    >>> Adagrad(params, lr=0.1).step(params, {"w": np.array([2.0])})
    >>> params["w"].round(6).tolist()
    [0.9]
    """

    name = "adagrad"
    cuda_update = "numbarnn.cuda.optim:adagrad_step"
    elementwise = True
    defaults = MappingProxyType({"lr": 0.1, "eps": 1e-8, "weight_decay": 0.0})
    slots = ("memory",)

    def _validate(self, options):
        options = super()._validate(options)
        # eps > 0: with eps = 0 a parameter whose gradient is still zero would get 0/0.
        options["eps"] = check_real("optimizer", self.name, "eps", options["eps"], low=0.0, low_open=True)
        return options

    def _update(self, p, g, memory):
        o = self.options
        _k.adagrad_update(p, g, memory, o["lr"], o["eps"], o["weight_decay"])


class RMSprop(Optimizer):
    """PyTorch's RMSprop: v = alpha v + (1-alpha) g^2; p -= lr g / (sqrt(v) + eps).

    >>> params = {"w": np.ones(1)}
    >>> RMSprop(params, lr=0.01, alpha=0.75).step(params, {"w": np.array([1.0])})
    >>> params["w"].round(6).tolist()                     # 1 - 0.01 / sqrt(0.25)
    [0.98]
    """

    name = "rmsprop"
    cuda_update = "numbarnn.cuda.optim:rmsprop_step"
    elementwise = True
    defaults = MappingProxyType({"lr": 0.001, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0})
    slots = ("square_avg",)

    def _validate(self, options):
        options = super()._validate(options)
        options["alpha"] = check_real("optimizer", self.name, "alpha", options["alpha"],
                                      low=0.0, high=1.0, high_open=True)
        options["eps"] = check_real("optimizer", self.name, "eps", options["eps"], low=0.0)
        return options

    def _update(self, p, g, square_avg):
        o = self.options
        _k.rmsprop_update(p, g, square_avg, o["lr"], o["alpha"], o["eps"], o["weight_decay"])


class Adam(Optimizer):
    """PyTorch's Adam with bias correction (amsgrad off); ``weight_decay`` is its L2 penalty
    (added to the gradient, so it is scaled like the gradient: ``adamw`` decays directly).

    The first step moves every parameter by ``lr`` against the sign of its gradient:

    >>> params = {"w": np.zeros(2)}
    >>> Adam(params, lr=0.1).step(params, {"w": np.array([3.0, -0.5])})
    >>> params["w"].round(6).tolist()
    [-0.1, 0.1]
    """

    name = "adam"
    cuda_update = "numbarnn.cuda.optim:adam_step"
    elementwise = True
    defaults = MappingProxyType({"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0})
    slots = ("exp_avg", "exp_avg_sq")

    def _validate(self, options):
        options = super()._validate(options)
        for key in ("beta1", "beta2"):
            options[key] = check_real("optimizer", self.name, key, options[key],
                                      low=0.0, high=1.0, high_open=True)
        options["eps"] = check_real("optimizer", self.name, "eps", options["eps"], low=0.0)
        return options

    def _update(self, p, g, exp_avg, exp_avg_sq):
        o = self.options
        _k.adam_update(p, g, exp_avg, exp_avg_sq, o["lr"], o["beta1"], o["beta2"], o["eps"],
                       self.step_count, o["weight_decay"], False)


class AdamW(Adam):
    """PyTorch's AdamW: Adam with decoupled weight decay, ``p *= 1 - lr * weight_decay``
    before each update (default 0.01, PyTorch's).

    >>> params = {"w": np.array([1.0, 1.0])}
    >>> AdamW(params, lr=0.1, weight_decay=0.5).step(params, {"w": np.array([1.0, -1.0])})
    >>> params["w"].round(6).tolist()    # 1 * (1 - 0.1 * 0.5), then -+ lr
    [0.85, 1.05]
    """

    name = "adamw"
    cuda_update = "numbarnn.cuda.optim:adamw_step"
    defaults = MappingProxyType({"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01})

    def _update(self, p, g, exp_avg, exp_avg_sq):
        o = self.options
        _k.adam_update(p, g, exp_avg, exp_avg_sq, o["lr"], o["beta1"], o["beta2"], o["eps"],
                       self.step_count, o["weight_decay"], True)


def _spec(cls, description):
    return OptimizerSpec(name=cls.name, description=description, defaults=cls.defaults, factory=cls)


BUILTIN_OPTIMIZERS = (
    _spec(SGD, "plain gradient descent: p -= lr * g"),
    _spec(Momentum, "SGD with momentum, optionally Nesterov (PyTorch's SGD, dampening 0)"),
    _spec(Adagrad, "Adagrad as in min-char-rnn: p -= lr * g / sqrt(sum g^2 + eps)"),
    _spec(RMSprop, "RMSprop as in PyTorch: p -= lr * g / (sqrt(avg g^2) + eps)"),
    _spec(Adam, "Adam as in PyTorch, bias-corrected"),
    _spec(AdamW, "AdamW as in PyTorch: Adam with decoupled weight decay"),
)



# ---- gradient clipping ----------------------------------------------------------------------

CLIP_MODES = ("value", "norm")


def clip_flat(flat: np.ndarray, clip: Optional[float], mode: str) -> float:
    """:func:`clip_gradients` on one flat, C-contiguous, writeable float buffer (the
    model's ``flat_grads``), in one compiled call when ``clip`` is a positive float or None
    (anything else goes through :func:`clip_gradients`, which checks it). Same result,
    same bits.

    >>> g = np.array([3.0, -10.0, 4.0])
    >>> round(clip_flat(g, 5.0, "value"), 4), g.tolist()
    (11.1803, [3.0, -5.0, 4.0])
    """
    if not (clip is None or (type(clip) is float and clip > 0.0 and math.isfinite(clip))) or mode not in CLIP_MODES:
        return clip_gradients({"all": flat}, clip, mode)
    return float(_k.clip_flat(flat, -1.0 if clip is None else clip, mode == "norm"))


def clip_gradients(grads: Mapping[str, np.ndarray], clip: Optional[float], mode: str) -> float:
    """Clip every gradient array in place; returns the global L2 norm *before* clipping.

    ``mode="value"``: the course's ``np.clip(g, -clip, clip, out=g)`` on every array.
    ``mode="norm"``: ``torch.nn.utils.clip_grad_norm_``: when the global norm exceeds
    ``clip``, every array is scaled by ``clip / (norm + 1e-6)``.
    ``clip=None`` clips nothing (the norm is still returned, for logging). A NaN norm
    scales nothing and an infinite one scales by 0; the returned norm tells the caller.
    ``grads`` maps names to float32 or float64 arrays of any shape.

    >>> grads = {"a": np.array([3.0, -10.0]), "b": np.array([[4.0]])}
    >>> round(clip_gradients(grads, 5.0, "value"), 4), grads["a"].tolist()
    (11.1803, [3.0, -5.0])
    >>> grads = {"a": np.array([3.0, 4.0])}
    >>> clip_gradients(grads, 1.0, "norm"), grads["a"].round(4).tolist()
    (5.0, [0.6, 0.8])
    """
    if mode not in CLIP_MODES:
        raise ValueError(f"clip mode must be one of {CLIP_MODES}, got {mode!r}")
    if clip is not None:
        clip = check_real("gradient", "clipping", "clip", clip, low=0.0, low_open=True)
    flats = []
    for key, g in grads.items():
        if not isinstance(g, np.ndarray) or g.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"gradient {key!r} must be a float32 or float64 ndarray, "
                             f"got {type(g).__name__} {getattr(g, 'dtype', '')}")
        if clip is not None and (not g.flags.c_contiguous or not g.flags.writeable):
            raise ValueError(f"gradient {key!r} must be C-contiguous and writeable to be clipped in place")
        flats.append(g.reshape(-1))
    # The norm is accumulated in float64 whatever the dtype of the arrays.
    norm = math.sqrt(sum(_k.sum_of_squares(g) for g in flats))
    if clip is None:
        return norm
    if mode == "value":
        for g in flats:
            _k.clip_by_value(g, clip)
    else:
        coef = clip / (norm + 1e-6)
        if coef < 1.0:  # PyTorch clamps the coefficient at 1; scaling by 1 changes nothing
            for g in flats:
                _k.scale(g, coef)
    return norm
