"""The examples in numbarnn.cuda's docstrings, run where CUDA kernels can run.

They launch kernels, so they need the simulator (or a GPU), and the simulator must be on
before numba is first imported. The main test run imports numba long before it collects
``numbarnn/`` with ``--doctest-modules``, so the root ``conftest.py`` keeps it from
collecting these modules, and they run here instead: in the simulator process that
``tests/test_cuda.py`` starts, or directly on a machine with a GPU. Each docstring is one
test, under this folder's ``small_blocks`` fixture (tiny launch shapes keep the simulator
fast) and with pytest's default doctest flag, ELLIPSIS.

The plugin of ``plugins/numbarnn-gru`` keeps its CUDA device functions in
``numbarnn_gru.cuda``, which the main run does not collect (its CPU examples run in
``plugins/numbarnn-gru/tests/test_doctests.py``); its examples run here when the plugin is
installed. When it is not, its module is left
out of ``MODULES`` (rather than reported as skipped: ``tests/test_cuda.py`` expects this
folder to run without skips).
"""
import doctest
import importlib
import importlib.util
import pkgutil

import pytest

import numbarnn.cuda

GRU_PLUGIN_INSTALLED = importlib.util.find_spec("numbarnn_gru") is not None

MODULES = (["numbarnn.cuda"] + sorted(m.name for m in pkgutil.iter_modules(numbarnn.cuda.__path__, "numbarnn.cuda."))
           + (["numbarnn_gru.cuda"] if GRU_PLUGIN_INSTALLED else []))


def _examples():
    finder = doctest.DocTestFinder()
    tests = []
    for name in MODULES:
        tests += [t for t in finder.find(importlib.import_module(name)) if t.examples]
    return sorted(tests, key=lambda t: t.name)


EXAMPLES = _examples()


def test_every_module_is_found():
    assert {"numbarnn.cuda.cells", "numbarnn.cuda.trainer"} <= set(MODULES)
    assert len(EXAMPLES) > len(MODULES)
    if GRU_PLUGIN_INSTALLED:
        names = {t.name for t in EXAMPLES}
        assert {"numbarnn_gru.cuda.gru_forward", "numbarnn_gru.cuda.gru_backward"} <= names


@pytest.mark.parametrize("example", EXAMPLES, ids=[t.name for t in EXAMPLES])
def test_docstring_example(example):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report = []
    result = runner.run(example, out=report.append)
    assert result.failed == 0, "".join(report)
