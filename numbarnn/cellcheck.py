"""Check a cell against its kernels before any compiled loop runs them.

A :class:`~numbarnn.cells.CellSpec` states its sizes (``gates``, ``states``,
``cache_width``) and names two pointwise kernels; the shared loops size every array
from the spec and trust the kernels to stay inside them. Numba does not check bounds,
so a spec that contradicts its kernels (the LSTM kernels with ``gates=2``) writes past
the loops' arrays and ends in a segfault or a corrupted heap, or leaves gradient rows
unwritten and trains on garbage.

:func:`check_cell` dry-runs both kernels once per cell and process, on tiny arrays
(B = 2, H = 3, a step t = 1 of T = 3), in float64 and in float32, called exactly as the
loops call them: the same argument order, C-contiguous arrays of the loops' shapes, the
same array for ``dxz_t`` and ``dhz_t`` when ``shared_gate_grad``. Each array lies inside a
larger buffer whose other elements hold a guard value, and every element a kernel must
write starts as a poison NaN. Afterwards:

- a changed guard means the kernel wrote outside that array;
- a changed input (``xz_t``, ``hz_t``, ``dstate``, the states other than ``states[:, t+1]``
  in the forward, any state in the backward) means it wrote where the loops keep data;
- a poison left in ``states[:, t+1]``, ``dxz_t``, ``dhz_t`` or ``dstate_prev`` means it left
  an output unwritten;
- NaN or inf in an output from finite inputs means it read outside its arrays (guards
  and unwritten cache are NaN) or is otherwise broken.

A cell with parameters of its own (``CellSpec.params``) gets them too, each guarded and
shaped as declared (with X = 4 input features), and the backward gets their gradient
arrays, zeroed as the loops zero them: writing outside one, into a parameter, or NaN or inf
into a gradient is an error the same way. A cell without recurrent weights gets ``hz_t`` all
zeros, as the loops pass it.

Any of these, a kernel that is not an ``@njit`` function, takes the wrong number of
arguments, fails to compile or raises, is a :class:`CellCheckError` naming the cell,
its plugin and the problem in one line. The dry run calls the kernels' own dispatchers:
it compiles nothing but the kernels, which the loops compile anyway (and built-in kernels
load from Numba's disk cache).

>>> import dataclasses
>>> from numbarnn.cells import LSTM
>>> check_cell(LSTM)          # passes: returns None, and is remembered for the process
>>> check_cell(dataclasses.replace(LSTM, name="lstm_g8", gates=8))
Traceback (most recent call last):
...
numbarnn.cellcheck.CellCheckError: cell 'lstm_g8' (not registered) contradicts its kernels: the backward kernel numbarnn.kernels.cells.lstm_backward left gate blocks 4-7 of dxz_t unwritten (all 8 must be written: gates=8 may be more than the kernel computes) [float64 dry run, B=2, H=3]
"""
from __future__ import annotations

import inspect
import math
import re

import numpy as np
from numba.core.dispatcher import Dispatcher

from .registry import RegistryError

__all__ = ["CellCheckError", "check_cell"]

B, H, T, STEP, X = 2, 3, 3, 1, 4
"""The dry run's sizes: batch, hidden units, steps, the step the kernels are run at
(1, so that a state on either side of it can be watched), and input features (for an own
parameter's shape)."""

DTYPES = (np.float64, np.float32)

ARGUMENTS = {"forward": ("xz_t", "hz_t", "states", "t", "cache_t"),
             "backward": ("dstate", "states", "t", "cache_t", "dxz_t", "dhz_t", "dstate_prev")}
"""Each kernel's arguments, in the order the loops pass them (numbarnn.kernels.cell_loops)."""

OWN_ARGUMENTS = {"forward": ("params",), "backward": ("params", "grads")}
"""What the kernels of a cell with parameters of its own get after those: the tuple of its
parameters, and in the backward the tuple of their gradients."""


def arguments(cell, role: str) -> tuple:
    """The names of ``role``'s kernel arguments for this cell, in the loops' order."""
    return ARGUMENTS[role] + (OWN_ARGUMENTS[role] if cell.params else ())

# Quiet NaNs with payloads: a guard value around every array, a poison in every element a
# kernel must write. Compared bit for bit, so a NaN the kernel computes does not count as
# untouched; read by arithmetic, either makes the result NaN.
_UINT = {np.float64: np.uint64, np.float32: np.uint32}
_GUARD = {np.float64: 0x7FF8_DEAD_BEEF_0001, np.float32: 0x7FC0_DEAD}
_POISON = {np.float64: 0x7FF8_DEAD_BEEF_0002, np.float32: 0x7FC0_BEEF}

_checked = set()  # cells that passed, by (kernels, sizes): checked once per process


