"""The checkout under test, for tests that start Python in a subprocess.

A child Python started from another directory imports whatever ``numbarnn`` its
``sys.path`` finds first: with a non-editable install that is site-packages, not this
checkout, and a test of the command line or the docs would pass on code it never ran.
``env()`` puts the checkout (and its GRU plugin) first on ``PYTHONPATH``; every
subprocess the tests start uses it, and ``tests/test_registry.py`` checks that a child
started from elsewhere imports this checkout's files.
"""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATHS = (ROOT, ROOT / "plugins" / "numbarnn-gru")


def env(base=None, **extra) -> dict:
    """``base`` (default ``os.environ``) plus ``extra``, with the checkout first on ``PYTHONPATH``."""
    out = dict(os.environ if base is None else base, **extra)
    out["PYTHONPATH"] = os.pathsep.join([*map(str, PATHS), *filter(None, [out.get("PYTHONPATH")])])
    return out
