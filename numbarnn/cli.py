"""The ``numbarnn`` command line.

::

    numbarnn train [FILE] [--mode names|stream] [--cell ...] ...   train, save a checkpoint
    numbarnn sample CKPT [--n] [--length] [--prime] [--sampler] ...  generate from a checkpoint
    numbarnn plugins [--json]                      loaded plugins and what each registers
    numbarnn list [cells|losses|optimizers|samplers|schedules [PATTERN ...]] [--json]
    numbarnn demo                                  the course's character model, step by step

Each subcommand is added by one ``add_<name>_command(subparsers)`` function listed in
:data:`COMMANDS`; it builds its subparser and sets ``func`` to a function
``run(args) -> int``. ``train`` and ``sample`` plug in the same way. Usage errors exit
with code 2 (argparse), registry and plugin errors with 1; a closed stdout (``| head``) ends
a command quietly with 141.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import stat
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np

from .data import MAX_WORD_VOCAB, printable
from .registry import KINDS, PLURALS, RegistryError

_KIND_ARGS = {**{p: p for p in PLURALS.values()}, **PLURALS}  # "cell" and "cells" -> "cells"


# ---- output helpers ----------------------------------------------------------------------------

def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded.

    ``headers`` has one string per column and each row of ``rows`` one string per header;
    returns the header line and one line per row, without a trailing newline.

    >>> print(format_table(["NAME", "DEFAULTS"], [["sgd", "lr=0.01"], ["momentum", "-"]]))
    NAME      DEFAULTS
    sgd       lr=0.01
    momentum  -
    """
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells):
        padded = [c.ljust(w) for c, w in zip(cells[:-1], widths[:-1])] + [cells[-1]]
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers)] + [line(r) for r in rows])


def format_defaults(defaults) -> str:
    """``key=value, ...`` for a spec's defaults, ``-`` when there are none.

    >>> format_defaults({"lr": 0.01}), format_defaults({})
    ('lr=0.01', '-')
    """
    if not defaults:
        return "-"
    return ", ".join(f"{key}={value!r}" for key, value in defaults.items())


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, default=str))


# ---- numbarnn plugins ----------------------------------------------------------------------------

def add_plugins_command(subparsers) -> argparse.ArgumentParser:
    """Add ``numbarnn plugins``: the loaded plugins and what each registers.

    ``subparsers`` is what ``ArgumentParser.add_subparsers()`` returns; the new
    subparser is returned, its ``func`` set to :func:`run_plugins`:

    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="numbarnn")
    >>> _ = add_plugins_command(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["plugins", "--json"])
    >>> args.command, args.json, args.func is run_plugins
    ('plugins', True, True)
    """
    parser = subparsers.add_parser(
        "plugins", help="list the loaded plugins and what each registers",
        description="List the loaded plugins (built-in and installed through the entry-point "
                    "group 'numbarnn'), their distribution and version, and the cells, losses, "
                    "optimizers, samplers and schedules each registers. Plugins that failed to load are "
                    "listed after them with their error.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run_plugins)
    return parser


def run_plugins(args) -> int:
    """``numbarnn plugins``: a table (or JSON) of loaded and failed plugins; returns 0.

    ``args`` needs ``json`` (bool). The built-in plugins are always listed; which
    others appear depends on what is installed:

    >>> import argparse, contextlib, io, json
    >>> with contextlib.redirect_stdout(io.StringIO()) as out:
    ...     status = run_plugins(argparse.Namespace(json=True))
    >>> report = json.loads(out.getvalue())
    >>> status, sorted(report), "numbarnn.cells" in [p["name"] for p in report["plugins"]]
    (0, ['failed', 'plugins'], True)
    >>> with contextlib.redirect_stdout(io.StringIO()) as out:
    ...     status = run_plugins(argparse.Namespace(json=False))
    >>> status, out.getvalue().splitlines()[0].split()
    (0, ['NAME', 'DISTRIBUTION', 'VERSION', 'REGISTERS'])
    """
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
    """Add ``numbarnn list [cells|losses|optimizers|samplers|schedules [PATTERN ...]]``.

    The kind may be singular or plural (``cell`` and ``cells`` both parse to ``"cells"``)
    and may be left out (every kind is listed); the glob patterns that follow it are optional:

    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="numbarnn")
    >>> _ = add_list_command(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["list", "cell", "l*", "r*"])
    >>> args.kind, args.patterns, args.json, args.func is run_list
    ('cells', ['l*', 'r*'], False, True)
    >>> parser.parse_args(["list"]).kind is None
    True
    """
    parser = subparsers.add_parser(
        "list", help="list registered cells, losses, optimizers, samplers and schedules",
        description="List the registered cells, losses, optimizers, samplers or learning-rate schedules (every kind when "
                    "KIND is left out) with their description and default options, optionally "
                    "filtered by glob patterns (case-insensitive, e.g. 'l*' or '*_cross_*').")
    parser.add_argument("kind", type=_kind_arg, choices=list(PLURALS.values()), nargs="?", metavar="KIND",
                        help="what to list: %(choices)s (default: all of them)")
    parser.add_argument("patterns", nargs="*", metavar="PATTERN",
                        help="fnmatch glob pattern(s) on the name; several give the union")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run_list)
    return parser


def run_list(args) -> int:
    """``numbarnn list [KIND [PATTERN ...]]``: names, defaults and descriptions.

    ``args`` needs ``kind`` (a plural such as ``"losses"``, or None for every kind: a
    heading and a table per kind, or one JSON object keyed by kind), ``patterns`` (a list,
    maybe empty) and ``json``. Returns 0, or 1 (with a message on stderr) when nothing matches:

    >>> import argparse, contextlib, io, json
    >>> with contextlib.redirect_stdout(io.StringIO()) as out:
    ...     status = run_list(argparse.Namespace(kind="optimizers", patterns=["ad*"], json=True))
    >>> status, [entry["name"] for entry in json.loads(out.getvalue())]
    (0, ['adagrad', 'adam', 'adamw'])
    >>> with contextlib.redirect_stdout(io.StringIO()) as out:
    ...     status = run_list(argparse.Namespace(kind="losses", patterns=["mse"], json=False))
    >>> status, out.getvalue().splitlines()[0].split()
    (0, ['NAME', 'DEFAULTS', 'DESCRIPTION'])
    >>> with contextlib.redirect_stderr(io.StringIO()) as err:
    ...     status = run_list(argparse.Namespace(kind="losses", patterns=["nope*"], json=False))
    >>> status, err.getvalue().startswith("numbarnn: no losses match 'nope*'")
    (1, True)
    >>> with contextlib.redirect_stdout(io.StringIO()) as out:
    ...     status = run_list(argparse.Namespace(kind=None, patterns=[], json=True))
    >>> status, list(json.loads(out.getvalue()))
    (0, ['cells', 'losses', 'optimizers', 'samplers', 'schedules'])
    """
    from .plugins import get_registry

    registry = get_registry()
    plurals = [args.kind] if args.kind else list(PLURALS.values())
    report, status = {}, 0
    for plural in plurals:
        kind = {p: k for k, p in PLURALS.items()}[plural]
        names = registry.list(kind, args.patterns or None)
        entries = registry.entries(kind)
        if not names:
            available = ", ".join(registry.list(kind)) or "none"
            what = f" match {' '.join(map(repr, args.patterns))}" if args.patterns else " are registered"
            print(f"numbarnn: no {plural}{what} (available: {available})", file=sys.stderr)
            status = 1
        report[plural] = [{"name": n, "description": entries[n].spec.description,
                           "defaults": dict(entries[n].spec.defaults), "plugin": entries[n].plugin} for n in names]
    if args.json:
        _print_json(report if args.kind is None else report[args.kind])
        return status
    for number, (plural, listed) in enumerate(report.items()):
        if args.kind is None:  # every kind: a heading over each table
            print(("\n" if number else "") + f"{plural}:")
        if listed:
            print(format_table(["NAME", "DEFAULTS", "DESCRIPTION"],
                               [[e["name"], format_defaults(e["defaults"]), e["description"]] for e in listed]))
    return status