class CellCheckError(RegistryError, ValueError):
    """A cell whose spec contradicts its kernels, found by :func:`check_cell`.

    Attributes: ``cell`` (its name), ``plugin`` and ``distribution`` (where it was
    registered; ``plugin`` is None for a cell not in the registry) and ``problem`` (what
    was wrong, one line).

    >>> error = CellCheckError("my_lstm", "the forward kernel raised ValueError: no", plugin="mine")
    >>> str(error)
    "cell 'my_lstm' (plugin 'mine') contradicts its kernels: the forward kernel raised ValueError: no"
    >>> isinstance(error, ValueError) and isinstance(error, RegistryError)
    True
    """

    def __init__(self, cell: str, problem: str, plugin=None, distribution=None):
        self.cell, self.problem, self.plugin, self.distribution = cell, problem, plugin, distribution
        if plugin is None:
            origin = "not registered"
        else:
            origin = f"plugin {plugin!r}" + (f", distribution {distribution}" if distribution else "")
        super().__init__(f"cell {cell!r} ({origin}) contradicts its kernels: {problem}")


def check_cell(cell) -> None:
    """Raise :class:`CellCheckError` unless ``cell``'s kernels match its spec (see the
    module docstring); a cell that passed is not checked again in this process."""
    key = (cell.forward, cell.backward, cell.gates, cell.states, cell.cache_width, cell.shared_gate_grad,
           cell.params, cell.recurrent_weights)
    if key in _checked:
        return
    problem = _problem(cell)
    if problem is not None:
        plugin, distribution = _origin(cell)
        raise CellCheckError(cell.name, problem, plugin, distribution)
    _checked.add(key)


def _origin(cell):
    """(plugin, distribution) that registered this very spec, or (None, None)."""
    try:
        from .plugins import get_registry

        entry = get_registry().entry("cell", cell)
    except Exception:  # naming the plugin is a courtesy: never hide the real error behind it
        return None, None
    if entry.plugin == "<unregistered>":
        return None, None
    distribution = entry.distribution and " ".join(filter(None, (entry.distribution, entry.version)))
    return entry.plugin, distribution


def _problem(cell):
    """What is wrong with ``cell``, in words, or None."""
    for role in ARGUMENTS:
        names = arguments(cell, role)
        kernel = getattr(cell, role)
        label = f"the {role} kernel {_name(kernel)}"
        if not isinstance(kernel, Dispatcher):
            return (f"{label} is not an @njit function (got {type(kernel).__name__}); the compiled "
                    f"loops can only call Numba CPU functions")
        try:
            parameters = inspect.signature(kernel.py_func).parameters.values()
        except (TypeError, ValueError):
            continue  # no Python signature to read: the dry run will tell
        if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters):
            continue
        if len(parameters) != len(names):
            own = " (the cell declares parameters of its own)" if cell.params else ""
            return (f"{label} takes {len(parameters)} arguments "
                    f"({', '.join(p.name for p in parameters)}); a {role} kernel takes {len(names)}{own}: "
                    f"({', '.join(names)})")
    for dtype in DTYPES:
        problem = _dry_run(cell, dtype)
        if problem is not None:
            return f"{problem} [{np.dtype(dtype).name} dry run, B={B}, H={H}]"
    return None


class _Guarded:
    """An array of ``shape`` in the middle of a larger buffer filled with the guard value.

    The array is C-contiguous, as the loops' per-step slices are (so the kernels see the
    types the loops give them); the guard on each side is wide enough to catch a kernel
    that indexes several times past the end.
    """

    def __init__(self, name, shape, dtype, rng):
        self.name, self.shape, self.dtype = name, shape, dtype
        size = math.prod(shape)
        self.pad = max(1024, 8 * size)
        self.buffer = np.empty(size + 2 * self.pad, dtype)
        self.bits = self.buffer.view(_UINT[dtype])
        self.bits[:] = _GUARD[dtype]
        self.array = np.ndarray(shape, dtype, buffer=self.buffer, offset=self.pad * self.buffer.itemsize)
        self.array[...] = rng.uniform(-1.0, 1.0, size=shape)  # finite inputs

    def wrote_outside(self) -> bool:
        guards = np.concatenate([self.bits[:self.pad], self.bits[self.pad + math.prod(self.shape):]])
        return bool((guards != _GUARD[self.dtype]).any())

    def poison(self, index=...):
        self.array[index].view(_UINT[self.dtype])[...] = _POISON[self.dtype]

    def unwritten(self, index=...) -> np.ndarray:
        """True where ``array[index]`` still holds the poison."""
        return self.array[index].view(_UINT[self.dtype]) == _POISON[self.dtype]


