"""Collection settings for the whole repository.

The docstring examples of ``numbarnn/cuda/*.py`` launch CUDA kernels: they need a GPU or
numba's CUDA simulator, which must be switched on (``NUMBA_ENABLE_CUDASIM=1``) before numba
is first imported. ``--doctest-modules`` therefore skips those modules here, and
``tests/cuda_sim/test_doctests.py`` runs their examples where kernels can run (the simulator
process that ``tests/test_cuda.py`` starts, or a GPU machine). ``numbarnn/cuda/__init__.py``
imports no ``numba.cuda`` and its examples are host-only, so it stays. The GRU plugin's
CUDA examples (``numbarnn_gru.cuda``) run there too; its CPU examples run in
``plugins/numbarnn-gru/tests/test_doctests.py``.

Examples that need an optional package (``numbarnn.interop``'s need PyTorch) run when it
is installed and are skipped, with the reason, when it is not.
"""

import importlib.util

import pytest

# Tests whose work runs in background processes started at collection: node id -> the test
# module's tests/checkout.BackgroundRuns that starts that work (once) and kills what is left.
# Their results are collected last, in this order.
# A module-level dict of them holds one per test parameter (the slowest docs pages: 03 spends
# about 35 s compiling the two cells it defines).
BACKGROUND_TESTS = {
    "tests/test_benchmarks.py::test_suite_quick_smoke": "QUICK_SUITE",
    "tests/test_cuda.py::test_cuda_kernels_on_the_simulator": "SIMULATOR_RUNS",
    "tests/test_docs.py::test_page_runs_and_makes_its_pictures[02-dinosaur-island]": "PAGE_RUNS",
    "tests/test_docs.py::test_page_runs_and_makes_its_pictures[03-cell-plugin]": "PAGE_RUNS",
}
# Tests (a node id prefix) that run right after a background test's result. The other
# benchmark smoke tests follow the quick suite, so that their child processes find the
# kernels it compiled in the shared numba cache instead of compiling them again (they run
# the same float32 kernels: cold, about 100 s of their time on two cores; after the suite,
# about 20 s). The site build follows the last docs page: it shows every page's pictures.
FOLLOWERS = {
    "tests/test_benchmarks.py::test_suite_quick_smoke": "tests/test_benchmarks.py::",
    "tests/test_docs.py::test_page_runs_and_makes_its_pictures[03-cell-plugin]":
        "tests/test_docs.py::test_site_builds_strictly",
}
_STARTED = []  # the BackgroundRuns started

collect_ignore_glob = ["numbarnn/cuda/[!_]*.py"]

# Docstring examples that need an optional package, by module: they run when it is
# installed and are skipped, saying why, when it is not.
DOCTESTS_NEEDING = {"numbarnn.interop": "torch"}


@pytest.fixture(autouse=True)
def _optional_package_of_doctests(request):
    if type(request.node).__name__ != "DoctestItem":
        return
    for module, package in DOCTESTS_NEEDING.items():
        if request.node.name.startswith(module + ".") and importlib.util.find_spec(package) is None:
            pytest.skip(f"{request.node.name}'s examples need {package} (pip install 'numbarnn[{package}]')")


def background_runs(module, runs_name, nodeid):
    """The BackgroundRuns that ``BACKGROUND_TESTS`` names for ``nodeid`` in its test module:
    the attribute itself, or for a parametrized test ("test[param]") its entry by parameter."""
    runs = getattr(module, runs_name)
    if isinstance(runs, dict):
        runs = runs[nodeid.partition("[")[2].removesuffix("]")]
    return runs


@pytest.hookimpl(trylast=True)  # after -k/-m have deselected: start only what will run
def pytest_collection_modifyitems(session, config, items):
    """Long single-core work (the CUDA simulator suite, the quick benchmark suite: minutes
    each; the slowest docs pages) starts in the background as soon as its test is collected,
    and the test moves to the end, where it collects the result: the rest of the suite runs
    meanwhile, on the core that work would otherwise leave idle (see ``tests/test_cuda.py``,
    ``tests/test_benchmarks.py`` and ``tests/test_docs.py``). The tests in ``FOLLOWERS``
    follow it there."""
    if config.getoption("collectonly"):
        return
    by_id = {item.nodeid: item for item in items}
    for nodeid, runs_name in BACKGROUND_TESTS.items():
        item = by_id.get(nodeid)
        if item is None or any(mark.args and mark.args[0] for mark in item.iter_markers("skipif")):
            continue
        runs = background_runs(item.module, runs_name, nodeid)
        prefix = FOLLOWERS.get(nodeid)
        followers = [other for other in items
                     if prefix and other.nodeid.startswith(prefix) and other.nodeid not in BACKGROUND_TESTS]
        for moved in [item, *followers]:
            items.remove(moved)
            items.append(moved)
        runs.start()
        _STARTED.append(runs)


def pytest_sessionfinish(session, exitstatus):
    for runs in _STARTED:
        runs.stop()
