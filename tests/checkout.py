"""The checkout under test, for tests that start Python in a subprocess.

A child Python started from another directory imports whatever ``numbarnn`` its
``sys.path`` finds first: with a non-editable install that is site-packages, not this
checkout, and a test of the command line or the docs would pass on code it never ran.
``env()`` puts the checkout (and its GRU plugin) first on ``PYTHONPATH``; every
subprocess the tests start uses it, and ``tests/test_registry.py`` checks that a child
started from elsewhere imports this checkout's files. :class:`BackgroundRuns` holds the child
processes a long test starts at collection.
"""
import contextlib
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATHS = (ROOT, ROOT / "plugins" / "numbarnn-gru")


def env(base=None, **extra) -> dict:
    """``base`` (default ``os.environ``) plus ``extra``, with the checkout first on ``PYTHONPATH``."""
    out = dict(os.environ if base is None else base, **extra)
    out["PYTHONPATH"] = os.pathsep.join([*map(str, PATHS), *filter(None, [out.get("PYTHONPATH")])])
    return out


class BackgroundRuns:
    """Child processes a long test starts once, early, and collects at its end.

    ``launch`` returns the started ``subprocess.Popen`` objects. The root ``conftest.py`` calls
    :meth:`start` as soon as the session has collected the test (a module-level instance, or
    a dict of them by test parameter, named in its ``BACKGROUND_TESTS``), so the work runs on
    the core the rest of the suite leaves idle, and moves the test to the end; the test calls
    :meth:`start` for the processes, waits on them, then :meth:`stop`, which kills any still
    running (as the session's end does for a test that never ran).

    They run at a lower priority (``NICENESS`` more than the suite's): they and the suite
    share two cores, and the suite, one chain of tests, is the longer job. Given equal
    shares it got half a core while they ran and then ran on alone while the other core
    idled; behind it they take the core it leaves (a whole one when it waits), and finish at
    about the time it does."""

    NICENESS = 10

    def __init__(self, launch):
        self._launch = launch
        self._processes = []

    def start(self) -> list:
        """The processes, launched on the first call."""
        if not self._processes:
            self._processes.extend(self._launch())
            for process in self._processes:
                # Right after the start, before the child has imported anything that starts
                # threads (they inherit it); where the call is missing (Windows), equal shares.
                with contextlib.suppress(AttributeError, ProcessLookupError, PermissionError):
                    os.setpriority(os.PRIO_PROCESS, process.pid, min(19, os.nice(0) + self.NICENESS))
        return self._processes

    def stop(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.kill()
