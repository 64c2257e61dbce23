"""The ``numbarnn`` command line.

::

    numbarnn train [FILE] [--mode names|stream] [--cell ...] ...   train, save a checkpoint
    numbarnn sample CKPT [--n] [--length] [--prime] [--sampler] ...  generate from a checkpoint
    numbarnn plugins [--json]                      loaded plugins and what each registers
    numbarnn list cells|losses|optimizers|samplers [PATTERN ...] [--json]
    numbarnn demo                                  the course's character model, step by step

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
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np

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
                    "optimizers and samplers each registers. Plugins that failed to load are "
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
    """Add ``numbarnn list cells|losses|optimizers|samplers``.

    The kind may be singular or plural (``cell`` and ``cells`` both parse to ``"cells"``);
    the glob patterns that follow are optional:

    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="numbarnn")
    >>> _ = add_list_command(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["list", "cell", "l*", "r*"])
    >>> args.kind, args.patterns, args.json, args.func is run_list
    ('cells', ['l*', 'r*'], False, True)
    """
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
    """``numbarnn list KIND [PATTERN ...]``: names, defaults and descriptions.

    ``args`` needs ``kind`` (a plural such as ``"losses"``), ``patterns`` (a list, maybe
    empty) and ``json``. Returns 0, or 1 (with a message on stderr) when nothing matches:

    >>> import argparse, contextlib, io, json
    >>> with contextlib.redirect_stdout(io.StringIO()) as out:
    ...     status = run_list(argparse.Namespace(kind="optimizers", patterns=["ad*"], json=True))
    >>> status, [entry["name"] for entry in json.loads(out.getvalue())]
    (0, ['adagrad', 'adam'])
    >>> with contextlib.redirect_stdout(io.StringIO()) as out:
    ...     status = run_list(argparse.Namespace(kind="losses", patterns=["mse"], json=False))
    >>> status, out.getvalue().splitlines()[0].split()
    (0, ['NAME', 'DEFAULTS', 'DESCRIPTION'])
    >>> with contextlib.redirect_stderr(io.StringIO()) as err:
    ...     status = run_list(argparse.Namespace(kind="losses", patterns=["nope*"], json=False))
    >>> status, err.getvalue().startswith("numbarnn: no losses match 'nope*'")
    (1, True)
    """
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

TRAIN_DEFAULTS = {
    # Tuned on two cores for the shipped dinosaur names: plausible names in well under a minute.
    # Validation perplexity bottoms out near step 500 (about 11 epochs), so early stopping
    # with patience 3 keeps the best weights.
    "names": dict(cell="lstm", hidden=128, layers=1, batch=32, lr=0.005, steps=1000, seq_length=None,
                  eval_every=100, patience=3),
    "stream": dict(cell="lstm", hidden=256, layers=1, batch=32, lr=0.003, steps=2000, seq_length=64,
                   eval_every=250, patience=None),
}


def _usage_error(parser, message) -> int:
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    return 2


def add_train_command(subparsers) -> argparse.ArgumentParser:
    """Add ``numbarnn train``: train a character-level model and save a checkpoint.

    Options left out parse to None (or their default) and :func:`run_train` fills them
    from :data:`TRAIN_DEFAULTS` for the mode; the subparser is stored in ``args.parser``
    for usage errors:

    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="numbarnn")
    >>> _ = add_train_command(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["train", "--steps", "2", "--hidden", "4", "--clip-mode", "norm"])
    >>> args.file, args.steps, args.hidden, args.clip_mode, args.cell, args.loss
    (None, 2, 4, 'norm', None, 'softmax_cross_entropy')
    >>> args.func is run_train, args.parser.prog
    (True, 'numbarnn train')
    """
    parser = subparsers.add_parser(
        "train", help="train a character-level language model and save a checkpoint",
        description="Train a character-level language model. With no FILE it trains on the shipped "
                    "dinosaur names (names mode); FILE may be any UTF-8 text file, or 'pydoc' for the "
                    "standard library's documentation text (stream mode).")
    parser.add_argument("file", nargs="?", metavar="FILE", help="UTF-8 text file, 'dinosaurs' (default) or 'pydoc'")
    parser.add_argument("--mode", choices=("names", "stream"),
                        help="names: one sequence per line; stream: long text in --seq-length chunks "
                             "(default: names for short lines, else stream)")
    parser.add_argument("--cell", help="registered cell (default: lstm; see `numbarnn list cells`)")
    parser.add_argument("--loss", default="softmax_cross_entropy", help="registered loss (default: %(default)s)")
    parser.add_argument("--optimizer", default="adam", help="registered optimizer (default: %(default)s)")
    parser.add_argument("--sampler", default="top_p",
                        help="registered sampler stored with the model (default: %(default)s, p=0.9)")
    parser.add_argument("--hidden", type=int, help="hidden units per layer")
    parser.add_argument("--layers", type=int, help="stacked recurrent layers (default: 1)")
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout between layers (default: 0)")
    parser.add_argument("--batch", type=int, help="names (or parallel streams) per step")
    parser.add_argument("--seq-length", type=int, help="characters per chunk in stream mode")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="training steps")
    length.add_argument("--epochs", type=float, help="passes over the training data")
    parser.add_argument("--lr", type=float, help="learning rate")
    parser.add_argument("--clip", type=float, default=5.0, help="gradient clip (default: %(default)s; 0 turns it off)")
    parser.add_argument("--clip-mode", choices=("value", "norm"), default="value",
                        help="clip each value (the course's) or the global norm (default: %(default)s)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validation", type=float, default=0.05,
                        help="fraction held out for validation loss and perplexity (default: %(default)s)")
    parser.add_argument("--eval-every", type=int, help="steps between validations (default: 100 names, 250 stream)")
    parser.add_argument("--patience", type=int,
                        help="stop after this many validations without improvement, keeping the best "
                             "weights (default: 3 in names mode, off in stream mode; 0 turns it off)")
    parser.add_argument("--sample-every", type=int, default=500, help="steps between printed samples (0: never)")
    parser.add_argument("--out", metavar="CKPT", help="checkpoint to write (default: <data name>.ckpt)")
    parser.add_argument("--resume", metavar="CKPT", help="continue training from this checkpoint")
    parser.add_argument("--plot", metavar="PNG", help="write a loss-curve picture (needs matplotlib)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help='cpu (default), or cuda: an NVIDIA GPU (pip install "numbarnn[cuda]")')
    parser.add_argument("--threads", type=int, help="cap Numba's and BLAS's threads together (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_train, parser=parser)
    return parser


def run_train(args) -> int:
    """``numbarnn train``: returns 0 (done or early stop), 1 (non-finite loss), 130 (interrupted) or 2 (usage).

    ``args`` comes from the parser :func:`add_train_command` builds. Two steps of a
    4-unit LSTM on the shipped names, the checkpoint written into a temporary folder:

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
    """
    from . import data as D
    from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from .cuda import CudaUnavailableError, UnsupportedOnCuda
    from .registry import UnknownNameError
    from .trainer import make_trainer

    parser = args.parser
    for name in ("hidden", "layers", "batch", "seq_length", "steps", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            return _usage_error(parser, f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.epochs is not None and args.epochs <= 0:
        return _usage_error(parser, f"--epochs must be positive, got {args.epochs}")
    if args.threads:
        from .runtime import set_threads

        _limits = set_threads(args.threads)  # noqa: F841 (kept alive while training)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return _usage_error(parser, "--plot needs matplotlib: pip install 'numbarnn[plot]'")
    try:
        text, mode = D.load_corpus(args.file, args.mode)
    except D.DataError as error:
        return _usage_error(parser, str(error))
    defaults = TRAIN_DEFAULTS[mode]
    hidden = args.hidden or defaults["hidden"]
    batch = args.batch or defaults["batch"]
    seq_length = args.seq_length or defaults["seq_length"] or 64
    data_name = "dinosaurs" if args.file in (None, "dinosaurs") else Path(args.file).stem
    out = args.out or f"{data_name}.ckpt"
    vocab = D.Vocabulary.from_text(text)
    if mode == "names":
        names = [line.strip() for line in text.splitlines() if line.strip()]
        train_names, val_names = D.split_names(names, args.validation, args.seed)
        batches = D.NamesBatches(train_names, vocab, batch, seed=args.seed)
        validation = ([D.pad_names([vocab.encode(n) for n in val_names[i:i + 256]], vocab.newline) + (False,)
                       for i in range(0, len(val_names), 256)] if val_names else None)
        validation = list(validation) if validation else None
    else:
        train_text, val_text = D.split_stream(text, args.validation)
        try:
            batches = D.StreamBatches(train_text, vocab, batch, seq_length)
        except D.DataError as error:
            return _usage_error(parser, str(error))
        validation = None
        if len(val_text) > 1:
            ids = np.array(vocab.encode(val_text), dtype=np.int64)
            validation = [(ids[None, i:i + seq_length], ids[None, i + 1:i + seq_length + 1], None, i > 0)
                          for i in range(0, len(ids) - 1 - seq_length, seq_length)][:200] or None
    try:
        if args.resume:
            trainer = load_checkpoint(args.resume, batches)
            if trainer.vocab is None or trainer.vocab.chars != vocab.chars:
                return _usage_error(parser, f"{args.resume} was trained on another vocabulary than {data_name}")
        else:
            trainer = make_trainer(cell=args.cell or defaults["cell"], loss=args.loss, optimizer=args.optimizer,
                                   sampler=args.sampler,
                                   vocab=vocab, hidden_size=hidden, layers=args.layers or defaults["layers"],
                                   dropout=args.dropout, lr=args.lr or defaults["lr"], clip=args.clip or None,
                                   clip_mode=args.clip_mode, dtype=args.dtype, seed=args.seed, mode=mode,
                                   device=args.device)
    except (UnknownNameError, CheckpointError, ValueError, CudaUnavailableError, UnsupportedOnCuda) as error:
        return _usage_error(parser, str(error))
    steps = args.steps if args.steps or args.epochs else defaults["steps"]
    print(f"training a {trainer.config['layers']}-layer {trainer.config['cell']} ({trainer.config['hidden_size']} "
          f"hidden, {trainer.config['dtype']}) on {data_name} in {mode} mode: {len(vocab)} characters, "
          f"{batches.steps_per_epoch()} steps per epoch")
    summary = trainer.fit(batches, steps=steps, epochs=args.epochs if not args.steps else None,
                          validation=validation, eval_every=args.eval_every or defaults["eval_every"],
                          sample_every=args.sample_every,
                          patience=defaults["patience"] if args.patience is None else (args.patience or None), progress=not args.no_progress, checkpoint=out)
    save_checkpoint(trainer, out, batches)
    print(("" if summary["stopped"] != "done" else summary["reason"] + "; ")
          + f"training loss {summary['loss']:.3f} per {'name' if mode == 'names' else 'chunk'}"
          + (f", validation perplexity {summary['val_perplexity']:.2f}" if summary["val_perplexity"] else ""))
    print(f"checkpoint saved to {out}; samples:")
    for text_out in trainer.sample_texts(8 if mode == "names" else 2, seed=args.seed):
        print("  " + (text_out.capitalize() if mode == "names" else text_out))
    if args.plot:
        _plot_history(trainer.history, args.plot)
        print(f"loss curve written to {args.plot}")
    return {"done": 0, "early-stop": 0, "non-finite": 1, "interrupted": 130}[summary["stopped"]]


def _plot_history(history, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([h[0] for h in history])
    losses = np.array([h[1] for h in history])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, alpha=0.3, label="loss per step")
    if len(losses) >= 20:
        k = max(len(losses) // 50, 5)
        ax.plot(steps[k - 1:], np.convolve(losses, np.ones(k) / k, mode="valid"), label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss per sequence")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
                                               "checkpoint written by `numbarnn train`.")
    parser.add_argument("checkpoint", metavar="CKPT")
    parser.add_argument("--n", type=int, default=10, help="how many samples (default: %(default)s)")
    parser.add_argument("--length", type=int, help="characters per sample (default: 50 for names, 300 for text)")
    parser.add_argument("--prime", default="", help="text to start from")
    parser.add_argument("--sampler", help="registered sampler (default: the checkpoint's)")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--beam-width", type=int)
    parser.add_argument("--seed", type=int, default=0)
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
    >>> status, "--n and --length must be at least 1" in err.getvalue()
    (2, True)
    """
    from .checkpoint import CheckpointError, load_checkpoint
    from .data import DataError
    from .registry import UnknownNameError

    parser = args.parser
    if args.n < 1 or (args.length is not None and args.length < 1):
        return _usage_error(parser, "--n and --length must be at least 1")
    try:
        trainer = load_checkpoint(args.checkpoint)
        if trainer.vocab is None:
            return _usage_error(parser, f"{args.checkpoint} has no vocabulary to sample text with")
        names = trainer.config.get("mode") == "names"
        texts = trainer.sample_texts(args.n, seed=args.seed, length=args.length or (50 if names else 300),
                                     prime=args.prime, sampler=args.sampler, temperature=args.temperature,
                                     top_k=args.top_k, top_p=args.top_p, beam_width=args.beam_width)
    except (CheckpointError, DataError, UnknownNameError, ValueError) as error:
        return _usage_error(parser, str(error))
    for text in texts:
        print(text.capitalize() if names else text)
    return 0


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
    """
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
