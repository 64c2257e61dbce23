"""The ``numbarnn`` command line.

::

    numbarnn plugins [--json]                      loaded plugins and what each registers
    numbarnn list cells|losses|optimizers|samplers [PATTERN ...] [--json]

Each subcommand is added by one ``add_<name>_command(subparsers)`` function listed in
:data:`COMMANDS`; it builds its subparser and sets ``func`` to a function
``run(args) -> int``. ``train`` and ``sample`` plug in the same way. Usage errors exit
with code 2 (argparse), registry and plugin errors with 1.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Callable, List, Optional, Sequence

from .registry import KINDS, PLURALS, RegistryError

_KIND_ARGS = {**{p: p for p in PLURALS.values()}, **PLURALS}  # "cell" and "cells" -> "cells"


# ---- output helpers ----------------------------------------------------------------------------

def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells):
        padded = [c.ljust(w) for c, w in zip(cells[:-1], widths[:-1])] + [cells[-1]]
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers)] + [line(r) for r in rows])


def format_defaults(defaults) -> str:
    if not defaults:
        return "-"
    return ", ".join(f"{key}={value!r}" for key, value in defaults.items())


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, default=str))


# ---- numbarnn plugins ----------------------------------------------------------------------------

def add_plugins_command(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "plugins", help="list the loaded plugins and what each registers",
        description="List the loaded plugins (built-in and installed through the entry-point "
                    "group 'numbarnn'), their distribution and version, and the cells, losses, "
                    "optimizers and samplers each registers. Plugins that failed to load are "
                    "listed after them with their error.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run_plugins)
    return parser


def run_plugins(args) -> int:
    from .plugins import failed_plugins, list_plugins

    plugins, failed = list_plugins(), failed_plugins()
    if args.json:
        _print_json({"plugins": plugins, "failed": failed})
        return 0
    rows = []
    for p in plugins:
        registers = "; ".join(f"{PLURALS[k]}: {', '.join(p[PLURALS[k]])}"
                              for k in KINDS if p[PLURALS[k]]) or "-"
        rows.append([p["name"], p["distribution"] or "-", p["version"] or "-", registers])
    print(format_table(["NAME", "DISTRIBUTION", "VERSION", "REGISTERS"], rows))
    if failed:
        print()
        print("Failed to load (skipped):")
        for f in failed:
            origin = f["distribution"] or "unknown distribution"
            if f["version"]:
                origin += f" {f['version']}"
            print(f"  {f['name']} ({origin}): {f['error']}")
    return 0


# ---- numbarnn list ---------------------------------------------------------------------------

def _kind_arg(value: str) -> str:
    return _KIND_ARGS.get(value, value)  # argparse's choices reports anything else


def add_list_command(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "list", help="list registered cells, losses, optimizers or samplers",
        description="List the registered cells, losses, optimizers or samplers with their "
                    "description and default options, optionally filtered by glob patterns "
                    "(case-insensitive, e.g. 'l*' or '*_cross_*').")
    parser.add_argument("kind", type=_kind_arg, choices=list(PLURALS.values()),
                        help="what to list: %(choices)s")
    parser.add_argument("patterns", nargs="*", metavar="PATTERN",
                        help="fnmatch glob pattern(s) on the name; several give the union")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run_list)
    return parser


def run_list(args) -> int:
    from .plugins import get_registry

    kind = {p: k for k, p in PLURALS.items()}[args.kind]
    registry = get_registry()
    names = registry.list(kind, args.patterns or None)
    entries = registry.entries(kind)
    if not names:
        available = ", ".join(registry.list(kind)) or "none"
        what = f" match {' '.join(map(repr, args.patterns))}" if args.patterns else " are registered"
        print(f"numbarnn: no {args.kind}{what} (available: {available})", file=sys.stderr)
        return 1
    if args.json:
        _print_json([{"name": n, "description": entries[n].spec.description,
                      "defaults": dict(entries[n].spec.defaults), "plugin": entries[n].plugin}
                     for n in names])
        return 0
    rows = [[n, format_defaults(entries[n].spec.defaults), entries[n].spec.description]
            for n in names]
    print(format_table(["NAME", "DEFAULTS", "DESCRIPTION"], rows))
    return 0


# ---- the entry point ---------------------------------------------------------------------------

def add_demo_command(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo", help="check the kernels' gradients and train the course's character model",
        description="Check the LSTM kernels' BPTT against finite differences, then train the "
                    "course's character model on the shipped dinosaur names and print samples.")
    parser.add_argument("--iterations", type=int, default=6001, help="training iterations (default: %(default)s)")
    parser.set_defaults(func=run_demo)
    return parser


def run_demo(args) -> int:
    from .demo import run_demo as demo

    if args.iterations < 1:
        print("numbarnn demo: --iterations must be at least 1", file=sys.stderr)
        return 2
    return demo(args.iterations)


COMMANDS: List[Callable] = [add_plugins_command, add_list_command, add_demo_command]
"""Functions ``add(subparsers)`` that each add one subcommand; ``train``/``sample`` go here."""


def build_parser() -> argparse.ArgumentParser:
    from .plugins import _numbarnn_version

    parser = argparse.ArgumentParser(
        prog="numbarnn",
        description="Recurrent networks from scratch on Numba: cells, losses, optimizers "
                    "and samplers from built-in and installed plugins.")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {_numbarnn_version() or 'unknown'}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status (2 for usage errors, as argparse)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    from .plugins import PluginLoadWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PluginLoadWarning)
        try:
            status = int(args.func(args) or 0)
        except RegistryError as exc:
            print(f"numbarnn: error: {exc}", file=sys.stderr)
            status = 1
    for w in caught:
        if issubclass(w.category, PluginLoadWarning):
            print(f"numbarnn: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return status
