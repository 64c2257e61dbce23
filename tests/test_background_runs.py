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
    module = types.SimpleNamespace(QUICK_SUITE=_Runs(started, "quick"), SIMULATOR_RUNS=_Runs(started, "simulator"),
                                   PAGE_RUNS={"02-dinosaur-island": _Runs(started, "page 02"),
                                              "03-cell-plugin": _Runs(started, "page 03")})
    items = [_Item(nodeid, module, nodeid in skipped) for nodeid in nodeids]
    conftest.pytest_collection_modifyitems(None, types.SimpleNamespace(getoption=lambda name: False), items)
    return [item.nodeid for item in items], started


def test_background_tests_go_last_in_order_with_the_tests_that_reuse_their_kernels_after_them():
    conftest = _root_conftest()
    quick, simulator, page_02, page_03 = list(conftest.BACKGROUND_TESTS)
    assert quick.endswith("test_suite_quick_smoke") and simulator.endswith("test_cuda_kernels_on_the_simulator")
    assert page_02.endswith("[02-dinosaur-island]") and page_03.endswith("[03-cell-plugin]")
    site, page_01 = "tests/test_docs.py::test_site_builds_strictly", page_02.replace("02-dinosaur-island", "01-step")
    nodeids = ["tests/test_a.py::one", "tests/test_benchmarks.py::test_kernel_benchmark_smoke", quick,
               "tests/test_benchmarks.py::test_breakdown_smoke[indrnn-False]", simulator, "tests/test_cuda.py::other",
               page_01, page_02, page_03, "tests/test_docs.py::test_other", site, "tests/test_z.py::two"]
    order, started = _order(conftest, nodeids)
    assert order == ["tests/test_a.py::one", "tests/test_cuda.py::other", page_01, "tests/test_docs.py::test_other",
                     "tests/test_z.py::two", quick, "tests/test_benchmarks.py::test_kernel_benchmark_smoke",
                     "tests/test_benchmarks.py::test_breakdown_smoke[indrnn-False]", simulator, page_02, page_03, site]
    assert started == ["quick", "simulator", "page 02", "page 03"]  # each page's own runs
    # A skipped background test starts nothing and moves nothing.
    order, started = _order(conftest, nodeids, skipped={quick})
    assert started == ["simulator", "page 02", "page 03"] and order[:3] == nodeids[:3] and order[-1] == site


def test_every_background_test_exists_and_names_runs_its_module_has():
    """A renamed test or page would quietly run in place, waiting on its own work."""
    conftest = _root_conftest()
    for nodeid, runs_name in conftest.BACKGROUND_TESTS.items():
        path, _, test = nodeid.partition("::")
        module = importlib.import_module(Path(path).stem)  # tests/ is on sys.path, as pytest imports them
        assert callable(getattr(module, test.partition("[")[0], None)), nodeid
        assert isinstance(conftest.background_runs(module, runs_name, nodeid), checkout.BackgroundRuns), nodeid
    for nodeid, prefix in conftest.FOLLOWERS.items():
        assert nodeid in conftest.BACKGROUND_TESTS and prefix.startswith("tests/"), nodeid


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
