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

SIMULATOR_TEST = "tests/test_cuda.py::test_cuda_kernels_on_the_simulator"

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


def pytest_collection_modifyitems(session, config, items):
    """The CUDA simulator suite (minutes of single-core Python) starts in the background as
    soon as it is collected and its test moves to the end: the rest of the suite runs
    meanwhile, on the core it would leave idle (see ``tests/test_cuda.py``)."""
    simulator = [item for item in items if item.nodeid == SIMULATOR_TEST]
    if not simulator or config.getoption("collectonly"):
        return
    item = simulator[0]
    if any(mark.args and mark.args[0] for mark in item.iter_markers("skipif")):
        return
    items.remove(item)
    items.append(item)
    item.module.start_simulator_runs()


def pytest_sessionfinish(session, exitstatus):
    import sys

    module = sys.modules.get("test_cuda") or sys.modules.get("tests.test_cuda")
    if module is not None:
        module.stop_simulator_runs()
