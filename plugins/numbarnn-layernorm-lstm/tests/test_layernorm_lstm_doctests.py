"""The plugin's docstring examples (the kernels, the row sums and the hook), run on the
imported package.

The package is imported rather than collected from its folder by ``--doctest-modules``:
numbarnn's registry loads the installed copy through the entry point, and collecting the
source files as well could import a second ``numbarnn_layernorm_lstm`` from another path.
"""
import doctest

import pytest

import numbarnn_layernorm_lstm
import numbarnn_layernorm_lstm.kernels
import numbarnn_layernorm_lstm.reductions

MODULES = (numbarnn_layernorm_lstm, numbarnn_layernorm_lstm.kernels, numbarnn_layernorm_lstm.reductions)
EXAMPLES = sorted((t for module in MODULES for t in doctest.DocTestFinder().find(module) if t.examples),
                  key=lambda t: t.name)


def test_every_example_is_found():
    assert {"numbarnn_layernorm_lstm.register_cells", "numbarnn_layernorm_lstm.reductions",
            "numbarnn_layernorm_lstm.kernels.layernorm_lstm_forward",
            "numbarnn_layernorm_lstm.kernels.layernorm_lstm_backward"} <= {t.name for t in EXAMPLES}


@pytest.mark.parametrize("example", EXAMPLES, ids=[t.name for t in EXAMPLES])
def test_docstring_example(example):
    report = []
    result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(example, out=report.append)
    assert result.failed == 0, "".join(report)
