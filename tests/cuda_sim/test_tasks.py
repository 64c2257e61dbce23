"""Every model the CPU builds runs on the device with the CPU's numbers (float64): embeddings,
dense inputs, bidirectional layers (padded sequences reversed within their lengths), the
classify and regress heads, through the model's host interface and through the trainer
(training, evaluation, scores, generation, moves between devices)."""
import numpy as np
import pytest

import numbarnn
from numbarnn.cuda.model import CudaSequenceModel

CUDA_CELLS = [n for n in numbarnn.list_cells() if numbarnn.get_cell(n).cuda_pointwise]
OTHER = "gru" if "gru" in CUDA_CELLS else "rnn"  # the GRU plugin when it is installed

MODELS = [
    ("lstm", dict(task="classify", vocab_size=5, embedding=3, num_classes=2, bidirectional=True)),
    (OTHER, dict(task="classify", input_size=3, num_classes=3, bidirectional=True, layers=2)),
    ("lstm", dict(task="regress", input_size=2, output_size=2, bidirectional=True, layers=2)),
    ("rnn", dict(vocab_size=5, embedding=3, layers=2)),
]


@pytest.fixture(autouse=True)
def trainer_blocks(small_blocks):
    small_blocks.update(gemm_tile=(8, 8, 4, 2, 2), step_tile=(2, 4, 4, 1))
    return small_blocks


def inputs(model, T, B, rng):
    if model.index_input:
        return rng.integers(-1, model.input_size, (T, B))
    return rng.normal(size=(T, B, model.input_size))


def flat(state):
    if isinstance(state, (list, tuple)):
        return [a for part in state for a in flat(part)]
    return [state]


@pytest.mark.parametrize("cell, options", MODELS, ids=lambda v: v if isinstance(v, str) else "-".join(
    f"{k}={v}" for k, v in v.items() if k in ("task", "embedding", "layers", "bidirectional")))
def test_the_model_equals_the_cpu_forward_and_backward(cell, options):
    cpu = numbarnn.make_model(cell, hidden_size=3, dtype="float64", seed=1, **options)
    gpu = CudaSequenceModel(cpu)
    rng = np.random.default_rng(0)
    x = inputs(cpu, 4, 3, rng)
    # the first sequence has every step, so a bug in the reversal within lengths, or in
    # the state at the last real step, shows in both kinds of column
    for extra in ({"lengths": np.array([4, 2, 1])},) if cpu.task != "lm" else ({}, {"lengths": np.array([4, 2, 1])}):
        (out_cpu, final_cpu), (out_gpu, final_gpu) = cpu.forward(x, **extra), gpu.forward(x, **extra)
        np.testing.assert_allclose(out_gpu, out_cpu, rtol=1e-10, atol=1e-13)
        for a, b in zip(flat(final_gpu), flat(final_cpu), strict=True):  # the state at each last real step
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
        d_outputs = rng.normal(size=out_cpu.shape)
        grads_cpu, grads_gpu = cpu.backward(d_outputs), gpu.backward(d_outputs)
        assert sorted(grads_gpu) == sorted(grads_cpu)
        for name, value in grads_cpu.items():
            np.testing.assert_allclose(grads_gpu[name], value, rtol=1e-9, atol=1e-12, err_msg=name)
    if cpu.index_input:  # checked as on the CPU before anything reaches a kernel
        with pytest.raises(ValueError, match=rf"input index 7 is outside the vocabulary \[0, {cpu.input_size}\)"):
            gpu.forward(np.array([[0], [7]]))


def pair(cell, loss, optimizer, **options):
    options = dict(hidden_size=3, lr=0.05, clip=1.0, dtype="float64", seed=2, **options)
    return (numbarnn.make_trainer(cell, loss, optimizer, **options),
            numbarnn.make_trainer(cell, loss, optimizer, device="cuda", **options))


def assert_same(gpu, cpu):
    for name, value in cpu.model.params.items():
        np.testing.assert_allclose(gpu.params_to_host()[name], value, rtol=1e-9, atol=1e-12, err_msg=name)


def test_a_bidirectional_classifier_trains_scores_and_moves_as_on_the_cpu():
    cpu, gpu = pair("lstm", None, "adam", task="classify", vocab_size=6, embedding=3, num_classes=3,
                    bidirectional=True, layers=2, dropout=0.3)
    rng = np.random.default_rng(1)
    for step in range(2):
        x, y, lengths = rng.integers(0, 6, (3, 4)), rng.integers(0, 3, 3), np.array([4, 1, 3])
        np.testing.assert_allclose(gpu.train_step(x, y, lengths=lengths), cpu.train_step(x, y, lengths=lengths),
                                   rtol=1e-10)
        np.testing.assert_allclose(gpu.last_grad_norm, cpu.last_grad_norm, rtol=1e-10)
    assert_same(gpu, cpu)
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])  # a mask marks the real steps
    score_cpu, score_gpu = cpu.score(x, y, mask=mask), gpu.score(x, y, mask=mask)
    np.testing.assert_allclose(score_gpu["loss"], score_cpu["loss"], rtol=1e-10)
    assert score_gpu["accuracy"] == score_cpu["accuracy"] == float((cpu.predict(x, mask.sum(axis=1)).argmax(axis=1) == y).mean())
    np.testing.assert_allclose(gpu.predict(x, lengths), cpu.predict(x, lengths), rtol=1e-10)
    again = gpu.to("cpu").to("cuda")  # the round trip continues exactly (the same generator: dropout's masks)
    np.testing.assert_allclose(again.train_step(x, y, lengths=lengths), cpu.train_step(x, y, lengths=lengths),
                               rtol=1e-10)
    assert_same(again, cpu)


