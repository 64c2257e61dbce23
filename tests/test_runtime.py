"""set_threads caps both pools; warmup compiles what a step needs; a second trainer compiles nothing."""
import subprocess
import sys

import numba
import pytest
from threadpoolctl import threadpool_info

import numbarnn


def test_set_threads_caps_numba_and_blas():
    before = numba.get_num_threads()
    limiter = numbarnn.set_threads(1)
    try:
        assert numba.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info() if pool["user_api"] == "blas")
    finally:
        limiter.restore_original_limits()
        numba.set_num_threads(before)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            numbarnn.set_threads(bad)


SECOND_TRAINER = """
import numpy as np, numbarnn
from numbarnn.kernels import loops

def compiled():
    cell_loops = loops.loops_for(numbarnn.get_cell("lstm"))
    names = ("forward_indices", "backward_indices", "language_model_step", "generate")
    return {name: len(getattr(cell_loops, name).signatures) for name in names}

numbarnn.warmup(cells=("lstm",), dtypes=("float32",))
before = compiled()
trainer = numbarnn.make_trainer(cell="lstm", vocab_size=7, hidden_size=5, dtype="float32", seed=1)
trainer.train_step(np.array([[0, 1, 2]]), np.array([[1, 2, 3]]))
trainer.generate(prime=[1], length=3)
print(before == compiled() and before["language_model_step"] == 1 and before["generate"] == 1)
"""


def test_a_second_trainer_with_the_same_dtypes_compiles_nothing():
    result = subprocess.run([sys.executable, "-c", SECOND_TRAINER], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