def _dry_run(cell, dtype):
    """Run both kernels once at step STEP in ``dtype``; what went wrong, or None."""
    rng = np.random.default_rng(0)
    G, S, C = cell.gates, cell.states, cell.cache_width
    size_hint = {"gates": f"gates={G}", "states": f"states={S}", "cache": f"cache_width={C}"}
    # name -> (guarded array, which spec size fixes its shape)
    arrays = {
        "xz_t": (_Guarded("xz_t", (B, G * H), dtype, rng), "gates"),
        "hz_t": (_Guarded("hz_t", (B, G * H), dtype, rng), "gates"),
        "states": (_Guarded("states", (S, T + 1, B, H), dtype, rng), "states"),
        "cache_t": (_Guarded("cache_t", (B, C * H), dtype, rng), "cache"),
    }
    shapes = {"xz_t": "(B, G*H)", "hz_t": "(B, G*H)", "states": "(S, T+1, B, H)", "cache_t": "(B, C*H)",
              "dstate": "(S, B, H)", "dstate_prev": "(S, B, H)", "dxz_t": "(B, G*H)", "dhz_t": "(B, G*H)"}
    states, cache = arrays["states"][0], arrays["cache_t"][0]
    states.poison((slice(None), STEP + 1))
    cache.poison()  # what the forward does not save reads as NaN in the backward
    if not cell.recurrent_weights:
        arrays["hz_t"][0].array[...] = 0.0  # the loops pass zeros: there is no W_h
    own = {}  # the cell's own parameters, shaped as declared, and their gradients (zeroed as by the loops)
    for spec in cell.params:
        shape = spec.resolve_shape(X, H, G)
        own[spec.name] = _Guarded(spec.name, shape, dtype, rng)
        own["d" + spec.name] = _Guarded("d" + spec.name, shape, dtype, rng)
        own["d" + spec.name].array[...] = 0.0
    own_params = tuple(own[spec.name].array for spec in cell.params)
    own_grads = tuple(own["d" + spec.name].array for spec in cell.params)
    own_values = {name: guarded.array.copy() for name, guarded in own.items() if not name.startswith("d")}

    def own_problem(role):
        for name, guarded in own.items():
            if guarded.wrote_outside():
                return (f"the {role} kernel {_name(getattr(cell, role))} wrote outside {name}, its own "
                        f"{'parameter' if name in own_values else 'gradient'} of shape {guarded.shape} (as declared "
                        f"in params, with X={X}, H={H}, G={G})")
        for name, before in own_values.items():
            problem = changed(role, f"its parameter {name}", before, own[name].array)
            if problem:
                return problem
        return None

    def outside(role, names):
        for name in names:
            guarded, size = arrays[name]
            if guarded.wrote_outside():
                return (f"the {role} kernel {_name(getattr(cell, role))} wrote outside {name}, its "
                        f"{shapes[name]} = {guarded.shape} array ({size_hint[size]} may be less than the "
                        f"kernel uses)")
        return None

    def changed(role, name, before, after):
        if not np.array_equal(before.view(_UINT[dtype]), after.view(_UINT[dtype])):
            return (f"the {role} kernel {_name(getattr(cell, role))} wrote into {name}, which it may only "
                    f"read (the loops keep data there)")
        return None

    # -- forward(xz_t, hz_t, states, t, cache_t) --------------------------------------------
    inputs = {name: arrays[name][0].array.copy() for name in ("xz_t", "hz_t")}
    other_states = np.delete(states.array, STEP + 1, axis=1)
    extra = {"t": STEP, "params": own_params, "grads": own_grads}
    problem = _call(cell, "forward", [extra[n] if n in extra else arrays[n][0].array
                                      for n in arguments(cell, "forward")])
    if problem is None:
        problem = outside("forward", ("xz_t", "hz_t", "states", "cache_t")) or own_problem("forward")
    for name in ("xz_t", "hz_t"):
        problem = problem or changed("forward", name, inputs[name], arrays[name][0].array)
    problem = problem or changed("forward", "states[:, s] for s != t+1", other_states,
                                 np.delete(states.array, STEP + 1, axis=1))
    if problem is None:
        for s in range(S):
            if states.unwritten((s, STEP + 1)).any():
                problem = (f"the forward kernel {_name(cell.forward)} left states[{s}, t+1] "
                           f"({cell.state_names[s]!r}) unwritten (every one of the {S} states must be "
                           f"written: states={S} may be more than the kernel computes)")
                break
    problem = problem or _non_finite(cell, "forward", {"states[:, t+1]": states.array[:, STEP + 1]})
    if problem is not None:
        return problem

    # -- backward(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev) ----------------------
    arrays["dstate"] = (_Guarded("dstate", (S, B, H), dtype, rng), "states")
    arrays["dstate_prev"] = (_Guarded("dstate_prev", (S, B, H), dtype, rng), "states")
    arrays["dxz_t"] = (_Guarded("dxz_t", (B, G * H), dtype, rng), "gates")
    # The loops pass one array for both gradients when they are equal by the spec.
    arrays["dhz_t"] = arrays["dxz_t"] if cell.shared_gate_grad else (_Guarded("dhz_t", (B, G * H), dtype, rng),
                                                                     "gates")
    outputs = ("dxz_t", "dhz_t", "dstate_prev")
    for name in outputs:
        arrays[name][0].poison()
    inputs = {name: arrays[name][0].array.copy() for name in ("dstate", "states")}
    problem = _call(cell, "backward", [extra[n] if n in extra else arrays[n][0].array
                                       for n in arguments(cell, "backward")])
    if problem is None:
        problem = (outside("backward", ("dstate", "states", "cache_t", "dxz_t", "dhz_t", "dstate_prev"))
                   or own_problem("backward"))
    for name in ("dstate", "states"):
        problem = problem or changed("backward", name, inputs[name], arrays[name][0].array)
    if problem is None:
        for name in outputs:
            guarded = arrays[name][0]
            if name == "dstate_prev":
                missing = [s for s in range(S) if guarded.unwritten(s).any()]
                what, count, size = "states", S, f"states={S}"
            else:
                missing = [k for k in range(G) if guarded.unwritten((slice(None), slice(k * H, (k + 1) * H))).any()]
                what, count, size = "gate blocks", G, f"gates={G}"
            if missing:
                what = what if len(missing) > 1 else what[:-1]  # "gate block 4"
                return (f"the backward kernel {_name(cell.backward)} left {what} {_ranges(missing)} of {name} "
                        f"unwritten (all {count} must be written: {size} may be more than the kernel computes)")
    finite = {name: arrays[name][0].array for name in outputs}
    finite.update({name: guarded.array for name, guarded in own.items() if name not in own_values})
    return problem or _non_finite(cell, "backward", finite)


