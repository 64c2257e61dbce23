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
