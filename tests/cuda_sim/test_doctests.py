"""The examples in numbarnn.cuda's docstrings, run where CUDA kernels can run.

They launch kernels, so they need the simulator (or a GPU), and the simulator must be on
before numba is first imported. The main test run imports numba long before it collects
``numbarnn/`` with ``--doctest-modules``, so the root ``conftest.py`` keeps it from
collecting these modules, and they run here instead: in the simulator process that
``tests/test_cuda.py`` starts, or directly on a machine with a GPU. Each docstring is one
test, under this folder's ``small_blocks`` fixture (tiny launch shapes keep the simulator
fast) and with pytest's default doctest flag, ELLIPSIS.
"""
import doctest
import importlib
import pkgutil

import pytest

import numbarnn.cuda

MODULES = ["numbarnn.cuda"] + sorted(m.name for m in pkgutil.iter_modules(numbarnn.cuda.__path__, "numbarnn.cuda."))


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


@pytest.mark.parametrize("example", EXAMPLES, ids=[t.name for t in EXAMPLES])
def test_docstring_example(example):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report = []
    result = runner.run(example, out=report.append)
    assert result.failed == 0, "".join(report)
