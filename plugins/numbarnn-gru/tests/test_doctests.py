"""The plugin's docstring examples (CPU kernels and the hook), run on the imported package.

The package is imported rather than collected from this folder by ``--doctest-modules``:
CI installs the plugin (not editable), numbarnn's registry loads that installed copy
through the entry point, and collecting the source files as well would import a second
``numbarnn_gru`` from another path. The CUDA examples (``numbarnn_gru.cuda``) need the
simulator and run in ``tests/cuda_sim/test_doctests.py``.
"""
import doctest

import pytest

import numbarnn_gru
import numbarnn_gru.kernels

EXAMPLES = sorted((t for module in (numbarnn_gru, numbarnn_gru.kernels)
                   for t in doctest.DocTestFinder().find(module) if t.examples), key=lambda t: t.name)


def test_every_example_is_found():
    assert {"numbarnn_gru.register_cells", "numbarnn_gru.kernels.gru_forward",
            "numbarnn_gru.kernels.gru_backward"} <= {t.name for t in EXAMPLES}


@pytest.mark.parametrize("example", EXAMPLES, ids=[t.name for t in EXAMPLES])
def test_docstring_example(example):
    report = []
    result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(example, out=report.append)
    assert result.failed == 0, "".join(report)
