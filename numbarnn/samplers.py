"""Samplers as data: how the next character is picked from a row of logits.

A :class:`Sampler` turns logits (V,) into an index. Randomness comes only from the
NumPy Generator the caller passes: every stochastic sampler draws exactly one
``rng.random()`` per call and the kernels of :mod:`numbarnn.kernels.sampling` do the
rest, so generated text is reproducible from a seed. ``greedy`` draws nothing.

Example:
    >>> import numpy as np, numbarnn
    >>> sampler = numbarnn.get_sampler("top_k").factory(k=2)
    >>> sampler.choose(np.array([0.0, 3.0, 2.9, -1.0]), np.random.default_rng(0)) in (1, 2)
    True
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional

import numpy as np

from .kernels import sampling as _k
from .optimizers import check_int, check_real, resolve_options


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler.

    Attributes:
        name: registry name, e.g. ``"top_p"``.
        description: one line for ``numbarnn list samplers``.
        defaults: every accepted option with its default value.
        factory: ``factory(**options) -> Sampler``.
        is_beam: True for beam search, which the trainer runs itself (its sampler's
            ``choose`` is not used; the sampler only carries the validated options).

    Example, a sampler plugin's spec (register it from a ``register_samplers`` hook):
        >>> class FirstSampler(Sampler):
        ...     # Always index 0.
        ...     name = "first"
        ...     def distribution(self, logits_row):
        ...         probs = np.zeros(len(logits_row)); probs[0] = 1.0
        ...         return probs
        >>> spec = SamplerSpec(name="first", description="always index 0", defaults={}, factory=FirstSampler)
        >>> spec.factory().choose(np.array([0.0, 5.0]), np.random.default_rng(0))
        0
    """

    name: str
    description: str
    defaults: Mapping[str, Any]
    factory: Callable[..., "Sampler"]
    is_beam: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"sampler name must be a non-empty string, got {self.name!r}")
        if not callable(self.factory):
            raise ValueError(f"sampler {self.name!r}: factory must be callable")


class Sampler:
    """Base class. Subclasses set ``name`` and ``defaults``, validate in ``_validate`` and
    implement ``distribution(logits_row) -> probs (V,) float64``; ``choose`` then samples
    from that distribution with one uniform draw.

    ``Sampler(**options)`` checks the options against ``defaults`` (an unknown one is an
    :class:`~numbarnn.optimizers.UnknownOptionError`); ``options`` holds the resolved dict.

    >>> TemperatureSampler(temperature=0.5).options
    {'temperature': 0.5}
    """

    name: str = "sampler"
    defaults: Mapping[str, Any] = MappingProxyType({})
    is_beam: bool = False
    #: The mode of numbarnn's compiled generation loops (CPU and CUDA) that implements this
    #: class exactly, or None. Read from the class itself, never inherited: a subclass that
    #: changes ``choose`` must not run its parent's kernel (see :func:`generation_kernel_args`).
    generation_mode: Optional[int] = None

    def __init__(self, **options):
        self.options = self._validate(resolve_options("sampler", self.name, options, self.defaults))

    def _validate(self, options: dict) -> dict:
        return options

    def __repr__(self):
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"<{type(self).__name__} {self.name!r} {opts}>"

    @staticmethod
    def _checked_row(logits_row) -> np.ndarray:
        row = np.asarray(logits_row)
        if row.ndim != 1 or row.shape[0] < 1 or not np.issubdtype(row.dtype, np.floating):
            raise ValueError(f"logits_row must be a non-empty 1-D float array, "
                             f"got shape {row.shape} dtype {row.dtype}")
        return row

    def distribution(self, logits_row: np.ndarray) -> np.ndarray:
        """The probabilities (V,) float64 that ``choose`` samples from."""
        raise NotImplementedError

    def choose(self, logits_row: np.ndarray, rng: np.random.Generator) -> int:
        """One index in [0, V) drawn from :meth:`distribution` with one ``rng.random()``."""
        probs = self.distribution(logits_row)
        return int(_k.sample_categorical(probs, rng.random()))


def _softmax(row: np.ndarray, temperature: float) -> np.ndarray:
    # Allocates one (V,) float64 array per call: once per generated character, not per step.
    probs = np.empty(row.shape[0], np.float64)
    _k.apply_temperature(row, temperature, probs)
    return probs


def _temperature(name, options):
    return check_real("sampler", name, "temperature", options["temperature"], low=0.0, low_open=True)


class CategoricalSampler(Sampler):
    """Sample from softmax(logits), the course's ``np.random.choice(V, p=y)``.

    >>> CategoricalSampler().distribution(np.array([0.0, 0.0])).tolist()
    [0.5, 0.5]
    """

    name = "categorical"
    generation_mode = _k.CATEGORICAL

    def distribution(self, logits_row):
        return _softmax(self._checked_row(logits_row), 1.0)


class GreedySampler(Sampler):
    """Always the most likely index (the first one on ties); draws no random number.

    >>> GreedySampler().choose(np.array([0.1, 2.0, 2.0]))
    1
    """

    name = "greedy"
    generation_mode = _k.GREEDY

    def distribution(self, logits_row):
        row = self._checked_row(logits_row)
        probs = np.zeros(row.shape[0], np.float64)
        probs[_k.argmax(row)] = 1.0
        return probs

    def choose(self, logits_row, rng=None):
        return int(_k.argmax(self._checked_row(logits_row)))


