"""Learning-rate schedules as data: a frozen :class:`ScheduleSpec` per entry.

A schedule says which learning rate each optimizer update uses. ``lr(step, base_lr)``
returns it for the update that follows ``step`` updates already made: ``step`` counts from
0 (the first update is step 0), which is PyTorch's ``last_epoch`` when
``scheduler.step()`` is called once after every ``optimizer.step()``. ``base_lr`` is the
learning rate the trainer was made with (``make_trainer(lr=...)``, ``--lr``). Set
``trainer.schedule`` and :func:`numbarnn.fit.fit` applies it before every step (the
:class:`~numbarnn.fit.LRSchedule` callback), feeds each validation loss to
``observe(val_loss)`` and checkpoints save its name, options and ``state_dict()`` (plain
numbers), so a resumed run is exact.

The built-ins follow ``torch.optim.lr_scheduler`` (``StepLR``, ``ExponentialLR``,
``CosineAnnealingLR``, ``ReduceLROnPlateau``), computed in closed form from the step (the
same values up to rounding), with two differences: ``cosine`` holds ``min_lr`` after
``total_steps`` (PyTorch's climbs back up along the cosine) and may start with a linear
warm-up.

Example:
    >>> import numbarnn
    >>> schedule = numbarnn.get_schedule("step").factory(step_size=2, gamma=0.5)
    >>> [schedule.lr(step, 0.1) for step in range(5)]
    [0.1, 0.1, 0.05, 0.05, 0.025]
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional

from .optimizers import _as_number, check_int, check_real, resolve_options


@dataclass(frozen=True)
class ScheduleSpec:
    """A registered learning-rate schedule.

    Attributes:
        name: registry name, e.g. ``"cosine"``.
        description: one line for ``numbarnn list schedules``.
        defaults: every accepted option with its default value.
        factory: ``factory(**options) -> Schedule``.

    Example, a schedule plugin's spec (register it from a ``register_schedules`` hook):
        >>> class Halving(Schedule):
        ...     # The learning rate halves every 100 steps.
        ...     name = "halving"
        ...     def lr(self, step, base_lr):
        ...         return base_lr * 0.5 ** (step // 100)
        >>> spec = ScheduleSpec(name="halving", description="halve every 100 steps", defaults={}, factory=Halving)
        >>> spec.factory().lr(250, 1.0)
        0.25
    """

    name: str
    description: str
    defaults: Mapping[str, Any]
    factory: Callable[..., "Schedule"]

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"schedule name must be a non-empty string, got {self.name!r}")
        if not callable(self.factory):
            raise ValueError(f"schedule {self.name!r}: factory must be callable")


class Schedule:
    """Base class: the learning rate as a function of the step, plus plain-data state.

    Subclasses set ``name`` and ``defaults``, check options in ``_validate(options) ->
    options`` and implement ``lr(step, base_lr) -> float`` (step from 0; a positive finite
    float). A schedule that reacts to validation overrides ``observe(val_loss)`` and keeps
    what it learnt in ``state_dict()`` / ``load_state_dict()`` (plain numbers and None, so
    they go into a checkpoint's JSON); the others have no state.

    ``Schedule(**options)`` checks the options against ``defaults`` (an unknown one is an
    :class:`~numbarnn.optimizers.UnknownOptionError`); ``options`` holds the resolved dict.

    >>> Constant().options, Constant().lr(10, 0.01), Constant().state_dict()
    ({}, 0.01, {})
    """

    name: str = "schedule"
    defaults: Mapping[str, Any] = MappingProxyType({})

    def __init__(self, **options):
        self.options = self._validate(resolve_options("schedule", self.name, options, self.defaults))

    def _validate(self, options: dict) -> dict:
        return options

    def __repr__(self):
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"<{type(self).__name__} {self.name!r} {opts}>"

    def lr(self, step: int, base_lr: float) -> float:
        """The learning rate of the update that follows ``step`` updates (from 0)."""
        raise NotImplementedError

    def observe(self, val_loss: float) -> None:
        """A validation loss, measured after the latest step. Most schedules ignore it."""

    def state_dict(self) -> dict:
        """What the schedule learnt while training, as plain data (``{}`` for most)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; anything else is a ValueError."""
        if state:
            raise ValueError(f"schedule {self.name!r} keeps no state; got keys {sorted(state)}")


def _gamma(name, options):
    return check_real("schedule", name, "gamma", options["gamma"], low=0.0, high=1.0, low_open=True)


class Constant(Schedule):
    """The base learning rate at every step.

    >>> Constant().lr(1000, 0.5)
    0.5
    """

    name = "constant"

    def lr(self, step, base_lr):
        return float(base_lr)


class Step(Schedule):
    """PyTorch's ``StepLR``: ``base_lr * gamma ** (step // step_size)``.

    >>> [Step(step_size=3, gamma=0.1).lr(s, 1.0) for s in (0, 2, 3, 6)]
    [1.0, 1.0, 0.1, 0.010000000000000002]
    """

    name = "step"
    defaults = MappingProxyType({"step_size": 1000, "gamma": 0.1})

    def _validate(self, options):
        options["step_size"] = check_int("schedule", self.name, "step_size", options["step_size"])
        options["gamma"] = _gamma(self.name, options)
        return options

    def lr(self, step, base_lr):
        return base_lr * self.options["gamma"] ** (step // self.options["step_size"])


class Exponential(Schedule):
    """PyTorch's ``ExponentialLR``, stepped per update: ``base_lr * gamma ** step``.

    >>> Exponential(gamma=0.5).lr(3, 1.0)
    0.125
    """

    name = "exponential"
    defaults = MappingProxyType({"gamma": 0.999})

    def _validate(self, options):
        options["gamma"] = _gamma(self.name, options)
        return options

    def lr(self, step, base_lr):
        return base_lr * self.options["gamma"] ** step


class Cosine(Schedule):
    """PyTorch's ``CosineAnnealingLR`` with ``T_max = total_steps`` and ``eta_min = min_lr``,
    after an optional linear warm-up.

    During the first ``warmup`` steps the rate climbs linearly, ``base_lr * (step + 1) /
    warmup``; then it follows half a cosine from ``base_lr`` at step ``warmup`` down to
    ``min_lr`` at step ``total_steps``, and stays there. ``total_steps`` is required
    (``numbarnn train --lr-schedule cosine`` fills in the run's ``--steps``).

    >>> schedule = Cosine(total_steps=4, min_lr=0.0)
    >>> [round(schedule.lr(s, 1.0), 6) for s in range(6)]
    [1.0, 0.853553, 0.5, 0.146447, 0.0, 0.0]
    >>> [round(Cosine(total_steps=4, warmup=2).lr(s, 1.0), 6) for s in range(5)]
    [0.5, 1.0, 1.0, 0.5, 0.0]
    """

    name = "cosine"
    defaults = MappingProxyType({"total_steps": None, "min_lr": 0.0, "warmup": 0})

    def _validate(self, options):
        if options["total_steps"] is None:
            raise ValueError(f"schedule {self.name!r}: option 'total_steps' is required (the steps the "
                             "cosine spans, an integer >= 1)")
        options["total_steps"] = check_int("schedule", self.name, "total_steps", options["total_steps"])
        options["min_lr"] = check_real("schedule", self.name, "min_lr", options["min_lr"], low=0.0,
                                       high=math.inf, high_open=True)
        options["warmup"] = check_int("schedule", self.name, "warmup", options["warmup"], low=0)
        if options["warmup"] >= options["total_steps"]:
            raise ValueError(f"schedule {self.name!r}: option 'warmup' must be below total_steps "
                             f"({options['total_steps']}), got {options['warmup']}")
        return options

    def lr(self, step, base_lr):
        total, min_lr, warmup = self.options["total_steps"], self.options["min_lr"], self.options["warmup"]
        if step < warmup:
            return base_lr * (step + 1) / warmup
        if step >= total:
            return min_lr
        return min_lr + (base_lr - min_lr) * (1.0 + math.cos(math.pi * (step - warmup) / (total - warmup))) / 2.0


class ReduceOnPlateau(Schedule):
    """PyTorch's ``ReduceLROnPlateau`` (mode ``min``, relative threshold), fed the
    validation losses: after more than ``patience`` validations without a loss below
    ``best * (1 - threshold)``, the rate is multiplied by ``factor`` (never below
    ``min_lr``; a change under 1e-8 is skipped, as PyTorch's ``eps``), then ``cooldown``
    validations pass before counting again.

    Its state (the current rate, the best loss, the validations without improvement, the
    cooldown left) is saved in checkpoints. The rate is the base one until a reduction.

    >>> schedule = ReduceOnPlateau(factor=0.5, patience=1)
    >>> for loss in (3.0, 2.0, 2.5, 2.4, 2.6):
    ...     _ = schedule.lr(0, 0.1)
    ...     schedule.observe(loss)
    >>> schedule.lr(5, 0.1), schedule.state_dict()["num_bad"]
    (0.05, 1)
    """

    name = "reduce_on_plateau"
    defaults = MappingProxyType({"factor": 0.1, "patience": 10, "threshold": 1e-4, "min_lr": 0.0, "cooldown": 0})
    eps = 1e-8  # PyTorch's default: smaller changes of the rate are skipped

    def __init__(self, **options):
        super().__init__(**options)
        self.current: Optional[float] = None  # the rate, once the first lr() call gave the base
        self.best = math.inf
        self.num_bad = 0
        self.cooldown_counter = 0

    def _validate(self, options):
        options["factor"] = check_real("schedule", self.name, "factor", options["factor"], low=0.0, high=1.0,
                                       low_open=True, high_open=True)
        options["patience"] = check_int("schedule", self.name, "patience", options["patience"], low=0)
        options["threshold"] = check_real("schedule", self.name, "threshold", options["threshold"], low=0.0,
                                          high=1.0, high_open=True)
        options["min_lr"] = check_real("schedule", self.name, "min_lr", options["min_lr"], low=0.0,
                                       high=math.inf, high_open=True)
        options["cooldown"] = check_int("schedule", self.name, "cooldown", options["cooldown"], low=0)
        return options

    def lr(self, step, base_lr):
        if self.current is None:
            self.current = float(base_lr)
        return self.current

    def observe(self, val_loss):
        o = self.options
        val_loss = float(val_loss)
        if val_loss < self.best * (1.0 - o["threshold"]):  # NaN never improves
            self.best, self.num_bad = val_loss, 0
        else:
            self.num_bad += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad = 0
        if self.num_bad > o["patience"]:
            if self.current is not None:  # (no rate to reduce before the first lr() call)
                new = max(self.current * o["factor"], o["min_lr"])
                if self.current - new > self.eps:
                    self.current = new
            self.cooldown_counter, self.num_bad = o["cooldown"], 0

    def state_dict(self):
        return {"lr": self.current, "best": None if math.isinf(self.best) else self.best,
                "num_bad": self.num_bad, "cooldown_counter": self.cooldown_counter}

    def load_state_dict(self, state):
        expected = ("lr", "best", "num_bad", "cooldown_counter")
        if not isinstance(state, Mapping) or sorted(state) != sorted(expected):
            keys = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"schedule {self.name!r} state must have the keys {list(expected)}, got {keys}")
        lr, best = (_as_number(k, state[k]) for k in ("lr", "best"))
        # None: not bound to a rate yet (lr), no validation yet (best, which is then inf).
        if lr is not None and not (_is_real(lr) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"schedule {self.name!r}: state 'lr' must be a positive finite number or None, got {lr!r}")
        if best is not None and not (_is_real(best) and not math.isnan(best)):
            raise ValueError(f"schedule {self.name!r}: state 'best' must be a number or None, got {best!r}")
        counts = {}
        for key in ("num_bad", "cooldown_counter"):
            value = _as_number(key, state[key])
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < 2**62:
                raise ValueError(f"schedule {self.name!r}: state {key!r} must be an integer in [0, 2**62), "
                                 f"got {value!r}")
            counts[key] = int(value)
        self.current = None if lr is None else float(lr)
        self.best = math.inf if best is None else float(best)
        self.num_bad, self.cooldown_counter = counts["num_bad"], counts["cooldown_counter"]


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _spec(cls, description):
    return ScheduleSpec(name=cls.name, description=description, defaults=cls.defaults, factory=cls)


BUILTIN_SCHEDULES = (
    _spec(Constant, "the base learning rate at every step"),
    _spec(Step, "StepLR: times gamma every step_size steps"),
    _spec(Exponential, "ExponentialLR per step: base_lr * gamma ** step"),
    _spec(Cosine, "CosineAnnealingLR from base_lr to min_lr over total_steps, after a linear warmup"),
    _spec(ReduceOnPlateau, "ReduceLROnPlateau: times factor after patience validations without improvement"),
)
