"""A few training steps on the device give the CPU trainer's losses; generation matches too."""
import numpy as np
import pytest

import numbarnn
from numbarnn.cuda import UnsupportedOnCuda
from numbarnn.cuda.trainer import DeviceState, make_cuda_model, make_cuda_trainer
from numbarnn.trainer import Trainer
from numbarnn.losses import LossSpec
from numbarnn.optimizers import OptimizerSpec, SGD
from numbarnn.plugins import get_cell, get_loss, get_optimizer, get_sampler

CUDA_CELLS = [n for n in numbarnn.list_cells() if numbarnn.get_cell(n).cuda_pointwise]


@pytest.fixture(autouse=True)
def trainer_blocks(small_blocks):
    # Still several blocks per kernel, but fewer: a training step launches ~30 kernels and
    # the simulator's cost grows with threads times barriers.
    small_blocks.update(gemm_tile=(8, 8, 4, 2, 2), step_tile=(2, 4, 4, 1))
    return small_blocks


def pair(cell, optimizer="adam", sampler="top_p", loss="softmax_cross_entropy", **kw):
    kw = dict(dict(vocab_size=5, hidden_size=6, lr=0.05, clip=0.5, clip_mode="value", dtype="float64", seed=3), **kw)
    cpu = numbarnn.make_trainer(cell, loss, optimizer, sampler, **kw)
    gpu = make_cuda_trainer(get_cell(cell), get_loss(loss), get_optimizer(optimizer), get_sampler(sampler), **kw)
    return cpu, gpu


def batches(n, B=2, T=3, seed=1, V=5):
    rng = np.random.default_rng(seed)
    return [(rng.integers(-1 if i == 1 else 0, V, size=(B, T)), rng.integers(0, V, size=(B, T))) for i in range(n)]


@pytest.mark.parametrize("step_kernel", ["tiled", "rowdot"])
@pytest.mark.parametrize("cell, optimizer, clip_mode", [("rnn", "sgd", "norm"), ("lstm", "adam", "value"),
                                                        ("gru", "momentum", "norm")])
def test_training_steps_give_the_cpu_losses(cell, optimizer, clip_mode, step_kernel, trainer_blocks):
    trainer_blocks.update(step_kernel=step_kernel)
    assert cell in CUDA_CELLS
    cpu, gpu = pair(cell, optimizer, clip_mode=clip_mode)
    assert isinstance(gpu, Trainer) and gpu.device == "cuda"  # one Trainer class; the backend is the device
    # Same seed: the same initial weights as the CPU path.
    for name, value in cpu.model.params.items():
        np.testing.assert_array_equal(gpu.params_to_host()[name], value)
    for i, (x, y) in enumerate(batches(3)):
        mask = None if i != 1 else np.array([[1, 1, 0], [0.5, 1, 1]])
        state_cpu = cpu.state if i == 2 else None
        state_gpu = gpu.state if i == 2 else None
        loss_cpu = cpu.train_step(x, y, mask=mask, state=state_cpu)
        loss_gpu = gpu.train_step(x, y, mask=mask, state=state_gpu)
        np.testing.assert_allclose(loss_gpu, loss_cpu, rtol=1e-12)
        np.testing.assert_allclose(gpu.last_grad_norm, cpu.last_grad_norm, rtol=1e-12)
    for name, value in cpu.model.params.items():
        np.testing.assert_allclose(gpu.model.params[name], value, rtol=1e-11, atol=1e-13)
    assert gpu.step == cpu.step == 3
    assert isinstance(gpu.state, DeviceState)
    cpu_state = cpu.state if isinstance(cpu.state, tuple) else (cpu.state,)
    gpu_state = gpu.state.to_host()
    gpu_state = gpu_state if isinstance(gpu_state, tuple) else (gpu_state,)
    for a, b in zip(gpu_state, cpu_state):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


def test_float32_training_and_host_state_and_other_optimizers():
    for optimizer in ("adagrad", "rmsprop"):
        cpu, gpu = pair("lstm", optimizer, dtype="float32", clip=None)
        (x, y), = batches(1, B=2, T=3)
        h0 = (np.full((2, 6), 0.1, np.float32), np.full((2, 6), -0.2, np.float32))
        for _ in range(2):
            np.testing.assert_allclose(gpu.train_step(x, y, state=h0), cpu.train_step(x, y, state=h0), rtol=1e-5)
        for name, value in cpu.model.params.items():
            np.testing.assert_allclose(gpu.params_to_host()[name], value, rtol=1e-4, atol=1e-5)


def test_mse_loss_single_sequence():
    cpu, gpu = pair("gru", "sgd", loss="mse")
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 5, size=4), rng.normal(size=(4, 5))
    for _ in range(2):
        np.testing.assert_allclose(gpu.train_step(x, y), cpu.train_step(x, y), rtol=1e-12)


