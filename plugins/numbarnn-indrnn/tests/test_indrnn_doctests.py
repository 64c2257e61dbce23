"""The plugin's docstring examples (the kernels, the initialiser and the hook), run on the
imported package.

The package is imported rather than collected from its folder by ``--doctest-modules``:
numbarnn's registry loads the installed copy through the entry point, and collecting the
source files as well could import a second ``numbarnn_indrnn`` from another path.
"""
import doctest

import pytest

import numbarnn_indrnn
import numbarnn_indrnn.kernels

EXAMPLES = sorted((t for module in (numbarnn_indrnn, numbarnn_indrnn.kernels)
                   for t in doctest.DocTestFinder().find(module) if t.examples), key=lambda t: t.name)


def test_every_example_is_found():
    assert {"numbarnn_indrnn.register_cells", "numbarnn_indrnn.init_projection",
            "numbarnn_indrnn.kernels.indrnn_forward", "numbarnn_indrnn.kernels.indrnn_backward"} <= {
        t.name for t in EXAMPLES}


@pytest.mark.parametrize("example", EXAMPLES, ids=[t.name for t in EXAMPLES])
def test_docstring_example(example):
    report = []
    result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(example, out=report.append)
    assert result.failed == 0, "".join(report)
