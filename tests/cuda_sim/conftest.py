"""The CUDA kernels against the CPU kernels, on the CUDA simulator or a real GPU.

These tests need ``NUMBA_ENABLE_CUDASIM=1`` set before numba is imported, so the main
test run does not collect them: ``tests/test_cuda.py`` runs this folder in its own
process with the variable set. On a machine with a real GPU they run as they are
(``python -m pytest tests/cuda_sim``), with the same tiny launch shapes.

Every test here runs with small thread blocks and tiles (``SMALL``) so that the tiny
problems the simulator can afford still span several blocks and partial tiles, where
indexing bugs show.
"""
import os

import pytest


def _enabled() -> bool:
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1":
        return True
    try:
        import numbarnn.cuda as nc

        return nc.available()
    except Exception:  # noqa: BLE001
        return False


if not _enabled():
    collect_ignore_glob = ["test_*.py"]

# threads per 1-D block and at most 3 such blocks; gemm (BM, BN, BK, TM, TN); step (BM, BJ, BK, TM); reduction threads;
# rowdot step kernels: 2 batch rows per warp, 1 warp (32 threads) per block, and only for batches of 1 unless a test asks
# (so the tests with batches of 2 or more keep exercising the tiled kernels).
SMALL = dict(threads=4, max_blocks=3, gemm_tile=(4, 4, 2, 2, 2), step_tile=(2, 4, 3, 1), reduce_threads=4, loop="auto",
             step_kernel="auto", rowdot_batch=2, rowdot_warps=1, rowdot_max_batch=1)


@pytest.fixture(autouse=True)
def small_blocks():
    from numbarnn.cuda import config

    saved = {k: getattr(config, k) for k in SMALL}
    config.update(**SMALL)
    yield config
    config.update(**saved)
