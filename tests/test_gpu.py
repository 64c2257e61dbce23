"""What only a real NVIDIA GPU can check (marked ``gpu``; skipped elsewhere, including the simulator).

The simulator checks the arithmetic and the indexing; these check what it cannot: the
default launch shapes compiled for a real device, multi-block cooperative (persistent)
grids, and sizes with many full tiles. ``benchmarks/gpu_check.py`` runs them first.
"""
import numpy as np
import pytest

import numbarnn
import numbarnn.cuda as nc


def _real_gpu() -> bool:
    return not nc.simulator() and nc.available()


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _real_gpu(), reason="needs a real NVIDIA GPU")]

CUDA_CELLS = [n for n in numbarnn.list_cells() if numbarnn.get_cell(n).cuda_pointwise]


@pytest.mark.parametrize("cell", CUDA_CELLS)
@pytest.mark.parametrize("loop", ["launch", "persistent", "auto"])
@pytest.mark.parametrize("B", [1, 4, 37])
def test_forward_and_gradients_match_cpu_float64_default_shapes(cell, loop, B):
    from numbarnn.cuda.trainer import make_cuda_model

    cpu = numbarnn.make_model(cell, vocab_size=11, hidden_size=96, dtype="float64", seed=0)
    gpu = make_cuda_model(cell, vocab_size=11, hidden_size=96, dtype="float64", seed=0)
    x = np.random.default_rng(B).integers(-1, 11, size=(7, B))
    out_c, _ = cpu.forward(x)
    out_g, _ = gpu.forward(x, loop=loop)
    np.testing.assert_allclose(out_g, out_c, rtol=1e-10, atol=1e-12)
    d = np.random.default_rng(1).normal(size=out_c.shape)
    grads_c, grads_g = cpu.backward(d), gpu.backward(d, loop=loop)
    for name, value in grads_c.items():
        np.testing.assert_allclose(grads_g[name], value, rtol=1e-9, atol=1e-11, err_msg=name)


def test_persistent_grid_spans_several_blocks():
    from numbarnn.cuda import loops, steps

    cell = numbarnn.get_cell("lstm")
    kernels = steps.step_kernels(cell, np.float32, 64, 1024)
    assert kernels.ntiles(64, 1024) > 1
    # resident_blocks compiles the kernel and asks the device how many blocks fit at once
    from numba import cuda

    args = (3, kernels.ntiles(64, 1024), cuda.device_array((3, 64, 4096), np.float32),
            cuda.device_array((4096, 1024), np.float32), cuda.device_array(4096, np.float32),
            cuda.device_array((2, 4, 64, 1024), np.float32), cuda.device_array((3, 64, 5120), np.float32),
            cuda.device_array((64, 4096), np.float32))
    assert loops.resident_blocks(kernels.forward_persistent, args, kernels.block) > 1


def test_lstm_float32_training_follows_cpu():
    from numbarnn.cuda.trainer import make_cuda_trainer

    kw = dict(vocab_size=30, hidden_size=256, lr=0.01, clip=5.0, dtype="float32", seed=0)
    cpu = numbarnn.make_trainer("lstm", "softmax_cross_entropy", "adam", "categorical", **kw)
    gpu = make_cuda_trainer("lstm", "softmax_cross_entropy", "adam", "categorical", **kw)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x, y = rng.integers(0, 30, size=(16, 20)), rng.integers(0, 30, size=(16, 20))
        np.testing.assert_allclose(gpu.train_step(x, y), cpu.train_step(x, y), rtol=1e-4)


@pytest.mark.parametrize("step_kernel", ["tiled", "rowdot"])
@pytest.mark.parametrize("loop", ["launch", "persistent"])
def test_both_step_kernels_at_a_batch_of_several_groups(step_kernel, loop):
    # B 37: five rowdot batch groups of 8 (the last partial), or two tiled row blocks;
    # H 300 is not a multiple of 32 lanes or of any tile width.
    from numbarnn.cuda import config
    from numbarnn.cuda.trainer import make_cuda_model

    saved = config.step_kernel
    config.update(step_kernel=step_kernel)
    try:
        cpu = numbarnn.make_model("lstm", vocab_size=11, hidden_size=300, dtype="float64", seed=0)
        gpu = make_cuda_model("lstm", vocab_size=11, hidden_size=300, dtype="float64", seed=0)
        x = np.random.default_rng(2).integers(-1, 11, size=(5, 37))
        out_c, _ = cpu.forward(x)
        out_g, _ = gpu.forward(x, loop=loop)
        np.testing.assert_allclose(out_g, out_c, rtol=1e-10, atol=1e-12)
        d = np.random.default_rng(3).normal(size=out_c.shape)
        grads_c, grads_g = cpu.backward(d), gpu.backward(d, loop=loop)
        for name, value in grads_c.items():
            np.testing.assert_allclose(grads_g[name], value, rtol=1e-9, atol=1e-11, err_msg=name)
    finally:
        config.update(step_kernel=saved)