# ---- the entry point ---------------------------------------------------------------------------

def add_demo_command(subparsers) -> argparse.ArgumentParser:
    """Add ``numbarnn demo``: the course's character model through ``numbarnn.course``.

    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="numbarnn")
    >>> _ = add_demo_command(parser.add_subparsers(dest="command"))
    >>> parser.parse_args(["demo"]).iterations, parser.parse_args(["demo", "--iterations", "3"]).iterations
    (6001, 3)
    >>> parser.parse_args(["demo"]).func is run_demo
    True
    """
    parser = subparsers.add_parser(
        "demo", help="check the kernels' gradients and train the course's character model",
        description="Check the LSTM kernels' BPTT against finite differences, then train the "
                    "course's character model on the shipped dinosaur names and print samples.")
    parser.add_argument("--iterations", type=int, default=6001, help="training iterations (default: %(default)s)")
    parser.set_defaults(func=run_demo)
    return parser


def run_demo(args) -> int:
    """``numbarnn demo``: a gradient check, then the course's ``model`` on the shipped names.

    ``args`` needs ``iterations``; returns 0, or 2 (with a message on stderr) when it is
    below 1. One iteration is quick:

    >>> import argparse, contextlib, io
    >>> with contextlib.redirect_stdout(io.StringIO()) as out:
    ...     status = run_demo(argparse.Namespace(iterations=1))
    >>> status, out.getvalue().startswith("LSTM BPTT vs central finite differences")
    (0, True)
    >>> with contextlib.redirect_stderr(io.StringIO()) as err:
    ...     status = run_demo(argparse.Namespace(iterations=0))
    >>> status, err.getvalue().strip()
    (2, 'numbarnn demo: --iterations must be at least 1')
    """
    from .demo import run_demo as demo

    if args.iterations < 1:
        print("numbarnn demo: --iterations must be at least 1", file=sys.stderr)
        return 2
    return demo(args.iterations)


# ---- numbarnn train / numbarnn sample -------------------------------------------------------------

_SHARED_DEFAULTS = dict(loss="softmax_cross_entropy", optimizer="adam", sampler="top_p", dropout=0.0, clip=5.0,
                        clip_mode="value", dtype="float32", seed=0)
TRAIN_DEFAULTS = {
    # Tuned on two cores for the shipped dinosaur names: plausible names in well under a minute.
    # Validation perplexity bottoms out near step 500 (about 11 epochs), so early stopping
    # with patience 3 keeps the best weights.
    "names": dict(_SHARED_DEFAULTS, cell="lstm", hidden=128, layers=1, batch=32, lr=0.005, steps=1000,
                  seq_length=None, eval_every=100, patience=3),
    "stream": dict(_SHARED_DEFAULTS, cell="lstm", hidden=256, layers=1, batch=32, lr=0.003, steps=2000,
                   seq_length=64, eval_every=250, patience=None),
}
"""What ``numbarnn train`` uses for an option left out, per mode. Options that shape the
model default to None in the parser, so ``--resume`` can tell the ones given from the
ones left out."""


def _usage_error(parser, message) -> int:
    parser.print_usage(sys.stderr)
    # One line, whatever the message quotes (file names, vocabulary characters).
    print(f"{parser.prog}: error: {printable(message, keep='')}", file=sys.stderr)
    return 2


# Value checks, run before anything is loaded or allocated: (option, test, what it must be).
_COUNT = (lambda v: v >= 1, "must be at least 1")
_COUNT0 = (lambda v: v >= 0, "must be at least 0")
_POSITIVE = (lambda v: math.isfinite(v) and v > 0, "must be a positive finite number")
_NONNEGATIVE = (lambda v: math.isfinite(v) and v >= 0, "must be a finite number at least 0")
_FRACTION = (lambda v: 0 <= v < 1, "must be a fraction in [0, 1)")  # NaN fails every comparison
_TRAIN_CHECKS = {"hidden": _COUNT, "layers": _COUNT, "batch": _COUNT, "seq_length": _COUNT, "steps": _COUNT,
                 "threads": _COUNT, "eval_every": _COUNT, "epochs": _POSITIVE, "lr": _POSITIVE, "clip": _NONNEGATIVE,
                 "dropout": _FRACTION, "validation": _FRACTION, "seed": _COUNT0, "patience": _COUNT0,
                 "sample_every": _COUNT0, "checkpoint_every": _COUNT, "embedding": _COUNT,
                 "max_vocab": (lambda v: 3 <= v <= MAX_WORD_VOCAB,
                               f"must be from 3 (<unk>, the newline and a word) to {MAX_WORD_VOCAB}")}
_SAMPLE_CHECKS = {"n": _COUNT, "length": _COUNT, "top_k": _COUNT, "beam_width": _COUNT, "seed": _COUNT0,
                  "temperature": _POSITIVE,
                  "top_p": (lambda v: 0 < v <= 1, "must be a probability in (0, 1]")}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _value_problem(args, checks) -> Optional[str]:
    """The first option of ``args`` given a value its check refuses, as a message; None if all pass.

    >>> import argparse
    >>> _value_problem(argparse.Namespace(lr=float("inf"), seed=None), {"lr": _POSITIVE, "seed": _COUNT0})
    '--lr must be a positive finite number, got inf'
    """
    for name, (ok, must) in checks.items():
        value = getattr(args, name)
        if value is not None and not ok(value):
            return f"{_flag(name)} {must}, got {value}"
    return None


