"""MkDocs hook: make the tutorials' pictures before a build when any is missing or stale.

The pictures are not committed; the tutorial pages make them when they run (see
``docs/run_tutorials.py``), so they always show what the code does now. A build runs the
pages whose pictures are missing, or were made by code that has changed since (each
page's code hash is kept next to its pictures): a few minutes on two cores the first
time, ``NUMBARNN_DOCS_QUICK=1`` for the small sizes. Later builds find them in
``docs/tutorials/img/`` (ignored by git).
"""
import logging
import os
import subprocess
import sys
from pathlib import Path

from mkdocs.exceptions import PluginError

log = logging.getLogger("mkdocs.hooks.tutorials")


def on_pre_build(config, **kwargs):
    docs = Path(config["docs_dir"])
    sys.path.insert(0, str(docs))
    try:
        import run_tutorials
    finally:
        sys.path.remove(str(docs))
    out = docs / "tutorials" / "img"
    pages = run_tutorials.missing_pictures(run_tutorials.tutorials(), out)
    if not pages:
        return
    names = [p.stem for p in pages]
    log.info("running %s to make their pictures (docs/run_tutorials.py)", ", ".join(names))
    quick = ["--quick"] if os.environ.get(run_tutorials.QUICK_ENV) == "1" else []
    result = subprocess.run([sys.executable, str(docs / "run_tutorials.py"), "--out", str(out), *quick, *names],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise PluginError("a tutorial failed while making its pictures:\n" + (result.stdout + result.stderr)[-4000:])
