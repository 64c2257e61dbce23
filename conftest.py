"""Collection settings for the whole repository.

The docstring examples of ``numbarnn/cuda/*.py`` launch CUDA kernels: they need a GPU or
numba's CUDA simulator, which must be switched on (``NUMBA_ENABLE_CUDASIM=1``) before numba
is first imported. ``--doctest-modules`` therefore skips those modules here, and
``tests/cuda_sim/test_doctests.py`` runs their examples where kernels can run (the simulator
process that ``tests/test_cuda.py`` starts, or a GPU machine). ``numbarnn/cuda/__init__.py``
imports no ``numba.cuda`` and its examples are host-only, so it stays. The GRU plugin's
CUDA examples (``numbarnn_gru.cuda``) run there too; its CPU examples run in
``plugins/numbarnn-gru/tests/test_doctests.py``.
"""

collect_ignore_glob = ["numbarnn/cuda/[!_]*.py"]
