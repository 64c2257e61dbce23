"""The plugin manager: built-in and third-party plugins fill one :class:`~numbarnn.registry.Registry`.

Built-ins are ordinary plugins: small objects with ``@hookimpl`` functions that call
``register(spec)`` for each of ``BUILTIN_CELLS`` (and ``BUILTIN_LOSSES``,
``BUILTIN_OPTIMIZERS``, ``BUILTIN_SAMPLERS``, ``BUILTIN_SCHEDULES`` where those modules exist). Third-party
plugins are found through the entry-point group ``"numbarnn"``::

    [project.entry-points.numbarnn]
    gru = "numbarnn_gru"

The registry is built lazily on first use (``get_registry()``, ``get_cell("lstm")``, ...)
and cached; ``get_registry(reload=True)`` rescans the entry points and the environment.

Isolation. Each third-party plugin is imported and registered on its own. A plugin that
fails to import, fails pluggy's validation, or raises inside one of its ``register_*``
hooks is skipped with a :class:`PluginLoadWarning` naming it (entry point name and
distribution) and the error; anything it had registered before failing is rolled back,
and every other plugin keeps working. Errors in the built-ins are bugs in numbarnn and
are always raised.

Environment switches (read whenever the registry is built):

``NUMBARNN_STRICT_PLUGINS=1``
    Turn those failures into a raised :class:`PluginError` (chained to the original
    exception). Accepts ``1``, ``true``, ``yes``, ``on``; ``0``/empty/unset mean off.
``NUMBARNN_PLUGINS=a,b``
    Allowlist: load only the third-party plugins whose entry-point names are listed. An
    empty value (``NUMBARNN_PLUGINS=``) loads no third-party plugin at all. A listed name
    that is not installed gives a warning (an error in strict mode).
``NUMBARNN_DISABLE_PLUGINS=a,b``
    Denylist: never load these entry-point names (applied after the allowlist).

The switches apply to entry-point plugins only: built-ins always load, and plugins
registered in-process with :func:`register_plugin` are the caller's explicit choice.

For tests and in-process plugins, :func:`register_plugin` / :func:`unregister_plugin`
add or remove a plugin object and update the registry at once (llm's test-fixture style)::

    class MyCells:
        @numbarnn.hookimpl
        def register_cells(self, register):
            register(MY_CELL)

    register_plugin(MyCells(), name="my-cells")
    try:
        ...
    finally:
        unregister_plugin("my-cells")

A plugin registered with :func:`register_plugin` that fails raises its error directly
(``TypeError``, :class:`~numbarnn.registry.DuplicateNameError`, ...) and is left
unregistered.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import pluggy

from . import hookspecs
from .hookspecs import hookimpl
from .registry import HOOKS, KINDS, PLURALS, Registry, RegistryError, close_matches

__all__ = [
    "ENTRY_POINT_GROUP", "PluginError", "PluginLoadWarning", "get_registry",
    "get_plugin_manager", "reset", "register_plugin", "unregister_plugin", "list_plugins",
    "failed_plugins", "list_cells", "list_losses", "list_optimizers", "list_samplers", "list_schedules",
    "get_cell", "get_loss", "get_optimizer", "get_sampler", "get_schedule",
]

ENTRY_POINT_GROUP = "numbarnn"
ENV_STRICT = "NUMBARNN_STRICT_PLUGINS"
ENV_ALLOW = "NUMBARNN_PLUGINS"
ENV_DENY = "NUMBARNN_DISABLE_PLUGINS"
_TRUE = {"1", "true", "yes", "on"}


class PluginError(RegistryError, RuntimeError):
    """A plugin failed to load or register, raised in strict mode (``NUMBARNN_STRICT_PLUGINS=1``).

    Chained (``__cause__``) to the plugin's own exception. Also raised for a misspelled hook.

    >>> issubclass(PluginError, RegistryError) and issubclass(PluginError, RuntimeError)
    True
    """


class PluginLoadWarning(UserWarning):
    """A plugin failed to load or register and was skipped; the rest keeps working.

    The message names the plugin (entry-point name and distribution) and the error; the
    skipped plugins are listed by :func:`failed_plugins` and ``numbarnn plugins``.

    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("error", PluginLoadWarning)   # turn skipped plugins into errors
    ...     registry = get_registry()
    """


# ---- built-in plugins ------------------------------------------------------------------------

class _BuiltinCells:
    @hookimpl
    def register_cells(self, register):
        from .cells import BUILTIN_CELLS
        for spec in BUILTIN_CELLS:
            register(spec)


class _BuiltinLosses:
    @hookimpl
    def register_losses(self, register):
        for spec in importlib.import_module("numbarnn.losses").BUILTIN_LOSSES:
            register(spec)


class _BuiltinOptimizers:
    @hookimpl
    def register_optimizers(self, register):
        for spec in importlib.import_module("numbarnn.optimizers").BUILTIN_OPTIMIZERS:
            register(spec)


class _BuiltinSamplers:
    @hookimpl
    def register_samplers(self, register):
        for spec in importlib.import_module("numbarnn.samplers").BUILTIN_SAMPLERS:
            register(spec)


class _BuiltinSchedules:
    @hookimpl
    def register_schedules(self, register):
        for spec in importlib.import_module("numbarnn.schedules").BUILTIN_SCHEDULES:
            register(spec)


# plugin name (= the module holding the specs) -> plugin class; a module that does not
# exist (yet) is skipped, one that exists but fails is a bug and raises.
_BUILTINS = (("numbarnn.cells", _BuiltinCells), ("numbarnn.losses", _BuiltinLosses),
             ("numbarnn.optimizers", _BuiltinOptimizers), ("numbarnn.samplers", _BuiltinSamplers),
             ("numbarnn.schedules", _BuiltinSchedules))


# ---- state -------------------------------------------------------------------------------------

@dataclass
class PluginInfo:
    """Where a loaded plugin came from (one row of :func:`list_plugins`).

    >>> PluginInfo(name="gru", plugin=None, distribution="numbarnn-gru", version="0.1.0").source
    'entry point'
    """

    name: str
    plugin: Any
    distribution: Optional[str] = None
    version: Optional[str] = None
    source: str = "entry point"  # "builtin", "entry point" or "in-process"
    entry_point: Optional[str] = None  # "name = value" for entry-point plugins


@dataclass
class _State:
    pm: pluggy.PluginManager
    registry: Registry
    infos: dict  # plugin name -> PluginInfo, in load order
    failures: list  # dicts, see failed_plugins()


_lock = threading.RLock()
_state: Optional[_State] = None
_in_process: dict = {}  # name -> plugin object, kept across reloads


class _HookFailure(Exception):
    def __init__(self, hook: str, error: BaseException):
        super().__init__(hook, error)
        self.hook, self.error = hook, error
        self.rolled_back: dict = {}


def _numbarnn_version() -> Optional[str]:
    version = getattr(sys.modules.get("numbarnn"), "__version__", None)
    if version:
        return version
    try:
        return importlib.metadata.version("numbarnn")
    except importlib.metadata.PackageNotFoundError:
        return None


def _env_flag(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() in _TRUE


def _env_names(var: str) -> Optional[set]:
    """None when unset; otherwise the set of comma-separated, stripped, non-empty names."""
    value = os.environ.get(var)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def discover_entry_points() -> list:
    """Entry points of the group ``"numbarnn"``, deduplicated, sorted by name then distribution.

    >>> all(ep.group == ENTRY_POINT_GROUP for ep in discover_entry_points())
    True
    """
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    seen, unique = set(), []
    for ep in found:
        key = (ep.name, ep.value, _dist_name(ep))
        if key not in seen:
            seen.add(key)
            unique.append(ep)
    return sorted(unique, key=lambda ep: (ep.name, _dist_name(ep) or ""))


def _dist_name(ep) -> Optional[str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None
    try:
        return dist.name
    except Exception:  # a distribution with broken metadata must not stop discovery
        return None


def _dist_version(ep) -> Optional[str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None
    try:
        return dist.version
    except Exception:
        return None


def _describe(info: PluginInfo) -> str:
    parts = []
    if info.entry_point:
        parts.append(f"entry point {info.entry_point}")
    if info.distribution:
        parts.append(f"distribution {info.distribution}"
                     + (f" {info.version}" if info.version else ""))
    return f"{info.name!r}" + (f" ({', '.join(parts)})" if parts else "")


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# ---- registering one plugin's specs ----------------------------------------------------------

def _register_specs(pm: pluggy.PluginManager, plugin: Any, info: PluginInfo,
                    registry: Registry) -> None:
    """Call every ``register_*`` hook ``plugin`` implements. Raises :class:`_HookFailure`."""
    callers = pm.get_hookcallers(plugin) or []
    for caller in callers:
        if caller.has_spec():
            continue
        if any(impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls()):
            hint = close_matches(caller.name, HOOKS.values(), n=1)
            hint = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise _HookFailure("validate", PluginError(
                f"unknown hook {caller.name!r}{hint}; numbarnn's hooks are "
                f"{', '.join(HOOKS.values())}"))
    for kind in KINDS:
        hook_name = HOOKS[kind]
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            if impl.plugin is not plugin:
                continue
            if impl.wrapper or impl.hookwrapper:
                raise _HookFailure(hook_name, PluginError(
                    f"{hook_name} must be a plain hook implementation, not a wrapper"))
            is_open = [True]

            def register(spec, _kind=kind, _hook=hook_name, _open=is_open):
                if not _open[0]:
                    raise RuntimeError(f"plugin {info.name!r} called register() after "
                                       f"{_hook} returned; register every spec inside the hook")
                registry.add(_kind, spec, info.name, info.distribution, info.version)

            args = {"register": register}
            try:
                result = impl.function(*[args[name] for name in impl.argnames])
                if result is not None:
                    raise TypeError(f"{hook_name} returned {type(result).__name__}; it should "
                                    f"call register(spec) once per {kind} and return None")
            except (Exception, SystemExit) as exc:
                raise _HookFailure(hook_name, exc) from exc
            finally:
                is_open[0] = False


def _add_plugin(state: _State, plugin: Any, info: PluginInfo) -> None:
    """Register ``plugin`` with pluggy and its specs in the registry, or neither.

    Raises :class:`_HookFailure` (a hook raised; ``rolled_back`` lists what it had
    registered) or pluggy's error from registering (validation, name clashes).
    """
    state.pm.register(plugin, name=info.name)
    try:
        _register_specs(state.pm, plugin, info, state.registry)
    except BaseException as exc:
        rolled_back = state.registry.remove_plugin(info.name)
        state.pm.unregister(plugin=plugin, name=info.name)
        if isinstance(exc, _HookFailure):
            exc.rolled_back = rolled_back
        raise
    state.infos[info.name] = info


def _fail(state: _State, info: PluginInfo, stage: str, exc: BaseException, strict: bool,
          rolled_back: Optional[dict] = None) -> None:
    """Record a skipped third-party plugin; warn, or raise :class:`PluginError` if strict."""
    if stage == "import":
        what = "failed to import"
    elif stage == "validate":
        what = "could not be registered"
    else:
        what = f"raised in {stage}"
    message = f"numbarnn plugin {_describe(info)} {what} and was skipped"
    if rolled_back:
        listing = "; ".join(f"{PLURALS[k]} {', '.join(v)}" for k, v in rolled_back.items())
        message += f" (what it had registered was rolled back: {listing})"
    message += f": {_error_text(exc)}"
    if info.source == "entry point":
        message += (f". Set {ENV_DENY}={info.name} to stop loading it, or "
                    f"{ENV_STRICT}=1 to make this an error.")
    state.failures.append({"name": info.name, "distribution": info.distribution,
                           "version": info.version, "entry_point": info.entry_point,
                           "stage": stage, "error": _error_text(exc)})
    if strict:
        raise PluginError(message) from exc
    warnings.warn(message, PluginLoadWarning, stacklevel=2)


def _try_add(state: _State, plugin: Any, info: PluginInfo, strict: bool) -> bool:
    """Add a third-party plugin; on failure roll back, warn (or raise if strict), return False."""
    try:
        _add_plugin(state, plugin, info)
    except _HookFailure as failure:
        _fail(state, info, failure.hook, failure.error, strict, failure.rolled_back)
        return False
    except (Exception, SystemExit) as exc:  # pluggy validation, plugin already registered
        _fail(state, info, "validate", exc, strict)
        return False
    return True


# ---- building the registry ---------------------------------------------------------------------

def _new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("numbarnn")
    pm.add_hookspecs(hookspecs)
    return pm


def _build() -> _State:
    strict = _env_flag(ENV_STRICT)
    allow = _env_names(ENV_ALLOW)
    deny = _env_names(ENV_DENY) or set()
    state = _State(pm=_new_plugin_manager(), registry=Registry(), infos={}, failures=[])
    version = _numbarnn_version()

    for module, cls in _BUILTINS:
        if importlib.util.find_spec(module) is None:
            continue
        info = PluginInfo(name=module, plugin=cls(), distribution="numbarnn", version=version,
                          source="builtin")
        try:
            _add_plugin(state, info.plugin, info)
        except _HookFailure as failure:  # a bug in numbarnn itself: never hidden
            raise PluginError(f"built-in plugin {module!r} failed in {failure.hook}: "
                              f"{_error_text(failure.error)}") from failure.error

    try:
        entry_points = discover_entry_points()
    except Exception as exc:  # broken metadata somewhere on sys.path
        message = f"numbarnn could not list its entry-point plugins: {_error_text(exc)}"
        if strict:
            raise PluginError(message) from exc
        warnings.warn(message, PluginLoadWarning, stacklevel=3)
        entry_points = []
    if allow is not None:
        missing = sorted(allow - {ep.name for ep in entry_points})
        if missing:
            installed = ", ".join(sorted({ep.name for ep in entry_points})) or "none"
            message = (f"{ENV_ALLOW} names {', '.join(map(repr, missing))}, but no installed "
                       f"plugin has that entry-point name (installed: {installed})")
            if strict:
                raise PluginError(message)
            warnings.warn(message, PluginLoadWarning, stacklevel=3)

    for ep in entry_points:
        if (allow is not None and ep.name not in allow) or ep.name in deny:
            continue
        info = PluginInfo(name=ep.name, plugin=None, distribution=_dist_name(ep),
                          version=_dist_version(ep), source="entry point",
                          entry_point=f"{ep.name} = {ep.value}")
        if ep.name in state.infos:
            other = state.infos[ep.name]
            _fail(state, info, "validate", PluginError(
                f"the plugin name {ep.name!r} is already taken by {_describe(other)}"), strict)
            continue
        try:
            info.plugin = ep.load()
        except (Exception, SystemExit) as exc:
            _fail(state, info, "import", exc, strict)
            continue
        _try_add(state, info.plugin, info, strict)

    for name, plugin in list(_in_process.items()):
        info = PluginInfo(name=name, plugin=plugin, source="in-process")
        _try_add(state, plugin, info, strict)
    return state


def _get_state() -> _State:
    global _state
    with _lock:
        if _state is None:
            _state = _build()
        return _state


def get_registry(reload: bool = False) -> Registry:
    """The :class:`~numbarnn.registry.Registry` of every loaded plugin, built on first use and cached.

    ``reload=True`` rebuilds it: entry points and the environment switches are read again
    (plugins added with :func:`register_plugin` are kept).

    >>> registry = get_registry()
    >>> registry.list("loss")
    ['mse', 'softmax_cross_entropy']
    >>> registry.entry("cell", "lstm").plugin
    'numbarnn.cells'
    """
    global _state
    with _lock:
        if reload:
            _state = None
        return _get_state().registry


def get_plugin_manager() -> pluggy.PluginManager:
    """The pluggy ``PluginManager`` behind the registry (project name ``"numbarnn"``).

    >>> get_plugin_manager().project_name
    'numbarnn'
    """
    return _get_state().pm


def reset() -> None:
    """Forget the cached registry; the next use rebuilds it (with the environment then).

    >>> reset()
    >>> "lstm" in list_cells()          # rebuilt on first use
    True
    """
    global _state
    with _lock:
        _state = None


def register_plugin(plugin: Any, name: Optional[str] = None) -> str:
    """Register an in-process plugin object (module, class or instance) and its specs now.

    Returns the plugin name (``name``, else the object's ``__name__``, else its class name).
    If the plugin fails (wrong spec type, duplicate name, a hook that raises, an unknown
    hook), whatever it registered is rolled back and the error is raised. The plugin stays
    registered across ``get_registry(reload=True)`` until :func:`unregister_plugin`.

    >>> import dataclasses, numbarnn
    >>> class MyCells:
    ...     @numbarnn.hookimpl
    ...     def register_cells(self, register):
    ...         register(dataclasses.replace(numbarnn.RNN, name="my_rnn", description="a copy of rnn"))
    >>> register_plugin(MyCells(), name="my-cells")
    'my-cells'
    >>> get_cell("my_rnn").gates
    1
    >>> unregister_plugin("my-cells")
    True
    """
    if name is None:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
    with _lock:
        state = _get_state()
        if name in state.infos or state.pm.has_plugin(name):
            raise ValueError(f"a plugin named {name!r} is already registered")
        existing = state.pm.get_name(plugin)
        if existing is not None:
            raise ValueError(f"this plugin object is already registered as {existing!r} (an installed "
                             f"package registers through its entry point): unregister_plugin({existing!r}) "
                             "first, or test the registered plugin directly")
        info = PluginInfo(name=name, plugin=plugin, source="in-process")
        try:
            _add_plugin(state, plugin, info)
        except _HookFailure as failure:
            raise failure.error from None
        _in_process[name] = plugin
    return name


def unregister_plugin(name: str) -> bool:
    """Remove a plugin (any source) and everything it registered; False if it was not loaded.

    Entry-point and built-in plugins come back on the next ``get_registry(reload=True)``.

    >>> unregister_plugin("no-such-plugin")
    False
    """
    with _lock:
        _in_process.pop(name, None)
        state = _state
        if state is None or name not in state.infos:
            return False
        info = state.infos.pop(name)
        state.registry.remove_plugin(name)
        if state.pm.has_plugin(name):
            state.pm.unregister(plugin=info.plugin, name=name)
        return True


def list_plugins() -> list:
    """Loaded plugins, built-ins first, as dicts.

    Keys: ``name``, ``distribution``, ``version``, ``source`` (``"builtin"``,
    ``"entry point"`` or ``"in-process"``), ``entry_point`` and, per kind, the sorted
    names it registered: ``cells``, ``losses``, ``optimizers``, ``samplers``, ``schedules``. Built-ins
    report distribution ``"numbarnn"`` with numbarnn's version.

    >>> cells = list_plugins()[0]
    >>> cells["name"], cells["source"], cells["cells"]
    ('numbarnn.cells', 'builtin', ['lstm', 'rnn'])
    """
    state = _get_state()
    out = []
    for info in state.infos.values():
        registered = state.registry.names_by_plugin(info.name)
        row = {"name": info.name, "distribution": info.distribution, "version": info.version,
               "source": info.source, "entry_point": info.entry_point}
        row.update({PLURALS[kind]: registered[kind] for kind in KINDS})
        out.append(row)
    return out


def failed_plugins() -> list:
    """Plugins skipped in the last build: dicts with ``name``, ``distribution``, ``version``,
    ``entry_point``, ``stage`` (``"import"``, ``"validate"`` or the hook that raised) and
    ``error``.

    >>> for failure in failed_plugins():
    ...     print(failure["name"], failure["stage"], failure["error"])
    """
    return [dict(f) for f in _get_state().failures]


# ---- public lookup helpers (re-exported by numbarnn) -------------------------------------------

def list_cells(pattern=None) -> list:
    """Sorted names of the registered cells, optionally filtered by glob pattern(s), e.g. ``"l*"``.

    >>> list_cells("ls*")
    ['lstm']
    >>> "rnn" in list_cells()
    True
    """
    return get_registry().list("cell", pattern)


def list_losses(pattern=None) -> list:
    """Sorted names of the registered losses, optionally filtered by glob pattern(s).

    >>> list_losses()
    ['mse', 'softmax_cross_entropy']
    """
    return get_registry().list("loss", pattern)


def list_optimizers(pattern=None) -> list:
    """Sorted names of the registered optimizers, optionally filtered by glob pattern(s).

    >>> list_optimizers("ad*")
    ['adagrad', 'adam', 'adamw']
    """
    return get_registry().list("optimizer", pattern)


def list_samplers(pattern=None) -> list:
    """Sorted names of the registered samplers, optionally filtered by glob pattern(s).

    >>> list_samplers("top_*")
    ['top_k', 'top_p']
    """
    return get_registry().list("sampler", pattern)


def list_schedules(pattern=None) -> list:
    """Sorted names of the registered learning-rate schedules, optionally filtered by glob pattern(s).

    >>> list_schedules()
    ['constant', 'cosine', 'exponential', 'reduce_on_plateau', 'step']
    """
    return get_registry().list("schedule", pattern)


def get_cell(name):
    """The :class:`~numbarnn.cells.CellSpec` registered as ``name`` (a CellSpec passes through).

    Raises :class:`~numbarnn.registry.UnknownNameError` with close matches otherwise.

    >>> cell = get_cell("lstm")
    >>> cell.gates, cell.states, cell.state_names
    (4, 2, ('h', 'c'))
    """
    return get_registry().get("cell", name)


def get_loss(name):
    """The :class:`~numbarnn.losses.LossSpec` registered as ``name`` (a LossSpec passes through).

    >>> get_loss("mse").targets_kind
    'dense'
    """
    return get_registry().get("loss", name)


def get_optimizer(name):
    """The :class:`~numbarnn.optimizers.OptimizerSpec` registered as ``name`` (an OptimizerSpec passes through).

    >>> dict(get_optimizer("momentum").defaults)
    {'lr': 0.01, 'momentum': 0.9, 'nesterov': False, 'weight_decay': 0.0}
    """
    return get_registry().get("optimizer", name)


def get_sampler(name):
    """The :class:`~numbarnn.samplers.SamplerSpec` registered as ``name`` (a SamplerSpec passes through).

    >>> spec = get_sampler("top_p")
    >>> dict(spec.defaults), spec.is_beam
    ({'p': 0.9, 'temperature': 1.0}, False)
    """
    return get_registry().get("sampler", name)


def get_schedule(name):
    """The :class:`~numbarnn.schedules.ScheduleSpec` registered as ``name`` (a ScheduleSpec passes through).

    >>> dict(get_schedule("step").defaults)
    {'step_size': 1000, 'gamma': 0.1}
    """
    return get_registry().get("schedule", name)