def _available_memory() -> Optional[int]:
    """Bytes this process can still allocate: the system's available memory, or what is left
    under a container's (cgroup v2) limit when that is less; None where neither is known."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            found += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def _memory_problem(what: str, needed: int) -> Optional[str]:
    """A message when ``needed`` bytes cannot fit in the memory available, else None."""
    from .data import format_bytes

    available = _available_memory()
    if available is None or needed <= available:
        return None
    return (f"{what} need about {format_bytes(needed)}, more than the {format_bytes(available)} of memory "
            "available")


def train_memory(cell, vocab_size: int, hidden: int, layers: int, batch: int, steps: int, itemsize: int,
                 embedding: Optional[int] = None) -> int:
    """Estimated bytes to train: the weights eight times over (weights, gradients, two optimizer
    slots, ``fit``'s copies of the last good weights and optimizer slots and of the best
    weights) plus one step's buffers for ``batch`` sequences of ``steps`` tokens. With an ``embedding`` E, the first layer reads E
    columns instead of ``vocab_size`` and the (V, E) table and its outputs are added.

    >>> from numbarnn.cells import LSTM
    >>> train_memory(LSTM, vocab_size=27, hidden=128, layers=1, batch=32, steps=27, itemsize=4) < 2**24
    True
    >>> train_memory(LSTM, vocab_size=27, hidden=10**6, layers=1, batch=32, steps=27, itemsize=4) > 2**40
    True
    >>> train_memory(LSTM, vocab_size=10**7, hidden=8, layers=1, batch=1, steps=1, itemsize=4, embedding=10**3) > 2**37
    True
    """
    G, S, C, V, H, T, B = cell.gates, cell.states, cell.cache_width, vocab_size, hidden, steps, batch
    X = V if embedding is None else embedding  # the first layer's input width
    weights = G * H * (X + H + 2) + (layers - 1) * G * H * (2 * H + 2) + V * H + V
    step = layers * (T * B * H * (3 * G + C + 1) + S * (T + 1) * B * H) + 3 * T * B * V
    if embedding is not None:
        weights += V * embedding
        step += 2 * T * B * embedding  # the embedded inputs and their gradient
    return itemsize * (8 * weights + step)


_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"%PDF", b"%!PS", b"<?xml")  # what matplotlib's savefig writes


def _is_checkpoint(path) -> bool:
    """Whether ``path`` looks like a numbarnn checkpoint: a zip holding ``meta.npy``."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return "meta.npy" in archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False


def _is_picture(path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8).startswith(_IMAGE_MAGIC)
    except OSError:
        return False


def output_problem(flag: str, path, may_replace: Callable, inputs=()) -> Optional[str]:
    """Why ``path`` must not be written for the option ``flag``, or None when it may.

    Refused: a symbolic link, a directory, anything but a regular file (a device, a pipe),
    the same file as one of ``inputs`` (``(option, path)`` pairs, compared with
    ``os.path.samefile`` so links count), an existing non-empty file ``may_replace(path)``
    does not recognise as this option's own kind of output, and a path whose folder
    cannot be created or written. Checked before training, so nothing is lost.

    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> output_problem("--out", folder, _is_checkpoint)
    '--out ... is a directory; name a file (e.g. .../model.ckpt)'
    >>> output_problem("--out", os.path.join(folder, "new", "model.ckpt"), _is_checkpoint) is None
    True
    >>> output_problem("--out", "/dev/null", _is_checkpoint)
    '--out /dev/null is not a regular file (a device, pipe or socket); refusing to replace it'
    """
    shown = os.fspath(path)
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        info = None  # the folder check below says what is wrong
    except OSError as error:
        return f"{flag} {shown} cannot be checked: {error.strerror}"
    if info is not None:
        if stat.S_ISLNK(info.st_mode):
            return (f"{flag} {shown} is a symbolic link; name the file itself (numbarnn does not write "
                    "through links)")
        if stat.S_ISDIR(info.st_mode):
            return f"{flag} {shown} is a directory; name a file (e.g. {os.path.join(shown, 'model.ckpt')})"
        if not stat.S_ISREG(info.st_mode):
            return f"{flag} {shown} is not a regular file (a device, pipe or socket); refusing to replace it"
    target = os.path.realpath(path)
    for label, other in inputs:
        if other is None:
            continue
        try:
            same = os.path.samefile(path, other) if info is not None else target == os.path.realpath(other)
        except OSError:
            same = target == os.path.realpath(other)
        if same:
            return f"{flag} {shown} is the same file as {label} {os.fspath(other)}; it would be overwritten"
    if info is not None and info.st_size > 0 and not may_replace(path):
        return f"{flag} {shown} exists and is not a file numbarnn wrote there before; refusing to overwrite it"
    folder = Path(target).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the nearest existing folder: the rest is created when saving
    if not folder.is_dir():
        return f"{flag} {shown}: {folder} is not a directory"
    try:  # the one sure test that the folder is writable (read-only mounts, /proc, ACLs)
        with tempfile.TemporaryFile(dir=folder, prefix=".numbarnn-probe-"):
            pass
    except OSError as error:
        return f"{flag} {shown}: cannot write in {folder} ({error.strerror})"
    return None


# Options that --resume takes from the checkpoint: option -> its value in the checkpoint's config.
_RESUMED = {"cell": lambda c: c.get("cell"), "hidden": lambda c: c.get("hidden_size"),
            "layers": lambda c: c.get("layers"), "dropout": lambda c: c.get("dropout"),
            "dtype": lambda c: c.get("dtype"), "loss": lambda c: c.get("loss"),
            "optimizer": lambda c: c.get("optimizer"), "sampler": lambda c: c.get("sampler"),
            "lr": lambda c: (c.get("optimizer_options") or {}).get("lr"),
            "clip": lambda c: c.get("clip") or 0.0,  # None (clipping off) is what --clip 0 gives
            "clip_mode": lambda c: c.get("clip_mode"), "seed": lambda c: c.get("seed"),
            "mode": lambda c: c.get("mode"), "embedding": lambda c: c.get("embedding"),
            "tokens": lambda c: c.get("tokens", "chars"),  # the checkpoint's meta["tokens"], put in by run_train
            "max_vocab": lambda c: c.get("max_vocab")}


def parse_schedule(text: str):
    """``--lr-schedule NAME[:KEY=VALUE,...]`` as ``(name, options)``; a value is an int, a
    float, true or false, else a string. A malformed option is a ValueError naming it.

    >>> parse_schedule("cosine:total_steps=1000,min_lr=1e-4,warmup=10")
    ('cosine', {'total_steps': 1000, 'min_lr': 0.0001, 'warmup': 10})
    >>> parse_schedule("constant")
    ('constant', {})
    >>> parse_schedule("step:gamma")
    Traceback (most recent call last):
    ...
    ValueError: --lr-schedule 'step:gamma': write each option as KEY=VALUE, e.g. step:step_size=100,gamma=0.5
    """
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"--lr-schedule {text!r}: name a schedule first (see `numbarnn list schedules`), e.g. "
                         "cosine or step:step_size=100,gamma=0.5")
    options = {}
    for item in rest.split(",") if rest.strip() else []:
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key or not value:
            raise ValueError(f"--lr-schedule {text!r}: write each option as KEY=VALUE, e.g. "
                             "step:step_size=100,gamma=0.5")
        if key in options:
            raise ValueError(f"--lr-schedule {text!r}: option {key!r} is given twice")
        options[key] = _option_value(value)
    return name, options