def _call(cell, role, arguments):
    """Call one kernel; what went wrong, in one line, or None."""
    label = f"the {role} kernel {_name(getattr(cell, role))}"
    try:
        getattr(cell, role)(*arguments)
    except Exception as exc:  # noqa: BLE001 - whatever it is, the loops would meet it too
        from numba.core.errors import NumbaError

        if isinstance(exc, NumbaError):
            return f"{label} does not compile for the loops' arguments: {summarize_numba_error(exc)}"
        if isinstance(exc, TypeError) and str(exc).startswith("No matching definition"):
            return f"{label} does not accept the loops' arguments (its explicit signatures): {exc}"
        text = str(exc).strip().splitlines()
        return f"{label} raised {type(exc).__name__}" + (f": {text[0]}" if text else "")
    return None


def _non_finite(cell, role, outputs):
    for name, array in outputs.items():
        if not np.isfinite(array).all():
            return (f"the {role} kernel {_name(getattr(cell, role))} wrote NaN or inf into {name} from "
                    f"finite inputs: it reads outside its arrays, or what the forward did not save (the "
                    f"arrays are sized by gates={cell.gates}, states={cell.states}, cache_width={cell.cache_width})")
    return None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LOCATION = re.compile(r'File "([^"]+)", line (\d+)')


def summarize_numba_error(exc) -> str:
    """A Numba compile error in one line: its first message line and where it points.

    >>> from numba.core.errors import TypingError
    >>> summarize_numba_error(TypingError(
    ...     'Failed in nopython mode pipeline (step: nopython frontend)\\n'
    ...     "Unknown attribute 'foo' of type array(float64, 2d, C)\\n\\n"
    ...     'File "cells.py", line 8:\\ndef fwd(xz_t, hz_t, states, t, cache_t):\\n    <source elided>\\n'))
    "Unknown attribute 'foo' of type array(float64, 2d, C) (cells.py, line 8)"
    """
    text = _ANSI.sub("", str(exc))
    lines = [line.strip() for line in text.splitlines()]
    message = next((line for line in lines if line and not line.startswith(("Failed in ", "File ", "During:"))),
                   type(exc).__name__)
    where = _LOCATION.search(text)
    if where:
        message += f" ({where.group(1).replace(chr(92), '/').rsplit('/', 1)[-1]}, line {where.group(2)})"
    return message


def _name(fn) -> str:
    py = getattr(fn, "py_func", fn)
    module, name = getattr(py, "__module__", None), getattr(py, "__qualname__", None)
    return f"{module}.{name}" if module and name else repr(fn)


def _ranges(indices) -> str:
    """[4, 5, 6, 7, 9] -> '4-7, 9'."""
    parts, start = [], indices[0]
    for previous, current in zip(indices, indices[1:] + [None]):
        if current != previous + 1:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
            start = current
    return ", ".join(parts)
