"""Typed, named specs, looked up by kind and name.

A :class:`Registry` maps, for each kind (``"cell"``, ``"loss"``, ``"optimizer"``,
``"sampler"``, ``"schedule"``), a name to the spec and the plugin that registered it. It knows nothing
about pluggy or entry points: :mod:`numbarnn.plugins` fills it by calling every plugin's
``register_*`` hooks. Rules:

- a spec must be an instance of its kind's spec class (``CellSpec``, ``LossSpec``, ...),
  otherwise ``TypeError`` naming the plugin;
- a name can be registered once per kind; a second registration raises
  :class:`DuplicateNameError` naming both plugins (a silently replaced kernel would be a
  wrong answer, so there is no override);
- an unknown name raises :class:`UnknownNameError` (a ``LookupError``) that suggests close
  matches and lists every available name.
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib
import re
from typing import Any, Iterable, NamedTuple, Optional, Union

KINDS = ("cell", "loss", "optimizer", "sampler", "schedule")
"""The kinds of things plugins register, in the order they are listed."""

PLURALS = {"cell": "cells", "loss": "losses", "optimizer": "optimizers", "sampler": "samplers",
           "schedule": "schedules"}

HOOKS = {"cell": "register_cells", "loss": "register_losses",
         "optimizer": "register_optimizers", "sampler": "register_samplers", "schedule": "register_schedules"}
"""The hook (see :mod:`numbarnn.hookspecs`) through which each kind is registered."""

SPEC_CLASSES = {"cell": ("numbarnn.cells", "CellSpec"), "loss": ("numbarnn.losses", "LossSpec"),
                "optimizer": ("numbarnn.optimizers", "OptimizerSpec"),
                "sampler": ("numbarnn.samplers", "SamplerSpec"),
                "schedule": ("numbarnn.schedules", "ScheduleSpec")}
"""kind -> (module, class) of its spec; imported lazily."""

_KIND_ALIASES = {**{k: k for k in KINDS}, **{p: k for k, p in PLURALS.items()}}
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+\-]*$")


class RegistryError(Exception):
    """Base class of the registry's errors: catch it to handle any of them.

    >>> issubclass(UnknownNameError, RegistryError) and issubclass(DuplicateNameError, RegistryError)
    True
    """


class UnknownNameError(RegistryError, LookupError):
    """A name that no plugin registered. The message suggests close matches.

    Attributes: ``kind``, ``name``, ``suggestions`` (close matches, best first) and
    ``available`` (every registered name of the kind, sorted).

    >>> error = UnknownNameError("cell", "lstn", ["lstm", "rnn"])
    >>> str(error)
    "unknown cell 'lstn'. Did you mean 'lstm'? Available cells: lstm, rnn"
    >>> error.suggestions, isinstance(error, LookupError)
    (['lstm'], True)
    """

    def __init__(self, kind: str, name: str, available: Iterable[str]):
        self.kind = kind
        self.name = name
        self.available = sorted(available)
        self.suggestions = close_matches(name, self.available)
        plural = PLURALS[kind]
        message = f"unknown {kind} {name!r}."
        if self.suggestions:
            message += f" Did you mean {_or_join([repr(s) for s in self.suggestions])}?"
        if self.available:
            message += f" Available {plural}: {', '.join(self.available)}"
        else:
            message += f" No {plural} are registered."
        super().__init__(message)

    def __str__(self):  # LookupError subclasses such as KeyError would repr() the message
        return self.args[0]


class DuplicateNameError(RegistryError, ValueError):
    """A name registered twice for the same kind. The message names both plugins.

    Attributes: ``kind``, ``name``, ``existing`` and ``new`` (the two :class:`Entry` s).

    >>> from numbarnn.cells import RNN
    >>> registry = Registry()
    >>> registry.add("cell", RNN, plugin="numbarnn.cells", distribution="numbarnn")
    >>> registry.add("cell", RNN, plugin="my-plugin", distribution="my-package")
    Traceback (most recent call last):
    ...
    numbarnn.registry.DuplicateNameError: cell 'rnn' from plugin 'my-plugin' (distribution my-package) is already registered by plugin 'numbarnn.cells' (distribution numbarnn); names must be unique, so uninstall or disable one of the two (NUMBARNN_DISABLE_PLUGINS=my-plugin)
    """

    def __init__(self, kind: str, name: str, existing: "Entry", new: "Entry"):
        self.kind, self.name, self.existing, self.new = kind, name, existing, new
        if existing.plugin == new.plugin:
            message = (f"{kind} {name!r} is registered twice by plugin "
                       f"{_describe(new)}; names must be unique")
        else:
            message = (f"{kind} {name!r} from plugin {_describe(new)} is already registered "
                       f"by plugin {_describe(existing)}; names must be unique")
            if new.distribution and new.distribution != "numbarnn":
                message += (f", so uninstall or disable one of the two "
                            f"(NUMBARNN_DISABLE_PLUGINS={new.plugin})")
        super().__init__(message)


class Entry(NamedTuple):
    """One registered spec and where it came from: ``(spec, plugin, distribution, version)``.

    >>> from numbarnn.plugins import get_registry
    >>> entry = get_registry().entry("optimizer", "adam")
    >>> entry.plugin, entry.distribution
    ('numbarnn.optimizers', 'numbarnn')
    """

    spec: Any
    plugin: str
    distribution: Optional[str] = None
    version: Optional[str] = None


def normalize_kind(kind: str) -> str:
    """``"cell"`` or ``"cells"`` -> ``"cell"``; anything else is a ``ValueError``.

    >>> normalize_kind("samplers"), normalize_kind("loss")
    ('sampler', 'loss')
    """
    try:
        return _KIND_ALIASES[kind]
    except (KeyError, TypeError):
        raise ValueError(f"unknown kind {kind!r}; expected one of: {', '.join(KINDS)}") from None


def spec_class(kind: str) -> type:
    """The spec class of a kind, imported on demand (``CellSpec`` for ``"cell"``, ...).

    >>> spec_class("cells").__name__
    'CellSpec'
    """
    module, cls = SPEC_CLASSES[normalize_kind(kind)]
    return getattr(importlib.import_module(module), cls)


def close_matches(name: str, names: Iterable[str], n: int = 3) -> list:
    """Names close to ``name`` (case-insensitive), best first, as ``difflib`` ranks them; at most ``n``.

    >>> close_matches("ADAMM", ["adam", "adamw", "sgd"])
    ['adam', 'adamw']
    """
    by_lower = {}
    for candidate in names:
        by_lower.setdefault(candidate.lower(), candidate)
    matches = difflib.get_close_matches(str(name).lower(), list(by_lower), n=n, cutoff=0.6)
    return [by_lower[m] for m in matches]


def _or_join(items):
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _describe(entry: Entry) -> str:
    text = repr(entry.plugin)
    if entry.distribution:
        dist = entry.distribution + (f" {entry.version}" if entry.version else "")
        text += f" (distribution {dist})"
    return text


class Registry:
    """Name -> spec, per kind, with the plugin that registered each.

    Example:
        >>> from numbarnn.cells import LSTM, RNN
        >>> registry = Registry()
        >>> registry.add("cell", LSTM, plugin="numbarnn.cells")
        >>> registry.add("cell", RNN, plugin="numbarnn.cells")
        >>> registry.list("cell"), registry.list("cells", "l*")
        (['lstm', 'rnn'], ['lstm'])
        >>> registry.get("cell", "lstn")
        Traceback (most recent call last):
        ...
        numbarnn.registry.UnknownNameError: unknown cell 'lstn'. Did you mean 'lstm'? Available cells: lstm, rnn
    """

    def __init__(self):
        self._entries = {kind: {} for kind in KINDS}

    # -- filling -------------------------------------------------------------------------------
    def add(self, kind: str, spec: Any, plugin: str, distribution: Optional[str] = None,
            version: Optional[str] = None) -> None:
        """Register ``spec`` under ``spec.name`` for ``kind``, on behalf of ``plugin``.

        Raises ``TypeError`` (wrong spec type), ``ValueError`` (an unusable name) or
        :class:`DuplicateNameError` (name taken), each naming the plugin.
        """
        kind = normalize_kind(kind)
        module, cls_name = SPEC_CLASSES[kind]
        try:
            cls = spec_class(kind)
        except (ImportError, AttributeError) as exc:
            raise TypeError(f"plugin {plugin!r} registered a {kind}, but {module}.{cls_name} "
                            f"is not available: {exc}") from exc
        if not isinstance(spec, cls):
            raise TypeError(f"plugin {plugin!r} passed {_short_repr(spec)} "
                            f"(type {type(spec).__module__}.{type(spec).__qualname__}) to "
                            f"register() in {HOOKS[kind]}; it accepts one "
                            f"{module}.{cls_name} per call")
        name = spec.name
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"plugin {plugin!r} registered a {kind} with an unusable name "
                             f"{name!r}: names are non-empty and use only letters, digits "
                             f"and _ . + -")
        new = Entry(spec, plugin, distribution, version)
        table = self._entries[kind]
        if name in table:
            raise DuplicateNameError(kind, name, table[name], new)
        table[name] = new

    def remove_plugin(self, plugin: str) -> dict:
        """Remove everything ``plugin`` registered; returns ``{kind: [names removed]}``."""
        removed = {}
        for kind, table in self._entries.items():
            names = [name for name, entry in table.items() if entry.plugin == plugin]
            for name in names:
                del table[name]
            if names:
                removed[kind] = sorted(names)
        return removed

    # -- lookup ----------------------------------------------------------------------------------
    def get(self, kind: str, name: Union[str, Any]) -> Any:
        """The spec registered as ``name``; :class:`UnknownNameError` if there is none.

        A spec object of the kind is returned unchanged, so callers can accept either a
        registered name or an (unregistered) spec.
        """
        return self.entry(kind, name).spec

    def entry(self, kind: str, name: Union[str, Any]) -> Entry:
        """Like :meth:`get` but returns the :class:`Entry` (spec, plugin, distribution)."""
        kind = normalize_kind(kind)
        if not isinstance(name, str):
            try:
                cls = spec_class(kind)
            except (ImportError, AttributeError):
                cls = None
            if cls is not None and isinstance(name, cls):
                registered = self._entries[kind].get(name.name)
                if registered is not None and registered.spec is name:
                    return registered
                return Entry(name, "<unregistered>")
            raise TypeError(f"a {kind} is given by name (a str), got {_short_repr(name)}")
        try:
            return self._entries[kind][name]
        except KeyError:
            raise UnknownNameError(kind, name, self._entries[kind]) from None

    def list(self, kind: str, pattern: Union[None, str, Iterable[str]] = None):
        """Sorted names of ``kind``, optionally filtered by ``fnmatch`` glob pattern(s).

        Matching is case-insensitive; several patterns give the union of their matches.
        """
        kind = normalize_kind(kind)
        names = self._entries[kind]
        if pattern is None:
            return sorted(names)
        patterns = [pattern] if isinstance(pattern, str) else [str(p) for p in pattern]
        patterns = [p.lower() for p in patterns]
        return sorted(n for n in names if any(fnmatch.fnmatchcase(n.lower(), p) for p in patterns))

    def entries(self, kind: str) -> dict:
        """A copy of ``{name: Entry}`` for ``kind``."""
        return dict(self._entries[normalize_kind(kind)])

    def names_by_plugin(self, plugin: str) -> dict:
        """``{kind: sorted names}`` registered by ``plugin``, for every kind."""
        return {kind: sorted(n for n, e in table.items() if e.plugin == plugin)
                for kind, table in self._entries.items()}

    def __contains__(self, kind_and_name) -> bool:
        kind, name = kind_and_name
        return name in self._entries[normalize_kind(kind)]

    def __len__(self) -> int:
        return sum(len(table) for table in self._entries.values())

    def __repr__(self) -> str:
        counts = ", ".join(f"{len(self._entries[k])} {PLURALS[k]}" for k in KINDS)
        return f"<Registry: {counts}>"


def _short_repr(obj, limit: int = 60) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[:limit - 3] + "..."
