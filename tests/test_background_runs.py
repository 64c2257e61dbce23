"""The root conftest.py's ordering of the run and tests/checkout.py's background processes
(see docs/testing.md): long jobs start at collection at a lower priority, their tests collect
the results last, and the tests that reuse their compiled kernels follow them."""
import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import checkout

ROOT = Path(__file__).resolve().parents[1]


def _root_conftest():
    spec = importlib.util.spec_from_file_location("numbarnn_root_conftest", ROOT / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Runs:
    def __init__(self, log, name):
        self.log, self.name = log, name

    def start(self):
        self.log.append(self.name)


class _Item:
    def __init__(self, nodeid, module, skipped=False):
        self.nodeid, self.module, self._skipped = nodeid, module, skipped

    def iter_markers(self, name):
        return [types.SimpleNamespace(args=(True,))] if self._skipped and name == "skipif" else []


def _order(conftest, nodeids, skipped=()):
    started = []
    module = types.SimpleNamespace(QUICK_SUITE=_Runs(started, "quick"), SIMULATOR_RUNS=_Runs(started, "simulator"))
    items = [_Item(nodeid, module, nodeid in skipped) for nodeid in nodeids]
    conftest.pytest_collection_modifyitems(None, types.SimpleNamespace(getoption=lambda name: False), items)
    return [item.nodeid for item in items], started


def test_background_tests_go_last_in_order_with_the_tests_that_reuse_their_kernels_after_them():
    conftest = _root_conftest()
    quick, simulator = list(conftest.BACKGROUND_TESTS)
    assert quick.endswith("test_suite_quick_smoke") and simulator.endswith("test_cuda_kernels_on_the_simulator")
    nodeids = ["tests/test_a.py::one", "tests/test_benchmarks.py::test_kernel_benchmark_smoke", quick,
               "tests/test_benchmarks.py::test_breakdown_smoke[indrnn-False]", simulator, "tests/test_cuda.py::other",
               "tests/test_z.py::two"]
    order, started = _order(conftest, nodeids)
    assert order == ["tests/test_a.py::one", "tests/test_cuda.py::other", "tests/test_z.py::two", quick,
                     "tests/test_benchmarks.py::test_kernel_benchmark_smoke",
                     "tests/test_benchmarks.py::test_breakdown_smoke[indrnn-False]", simulator]
    assert started == ["quick", "simulator"]
    # A skipped background test starts nothing and moves nothing.
    order, started = _order(conftest, nodeids, skipped={quick})
    assert started == ["simulator"] and order[:3] == nodeids[:3] and order[-1] == simulator


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="no process priorities here (Windows): equal shares")
def test_background_processes_run_at_a_lower_priority():
    runs = checkout.BackgroundRuns(lambda: [subprocess.Popen(
        [sys.executable, "-c", "import os, time; time.sleep(0.5); print(os.nice(0))"], stdout=subprocess.PIPE,
        text=True)])
    try:
        (process,) = runs.start()
        assert runs.start() == [process]  # started once
        out, _ = process.communicate(timeout=60)
    finally:
        runs.stop()
    assert int(out) == min(os.nice(0) + checkout.BackgroundRuns.NICENESS, 19)