def test_generation_matches_cpu():
    cpu, gpu = pair("lstm", sampler="top_p")
    for x, y in batches(1):
        cpu.train_step(x, y)
        gpu.train_step(x, y)
    assert gpu.generate([0, 1], 6, seed=5) == cpu.generate([0, 1], 6, seed=5)
    assert gpu.generate([], 5, seed=2, sampler="top_k", k=2) == cpu.generate([], 5, seed=2, sampler="top_k", k=2)
    assert gpu.generate([3], 5, sampler="greedy") == cpu.generate([3], 5, sampler="greedy")
    # beam search runs on the host from a copy of the weights: still the CPU's answer
    assert gpu.generate([], 4, sampler="beam", beam_width=2) == cpu.generate([], 4, sampler="beam", beam_width=2)
    # Stopping early leaves the trainer's Generator where the CPU leaves it.
    a = cpu.generate([1], 8, stop_index=2, sampler="temperature", temperature=3.0)
    b = gpu.generate([1], 8, stop_index=2, sampler="temperature", temperature=3.0)
    assert a == b
    assert cpu.rng.random() == gpu.rng.random()


def test_device_model_host_interface_matches_cpu_with_dense_inputs():
    cpu = numbarnn.make_model("lstm", input_size=3, hidden_size=5, output_size=4, dtype="float64", seed=0)
    gpu = make_cuda_model("lstm", input_size=3, hidden_size=5, output_size=4, dtype="float64", seed=0)
    x = np.random.default_rng(0).normal(size=(3, 2, 3))
    h0 = (np.ones((2, 5)) * 0.3, np.ones((2, 5)) * -0.1)
    (out_c, fin_c), (out_g, fin_g) = cpu.forward(x, h0), gpu.forward(x, h0)
    np.testing.assert_allclose(out_g, out_c, rtol=1e-12)
    for a, b in zip(fin_g, fin_c):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    d = np.random.default_rng(1).normal(size=out_c.shape)
    gc, gg = cpu.backward(d), gpu.backward(d)
    for name in gc:
        np.testing.assert_allclose(gg[name], gc[name], rtol=1e-11, atol=1e-13, err_msg=name)


def test_params_write_through_and_load_params_uploads():
    _, gpu = pair("rnn")
    params = gpu.model.params
    params["W_h"][0, 0] = 1.5  # item assignment on the returned array reaches the device
    params["b_x"][...] = 0.25
    params["b_h"] = np.full(6, -0.5)
    host = gpu.params_to_host()
    assert host["W_h"][0, 0] == 1.5 and (host["b_x"] == 0.25).all() and (host["b_h"] == -0.5).all()
    with pytest.raises(ValueError):
        params["W_h"][0][1] = 2.0  # a view could not reach the device: read-only, not silently lost
    snapshot = params["W_x"].copy()
    snapshot[0, 0] = 9.0  # copies are plain arrays
    assert gpu.params_to_host()["W_x"][0, 0] != 9.0
    new = {k: np.full_like(v, 0.01) for k, v in params.items()}
    gpu.model.load_params(new)
    assert all((v == 0.01).all() for v in gpu.params_to_host().values())


def test_snapshot_restore_finite_check_and_non_finite_loss():
    from numbarnn.trainer import NonFiniteLossError

    _, gpu = pair("rnn", "sgd")
    snap = gpu.snapshot_params()
    before = gpu.params_to_host()
    assert gpu.params_finite()
    gpu.model.params["W_h"][0, 0] = np.nan
    assert not gpu.params_finite()
    (x, y), = batches(1)
    with pytest.raises(NonFiniteLossError):
        gpu.train_step(x, y)
    gpu.restore_params(snap)
    for k, v in gpu.params_to_host().items():
        np.testing.assert_array_equal(v, before[k])
    assert gpu.params_finite() and gpu.step == 0


def test_evaluate_and_a_trained_cpu_trainer_moved_to_the_device():
    from numbarnn.cuda.trainer import cuda_trainer_from

    cpu, _ = pair("lstm", "adam")
    data = batches(3)
    cpu.train_step(*data[0])
    moved = cuda_trainer_from(cpu)  # same weights, optimizer slots, step, generator, carried state
    twin = numbarnn.make_trainer("lstm", "softmax_cross_entropy", "adam", "top_p", vocab_size=5, hidden_size=6,
                                 lr=0.05, clip=0.5, dtype="float64", seed=3)
    twin.train_step(*data[0])
    for x, y in data[1:]:
        np.testing.assert_allclose(moved.train_step(x, y, state=moved.state), twin.train_step(x, y, state=twin.state),
                                   rtol=1e-12)
    loss, count, final = moved.evaluate(*data[0])
    loss_t, count_t, final_t = twin.evaluate(*data[0])
    np.testing.assert_allclose(loss, loss_t, rtol=1e-12)
    assert count == count_t
    np.testing.assert_allclose(final.to_host()[1], final_t[1], rtol=1e-11)