def _option_value(text: str):
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def schedule_conflicts(given, saved) -> List[str]:
    """``["--lr-schedule ..."]`` when the ``(name, options)`` given with ``--resume`` is not
    the schedule the checkpoint records (``saved``: its ``schedule`` record, or None); a
    schedule is neither added to nor changed in a resumed run. Options left out are the
    checkpoint's.

    >>> saved = {"name": "step", "options": {"step_size": 100, "gamma": 0.5}, "state": {}}
    >>> schedule_conflicts(("step", {"gamma": 0.5}), saved), schedule_conflicts(("step", {"gamma": 0.1}), saved)
    ([], ['--lr-schedule step:gamma=0.1'])
    """
    if given is None:
        return []
    name, options = given
    shown = name + (":" + ",".join(f"{k}={v}" for k, v in options.items()) if options else "")
    if saved is None or saved.get("name") != name or any(saved["options"].get(k, _MISSING) != v
                                                          for k, v in options.items()):
        return [f"--lr-schedule {shown}"]
    return []


_MISSING = object()


def resume_conflicts(args, config: dict) -> List[str]:
    """The options given with ``--resume`` that differ from the checkpoint's ``config``,
    as ``"--flag value"`` strings (the resumed run keeps the checkpoint's model).

    >>> import argparse
    >>> args = argparse.Namespace(**{**dict.fromkeys(_RESUMED), "cell": "gru", "hidden": 64, "layers": 1})
    >>> resume_conflicts(args, {"cell": "lstm", "hidden_size": 128, "layers": 1})
    ['--cell gru', '--hidden 64']
    """
    conflicts = []
    for name, saved in _RESUMED.items():
        given, value = getattr(args, name), saved(config)
        # None: not recorded (older checkpoints; max_vocab of a model not made by numbarnn train)
        if given is not None and given != value and not (name in ("mode", "max_vocab") and value is None):
            conflicts.append(f"{_flag(name)} {given}")
    return conflicts


def _other_vocabulary(checkpoint, data_name, unrecorded: bool) -> str:
    """The error for a resumed checkpoint whose vocabulary is not the data's."""
    message = f"{checkpoint} was trained on another vocabulary than {data_name}"
    if unrecorded:  # written before checkpoints recorded their data: the default was tried
        message += (f"; {checkpoint} does not record what text it was trained on (an older checkpoint), so name it: "
                    f"numbarnn train FILE --resume {checkpoint}")
    return message


