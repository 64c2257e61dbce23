"""Stacked layers and dropout between them on the device give the CPU's numbers (float64),
and a stream-mode run with a carried state checkpoints and moves between devices exactly."""
import numpy as np
import pytest

import numbarnn
from numbarnn.cuda.model import CudaSequenceModel, DeviceState
from numbarnn.data import StreamBatches, Vocabulary

# The GRU plugin when it is installed (left out, not skipped, otherwise: see tests/test_cuda.py).
CUDA_CELLS = [n for n in numbarnn.list_cells() if numbarnn.get_cell(n).cuda_pointwise]
CASES = [("rnn", 2, 0.0), ("lstm", 2, 0.3), ("rnn", 3, 0.3), ("lstm", 3, 0.0)] + \
    [("gru", 2, 0.3)] * ("gru" in CUDA_CELLS)
OPTIONS = dict(vocab_size=5, hidden_size=3, lr=0.05, clip=0.5, dtype="float64", seed=3)


@pytest.fixture(autouse=True)
def trainer_blocks(small_blocks):
    # Several blocks per kernel still, but fewer than the kernel tests' (a step launches many kernels).
    small_blocks.update(gemm_tile=(8, 8, 4, 2, 2), step_tile=(2, 4, 4, 1))
    return small_blocks


def pair(cell, layers, dropout, **kw):
    kw = dict(OPTIONS, layers=layers, dropout=dropout, **kw)
    return (numbarnn.make_trainer(cell, "softmax_cross_entropy", "adam", "top_p", **kw),
            numbarnn.make_trainer(cell, "softmax_cross_entropy", "adam", "top_p", device="cuda", **kw))


def batches(n, B=2, T=3, seed=1, V=5):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, V, size=(B, T)), rng.integers(0, V, size=(B, T))) for _ in range(n)]


def host_arrays(state):
    """A CPU-form state (an array, a tuple, or a list of those per layer) as a flat list."""
    if isinstance(state, (list, tuple)):
        return [a for part in state for a in host_arrays(part)]
    return [state]


def assert_same_weights(gpu, cpu, rtol=1e-10):
    host = gpu.params_to_host()
    assert list(host) == list(cpu.model.params)
    for name, value in cpu.model.params.items():
        np.testing.assert_allclose(host[name], value, rtol=rtol, atol=1e-13, err_msg=name)


