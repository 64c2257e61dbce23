"""Run the tutorials' code: what the test suite does, and how the site gets its pictures.

A tutorial is a Markdown page ``docs/tutorials/NN-*.md``. Its fenced code blocks are:

* ```` ```python ````: executed, in page order, in one namespace per page, with a scratch
  folder as the working directory (pictures are written to ``img/`` there);
* a block with a title, ```` ```python title="pkg/mod.py" ```` (any language): a file of
  the page's example project, written to that path inside the scratch folder when the
  run reaches it, not executed;
* a ``python`` block whose first line starts with ``# not run`` is shown only (the
  comment says why, e.g. it needs a GPU);
* every other block (``bash``, ``console``, ``text``, ...) is shown only.

Blocks inside admonitions (indented) count too. ``NUMBARNN_DOCS_QUICK=1`` asks the pages
for their small sizes (the test suite sets it); unset, they use the sizes the text
describes.

Pictures are never committed: the pages make them. ``mkdocs build`` runs the pages whose
pictures are missing (``docs/hooks.py``); to remake them all::

    python docs/run_tutorials.py                  # every page, full sizes -> docs/tutorials/img/
    python docs/run_tutorials.py --quick 02       # one page, small sizes
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional

DOCS = Path(__file__).resolve().parent
TUTORIALS = DOCS / "tutorials"
IMG = TUTORIALS / "img"
QUICK_ENV = "NUMBARNN_DOCS_QUICK"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_TITLE = re.compile(r"""title=["']([^"']+)["']""")
_PICTURE = re.compile(r"!\[[^\]]*\]\(img/([^)\s]+)\)")


@dataclass
class Block:
    """One fenced block: ``kind`` is "run", "file" or "show"; ``line`` is its first code line (1-based)."""

    kind: str
    language: str
    code: str
    line: int
    title: Optional[str] = None


def tutorials() -> List[Path]:
    """The tutorial pages, in order."""
    return sorted(TUTORIALS.glob("[0-9][0-9]-*.md"))


def find(names: Iterable[str]) -> List[Path]:
    """Pages by number or name prefix (``"02"``, ``"02-dinosaur-island"``, a path)."""
    pages, out = tutorials(), []
    for name in names:
        stem = Path(name).stem
        matches = [p for p in pages if p.stem == stem or p.stem.startswith(stem + "-") or p.stem[:2] == stem]
        if len(matches) != 1:
            raise SystemExit(f"no single tutorial matches {name!r}; pages: {', '.join(p.stem for p in pages)}")
        out.append(matches[0])
    return out


def blocks(path: Path) -> List[Block]:
    """The fenced blocks of a page, classified."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m.group("indent"), m.group("fence"), m.group("info").strip()
        body, j = [], i + 1
        while j < len(lines):
            close = _FENCE.match(lines[j])
            if (close and close.group("fence")[0] == fence[0] and len(close.group("fence")) >= len(fence)
                    and not close.group("info").strip()):
                break
            line = lines[j]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            j += 1
        language = info.split()[0].lstrip(".{") if info else ""
        title = _TITLE.search(info)
        code = "\n".join(body) + "\n"
        if title:
            kind = "file"
        elif language == "python" and not code.lstrip().startswith("# not run"):
            kind = "run"
        else:
            kind = "show"
        out.append(Block(kind, language, code, i + 2, title.group(1) if title else None))
        i = j + 1
    return out


def pictures(path: Path) -> List[str]:
    """File names of the pictures a page shows (``![...](img/NAME)``)."""
    return _PICTURE.findall(Path(path).read_text(encoding="utf-8"))


@contextlib.contextmanager
def _settings(workdir: Path, quick: bool):
    saved_cwd, saved_env = os.getcwd(), os.environ.get(QUICK_ENV)
    os.environ[QUICK_ENV] = "1" if quick else "0"
    os.environ.setdefault("MPLBACKEND", "Agg")
    if "matplotlib" in sys.modules:
        import matplotlib

        matplotlib.use("Agg")
    os.chdir(workdir)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        if saved_env is None:
            os.environ.pop(QUICK_ENV, None)
        else:
            os.environ[QUICK_ENV] = saved_env