def add_train_command(subparsers) -> argparse.ArgumentParser:
    """Add ``numbarnn train``: train a character-level model and save a checkpoint.

    Options left out parse to None (or their default) and :func:`run_train` fills them
    from :data:`TRAIN_DEFAULTS` for the mode (or from the checkpoint with ``--resume``);
    the subparser is stored in ``args.parser`` for usage errors:

    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="numbarnn")
    >>> _ = add_train_command(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["train", "--steps", "2", "--hidden", "4", "--clip-mode", "norm"])
    >>> args.file, args.steps, args.hidden, args.clip_mode, args.cell, args.loss
    (None, 2, 4, 'norm', None, None)
    >>> args.func is run_train, args.parser.prog
    (True, 'numbarnn train')
    """
    parser = subparsers.add_parser(
        "train", help="train a character- or word-level language model and save a checkpoint",
        description="Train a character-level language model (or a word-level one, --tokens words). With no "
                    "FILE it trains on the shipped dinosaur names (names mode); FILE may be any UTF-8 text file, "
                    "or 'pydoc' for the standard library's documentation text (stream mode). Every value is "
                    "checked before training starts; with --resume the model options come from the checkpoint.")
    parser.add_argument("file", nargs="?", metavar="FILE",
                        help="UTF-8 text file, 'dinosaurs' (default) or 'pydoc'; with --resume, the text the "
                             "checkpoint records")
    parser.add_argument("--mode", choices=("names", "stream"),
                        help="names: one sequence per line; stream: long text in --seq-length chunks "
                             "(default: names for short lines, else stream)")
    parser.add_argument("--tokens", choices=("chars", "words"),
                        help="what the model reads and writes: characters, or words and punctuation (a word "
                             "vocabulary, stream mode; see docs/training.md) (default: chars)")
    parser.add_argument("--max-vocab", type=int, metavar="N",
                        help="with --tokens words: keep the N most frequent tokens, <unk> and the newline among "
                             "them; the rest become <unk> (default: 10000)")
    parser.add_argument("--embedding", type=int, metavar="E",
                        help="learn an E-wide embedding of the input tokens instead of reading them one-hot "
                             "(default: none)")
    parser.add_argument("--cell", help="registered cell (default: lstm; see `numbarnn list cells`)")
    parser.add_argument("--loss", help="registered loss over class indices (default: softmax_cross_entropy)")
    parser.add_argument("--optimizer", help="registered optimizer (default: adam)")
    parser.add_argument("--sampler", help="registered sampler stored with the model (default: top_p, p=0.9)")
    parser.add_argument("--hidden", type=int, help="hidden units per layer (default: 128 names, 256 stream)")
    parser.add_argument("--layers", type=int, help="stacked recurrent layers (default: 1)")
    parser.add_argument("--dropout", type=float, help="dropout between layers, in [0, 1) (default: 0)")
    parser.add_argument("--batch", type=int, help="names (or parallel streams) per step (default: 32)")
    parser.add_argument("--seq-length", type=int, help="tokens per chunk in stream mode (default: 64)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="training steps (default: 1000 names, 2000 stream)")
    length.add_argument("--epochs", type=float, help="passes over the training data")
    parser.add_argument("--lr", type=float, help="learning rate, above 0 (default: 0.005 names, 0.003 stream)")
    parser.add_argument("--lr-schedule", metavar="NAME[:KEY=VALUE,...]",
                        help="learning-rate schedule scaling --lr, with its options (see `numbarnn list schedules`), "
                             "e.g. cosine (over this run's steps unless total_steps is given), "
                             "step:step_size=500,gamma=0.5 or reduce_on_plateau:patience=2; with --resume the "
                             "checkpoint's (default: none, a constant rate)")
    parser.add_argument("--clip", type=float, help="gradient clip (default: 5.0; 0 turns it off)")
    parser.add_argument("--clip-mode", choices=("value", "norm"),
                        help="clip each value (the course's) or the global norm (default: value)")
    parser.add_argument("--dtype", choices=("float32", "float64"), help="(default: float32)")
    parser.add_argument("--seed", type=int,
                        help="seed of the weights, the validation split and the batch order (default: 0; with "
                             "--resume the checkpoint's)")
    parser.add_argument("--validation", type=float, default=0.05,
                        help="fraction held out for validation loss and perplexity, in [0, 1) (default: %(default)s)")
    parser.add_argument("--eval-every", type=int, help="steps between validations (default: 100 names, 250 stream)")
    parser.add_argument("--patience", type=int,
                        help="stop after this many validations without improvement, keeping the best "
                             "weights (default: 3 in names mode, off in stream mode; 0 turns it off)")
    parser.add_argument("--sample-every", type=int, default=500, help="steps between printed samples (0: never)")
    parser.add_argument("--out", metavar="CKPT",
                        help="checkpoint to write (default: <data name>.ckpt, or the --resume checkpoint); an "
                             "existing file there is replaced only if it is a numbarnn checkpoint")
    parser.add_argument("--checkpoint-every", type=int, metavar="N",
                        help="also save the checkpoint every N steps while training (default: at the end, and on "
                             "Ctrl-C)")
    parser.add_argument("--resume", metavar="CKPT",
                        help="continue training from this checkpoint, on the text it records, and save back to it")
    parser.add_argument("--plot", metavar="PNG", help="write a loss-curve picture (needs matplotlib)")
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        help='cpu, or cuda: an NVIDIA GPU (pip install "numbarnn[cuda]"); default: cpu, and with '
                             '--resume the device the checkpoint was trained on (--device moves the run, exactly)')
    parser.add_argument("--threads", type=int, help="cap Numba's and BLAS's threads together (default: all cores; "
                                                   "under MPI, the cores divided among the ranks on each machine)")
    parser.add_argument("--distributed", choices=("auto", "mpi", "off"), default="auto",
                        help="data-parallel training over MPI (pip install 'numbarnn[mpi]'; see docs/scaling.md): "
                             "auto when an MPI launcher (mpiexec, srun --mpi=pmi2, mpirun) started several "
                             "processes, mpi to insist, off for none (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_train, parser=parser)
    return parser


def run_train(args) -> int:
    """``numbarnn train``: returns 0 (done or early stop), 1 (non-finite loss), 130 (interrupted) or 2 (usage).

    ``args`` comes from the parser :func:`add_train_command` builds. Every value, the
    output paths and the memory the model needs are checked before anything is trained.
    Two steps of a 4-unit LSTM on the shipped names, the checkpoint written into a
    temporary folder:

    >>> import contextlib, io, os, tempfile
    >>> out_path = os.path.join(tempfile.mkdtemp(), "dinosaurs.ckpt")
    >>> args = build_parser().parse_args(["train", "--steps", "2", "--hidden", "4", "--batch", "4",
    ...                                   "--sample-every", "0", "--no-progress", "--out", out_path])
    >>> with contextlib.redirect_stdout(io.StringIO()) as out:
    ...     status = run_train(args)
    >>> status, f"checkpoint saved to {out_path}" in out.getvalue(), os.path.exists(out_path)
    (0, True, True)
    >>> out.getvalue().splitlines()[0]
    'training a 1-layer lstm (4 hidden, float32) on dinosaurs in names mode: 27 characters, ...'
    >>> with contextlib.redirect_stderr(io.StringIO()) as err:
    ...     status = run_train(build_parser().parse_args(["train", "--lr", "0"]))
    >>> status, err.getvalue().splitlines()[-1]
    (2, 'numbarnn train: error: --lr must be a positive finite number, got 0.0')

    Under ``mpiexec -n N`` (or ``--distributed mpi``) every process is one rank of a
    data-parallel run (:mod:`numbarnn.distributed`): rank 0 alone prints and writes, and a rank
    that fails ends the whole job with its message.
    """
    from .distributed import MPIUnavailableError

    try:
        parallel = _start_distributed(args)
    except MPIUnavailableError as error:  # before MPI started: every rank says so and ends as usual
        return _usage_error(args.parser, str(error))
    if parallel is None:  # one process: mpi4py is never imported
        return _train(args, None)
    return _train_distributed(args, parallel)


def _start_distributed(args):
    """This process's :class:`numbarnn.distributed.DataParallel` when ``args`` and the launcher
    ask for data-parallel training over more than one process, else None."""
    from .distributed import init, launched_ranks

    if args.distributed == "off" or (args.distributed == "auto" and launched_ranks() < 2):
        return None
    parallel = init()
    return parallel if parallel.size > 1 else None


def _train_distributed(args, parallel) -> int:
    """``_train`` as one rank of ``parallel``. Every rank must reach the end alike: a rank
    that fails, or stops before training (a usage error), ends the whole job with MPI_Abort
    (the others would wait for it forever); ranks other than 0 print nothing on stdout."""
    import contextlib

    parallel.finished = False
    try:
        with open(os.devnull, "w") as devnull, \
                contextlib.redirect_stdout(devnull) if not parallel.is_root else contextlib.nullcontext():
            status = _train(args, parallel)
    except BaseException as error:  # noqa: B036 (anything: the job must end, not hang)
        parallel.fail(error)
    if not parallel.finished:
        parallel.abort(f"stopped before training with exit status {status}", status)
    return status


def _train(args, parallel) -> int:
    """:func:`run_train`'s work; ``parallel``: this rank's ``DataParallel``, or None."""
    from . import data as D
    from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint
    from .checkpoint_file import vocab_record
    from .cuda import CudaUnavailableError, UnsupportedOnCuda
    from .plugins import get_cell, get_loss, get_registry
    from .registry import UnknownNameError
    from .fit import LRSchedule, plot_history
    from .trainer import make_trainer, sample_lines

    parser = args.parser
    problem = _value_problem(args, _TRAIN_CHECKS)
    if problem:
        return _usage_error(parser, problem)
    schedule_arg = None
    if args.lr_schedule is not None:
        from .plugins import get_schedule

        try:
            schedule_arg = parse_schedule(args.lr_schedule)
            schedule_spec = get_schedule(schedule_arg[0])
        except (ValueError, UnknownNameError) as error:
            return _usage_error(parser, str(error))
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return _usage_error(parser, "--plot needs matplotlib: pip install 'numbarnn[plot]'")
    saved, saved_vocab = {}, None
    if args.resume:
        try:
            meta = read_checkpoint(args.resume)[0]
        except CheckpointError as error:
            return _usage_error(parser, str(error))
        saved = dict(meta["config"], tokens=meta.get("tokens", "chars"))  # tokens: for resume_conflicts
        saved_vocab = meta.get("vocab")
    # The data: FILE, else what the resumed checkpoint records, else the shipped names.
    recorded = saved.get("data_source") if isinstance(saved.get("data_source"), str) else None
    file = args.file if args.file is not None else recorded
    source = None if file in (None, "dinosaurs", "pydoc") else file  # a user's file, to protect
    data_name = "dinosaurs" if file in (None, "dinosaurs") else Path(file).stem
    out = args.out or args.resume or f"{data_name}.ckpt"  # a resumed run saves back to its checkpoint
    problem = (output_problem("--out", out, _is_checkpoint, [("FILE", source)])
               or (args.plot and output_problem("--plot", args.plot, _is_picture,
                                                [("FILE", source), ("--resume", args.resume), ("--out", out)])))
    if problem:
        return _usage_error(parser, problem)
    if args.resume:
        conflicts = resume_conflicts(args, saved) + schedule_conflicts(schedule_arg, meta.get("schedule"))
        if conflicts:
            return _usage_error(parser, f"{', '.join(conflicts)} contradict{'s' if len(conflicts) == 1 else ''} "
                                        f"the checkpoint {args.resume}, whose model is resumed as saved; leave "
                                        f"{'it' if len(conflicts) == 1 else 'them'} out, or train a new model "
                                        "without --resume")
    tokens = args.tokens or saved.get("tokens") or "chars"
    max_vocab = (args.max_vocab or saved.get("max_vocab") or 10000) if tokens == "words" else None
    if tokens == "chars" and args.max_vocab is not None:
        return _usage_error(parser, "--max-vocab is for word models: add --tokens words")
    if tokens == "words" and (args.mode or saved.get("mode")) == "names":
        return _usage_error(parser, "--tokens words trains in stream mode (the text's lines are kept as newline "
                                    "tokens); leave out --mode names")
    try:
        text, mode = D.load_corpus(file, "stream" if tokens == "words" else args.mode or saved.get("mode"))
    except D.DataError as error:
        where = f" (the text {args.resume} records it was trained on; name another copy as FILE)" if recorded and args.file is None else ""
        return _usage_error(parser, str(error) + where)
    defaults = TRAIN_DEFAULTS[mode]
    option = {name: defaults[name] if getattr(args, name, None) is None else getattr(args, name)
              for name in defaults}
    if isinstance(saved.get("seed"), int) and args.seed is None:
        option["seed"] = saved["seed"]  # the same validation split and batch order as the saved run
    # The same batches as the saved run unless asked otherwise (a resume is then exact).
    for name, key in (("batch", "batch_size"), ("seq_length", "seq_length")):
        if isinstance(saved.get(key), int) and getattr(args, name, None) is None:
            option[name] = saved[key]
    seed, batch = option["seed"], option["batch"]
    seq_length = option["seq_length"] or 64
    steps = args.steps if args.steps or args.epochs else defaults["steps"]
    planned = steps if not args.epochs else None  # with --epochs: as fit counts them, once batches exist
    if args.threads:
        from .runtime import set_threads

        _limits = set_threads(args.threads)  # noqa: F841 (kept alive while training)
    elif parallel is not None:  # the cores shared among this machine's ranks: pools that share a core fight
        from .runtime import set_threads

        _limits = set_threads(parallel.default_threads())  # noqa: F841
    if parallel is not None and args.device == "cuda":
        return _usage_error(parser, "data-parallel training over MPI runs on the CPU: leave out --device cuda")
    try:
        vocab = D.WordVocabulary.from_text(text, max_vocab) if tokens == "words" else D.Vocabulary.from_text(text)
    except D.DataError as error:
        return _usage_error(parser, str(error).replace("max_vocab (--max-vocab)", "--max-vocab"))
    if saved_vocab is not None and saved_vocab != vocab_record(vocab)["vocab"]:  # before the data position is loaded
        return _usage_error(parser, _other_vocabulary(args.resume, data_name, args.file is None and recorded is None))
    if mode == "names":
        names = [line.strip() for line in text.splitlines() if line.strip()]
        train_names, val_names = D.split_names(names, args.validation, seed)
        batches = D.NamesBatches(train_names, vocab, batch, seed=seed)
        steps_long = max(len(n) for n in names) + 1
        validation = ([D.pad_names([vocab.encode(n) for n in val_names[i:i + 256]], vocab.newline) + (False,)
                       for i in range(0, len(val_names), 256)] if val_names else None)
        validation = list(validation) if validation else None
    else:
        train_text, val_text = D.split_stream(text, args.validation)
        try:
            batches = D.StreamBatches(train_text, vocab, batch, seq_length)
        except D.DataError as error:
            return _usage_error(parser, str(error))
        steps_long = batches.seq_length
        validation = None
        if len(val_text) > 1:
            ids = np.array(vocab.encode(val_text), dtype=np.int64)
            validation = [(ids[None, i:i + seq_length], ids[None, i + 1:i + seq_length + 1], None, i > 0)
                          for i in range(0, len(ids) - 1 - seq_length, seq_length)][:200] or None
    if planned is None:
        planned = max(1, int(round(args.epochs * batches.steps_per_epoch())))
    if not args.resume:  # a checkpoint's sizes are checked against its arrays when it is read
        try:
            cell_spec = get_cell(option["cell"])
        except UnknownNameError as error:
            return _usage_error(parser, str(error))
        sizing = ("hidden", "layers", "batch") + (("seq_length",) if mode == "stream" else ())
        needed = train_memory(cell_spec, len(vocab), option["hidden"], option["layers"],
                              getattr(batches, "batch_size", batch), steps_long, np.dtype(option["dtype"]).itemsize,
                              embedding=args.embedding)
        problem = _memory_problem(" ".join(f"{_flag(n)} {option[n]}" for n in sizing), needed)
        if problem:
            return _usage_error(parser, problem + f"; lower {' or '.join(map(_flag, sizing))}")
    try:
        if args.resume:
            trainer = load_checkpoint(args.resume, batches,  # device None: where it was trained
                                      device=args.device or ("cpu" if parallel is not None else None))
            if trainer.vocab is None or trainer.vocab.kind != vocab.kind or trainer.vocab.tokens != vocab.tokens:
                return _usage_error(parser, _other_vocabulary(args.resume, data_name, args.file is None and recorded is None))
        else:
            trainer = make_trainer(cell=cell_spec, loss=option["loss"], optimizer=option["optimizer"],
                                   sampler=option["sampler"], vocab=vocab, hidden_size=option["hidden"],
                                   layers=option["layers"], dropout=option["dropout"], lr=option["lr"],
                                   embedding=args.embedding, clip=option["clip"] or None, clip_mode=option["clip_mode"],
                                   dtype=option["dtype"], seed=seed, mode=mode, device=args.device or "cpu")
            if schedule_arg is not None:
                schedule_options = schedule_arg[1]
                if schedule_spec.defaults.get("total_steps", 0) is None and "total_steps" not in schedule_options:
                    schedule_options = dict(schedule_options, total_steps=planned)  # cosine over this run
                trainer.schedule = schedule_spec.factory(**schedule_options)
        if getattr(trainer, "schedule", None) is not None:  # its rates, checked before training
            LRSchedule().check(trainer, planned)
    except (UnknownNameError, CheckpointError, ValueError, CudaUnavailableError, UnsupportedOnCuda) as error:
        return _usage_error(parser, str(error))
    # What it trains on, so that --resume without FILE continues on the same text.
    trainer.config["data_source"] = ("dinosaurs" if file in (None, "dinosaurs") else "pydoc" if file == "pydoc"
                                     else os.path.abspath(file))
    trainer.config["batch_size"] = int(batch)  # and how it was cut into batches, for --resume
    trainer.config["seq_length"] = int(seq_length) if mode == "stream" else None
    trainer.config["max_vocab"] = max_vocab  # with the data, rebuilds the same word vocabulary on --resume
    if trainer.loss.targets_kind != "indices":
        usable = [n for n in get_registry().list("loss") if get_loss(n).targets_kind == "indices"]
        return _usage_error(parser, f"--loss {trainer.config['loss']} compares {trainer.loss.targets_kind} targets, "
                                    "but a character model predicts the next character's index; use a loss over "
                                    f"class indices ({', '.join(usable) or 'none is registered'})")
    if parallel is not None:  # every rank from rank 0's weights and state; the same batches on all
        from .distributed import distribute

        trainer = distribute(trainer, parallel)
        print(f"data-parallel over {parallel.size} MPI ranks: each trains on its rows of every batch of "
              f"{batch}, then one Allreduce of the gradients")
    print(printable(f"training a {trainer.config['layers']}-layer {trainer.config['cell']} "
                    f"({trainer.config['hidden_size']} hidden, {trainer.config['dtype']}) on {data_name} in {mode} "
                    f"mode: {len(vocab)} {'words' if vocab.kind == 'words' else 'characters'}, {batches.steps_per_epoch()} "
                    "steps per epoch"))
    summary = trainer.fit(batches, steps=steps, epochs=args.epochs if not args.steps else None,
                          validation=validation, eval_every=option["eval_every"], sample_every=args.sample_every,
                          patience=option["patience"] or None, progress=not args.no_progress, checkpoint=out,
                          checkpoint_every=args.checkpoint_every)
    if summary["stopped"] == "output-closed":  # saved by fit; main ends quietly (EXIT_STDOUT_CLOSED)
        raise BrokenPipeError("stdout closed during training")
    interrupted = summary["stopped"] == "interrupted"
    if not interrupted:  # fit saved (and said so) when Ctrl-C stopped it
        trainer.save(out, batches)  # distributed: every rank joins, rank 0 writes
    if parallel is not None:
        parallel.finished = True  # every rank got here alike: they may end as usual
        if not parallel.is_root:  # rank 0 shows the samples and draws the plot
            return {"done": 0, "early-stop": 0, "non-finite": 1}[summary["stopped"]]
    # A run stopped before any step finished has no training loss to report.
    loss = (f"training loss {summary['loss']:.3f} per {'name' if mode == 'names' else 'chunk'}"
            if summary["loss"] is not None else "no training step finished")
    print(printable(("" if summary["stopped"] != "done" else summary["reason"] + "; ") + loss
                    + (f", validation perplexity {summary['val_perplexity']:.2f}" if summary["val_perplexity"] else "")))
    print(printable("samples:" if interrupted else f"checkpoint saved to {out}; samples:"))
    texts = trainer.sample_texts(8 if mode == "names" else 2, seed=seed)
    if mode == "names":
        texts = [shown_name(t, trainer.vocab) for t in texts]
    for line in sample_lines(texts, names=mode == "names", indent="  "):
        print(line)
    if args.plot:  # after the checkpoint is saved: a failed picture loses no training (so not fit.LossPlot)
        plot_history(trainer.history, args.plot)  # its folder was checked writable before training
        print(printable(f"loss curve written to {args.plot}"))
    return {"done": 0, "early-stop": 0, "non-finite": 1, "interrupted": 130}[summary["stopped"]]


def add_sample_command(subparsers) -> argparse.ArgumentParser:
    """Add ``numbarnn sample``: generate names or text from a checkpoint.

    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="numbarnn")
    >>> _ = add_sample_command(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["sample", "dinosaurs.ckpt", "--n", "3", "--top-k", "5"])
    >>> args.checkpoint, args.n, args.top_k, args.length, args.sampler, args.func is run_sample
    ('dinosaurs.ckpt', 3, 5, None, None, True)
    """
    parser = subparsers.add_parser("sample", help="generate text from a checkpoint",
                                   description="Generate names (names mode) or text (stream mode) from a "
                                               "checkpoint written by `numbarnn train`, printed as generated; "
                                               "only when the training text has no upper-case letters (such as "
                                               "the shipped names) are names shown with a capital first letter. "
                                               "Control characters in the output are shown as escapes such as "
                                               "\\x1b.")
    parser.add_argument("checkpoint", metavar="CKPT")
    parser.add_argument("--n", type=int, default=10,
                        help="how many samples (default: %(default)s); with beam search the N best distinct "
                             "ones, at most --beam-width")
    parser.add_argument("--length", type=int,
                        help="tokens per sample: characters, or words for a word model (default: 50 for names, "
                             "300 for text)")
    parser.add_argument("--prime", default="",
                        help="text to start from (words for a word model, those outside its vocabulary read as "
                             "<unk>); lower-cased when the vocabulary has no upper-case letters (--prime TYR on the "
                             "shipped names)")
    parser.add_argument("--sampler", help="registered sampler (default: the checkpoint's)")
    parser.add_argument("--temperature", type=float, help="above 0")
    parser.add_argument("--top-k", type=int, help="at least 1")
    parser.add_argument("--top-p", type=float, help="in (0, 1]")
    parser.add_argument("--beam-width", type=int, help="at least 1")
    parser.add_argument("--seed", type=int, default=0, help="at least 0 (default: %(default)s)")
    parser.set_defaults(func=run_sample, parser=parser)
    return parser


def run_sample(args) -> int:
    """``numbarnn sample``: print ``--n`` samples; 2 for a bad checkpoint, prime or option.

    ``args`` comes from the parser :func:`add_sample_command` builds. Here the checkpoint
    is an untrained 4-unit model saved into a temporary folder:

    >>> import contextlib, io, os, tempfile
    >>> from numbarnn.checkpoint import save_checkpoint
    >>> from numbarnn.data import Vocabulary
    >>> from numbarnn.trainer import make_trainer
    >>> trainer = make_trainer(vocab=Vocabulary.from_text("abcd"), hidden_size=4, seed=0, mode="names")
    >>> path = save_checkpoint(trainer, os.path.join(tempfile.mkdtemp(), "tiny.ckpt"))
    >>> with contextlib.redirect_stdout(io.StringIO()) as out:
    ...     status = run_sample(build_parser().parse_args(["sample", str(path), "--n", "3", "--length", "5"]))
    >>> lines = out.getvalue().splitlines()
    >>> status, len(lines), all(len(line) <= 5 and set(line.lower()) <= set("abcd") for line in lines)
    (0, 3, True)
    >>> with contextlib.redirect_stderr(io.StringIO()) as err:
    ...     status = run_sample(build_parser().parse_args(["sample", str(path), "--n", "0"]))
    >>> status, err.getvalue().splitlines()[-1]
    (2, 'numbarnn sample: error: --n must be at least 1, got 0')
    """
    from .checkpoint import CheckpointError, load_checkpoint
    from .data import DataError
    from .registry import UnknownNameError

    parser = args.parser
    problem = _value_problem(args, _SAMPLE_CHECKS)
    if problem:
        return _usage_error(parser, problem)
    try:
        trainer = load_checkpoint(args.checkpoint)
        if trainer.vocab is None:
            return _usage_error(parser, f"{args.checkpoint} has no vocabulary to sample text with")
        names = trainer.config.get("mode") == "names"
        length = args.length or (50 if names else 300)
        # Per token, for every beam: a uniform draw, an index and a list entry (24 bytes); and
        # its text, in every beam and every sample kept until printing: 4 bytes a character, a
        # character model's token one, a word model's its vocabulary's mean length and a space.
        words = trainer.vocab.kind == "words"
        chars = 1 + sum(map(len, trainer.vocab.tokens)) / len(trainer.vocab) if words else 1
        beams = args.beam_width or 1
        problem = _memory_problem(f"--n {args.n} samples of --length {length} {'words' if words else 'characters'}",
                                  int(length * (24 * beams + 4 * chars * (beams + args.n))))
        if problem:
            return _usage_error(parser, problem + "; lower --length")
        prime = fold_prime(args.prime, trainer.vocab)
        folded = " (lower-cased: the vocabulary has no upper-case letters)" if prime != args.prime else ""
        trainer.vocab.encode(prime, what="the prime" + folded)
        width = _beam_width(trainer, args)
        if width is not None and args.n > width:
            return _usage_error(parser, f"--n {args.n} is more than the beam width {width}: beam search returns at "
                                        "most that many distinct sequences; raise --beam-width or lower --n")
        if width is not None:  # the n best distinct sequences, best first
            best = trainer.generate(prime, length, sampler=args.sampler, temperature=args.temperature, top_k=args.top_k,
                                    top_p=args.top_p, beam_width=args.beam_width, n_best=args.n)
            texts = [trainer.vocab.join(prime, text.rstrip("\n") if names else text) for text in best]
        else:
            texts = trainer.sample_texts(args.n, seed=args.seed, length=length, prime=prime, sampler=args.sampler,
                                         temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    except (CheckpointError, DataError, UnknownNameError, ValueError) as error:
        return _usage_error(parser, str(error))
    for number, text in enumerate(texts, 1):
        if names:
            print(printable(shown_name(text, trainer.vocab)))
        else:  # text, as generated but for trailing spaces; several samples each under a header
            if len(texts) > 1:
                print(f"-- sample {number} of {len(texts)} --")
            print(printable(text.rstrip()))
    return 0


def _beam_width(trainer, args) -> Optional[int]:
    """The beam width ``numbarnn sample`` searches with, or None when it samples."""
    from .plugins import get_sampler

    if args.beam_width is not None:
        return args.beam_width
    if args.sampler is not None:
        spec = get_sampler(args.sampler)
        return spec.factory().beam_width if spec.is_beam else None
    if args.temperature is not None or args.top_k is not None or args.top_p is not None:
        return None  # one of those samplers replaces the checkpoint's
    return trainer.sampler.beam_width if getattr(trainer.sampler, "is_beam", False) else None


def _has_upper_case(vocab) -> bool:
    return any(char.isupper() for token in vocab.tokens for char in token)


def shown_name(text: str, vocab) -> str:
    """A generated name as the command line shows it: as generated, but with a capital first
    letter when the training text has no upper-case letters at all (lower-case data such as
    the shipped dinosaur names, shown as names are written). Only the first letter changes.

    >>> from numbarnn.data import Vocabulary
    >>> shown_name("łódź köln", Vocabulary("łódź kn")), shown_name("mcLeod", Vocabulary("mcLeod"))
    ('Łódź köln', 'mcLeod')
    """
    return text[:1].upper() + text[1:] if not _has_upper_case(vocab) else text


def fold_prime(prime: str, vocab) -> str:
    """``prime`` lower-cased when ``vocab`` has no upper-case letters (the command line shows
    such names capitalised, so ``--prime TYR`` means ``tyr``); else as given.

    >>> from numbarnn.data import Vocabulary
    >>> fold_prime("TYR", Vocabulary("rty")), fold_prime("McL", Vocabulary("McLe"))
    ('tyr', 'McL')
    """
    return prime.lower() if not _has_upper_case(vocab) else prime


COMMANDS: List[Callable] = [add_train_command, add_sample_command, add_plugins_command, add_list_command,
                            add_demo_command]
"""Functions ``add(subparsers)`` that each add one subcommand; ``train``/``sample`` go here."""


def build_parser() -> argparse.ArgumentParser:
    """The ``numbarnn`` argument parser with every command in :data:`COMMANDS`.

    Each parsed command carries the function that runs it in ``func``:

    >>> parser = build_parser()
    >>> args = parser.parse_args(["list", "samplers", "top_*"])
    >>> args.command, args.kind, args.patterns, args.func is run_list
    ('list', 'samplers', ['top_*'], True)
    >>> parser.parse_args(["sample", "x.ckpt"]).func is run_sample
    True
    """
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
    """Run the command line; returns the exit status (2 for usage errors, as argparse).

    ``argv`` defaults to ``sys.argv[1:]``. Output goes to stdout, errors to stderr:

    >>> import contextlib, io
    >>> with contextlib.redirect_stdout(io.StringIO()) as out:
    ...     status = main(["list", "cells"])
    >>> status, "lstm" in out.getvalue(), "rnn" in out.getvalue()
    (0, True, True)
    >>> with contextlib.redirect_stderr(io.StringIO()) as err:
    ...     status = main(["list", "widgets"])
    >>> status, "invalid choice: 'widgets'" in err.getvalue()
    (2, True)

    When stdout is closed early (``numbarnn sample CKPT | head -n 2``) it stops there, without
    a traceback, and returns :data:`EXIT_STDOUT_CLOSED`.
    """
    try:
        status = _main(argv)
        sys.stdout.flush()  # output that fit in the buffer meets the closed pipe here, not at exit
    except BrokenPipeError:
        return _stdout_closed()
    return status


EXIT_STDOUT_CLOSED = 141
"""The exit status when the reader of stdout went away (``| head``): 128 + SIGPIPE, the
status a shell shows for a command that SIGPIPE ended."""


def _stdout_closed() -> int:
    """What Python's documentation advises for a closed stdout (its "Note on SIGPIPE"): point
    stdout at devnull, so the interpreter's last flush at exit cannot fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (a test's StringIO): nothing to flush at exit
        pass
    return EXIT_STDOUT_CLOSED


def _main(argv: Optional[Sequence[str]]) -> int:
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
            print(printable(f"numbarnn: error: {exc}", keep=""), file=sys.stderr)
            status = 1
    for w in caught:
        if issubclass(w.category, PluginLoadWarning):
            print(f"numbarnn: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return status