@pytest.mark.parametrize("cell, layers, dropout", CASES)
def test_stacked_training_evaluation_and_generation_equal_the_cpu(cell, layers, dropout):
    cpu, gpu = pair(cell, layers, dropout)
    assert gpu.device == "cuda"
    for i, (x, y) in enumerate(batches(3)):
        mask = np.array([[1, 1, 0], [0.5, 1, 1]]) if i == 1 else None
        loss_cpu = cpu.train_step(x, y, mask=mask, state=cpu.state)  # the state carried from step to step
        loss_gpu = gpu.train_step(x, y, mask=mask, state=gpu.state)
        np.testing.assert_allclose(loss_gpu, loss_cpu, rtol=1e-10)
        np.testing.assert_allclose(gpu.last_grad_norm, cpu.last_grad_norm, rtol=1e-10)
    assert_same_weights(gpu, cpu)
    # The state: one DeviceState of every layer, the CPU's list of layer states on the host.
    assert isinstance(gpu.state, DeviceState) and gpu.state.layers == layers
    host = gpu.state.to_host()
    assert isinstance(host, list) and len(host) == layers
    for a, b in zip(host_arrays(host), host_arrays(cpu.state)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    # The same dropout masks means the same draws: the generators end in the same place.
    assert gpu.rng.bit_generator.state == cpu.rng.bit_generator.state
    # Evaluation applies no dropout, on either device.
    x, y = batches(1, seed=9)[0]
    loss_g, count_g, final_g = gpu.evaluate(x, y, state=gpu.state)
    loss_c, count_c, final_c = cpu.evaluate(x, y, state=cpu.state)
    np.testing.assert_allclose(loss_g, loss_c, rtol=1e-10)
    assert count_g == count_c
    for a, b in zip(host_arrays(final_g.to_host()), host_arrays(final_c)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    # Generation: on the device (the CPU steps its host path for stacked models), and beam search.
    assert gpu.generate([0, 1], 3, seed=5) == cpu.generate([0, 1], 3, seed=5)
    assert gpu.generate([], 3, sampler="greedy") == cpu.generate([], 3, sampler="greedy")
    assert gpu.generate([2], 3, beam_width=2) == cpu.generate([2], 3, beam_width=2)
    assert gpu.rng.random() == cpu.rng.random()


def test_stacked_device_model_host_interface_with_dense_inputs_and_dropout():
    cpu = numbarnn.make_model("lstm", input_size=3, hidden_size=4, output_size=2, layers=3, dropout=0.4,
                              dtype="float64", seed=0)
    gpu = CudaSequenceModel(cpu)
    data = np.random.default_rng(0)
    x = data.normal(size=(3, 2, 3))
    h0 = [(data.normal(size=(2, 4)), data.normal(size=(2, 4))) for _ in range(3)]
    d_final = [(data.normal(size=(2, 4)), data.normal(size=(2, 4))) for _ in range(3)]
    d_out = data.normal(size=(3, 2, 2))
    for train in (False, True):  # without and with dropout (the same generator state on both)
        rng_c, rng_g = np.random.default_rng(7), np.random.default_rng(7)
        (out_c, fin_c), (out_g, fin_g) = (cpu.forward(x, h0, train=train, rng=rng_c),
                                          gpu.forward(x, h0, train=train, rng=rng_g))
        np.testing.assert_allclose(out_g, out_c, rtol=1e-10)
        assert isinstance(fin_g, list) and len(fin_g) == 3
        for a, b in zip(host_arrays(fin_g), host_arrays(fin_c)):
            np.testing.assert_allclose(a, b, rtol=1e-10)
        assert rng_g.random() == rng_c.random()
        grads_c, grads_g = cpu.backward(d_out, d_final), gpu.backward(d_out, d_final)
        assert sorted(grads_g) == sorted(grads_c)
        for name in grads_c:
            np.testing.assert_allclose(grads_g[name], grads_c[name], rtol=1e-10, atol=1e-13, err_msg=name)


def test_stacked_states_round_trip_and_wrong_shapes_are_clear_errors():
    cpu = numbarnn.make_model("lstm", vocab_size=5, hidden_size=3, layers=2, dtype="float64", seed=0)
    gpu = CudaSequenceModel(cpu)
    state = [(np.full((2, 3), 0.1), np.full((2, 3), 0.2)), (np.full((2, 3), 0.3), np.full((2, 3), 0.4))]
    device_state = gpu.state_from_arrays(cpu.state_arrays(state))
    assert device_state.shape == (4, 2, 3) and repr(device_state) == "<DeviceState L=2 S=2 B=2 H=3>"
    assert [a.tolist() for a in gpu.state_arrays(device_state)] == [a.tolist() for a in cpu.state_arrays(state)]
    x = np.array([[0, 1], [2, 3]])
    np.testing.assert_allclose(gpu.forward(x, device_state)[0], cpu.forward(x, state)[0], rtol=1e-12)
    np.testing.assert_allclose(gpu.forward(x, state)[0], cpu.forward(x, state)[0], rtol=1e-12)
    with pytest.raises(ValueError, match="2 layer states"):
        gpu.forward(x, state[0])  # one layer's state for a two-layer model: the CPU's error
    with pytest.raises(ValueError, match=r"initial state has shape \(2, 2, 3\), expected \(4, 2, 3\)"):
        gpu.forward(x, DeviceState(device_state.array[0:2], 2))  # one layer's
    with pytest.raises(ValueError, match=r"4 arrays \(2 layers of 2\), got 2"):
        gpu.state_from_arrays(cpu.state_arrays(state)[:2])


TEXT = "abcab cab\nbca abc\n" * 3


def stream_trainer(device):
    vocab = Vocabulary.from_text(TEXT)
    return numbarnn.make_trainer("lstm", "softmax_cross_entropy", "adam", "categorical", vocab=vocab, hidden_size=3,
                                 layers=2, dropout=0.3, lr=0.05, dtype="float64", seed=2, mode="stream",
                                 device=device), vocab


def test_stream_checkpoint_with_a_carried_state_round_trips_on_the_device(tmp_path):
    gpu, vocab = stream_trainer("cuda")
    data = StreamBatches(TEXT, vocab, 2, 3)
    gpu.fit(data, steps=2, progress=False, sample_every=0)
    assert isinstance(gpu.state, DeviceState)
    path = gpu.save(tmp_path / "stream.ckpt", data)
    resumed_data = StreamBatches(TEXT, vocab, 2, 3)
    resumed = numbarnn.load(path, resumed_data, device="cuda")
    assert resumed.device == "cuda" and isinstance(resumed.state, DeviceState)
    for a, b in zip(resumed.backend.state_arrays(resumed.state), gpu.backend.state_arrays(gpu.state)):
        np.testing.assert_array_equal(a, b)
    gpu.fit(data, steps=2, progress=False, sample_every=0)
    resumed.fit(resumed_data, steps=2, progress=False, sample_every=0)
    assert [loss for _, loss in resumed.history] == [loss for _, loss in gpu.history]
    for name, value in gpu.params_to_host().items():
        np.testing.assert_array_equal(resumed.params_to_host()[name], value, err_msg=name)
    # The same checkpoint continues on the CPU as on the device.
    cpu_data = StreamBatches(TEXT, vocab, 2, 3)
    on_cpu = numbarnn.load(path, cpu_data, device="cpu")
    assert isinstance(on_cpu.state, list) and len(on_cpu.state) == 2
    on_cpu.fit(cpu_data, steps=2, progress=False, sample_every=0)
    np.testing.assert_allclose([loss for _, loss in on_cpu.history], [loss for _, loss in gpu.history], rtol=1e-10)
    assert_same_weights(gpu, on_cpu)

def test_moving_to_the_device_and_back_mid_training_is_exact():
    cpu_only, vocab = stream_trainer("cpu")
    moved, _ = stream_trainer("cpu")
    data_a, data_b = StreamBatches(TEXT, vocab, 2, 3), StreamBatches(TEXT, vocab, 2, 3)
    cpu_only.fit(data_a, steps=2, progress=False, sample_every=0)
    moved.fit(data_b, steps=2, progress=False, sample_every=0)
    moved = moved.to("cuda")
    assert moved.device == "cuda" and isinstance(moved.state, DeviceState)
    cpu_only.fit(data_a, steps=2, progress=False, sample_every=0)
    moved.fit(data_b, steps=2, progress=False, sample_every=0)
    moved = moved.to("cpu")
    cpu_only.fit(data_a, steps=1, progress=False, sample_every=0)
    moved.fit(data_b, steps=1, progress=False, sample_every=0)
    np.testing.assert_allclose([loss for _, loss in moved.history], [loss for _, loss in cpu_only.history],
                               rtol=1e-10)
    assert_same_weights(moved, cpu_only)
    assert moved.rng.bit_generator.state == cpu_only.rng.bit_generator.state