def run(path: Path, workdir: Path, quick: bool = False, log=None) -> dict:
    """Execute a page's blocks in ``workdir``; returns the page's namespace.

    A failing block raises its exception with a traceback pointing at the page's line.
    """
    path, workdir = Path(path).resolve(), Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    namespace = {"__name__": "__tutorial__", "__file__": str(path)}
    with _settings(workdir, quick):
        for block in blocks(path):
            if block.kind == "file":
                target = workdir / block.title
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(block.code, encoding="utf-8")
            elif block.kind == "run":
                started = time.perf_counter()
                code = compile("\n" * (block.line - 1) + block.code, str(path), "exec")
                exec(code, namespace)  # noqa: S102 - the docs' own examples
                if log is not None:
                    log(f"  {path.name}:{block.line} ran in {time.perf_counter() - started:.1f} s")
    try:
        import matplotlib.pyplot as plt

        plt.close("all")
    except ImportError:
        pass
    return namespace


def code_hash(path: Path) -> str:
    """A hash of everything a page runs or writes: its pictures are stale when it changes."""
    import hashlib

    digest = hashlib.sha256()
    for block in blocks(path):
        if block.kind != "show":
            digest.update(f"{block.kind}\0{block.title}\0{block.code}\0".encode("utf-8"))
    return digest.hexdigest()[:16]


def _stamp(page: Path, out: Path) -> Path:
    return out / f".{page.stem}.code"


def make_pictures(pages: Iterable[Path], out: Path = IMG, quick: bool = False, log=print) -> List[Path]:
    """Run ``pages`` in scratch folders and copy the pictures they show into ``out``.

    Next to them, ``.NN-page.code`` records the hash of the code that made them.
    """
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for page in pages:
        log(f"running {page.relative_to(DOCS)}" + (" (quick)" if quick else ""))
        with tempfile.TemporaryDirectory(prefix="numbarnn-tutorial-") as tmp:
            run(page, Path(tmp), quick=quick, log=log)
            for name in pictures(page):
                made = Path(tmp) / "img" / name
                if not made.exists():
                    raise RuntimeError(f"{page.name} shows img/{name} but did not write it")
                shutil.copyfile(made, out / name)
                written.append(out / name)
        _stamp(page, out).write_text(code_hash(page) + (" quick" if quick else "") + "\n", encoding="utf-8")
    return written


def missing_pictures(pages: Iterable[Path], out: Path = IMG) -> List[Path]:
    """The pages that show a picture not yet in ``out``, or made by code that has changed since."""
    def stale(page):
        stamp = _stamp(page, out)
        return not stamp.exists() or stamp.read_text(encoding="utf-8").split()[0] != code_hash(page)

    return [p for p in pages if pictures(p) and (stale(p) or any(not (out / n).exists() for n in pictures(p)))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run the tutorials and write their pictures.")
    parser.add_argument("pages", nargs="*", help="page numbers or names (default: every page)")
    parser.add_argument("--quick", action="store_true", default=os.environ.get(QUICK_ENV) == "1",
                        help=f"small sizes, as the test suite runs them (default when {QUICK_ENV}=1)")
    parser.add_argument("--missing", action="store_true",
                        help="only pages whose pictures are missing or older than their code")
    parser.add_argument("--out", type=Path, default=IMG, help="where pictures go (default: %(default)s)")
    args = parser.parse_args(argv)
    pages = find(args.pages) if args.pages else tutorials()
    if args.missing:
        pages = missing_pictures(pages, args.out)
    else:
        pages = [p for p in pages if pictures(p)] if not args.pages else pages
    for path in make_pictures(pages, args.out, quick=args.quick):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
