"""Parametrized over the registry itself: every registered cell, loss, optimizer and sampler,
a third-party plugin's included, is gradient-checked, trained and sampled."""
import itertools

import numpy as np
import pytest

import naive
import numbarnn
from numbarnn.models import RecurrentModel
from numbarnn.optimizers import UnknownOptionError

CELLS = numbarnn.list_cells()
LOSSES = numbarnn.list_losses()
OPTIMIZERS = numbarnn.list_optimizers()
SAMPLERS = numbarnn.list_samplers()

# A learnable toy stream: "abcdabcd..." over a 5-symbol vocabulary.
SEQ = np.array([0, 1, 2, 3] * 6)
# Learning rates that fit the toy problem for the built-ins; other optimizers use their defaults.
TOY_LR = {"sgd": 0.5, "momentum": 0.2, "adagrad": 0.3, "rmsprop": 0.01, "adam": 0.03, "adamw": 0.03}


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("seed", [0, 1])
def test_cell_gradients_match_finite_differences(name, seed):
    cell = numbarnn.get_cell(name)
    rng = np.random.default_rng(seed)
    model = RecurrentModel(cell, 3, 4, seed=seed)
    for key in ("b_x", "b_h"):
        if key in model.params:  # a cell without W_h has no b_h (see CellSpec.recurrent_weights)
            model.params[key][:] = rng.normal(size=model.params[key].shape)
    x, d_out = rng.normal(size=(5, 2, 3)), rng.normal(size=(5, 2, 4))
    state = [rng.normal(size=(2, 4)) for _ in range(cell.states)]
    d_final = [rng.normal(size=(2, 4)) for _ in range(cell.states)]
    pack = (lambda s: s[0]) if cell.states == 1 else tuple

    def loss():
        out, final = model.forward(x, pack(state))
        final = [final] if cell.states == 1 else final
        return np.sum(out * d_out) + sum(np.sum(f * d) for f, d in zip(final, d_final))

    loss()
    grads = model.backward(d_out, pack(d_final))
    for key, value in model.params.items():
        np.testing.assert_allclose(grads["d" + key], naive.finite_difference_grad(loss, value),
                                   rtol=1e-6, atol=1e-8, err_msg=f"{name} {key}")
    np.testing.assert_allclose(grads["dx"], naive.finite_difference_grad(loss, x), rtol=1e-6, atol=1e-8)
    for got, s in zip([grads["dstate"]] if cell.states == 1 else grads["dstate"], state):
        np.testing.assert_allclose(got, naive.finite_difference_grad(loss, s), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", CELLS)
def test_model_with_head_gradients_match_finite_differences(name):
    model = numbarnn.make_model(name, vocab_size=5, hidden_size=3, dtype="float64", seed=2)
    rng = np.random.default_rng(2)
    # Biases off their initial zeros (a cell may start at b_x = 0): with a zero input (index -1)
    # and h_0 = 0, a relu cell would sit exactly on its kink, where differences measure 1/2.
    for key in ("b_x", "b_h"):
        if key in model.params:
            model.params[key][:] = rng.normal(size=model.params[key].shape)
    x = rng.integers(-1, 5, size=(4, 2))
    d_logits = rng.normal(size=(4, 2, 5))

    def loss():
        return np.sum(model.forward(x)[0] * d_logits)

    loss()
    grads = model.backward(d_logits)
    assert set(grads) == {"d" + key for key in model.params}
    for key, value in model.params.items():
        assert grads["d" + key].shape == value.shape and grads["d" + key].dtype == value.dtype
        np.testing.assert_allclose(grads["d" + key], naive.finite_difference_grad(loss, value),
                                   rtol=1e-6, atol=1e-8, err_msg=key)


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_cell_learns_a_tiny_sequence_and_samples_it(name, dtype):
    trainer = numbarnn.make_trainer(cell=name, optimizer="adam", sampler="greedy", vocab_size=5,
                                    hidden_size=16, lr=0.05, dtype=dtype, seed=0)
    first = trainer.train_step(SEQ[:-1], SEQ[1:])
    for _ in range(60):
        last = trainer.train_step(SEQ[:-1], SEQ[1:])
    assert last < 0.1 * first, (first, last)
    for key, value in trainer.model.params.items():
        assert value.dtype == np.dtype(dtype) and np.isfinite(value).all(), key
    shapes = trainer.model.layer.param_shapes()
    assert {k: v.shape for k, v in trainer.model.params.items() if k in shapes} == shapes
    assert trainer.generate(prime=[0, 1], length=6) == [2, 3, 0, 1, 2, 3]


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_gradient_matches_finite_differences(name):
    spec = numbarnn.get_loss(name)
    rng = np.random.default_rng(0)
    outputs = rng.normal(size=(6, 4))
    targets = rng.integers(0, 4, size=6) if spec.targets_kind == "indices" else rng.normal(size=(6, 4))
    mask = np.array([1.0, 1.0, 0.0, 1.0, 0.5, 1.0])
    dout, scratch = np.empty_like(outputs), np.empty_like(outputs)

    def loss():
        return spec.forward_backward(outputs, targets, mask, np.empty_like(outputs), np.empty_like(outputs))

    spec.forward_backward(outputs, targets, mask, dout, scratch)
    np.testing.assert_allclose(dout, naive.finite_difference_grad(loss, outputs), rtol=1e-6, atol=1e-9)
    assert not dout[2].any()  # a masked row gets no gradient


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_trains_the_lstm(name):
    trainer = numbarnn.make_trainer(cell="lstm", optimizer=name, vocab_size=5, hidden_size=16,
                                    dtype="float64", seed=1, lr=TOY_LR.get(name),
                                    clip=1.0, clip_mode="norm")
    first = trainer.train_step(SEQ[:-1], SEQ[1:])
    for _ in range(80):
        last = trainer.train_step(SEQ[:-1], SEQ[1:])
    assert last < 0.5 * first, (name, first, last)


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_generates_reproducibly(name):
    trainer = numbarnn.make_trainer(cell="rnn", sampler=name, vocab_size=5, hidden_size=8, seed=3)
    a = trainer.generate(prime=[1], length=12, seed=7)
    b = trainer.generate(prime=[1], length=12, seed=7)
    assert a == b and len(a) == 12 and all(0 <= i < 5 for i in a)


def test_batch_loss_is_the_mean_of_the_sequences():
    trainer = numbarnn.make_trainer(cell="lstm", optimizer="sgd", vocab_size=5, hidden_size=6, dtype="float64",
                                    seed=0, lr=1e-12)
    x = np.array([[0, 1, 2, 3], [3, 2, 1, 0]])
    y = np.array([[1, 2, 3, 4], [2, 1, 0, 4]])
    both = trainer.train_step(x, y)
    one = [trainer.train_step(x[i], y[i]) for i in range(2)]
    assert both == pytest.approx(np.mean(one), rel=1e-9)


def test_padded_batch_equals_sequences_run_one_by_one():
    def trainer():
        return numbarnn.make_trainer(cell="lstm", optimizer="sgd", vocab_size=5, hidden_size=6,
                                     dtype="float64", seed=0, lr=0.1, clip=None)
    x = np.array([[0, 1, 2, 3], [3, 2, -1, -1]])
    y = np.array([[1, 2, 3, 4], [2, 4, -1, -1]])
    mask = (y >= 0).astype(float)
    batched = trainer()
    loss = batched.train_step(x, y, mask=mask)
    single = trainer()
    model = single.model
    grads_sum = None
    total = 0.0
    for row, length in ((0, 4), (1, 2)):  # summed loss and gradients of each sequence alone
        logits, _ = model.forward(x[row, :length, None])
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        total -= np.log(probs[np.arange(length), 0, y[row, :length]]).sum()
        d = probs.copy()
        d[np.arange(length), 0, y[row, :length]] -= 1
        g = model.backward(d / 2)
        grads_sum = g if grads_sum is None else {k: grads_sum[k] + g[k] for k in g}
    assert loss == pytest.approx(total / 2, rel=1e-12)
    single.optimizer.step(model.params, {key: grads_sum["d" + key] for key in model.params})
    for key in model.params:
        np.testing.assert_allclose(batched.model.params[key], model.params[key], rtol=1e-12, atol=1e-15)


def test_beam_search_finds_the_most_likely_continuation():
    trainer = numbarnn.make_trainer(cell="lstm", sampler="beam", vocab_size=5, hidden_size=16, lr=0.05, seed=0)
    for _ in range(60):
        trainer.train_step(SEQ[:-1], SEQ[1:])
    assert trainer.generate(prime=[0], length=5) == [1, 2, 3, 0, 1]
    assert trainer.generate(prime=[0], length=5, sampler="beam", beam_width=1) == \
        trainer.generate(prime=[0], length=5, sampler="greedy")


@pytest.mark.parametrize("layers", [1, 2])
def test_dense_targets_through_the_trainer_match_finite_differences(layers):
    """loss="mse" takes (B, T, V) float targets: one SGD step with lr=1 and no clipping moves
    every weight by minus the finite-difference gradient of the masked loss per sequence."""
    trainer = numbarnn.make_trainer("lstm", loss="mse", optimizer="sgd", lr=1.0, clip=None, vocab_size=4,
                                    hidden_size=3, layers=layers, dtype="float64", seed=5)
    assert not trainer.backend.compiled_step  # the general path: forward, the loss plugin, backward
    rng = np.random.default_rng(5)
    inputs = np.array([[-1, 0, 3, 2], [-1, 1, -1, -1]])
    targets = rng.normal(size=(2, 4, 4))
    mask = np.array([[1.0, 1.0, 0.5, 1.0], [1.0, 1.0, 0.0, 0.0]])

    def loss():  # what train_step minimises: the summed masked loss over the batch size
        return trainer.evaluate(inputs, targets, mask)[0] / 2

    expected = {key: naive.finite_difference_grad(loss, value) for key, value in trainer.model.params.items()}
    before = {key: value.copy() for key, value in trainer.model.params.items()}
    loss_before = loss()
    assert trainer.train_step(inputs, targets, mask) == pytest.approx(loss_before, rel=1e-12)
    for key, value in trainer.model.params.items():
        np.testing.assert_allclose(before[key] - value, expected[key], rtol=1e-6, atol=1e-9, err_msg=key)
        assert expected[key].any(), key


def sequence_log_probability(model, prime, seq):
    """log P(seq | prime) from one ``forward`` over the whole prefix (float64 log-softmax)."""
    inputs = np.array(prime + seq[:-1])[:, None]
    logits = model.forward(inputs)[0][len(prime) - 1:, 0].astype(np.float64)
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    return float(sum(log_p[t, k] for t, k in enumerate(seq)))


def enumerate_sequences(vocab_size, length, stop):
    """Every continuation of at most ``length`` tokens that ends at ``stop`` or at ``length``."""
    out = []
    for n in range(1, length + 1):
        for seq in itertools.product(range(vocab_size), repeat=n):
            if stop in seq[:-1] or (n < length and seq[-1] != stop):
                continue
            out.append(list(seq))
    return out


@pytest.mark.parametrize("vocab_size, length, stop", [(3, 4, None), (4, 3, None), (3, 4, 2), (4, 3, 0)])
def test_beam_search_agrees_with_exhaustive_enumeration(vocab_size, length, stop):
    """A beam as wide as every prefix is exact: it returns the most likely of all V^L
    continuations (those cut short at the stop token included), scored independently."""
    trainer = numbarnn.make_trainer("lstm", vocab_size=vocab_size, hidden_size=6, dtype="float64", seed=11)
    for key, value in trainer.model.params.items():  # sharper distributions than the initial ones
        value *= 4.0
    prime = [1]
    scored = {tuple(seq): sequence_log_probability(trainer.model, prime, seq)
              for seq in enumerate_sequences(vocab_size, length, stop)}
    best = max(scored, key=scored.get)
    width = vocab_size ** length
    beam = trainer.generate(prime=prime, length=length, beam_width=width, stop_index=stop)
    assert tuple(beam) == best
    greedy = trainer.generate(prime=prime, length=length, sampler="greedy", stop_index=stop)
    assert scored[tuple(greedy)] < scored[best]  # the case is one where greedy decoding is not enough
    # A narrower beam against a beam search written out on the same scores.
    beams = [()]
    for _ in range(length):
        grown = [b + (k,) for b in beams for k in range(vocab_size)]
        done = [b for b in beams if stop is not None and b and b[-1] == stop]
        candidates = done + [g for g in grown if g[:-1] not in done]
        partial = {c: sequence_log_probability(trainer.model, prime, list(c)) for c in candidates}
        beams = sorted(candidates, key=partial.get, reverse=True)[:2]
    assert tuple(trainer.generate(prime=prime, length=length, beam_width=2, stop_index=stop)) == beams[0]


# ---- errors -----------------------------------------------------------------------------------------

def test_unknown_names_and_options_are_clear_errors():
    with pytest.raises(numbarnn.UnknownNameError, match=r"unknown cell 'lstn'.*'lstm'"):
        numbarnn.make_trainer(cell="lstn", vocab_size=5)
    with pytest.raises(UnknownOptionError, match=r"unknown option 'momentun' \(did you mean 'momentum'\?\)"):
        numbarnn.make_trainer(optimizer="momentum", vocab_size=5, momentun=0.9)
    with pytest.raises(UnknownOptionError, match=r"optimizer 'adam': lr, beta1, beta2, eps, weight_decay; sampler 'top_k': k"):
        numbarnn.make_trainer(optimizer="adam", sampler="top_k", vocab_size=5, nesterov=True)
    trainer = numbarnn.make_trainer(sampler="top_p", vocab_size=5, p=0.5, beta1=0.8)
    assert trainer.sampler.options["p"] == 0.5 and trainer.optimizer.options["beta1"] == 0.8


def test_bad_batches_are_refused_before_the_kernels():
    trainer = numbarnn.make_trainer(vocab_size=5, hidden_size=4)
    with pytest.raises(ValueError, match=r"inputs holds 5, outside the vocabulary \[0, 5\)"):
        trainer.train_step([0, 5], [1, 2])
    with pytest.raises(ValueError, match=r"targets holds -1, outside the vocabulary"):
        trainer.train_step([0, 1], [1, -1])
    with pytest.raises(ValueError, match=r"targets have shape \(3,\), expected \(1, 2\)"):
        trainer.train_step([0, 1], [1, 2, 3])
    with pytest.raises(ValueError, match=r"mask has shape \(2, 2\), expected \(1, 2\)"):
        trainer.train_step([0, 1], [1, 2], mask=np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"inputs must be integers"):
        trainer.train_step(np.zeros((2, 2)), [[1, 2], [1, 2]])
    with pytest.raises(ValueError, match=r"inputs holds -2, outside the vocabulary \[0, 5\) \(-1 is padding\)"):
        trainer.train_step(np.array([[0, 1], [4, -2]], np.int8), [[1, 2], [1, 2]])


def test_any_integer_batch_layout_gives_the_same_step():
    # The compiled check-and-transpose takes any integer dtype and memory layout.
    x = np.array([[0, 1, 2, 3], [4, 3, -1, 0]])
    y = np.array([[1, 2, 3, 4], [3, 2, 1, 0]])
    losses = []
    strided = np.repeat(x, 2, axis=1)[:, ::2]  # a non-contiguous view holding x
    assert np.array_equal(strided, x) and not strided.flags.c_contiguous
    for inputs in (x, x.astype(np.int32), x.astype(np.int8), np.asfortranarray(x), strided):
        trainer = numbarnn.make_trainer(vocab_size=5, hidden_size=4, seed=0, dtype="float64")
        losses.append(trainer.train_step(inputs, y))
    assert len(set(losses)) == 1


@pytest.mark.parametrize("name, options", [("categorical", {}), ("greedy", {}), ("temperature", {"temperature": 0.7}),
                                           ("top_k", {"k": 3}), ("top_p", {"p": 0.8})])
@pytest.mark.parametrize("cell", CELLS)
def test_compiled_generation_equals_stepping_the_model(monkeypatch, name, options, cell):
    trainer = numbarnn.make_trainer(cell=cell, sampler=name, vocab_size=5, hidden_size=8, seed=0, **options)
    for _ in range(10):
        trainer.train_step(SEQ[:-1], SEQ[1:])
    runs = []
    for compiled in (True, False):
        if not compiled:
            monkeypatch.setattr(trainer.backend, "generate", lambda *args: None)  # no compiled loop
        trainer.rng = np.random.default_rng(11)
        long = trainer.generate(prime=[0, 1], length=40)
        stopped = trainer.generate(length=40, stop_index=3)
        runs.append((long, stopped, trainer.rng.random()))  # the generator ends in the same state
    assert runs[0] == runs[1]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", CELLS)
def test_compiled_training_step_equals_the_general_path(dtype, cell):
    x = np.array([[0, 1, 2, 3, 4], [4, 3, -1, -1, -1]])
    y = np.array([[1, 2, 3, 4, 0], [2, 1, -1, -1, -1]])
    mask = (y >= 0).astype(float)
    runs = []
    for compiled in (True, False):
        trainer = numbarnn.make_trainer(cell=cell, optimizer="adam", vocab_size=5, hidden_size=6, dtype=dtype, seed=4)
        assert trainer.backend.compiled_step
        trainer.backend.compiled_step = compiled
        losses = [trainer.train_step(x, y, mask=mask) for _ in range(3)]
        losses.append(trainer.train_step(SEQ[:-1], SEQ[1:], state=None))
        losses.append(trainer.train_step(x[:1], y[:1], state=trainer.model.zero_state(1)))
        runs.append((losses, trainer.model.flat_params.copy(), trainer.state))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    np.testing.assert_array_equal(np.asarray(runs[0][2]), np.asarray(runs[1][2]))