def test_a_bidirectional_regression_with_a_padding_mask_trains_as_on_the_cpu():
    cpu, gpu = pair(OTHER, "mse", "sgd", task="regress", input_size=2, output_size=2, bidirectional=True)
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(2, 4, 2)), rng.normal(size=(2, 4, 2))
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]])  # trailing zeros: the reverse direction starts at step 2
    for _ in range(2):
        np.testing.assert_allclose(gpu.train_step(x, y, mask=mask), cpu.train_step(x, y, mask=mask), rtol=1e-10)
    assert_same(gpu, cpu)
    loss_cpu, count_cpu, _ = cpu.evaluate(x, y, mask=mask)
    loss_gpu, count_gpu, _ = gpu.evaluate(x, y, mask=mask)
    np.testing.assert_allclose(loss_gpu, loss_cpu, rtol=1e-10)
    assert count_gpu == count_cpu


def test_an_embedding_language_model_trains_and_generates_as_on_the_cpu():
    cpu, gpu = pair("lstm", "softmax_cross_entropy", "adam", vocab_size=5, embedding=2)
    rng = np.random.default_rng(3)
    for _ in range(2):
        x, y = rng.integers(0, 5, (2, 3)), rng.integers(0, 5, (2, 3))
        np.testing.assert_allclose(gpu.train_step(x, y, state=gpu.state), cpu.train_step(x, y, state=cpu.state),
                                   rtol=1e-10)
    assert_same(gpu, cpu)
    for a, b in zip(flat(gpu.backend.state_to_host(gpu.state)), flat(cpu.state), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10)
    # generation folds the table once, then feeds each sampled index back on the device
    assert gpu.generate_indices([1, 2], 6, gpu.sampler, seed=4) == cpu.generate_indices([1, 2], 6, cpu.sampler,
                                                                                           seed=4)
    # each backend's loss_and_outputs (a classifier's score uses it): evaluate's loss, predict's outputs
    batch = cpu._prepare(x, y, None)[:3]
    for trainer in (cpu, gpu):
        loss, outputs = trainer.backend.loss_and_outputs(*batch)
        np.testing.assert_allclose(loss, cpu.evaluate(x, y)[0], rtol=1e-10)
        np.testing.assert_allclose(np.swapaxes(outputs, 0, 1), cpu.predict(x), rtol=1e-10)


def test_the_device_keeps_the_buffers_of_the_last_shapes_only():
    from numbarnn.cuda.model import BUFFER_SHAPES

    gpu = CudaSequenceModel(numbarnn.make_model("rnn", vocab_size=3, hidden_size=2, dtype="float64", seed=0))
    first = gpu.buffers(1, 1, True)
    for T in range(2, BUFFER_SHAPES + 4):  # names batches: one shape per longest name
        gpu.buffers(T, 2, True)
        assert gpu.buffers(1, 1, True) is first  # in use again: kept
    assert len(gpu._buffers) == BUFFER_SHAPES
    assert (2, 2, True) not in gpu._buffers and (BUFFER_SHAPES + 3, 2, True) in gpu._buffers


def test_float32_stacks_on_the_device_stay_close_to_the_cpu():
    # the new kernels (step reordering, last-step features, states at lengths) in float32 too
    cpu = numbarnn.make_model("lstm", task="classify", vocab_size=6, embedding=3, num_classes=2, hidden_size=3,
                              bidirectional=True, layers=2, dtype="float32", seed=4)
    gpu = CudaSequenceModel(cpu)
    rng = np.random.default_rng(5)
    x, lengths = rng.integers(-1, 6, (4, 3)), np.array([4, 1, 2])
    (out_cpu, final_cpu), (out_gpu, final_gpu) = cpu.forward(x, lengths=lengths), gpu.forward(x, lengths=lengths)
    assert out_gpu.dtype == np.float32
    np.testing.assert_allclose(out_gpu, out_cpu, rtol=1e-5, atol=1e-6)
    for a, b in zip(flat(final_gpu), flat(final_cpu), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    d_outputs = rng.normal(size=out_cpu.shape).astype(np.float32)
    grads_cpu, grads_gpu = cpu.backward(d_outputs), gpu.backward(d_outputs)
    for name, value in grads_cpu.items():
        np.testing.assert_allclose(grads_gpu[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
