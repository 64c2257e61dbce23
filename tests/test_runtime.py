"""set_threads caps both pools; warmup compiles what a step needs; a second trainer compiles nothing."""
import subprocess
import sys

import numba
import pytest
from threadpoolctl import threadpool_info

import checkout
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


SCIPY_BLAS_FIRST = """
import numbarnn
from threadpoolctl import threadpool_info
numbarnn.set_threads(1)  # before anything has loaded SciPy's BLAS, which the kernels call
import scipy.linalg.cython_blas
pools = [pool for pool in threadpool_info() if pool["user_api"] == "blas" and "scipy" in pool["filepath"]]
print(bool(pools) and all(pool["num_threads"] == 1 for pool in pools))
"""


def test_set_threads_before_the_first_step_caps_the_kernels_blas_too():
    pytest.importorskip("scipy")
    out = subprocess.run([sys.executable, "-c", SCIPY_BLAS_FIRST], env=checkout.env(), capture_output=True,
                         text=True, timeout=300, check=True)
    assert out.stdout.strip() == "True", out.stdout + out.stderr


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
    result = subprocess.run([sys.executable, "-c", SECOND_TRAINER], capture_output=True, text=True, timeout=300,
                            env=checkout.env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_per_cell_loops_are_generated_into_the_cache_and_reused(tmp_path, monkeypatch):
    from numbarnn.kernels import loops

    monkeypatch.setenv("NUMBARNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(loops, "_CELL_LOOPS", {})
    module = loops.loops_for(numbarnn.get_cell("rnn"))
    assert loops.loops_for(numbarnn.get_cell("rnn")) is module
    files = list(tmp_path.glob("numbarnn_loops_rnn_*.py"))
    assert [module.__file__] == [str(f) for f in files]
    assert "from numbarnn.kernels.cells import rnn_forward as cell_kernel_forward" in files[0].read_text()


def test_kernels_that_are_not_importable_run_from_memory():
    import numpy as np
    from numba import njit

    from numbarnn.cells import RNN, CellSpec
    from numbarnn.kernels import loops
    from numbarnn.models import RecurrentModel

    local = CellSpec(name="local_rnn", description="d", gates=1, states=1, cache_width=0,
                     forward=njit(RNN.forward.py_func), backward=njit(RNN.backward.py_func))
    assert loops._importable(local.forward) is None
    x = np.random.default_rng(0).normal(size=(4, 2, 3))
    outputs = [RecurrentModel(cell, 3, 5, seed=1).forward(x)[0] for cell in (local, RNN)]
    np.testing.assert_array_equal(*outputs)
    assert loops.loops_for(local).__name__.endswith("_in_memory")


def test_loops_survive_a_pruned_sys_modules():
    import sys

    import numpy as np

    import naive
    from numbarnn.kernels import loops

    model = numbarnn.make_model("rnn", vocab_size=3, hidden_size=2, dtype="float64", seed=0)
    x = np.array([[0], [2], [1]], dtype=np.int64)
    module = loops.loops_for(numbarnn.get_cell("rnn"))
    del sys.modules[module.__name__]
    assert loops.loops_for(numbarnn.get_cell("rnn")) is module and sys.modules[module.__name__] is module
    logits, _ = model.forward(x)  # and the loops still run, giving the reference's outputs
    p = model.params
    hidden, _ = naive.rnn_forward(naive.one_hot(x, 3), p["W_x"], p["W_h"], p["b_x"], p["b_h"], np.zeros((1, 2)))
    np.testing.assert_allclose(logits, hidden @ p["W_y"].T + p["b_y"], rtol=1e-12, atol=1e-15)