class TemperatureSampler(Sampler):
    """Sample from softmax(logits / temperature): < 1 sharper, > 1 flatter.

    >>> logits = np.array([0.0, 1.0])
    >>> TemperatureSampler(temperature=0.5).distribution(logits).round(3).tolist()
    [0.119, 0.881]
    >>> TemperatureSampler(temperature=2.0).distribution(logits).round(3).tolist()
    [0.378, 0.622]
    """

    name = "temperature"
    generation_mode = _k.TEMPERATURE
    defaults = MappingProxyType({"temperature": 1.0})

    def _validate(self, options):
        options["temperature"] = _temperature(self.name, options)
        return options

    def distribution(self, logits_row):
        return _softmax(self._checked_row(logits_row), self.options["temperature"])


class TopKSampler(Sampler):
    """Sample among the k most likely indices (ties: lower index), after temperature.

    >>> TopKSampler(k=2).distribution(np.log(np.array([0.5, 0.3, 0.2]))).round(3).tolist()
    [0.625, 0.375, 0.0]
    """

    name = "top_k"
    generation_mode = _k.TOP_K
    defaults = MappingProxyType({"k": 10, "temperature": 1.0})

    def _validate(self, options):
        options["k"] = check_int("sampler", self.name, "k", options["k"], low=1)
        options["temperature"] = _temperature(self.name, options)
        return options

    def distribution(self, logits_row):
        probs = _softmax(self._checked_row(logits_row), self.options["temperature"])
        out = np.empty_like(probs)
        _k.top_k_filter(probs, self.options["k"], out)
        return out


class TopPSampler(Sampler):
    """Nucleus sampling: among the fewest most likely indices whose mass reaches p.

    >>> TopPSampler(p=0.75).distribution(np.log(np.array([0.5, 0.3, 0.2]))).round(3).tolist()
    [0.625, 0.375, 0.0]
    """

    name = "top_p"
    generation_mode = _k.TOP_P
    defaults = MappingProxyType({"p": 0.9, "temperature": 1.0})

    def _validate(self, options):
        options["p"] = check_real("sampler", self.name, "p", options["p"], low=0.0, high=1.0,
                                  low_open=True)
        options["temperature"] = _temperature(self.name, options)
        return options

    def distribution(self, logits_row):
        probs = _softmax(self._checked_row(logits_row), self.options["temperature"])
        out = np.empty_like(probs)
        _k.top_p_filter(probs, self.options["p"], out)
        return out


class BeamSampler(Sampler):
    """Beam search with ``beam_width`` beams; the trainer runs it (``is_beam``).

    >>> import numbarnn
    >>> trainer = numbarnn.make_trainer("rnn", vocab_size=5, hidden_size=4, seed=0)
    >>> len(trainer.generate(prime=[0], length=4, beam_width=3))    # uses BeamSampler(beam_width=3)
    4
    """

    name = "beam"
    defaults = MappingProxyType({"beam_width": 5})
    is_beam = True

    def _validate(self, options):
        options["beam_width"] = check_int("sampler", self.name, "beam_width", options["beam_width"], low=1)
        return options

    @property
    def beam_width(self) -> int:
        """How many partial sequences the search keeps."""
        return self.options["beam_width"]

    def choose(self, logits_row, rng=None):
        raise NotImplementedError("the 'beam' sampler has is_beam=True: beam search runs in the "
                                  "trainer over whole sequences, not one choice at a time")

    distribution = choose


def generation_kernel_args(sampler) -> Optional[tuple]:
    """``(mode, temperature, k, p)`` for the compiled generation loops when ``sampler``'s own
    class declares a ``generation_mode`` (the built-in samplers but beam search), else None
    (the trainer then calls ``sampler.choose`` step by step).

    >>> generation_kernel_args(TopKSampler(k=3, temperature=0.5)) == (_k.TOP_K, 0.5, 3, 1.0)
    True
    >>> class Mine(TopKSampler):  # inherits no kernel: its choose may differ
    ...     pass
    >>> generation_kernel_args(Mine(k=3)) is None, generation_kernel_args(BeamSampler()) is None
    (True, True)
    """
    mode = type(sampler).__dict__.get("generation_mode")
    if mode is None:
        return None
    options = sampler.options
    return (int(mode), float(options.get("temperature", 1.0)), int(options.get("k", 1)),
            float(options.get("p", 1.0)))


def _spec(cls, description):
    return SamplerSpec(name=cls.name, description=description, defaults=cls.defaults, factory=cls,
                       is_beam=cls.is_beam)


BUILTIN_SAMPLERS = (
    _spec(CategoricalSampler, "sample from softmax(logits), like np.random.choice(V, p=y)"),
    _spec(GreedySampler, "always the most likely next index"),
    _spec(TemperatureSampler, "sample from softmax(logits / temperature)"),
    _spec(TopKSampler, "sample among the k most likely indices"),
    _spec(TopPSampler, "nucleus: sample among the fewest most likely indices with mass >= p"),
    _spec(BeamSampler, "beam search over whole sequences (run by the trainer)"),
)

