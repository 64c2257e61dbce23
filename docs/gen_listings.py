"""Regenerate (or check) the parts of the docs that are printed by the code itself.

Pages mark a generated region with two HTML comments::

    <!-- BEGIN generated: list-cells -->
    ...whatever the generator prints, between a ```text fence...
    <!-- END generated: list-cells -->

and this script rewrites what is between them. Regions: ``list-cells``, ``list-losses``,
``list-optimizers``, ``list-samplers``, ``list-schedules`` and ``plugins`` (``numbarnn list ...`` and
``numbarnn plugins`` with the built-ins only), ``list-cells-gru`` (with the GRU plugin of
``plugins/numbarnn-gru``), ``hooks`` (the five hook signatures of
``numbarnn/hookspecs.py`` and the spec each accepts) and ``help-COMMAND`` (``numbarnn
COMMAND --help`` at 88 columns; ``help`` for ``numbarnn --help``).

    python docs/gen_listings.py           # rewrite the regions in docs/*.md
    python docs/gen_listings.py --check   # exit 1 with a diff if any region is stale

``tests/test_docs.py`` runs the check, so the docs cannot drift from the code.
"""
from __future__ import annotations

import os

# Built-ins only, and a fixed terminal width, before anything reads them.
os.environ["NUMBARNN_PLUGINS"] = ""
os.environ["COLUMNS"] = "88"
os.environ.pop("NUMBARNN_DISABLE_PLUGINS", None)
os.environ.pop("NUMBARNN_STRICT_PLUGINS", None)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import difflib  # noqa: E402
import importlib  # noqa: E402
import inspect  # noqa: E402
import io  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
REGION = re.compile(r"(<!-- BEGIN generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- END generated: (?P=name) -->)",
                    re.S)


def _cli(*argv) -> str:
    from numbarnn import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        cli.main(list(argv))
    return out.getvalue().rstrip() + "\n"


def _fenced(command: str, output: str) -> str:
    return f"```text\n$ {command}\n{output}```\n"


@contextlib.contextmanager
def _gru_plugin():
    """The repository's GRU plugin, registered in-process (installed or not)."""
    from numbarnn import plugins

    try:
        module = importlib.import_module("numbarnn_gru")
    except ImportError:
        sys.path.insert(0, str(ROOT / "plugins" / "numbarnn-gru"))
        module = importlib.import_module("numbarnn_gru")
    plugins.register_plugin(module, name="gru")
    try:
        yield
    finally:
        plugins.unregister_plugin("gru")


def _spec_signature(cls) -> str:
    parts = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
            parts.append(f"{f.name}={default.__name__ if callable(default) else repr(default)}")
        elif f.default_factory is not dataclasses.MISSING:
            parts.append(f"{f.name}={f.default_factory()!r}")
        else:
            parts.append(f.name)
    return f"{cls.__name__}({', '.join(parts)})"


def _hooks() -> str:
    from numbarnn import hookspecs
    from numbarnn.registry import HOOKS, KINDS, spec_class

    rows = ["| hook | `register` accepts one | what it registers |", "|---|---|---|"]
    for kind in KINDS:
        name = HOOKS[kind]
        function = getattr(hookspecs, name)
        cls = spec_class(kind)
        summary = inspect.getdoc(function).split("\n\n")[0].replace("\n", " ")
        rows.append(f"| `{name}{inspect.signature(function)}` | `{cls.__module__}.{cls.__name__}` | {summary} |")
    specs = ["", "The spec classes' fields, in order, with their defaults:", "", "```text"]
    specs += [_spec_signature(spec_class(kind)) for kind in KINDS]
    specs.append("```")
    return "\n".join(rows + specs) + "\n"


def generators() -> dict:
    from numbarnn import cli
    from numbarnn.registry import PLURALS

    out = {f"list-{plural}": (lambda p=plural: _fenced(f"numbarnn list {p}", _cli("list", p)))
           for plural in PLURALS.values()}
    out["plugins"] = lambda: _fenced("numbarnn plugins", _cli("plugins"))

    def gru():
        with _gru_plugin():
            return _fenced("numbarnn list cells", _cli("list", "cells"))

    out["list-cells-gru"] = gru
    out["hooks"] = _hooks
    out["help"] = lambda: _fenced("numbarnn --help", _cli("--help"))
    for add in cli.COMMANDS:
        command = add.__name__[len("add_"):-len("_command")]
        out[f"help-{command}"] = lambda c=command: _fenced(f"numbarnn {c} --help", _cli(c, "--help"))
    return out


def render(text: str, gens: dict, page: str = "") -> str:
    def replace(match):
        name = match.group("name")
        if name not in gens:
            raise SystemExit(f"{page}: unknown generated region {name!r}; known: {', '.join(sorted(gens))}")
        return match.group(1) + gens[name]() + match.group(4)

    return REGION.sub(replace, text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale regions instead of rewriting them")
    args = parser.parse_args(argv)
    from numbarnn import plugins

    plugins.reset()
    gens = generators()
    stale = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        if "<!-- BEGIN generated:" not in text:
            continue
        new = render(text, gens, str(page))
        if new == text:
            continue
        rel = page.relative_to(ROOT)
        if args.check:
            stale.append(rel)
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), new.splitlines(True),
                                                       f"{rel} (in the docs)", f"{rel} (what the code prints now)"))
        else:
            page.write_text(new, encoding="utf-8")
            print(f"updated {rel}")
    if stale:
        print(f"\nstale: {', '.join(map(str, stale))}; run: python docs/gen_listings.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