def test_stacked_layers_with_dropout_run_on_the_device():
    """Stacked layers and dropout once were refused on cuda; now they train there (the
    thorough comparisons are in test_stacked.py)."""
    cpu, gpu = pair("lstm", layers=2, dropout=0.5, hidden_size=4)
    assert gpu.device == "cuda" and len(gpu.backend.host_model().layers) == 2
    (x, y), = batches(1)
    np.testing.assert_allclose(gpu.train_step(x, y), cpu.train_step(x, y), rtol=1e-12)
    np.testing.assert_allclose(gpu.last_grad_norm, cpu.last_grad_norm, rtol=1e-12)
    assert gpu.rng.random() == cpu.rng.random()  # the same dropout masks: the same draws


def test_optimizer_state_dict_has_the_cpu_format_and_round_trips():
    cpu, gpu = pair("rnn", "adam")
    for x, y in batches(2):
        cpu.train_step(x, y)
        gpu.train_step(x, y)
    cpu_sd, gpu_sd = cpu.optimizer.state_dict(), gpu.optimizer.state_dict()
    assert sorted(cpu_sd) == sorted(gpu_sd)
    for key, value in cpu_sd.items():
        np.testing.assert_allclose(gpu_sd[key], value, rtol=1e-11, atol=1e-14, err_msg=key)
    _, fresh = pair("rnn", "adam")
    fresh.optimizer.load_state_dict(gpu_sd)
    assert fresh.optimizer.step_count == 2
    for key, value in fresh.optimizer.state_dict().items():
        np.testing.assert_array_equal(value, gpu_sd[key])


def test_components_without_cuda_kernels_are_clear_errors():
    custom_loss = LossSpec(name="my_loss", description="", forward_backward=lambda *a: 0.0)
    with pytest.raises(UnsupportedOnCuda, match="loss 'my_loss' has no CUDA kernel"):
        make_cuda_trainer(get_cell("rnn"), custom_loss, get_optimizer("sgd"), get_sampler("greedy"), 5, 4)

    class MySGD(SGD):
        name = "my_sgd"

    custom_opt = OptimizerSpec(name="my_sgd", description="", defaults=SGD.defaults, factory=MySGD)
    with pytest.raises(UnsupportedOnCuda, match="optimizer 'my_sgd' has no CUDA kernels"):
        make_cuda_trainer(get_cell("rnn"), get_loss("softmax_cross_entropy"), custom_opt, get_sampler("greedy"), 5, 4)

    cpu_only = numbarnn.cells.CellSpec(name="cpu_only", description="", gates=1, states=1, cache_width=0,
                                       forward=numbarnn.RNN.forward, backward=numbarnn.RNN.backward)
    with pytest.raises(UnsupportedOnCuda, match="cell 'cpu_only' has no CUDA kernels"):
        make_cuda_trainer(cpu_only, get_loss("softmax_cross_entropy"), get_optimizer("sgd"), get_sampler("greedy"),
                          5, 4)


def test_bad_batches_are_the_cpu_errors():
    _, gpu = pair("rnn")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        gpu.train_step([[0, 7]], [[1, 1]])
    with pytest.raises(ValueError, match="mask has shape"):
        gpu.train_step([[0, 1]], [[1, 1]], mask=[[1, 1, 1]])


def test_fit_and_text_generation_with_a_vocabulary():
    from numbarnn.data import NamesBatches, Vocabulary

    names, vocab = ["abc", "bca", "cab", "aab"], Vocabulary("abc\n")
    kw = dict(vocab=vocab, hidden_size=4, lr=0.05, dtype="float64", seed=1, mode="names")
    cpu = numbarnn.make_trainer("gru", "softmax_cross_entropy", "adam", "top_p", **kw)
    gpu = make_cuda_trainer("gru", "softmax_cross_entropy", "adam", "top_p", **kw)
    summaries = [t.fit(NamesBatches(names, vocab, 2, seed=0), steps=2, progress=False, sample_every=0)
                 for t in (cpu, gpu)]
    assert summaries[0]["stopped"] == summaries[1]["stopped"] == "done"
    np.testing.assert_allclose([loss for _, loss in gpu.history], [loss for _, loss in cpu.history], rtol=1e-12)
    assert gpu.generate("a", 5, seed=1) == cpu.generate("a", 5, seed=1)


def test_early_stopping_state_moves_to_the_device():
    """A run resumed on the device keeps fit's early-stopping state: best loss, counter and best weights."""
    from numbarnn.cuda.trainer import cuda_trainer_from

    cpu = numbarnn.make_trainer("lstm", vocab_size=5, hidden_size=6, dtype="float64", seed=3)
    best = cpu.snapshot_params()
    cpu.train_step(*batches(1)[0])
    cpu.fit_state.update(best_val_loss=1.25, evals_since_best=2, best_params=best, val_loss=1.5)
    gpu = cuda_trainer_from(cpu)
    assert {k: gpu.fit_state[k] for k in ("best_val_loss", "evals_since_best", "val_loss")} == \
        {"best_val_loss": 1.25, "evals_since_best": 2, "val_loss": 1.5}
    gpu.restore_params(gpu.fit_state["best_params"])
    restored = gpu.params_to_host()
    cpu.restore_params(best)
    for key, value in cpu.model.params.items():
        np.testing.assert_array_equal(restored[key], value, err_msg=key)
