"""Models as layer stacks (issue 15): embeddings and dense inputs, bidirectional layers, the
classify and regress heads, their trainer API, checkpoints and the CUDA refusals.

Gradients are checked by float64 finite differences (hypothesis over small shapes, seeds and
every registered cell, plugins included) and against PyTorch on identical weights
(nn.Embedding + a bidirectional 2-layer nn.LSTM/GRU/RNN + nn.Linear, 1e-10).
"""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import numbarnn
from numbarnn import data as D
from numbarnn.checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from numbarnn.kernels.embedding import embedding_backward, embedding_forward
from numbarnn.sequence_model import SequenceModel, direction_param_name, reverse_order

CELLS = numbarnn.list_cells()
TORCH_CELLS = [name for name in CELLS if numbarnn.get_cell(name).torch_module]
FAST = settings(max_examples=8, deadline=None)


def finite_differences(model, loss, eps=1e-6):
    """d loss / d every weight, by central differences on the flat buffer (float64)."""
    flat = model.flat_params
    out = np.empty_like(flat)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + eps
        up = loss()
        flat[i] = saved - eps
        down = loss()
        flat[i] = saved
        out[i] = (up - down) / (2 * eps)
    return out


def check_model_gradients(model, x, lengths=None, seed=0):
    """backward_into_buffer against finite differences of sum(outputs * R), with the biases
    moved off their initial values: a cell that starts at b_x = 0 (IndRNN) would otherwise put
    its relu exactly on the kink for a zero input (padding) from h_0 = 0, where central
    differences measure half the slope."""
    rng = np.random.default_rng([seed, 1])
    for name, value in model.params.items():
        if name.startswith(("b_x", "b_h")):
            value[...] = rng.normal(size=value.shape)
    outputs, _ = model.forward(x, lengths=lengths)
    R = np.random.default_rng(seed).normal(size=outputs.shape)
    model.backward_into_buffer(R)
    analytic = model.flat_grads.copy()
    numeric = finite_differences(model, lambda: float((model.forward(x, lengths=lengths)[0] * R).sum()))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


# ---- kernels -----------------------------------------------------------------------------------

@FAST
@given(st.integers(1, 12), st.integers(1, 5), st.integers(1, 4), st.integers(0, 2**16))
def test_embedding_kernels_are_a_gather_and_a_scatter_add(N, V, E, seed):
    rng = np.random.default_rng(seed)
    idx = rng.integers(-1, V, N).astype(np.int64)
    W, dout = rng.normal(size=(V, E)), rng.normal(size=(N, E))
    out, dW = np.empty((N, E)), np.full((V, E), np.nan)
    embedding_forward(idx, W, out)
    embedding_backward(idx, dout, dW)
    onehot = np.eye(V)[idx] * (idx >= 0)[:, None]  # the reference: a one-hot product
    np.testing.assert_allclose(out, onehot @ W, rtol=0, atol=1e-15)
    np.testing.assert_allclose(dW, onehot.T @ dout, rtol=1e-13, atol=1e-14)


def test_reverse_order_reverses_within_each_length_and_is_its_own_inverse():
    order = reverse_order(5, 3, np.array([5, 3, 1]))
    assert order[:, 0].tolist() == [4, 3, 2, 1, 0] and order[:, 1].tolist() == [2, 1, 0, 3, 4]
    assert order[:, 2].tolist() == [0, 1, 2, 3, 4]
    assert (np.take_along_axis(order, order, axis=0) == np.arange(5)[:, None]).all()


# ---- finite differences ------------------------------------------------------------------------

shapes = dict(cell=st.sampled_from(CELLS), T=st.integers(1, 4), B=st.integers(1, 3), H=st.integers(1, 3),
              seed=st.integers(0, 2**16))


@FAST
@given(V=st.integers(2, 5), E=st.integers(1, 3), layers=st.integers(1, 2), **shapes)
def test_embedding_gradient_by_finite_differences(cell, T, B, H, seed, V, E, layers):
    model = SequenceModel(cell, V, H, V, layers=layers, embedding=E, dtype="float64", seed=seed)
    x = np.random.default_rng(seed).integers(-1, V, (T, B))
    check_model_gradients(model, x, seed=seed)


@FAST
@given(X=st.integers(1, 3), with_lengths=st.booleans(), **shapes)
def test_bidirectional_two_layer_stack_by_finite_differences(cell, T, B, H, seed, X, with_lengths):
    model = SequenceModel(cell, X, H, 2, layers=2, bidirectional=True, index_input=False, task="regress",
                          dtype="float64", seed=seed)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, T + 1, B) if with_lengths else None
    check_model_gradients(model, rng.normal(size=(T, B, X)), lengths, seed)


@FAST
@given(C=st.integers(2, 4), bidirectional=st.booleans(), embedding=st.sampled_from([None, 2]), **shapes)
def test_classify_head_with_lengths_by_finite_differences(cell, T, B, H, seed, C, bidirectional, embedding):
    V = 4
    model = SequenceModel(cell, V, H, C, layers=2, bidirectional=bidirectional, embedding=embedding,
                          task="classify", dtype="float64", seed=seed)
    rng = np.random.default_rng(seed)
    check_model_gradients(model, rng.integers(0, V, (T, B)), rng.integers(1, T + 1, B), seed)


@FAST
@given(O=st.integers(1, 3), bidirectional=st.booleans(), **shapes)
def test_regress_trainer_gradient_by_finite_differences(cell, T, B, H, seed, O, bidirectional):
    """The whole step: the trainer's mse loss (mean over the batch) and its gradient, with a mask."""
    trainer = numbarnn.make_trainer(cell, task="regress", input_size=2, output_size=O, hidden_size=H,
                                    bidirectional=bidirectional, dtype="float64", seed=seed, clip=None)
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(B, T, 2)), rng.normal(size=(B, T, O))
    mask = (rng.random((B, T)) < 0.7).astype(float)
    x, y, w, lengths = trainer._prepare(X, Y, mask)
    trainer.backend.gradients(x, y, w, None, trainer.rng, **({} if lengths is None else {"lengths": lengths}))
    analytic = trainer.model.flat_grads.copy()
    numeric = finite_differences(trainer.model, lambda: trainer.evaluate(X, Y, mask)[0] / B)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


# ---- PyTorch parity ----------------------------------------------------------------------------

def torch_twin(torch, model, cell_name, V_or_X, E, H, O, layers=2):
    """nn.Embedding (when E) + a bidirectional nn module + nn.Linear with random weights, copied into ``model``."""
    module = getattr(torch.nn, numbarnn.get_cell(cell_name).torch_module)(
        E or V_or_X, H, num_layers=layers, bidirectional=True, batch_first=True, dtype=torch.float64)
    head = torch.nn.Linear(2 * H, O, dtype=torch.float64)
    emb = torch.nn.Embedding(V_or_X, E, dtype=torch.float64) if E else None
    pairs = {"W_y": head.weight, "b_y": head.bias}
    if emb is not None:
        pairs["W_emb"] = emb.weight
    for layer in range(layers):
        for reverse in (False, True):
            suffix = f"_l{layer}" + ("_reverse" if reverse else "")
            for ours, theirs in (("W_x", "weight_ih"), ("W_h", "weight_hh"), ("b_x", "bias_ih"), ("b_h", "bias_hh")):
                pairs[direction_param_name(ours, layer, reverse)] = getattr(module, theirs + suffix)
    assert list(pairs) != [] and set(pairs) == set(model.params)
    rng = np.random.default_rng(7)
    with torch.no_grad():
        for name, p in pairs.items():
            p.copy_(torch.tensor(rng.normal(scale=0.5, size=tuple(p.shape))))
            model.params[name][...] = p.numpy()
    return emb, module, head, pairs


def assert_grads_match(model, pairs):
    for name, p in pairs.items():
        np.testing.assert_allclose(model._grad_views[name], p.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_embedding_bidirectional_lstm_classifier_matches_torch_packed(cell):
    torch = pytest.importorskip("torch")
    V, E, H, C, T = 7, 4, 5, 3, 6
    trainer = numbarnn.make_trainer(cell, task="classify", vocab_size=V, embedding=E, num_classes=C, hidden_size=H,
                                    layers=2, bidirectional=True, dtype="float64", clip=None, seed=0)
    emb, module, head, pairs = torch_twin(torch, trainer.model, cell, V, E, H, C)
    rng = np.random.default_rng(1)
    lengths = np.array([6, 3, 1, 5])
    X, y = rng.integers(0, V, (4, T)), rng.integers(0, C, 4)

    loss = trainer.train_step(X, y, lengths=lengths)  # gradients of the mean loss, then an update
    assert trainer.model.flat_grads.any()  # the step's gradients, still there after the update
    packed = torch.nn.utils.rnn.pack_padded_sequence(emb(torch.tensor(X)), torch.tensor(lengths), batch_first=True,
                                                     enforce_sorted=False)
    _, final = module(packed)
    h_n = final[0] if isinstance(final, tuple) else final
    logits = head(torch.cat([h_n[-2], h_n[-1]], dim=1))
    t_loss = torch.nn.functional.cross_entropy(logits, torch.tensor(y))
    t_loss.backward()
    assert abs(loss - t_loss.item()) < 1e-10
    assert_grads_match(trainer.model, pairs)

    with torch.no_grad():  # the updated weights again, then the forward outputs and h_n, c_n
        for name, p in pairs.items():
            p.copy_(torch.tensor(trainer.model.params[name]))
        _, final = module(torch.nn.utils.rnn.pack_padded_sequence(
            emb(torch.tensor(X)), torch.tensor(lengths), batch_first=True, enforce_sorted=False))
        finals = final if isinstance(final, tuple) else (final,)
        probs = torch.softmax(head(torch.cat([finals[0][-2], finals[0][-1]], dim=1)), dim=1)
    np.testing.assert_allclose(trainer.predict(X, lengths), probs.numpy(), rtol=1e-10, atol=1e-12)
    _, state = trainer.model.forward(X.T, lengths=lengths)
    for ours, theirs in zip(trainer.model.stacked_state(state), finals):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", TORCH_CELLS)
@pytest.mark.parametrize("padded", [False, True])
def test_dense_bidirectional_regressor_matches_torch(cell, padded):
    """Per-step outputs; with lengths, against PyTorch's packed sequences (padding gets no loss)."""
    torch = pytest.importorskip("torch")
    X_in, H, O, T, B = 3, 4, 2, 5, 3
    trainer = numbarnn.make_trainer(cell, task="regress", input_size=X_in, output_size=O, hidden_size=H, layers=2,
                                    bidirectional=True, dtype="float64", clip=None, seed=0)
    _, module, head, pairs = torch_twin(torch, trainer.model, cell, X_in, None, H, O)
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(B, T, X_in)), rng.normal(size=(B, T, O))
    lengths = np.array([5, 2, 4]) if padded else None
    mask = np.ones((B, T)) if lengths is None else (np.arange(T)[None] < lengths[:, None]).astype(float)

    outputs = trainer.predict(X, lengths)
    loss, _, _ = trainer.evaluate(X, Y, lengths=lengths)
    x, y, w, L = trainer._prepare(X, Y, None, lengths)
    trainer.backend.gradients(x, y, w, None, trainer.rng, **({} if L is None else {"lengths": L}))

    xt = torch.tensor(X)
    if padded:
        packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths), batch_first=True,
                                                         enforce_sorted=False)
        out = torch.nn.utils.rnn.pad_packed_sequence(module(packed)[0], batch_first=True, total_length=T)[0]
    else:
        out = module(xt)[0]
    t_outputs = head(out)
    t_loss = 0.5 * (((t_outputs - torch.tensor(Y)) ** 2).sum(dim=2) * torch.tensor(mask)).sum()
    (t_loss / B).backward()
    real = mask.astype(bool)  # PyTorch's padded outputs are zeros: only the real steps compare
    np.testing.assert_allclose(outputs[real], t_outputs.detach().numpy()[real], rtol=1e-10, atol=1e-12)
    assert abs(loss - t_loss.item()) < 1e-10
    assert_grads_match(trainer.model, pairs)


# ---- padding -------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
def test_a_padded_classification_batch_equals_its_sequences_one_by_one(cell):
    V, C, T = 6, 3, 7
    trainer = numbarnn.make_trainer(cell, task="classify", vocab_size=V, embedding=3, num_classes=C, hidden_size=4,
                                    layers=2, bidirectional=True, dtype="float64", clip=None, seed=3)
    rng = np.random.default_rng(4)
    lengths = np.array([7, 2, 5, 1])
    X = rng.integers(0, V, (4, T))
    X[np.arange(T)[None] >= lengths[:, None]] = -1  # what the padding holds must not matter...
    X2 = X.copy()
    X2[np.arange(T)[None] >= lengths[:, None]] = 5  # ...so other padding gives the same
    y = rng.integers(0, C, 4)

    def grads(inputs, targets, lengths):
        x, yy, w, L = trainer._prepare(inputs, targets, None, lengths)
        loss, _, _, _ = trainer.backend.gradients(x, yy, w, None, None, lengths=L)
        return loss, trainer.model.flat_grads.copy()

    probs = trainer.predict(X, lengths)
    np.testing.assert_allclose(probs, trainer.predict(X2, lengths), rtol=1e-13, atol=1e-15)
    loss, g = grads(X, y, lengths)
    singles = [grads(X[b:b + 1, :lengths[b]], y[b:b + 1], None) for b in range(4)]
    for b in range(4):
        np.testing.assert_allclose(probs[b], trainer.predict(X[b:b + 1, :lengths[b]])[0], rtol=1e-12, atol=1e-14)
    assert abs(loss - sum(s[0] for s in singles)) < 1e-10
    np.testing.assert_allclose(g, np.mean([s[1] for s in singles], axis=0), rtol=1e-9, atol=1e-12)
    mask = (np.arange(T)[None] < lengths[:, None]).astype(float)  # a mask is the same as the lengths
    np.testing.assert_allclose(trainer.evaluate(X, y, mask)[0], trainer.evaluate(X, y, lengths=lengths)[0],
                               rtol=1e-13)


def test_a_regression_mask_with_trailing_zeros_is_padding_for_the_reverse_direction():
    trainer = numbarnn.make_trainer("lstm", task="regress", input_size=2, output_size=1, hidden_size=3,
                                    bidirectional=True, dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(2, 5, 2)), rng.normal(size=(2, 5, 1))
    lengths = np.array([5, 3])
    mask = (np.arange(5)[None] < lengths[:, None]).astype(float)
    by_mask, by_lengths = trainer.evaluate(X, Y, mask)[0], trainer.evaluate(X, Y, lengths=lengths)[0]
    assert by_mask == pytest.approx(by_lengths, rel=1e-13)
    single = trainer.evaluate(X[1:, :3], Y[1:, :3])[0] + trainer.evaluate(X[:1], Y[:1])[0]
    assert by_lengths == pytest.approx(single, rel=1e-12)


# ---- the trainer's API ----------------------------------------------------------------------------

def test_the_default_model_keeps_the_fused_step_and_the_new_ones_take_the_general_path():
    assert numbarnn.make_trainer("lstm", vocab_size=5, hidden_size=3).backend.compiled_step
    # an embedding language model takes the fused step too, its table folded into the input weights
    assert numbarnn.make_trainer("lstm", vocab_size=5, embedding=2, hidden_size=3).backend.can_generate()
    for options in (dict(task="classify", vocab_size=5, num_classes=2),
                    dict(task="regress", input_size=2, output_size=1)):
        trainer = numbarnn.make_trainer("lstm", hidden_size=3, **options)
        assert not trainer.backend.compiled_step and not trainer.backend.can_generate()


def test_an_embedding_language_model_trains_and_generates():
    trainer = numbarnn.make_trainer("gru" if "gru" in CELLS else "rnn", vocab_size=5, embedding=3, hidden_size=6,
                                    dtype="float64", seed=0, lr=0.05)
    x = [[0, 1, 2, 3], [1, 2, 3, 4]]
    y = [[1, 2, 3, 4], [2, 3, 4, 0]]
    losses = [trainer.train_step(x, y) for _ in range(60)]
    assert losses[-1] < 0.3 * losses[0]
    assert trainer.generate(prime=[0, 1], length=3, sampler="greedy") == [2, 3, 4]
    assert trainer.predict(x).shape == (2, 4, 5)
    assert trainer.model.params["W_emb"].shape == (5, 3)


def synthetic_classes(n=96, T=8, X=3, seed=0):
    """The class is the sign of the sum of the first feature over each sequence's real steps."""
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(n, T, X))
    lengths = rng.integers(2, T + 1, n)
    real = np.arange(T)[None] < lengths[:, None]
    classes = ((inputs[:, :, 0] * real).sum(axis=1) > 0).astype(int)
    return inputs, classes, lengths


def test_classify_score_is_one_forward_with_evaluates_loss_and_predicts_accuracy(monkeypatch):
    X, y, lengths = synthetic_classes(24)
    trainer = numbarnn.make_trainer("gru", task="classify", input_size=3, num_classes=2, hidden_size=5,
                                    dtype="float64", seed=3)
    loss, count, _ = trainer.evaluate(X, y, lengths=lengths)
    accuracy = float((trainer.predict(X, lengths).argmax(axis=1) == y).mean())
    assert 0 < accuracy < 1  # an untrained model: a wrong accuracy cannot pass by being 0 or 1
    calls = []
    forward = type(trainer.model).forward
    monkeypatch.setattr(type(trainer.model), "forward", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k))
    score = trainer.score(X, y, lengths=lengths)
    assert len(calls) == 1
    assert score == {"loss": pytest.approx(loss / count, rel=1e-12), "count": 24.0, "accuracy": accuracy}


def test_classify_fits_arrays_with_validation_early_stopping_and_resume(tmp_path):
    X, y, lengths = synthetic_classes()
    Xv, yv, lv = synthetic_classes(48, seed=1)
    trainer = numbarnn.make_trainer("lstm", task="classify", input_size=3, num_classes=2, hidden_size=8,
                                    bidirectional=True, dtype="float64", seed=0, lr=0.03)
    batches = D.ArrayBatches(X, y, 16, lengths=lengths, seed=0)
    before = trainer.score(Xv, yv, lengths=lv)
    summary = trainer.fit(batches, epochs=12, validation=D.ArrayBatches(Xv, yv, 16, lengths=lv), eval_every=6,
                          patience=50, progress=False, sample_every=0)
    after = trainer.score(Xv, yv, lengths=lv)
    assert summary["stopped"] == "done" and summary["val_loss"] < before["loss"]
    assert after["accuracy"] >= 0.85 and after["count"] == 48
    # a checkpoint with its data position resumes exactly
    path = trainer.save(tmp_path / "clf.ckpt", batches)
    twin_batches = D.ArrayBatches(X, y, 16, lengths=lengths, seed=0)
    twin = load_checkpoint(path, twin_batches)
    assert twin.config["task"] == "classify" and twin.config["bidirectional"] is True
    np.testing.assert_array_equal(twin.predict(Xv, lv), trainer.predict(Xv, lv))
    a = [trainer.train_step(*batches.next_batch()[:3]) for _ in range(3)]
    b = [twin.train_step(*twin_batches.next_batch()[:3]) for _ in range(3)]
    assert a == b


def test_regress_learns_a_delayed_copy_and_early_stopping_keeps_the_best():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 10, 1))
    Y = np.concatenate([np.zeros((64, 1, 1)), X[:, :-1]], axis=1)  # the previous step's input
    trainer = numbarnn.make_trainer("gru" if "gru" in CELLS else "lstm", task="regress", input_size=1,
                                    output_size=1, hidden_size=8, dtype="float64", seed=0, lr=0.02)
    assert trainer.config["loss"] == "mse"
    first = trainer.score(X, Y)["loss"]
    summary = trainer.fit(D.ArrayBatches(X, Y, 16, seed=0), steps=150, validation=D.ArrayBatches(X[:16], Y[:16], 16),
                          eval_every=10, patience=3, progress=False, sample_every=0)
    assert trainer.score(X[:16], Y[:16])["loss"] == pytest.approx(summary["val_loss"], rel=1e-9)
    assert summary["val_loss"] < 0.2 * first
    assert trainer.predict(X[:2]).shape == (2, 10, 1)


def test_array_batches_checks_and_positions():
    X, y = np.zeros((5, 3, 2)), np.arange(5)
    batches = D.ArrayBatches(X, y, 2, seed=1)
    seen = np.concatenate([batches.next_batch()[1] for _ in range(3)])
    assert sorted(seen.tolist()) == [0, 1, 2, 3, 4]
    state = batches.state_dict()
    again = D.ArrayBatches(X, y, 2, seed=9)
    again.load_state_dict(json.loads(json.dumps(state)))
    assert np.array_equal(again.next_batch()[1], batches.next_batch()[1])
    with pytest.raises(D.DataError, match="one row per sequence"):
        D.ArrayBatches(X, y[:4], 2)
    with pytest.raises(D.DataError, match=r"lengths\[1\] is 4, outside \[1, 3\]"):
        D.ArrayBatches(X, y, 2, lengths=[1, 4, 1, 1, 1])
    with pytest.raises(D.DataError, match="permutation"):
        batches.load_state_dict({**state, "order": [0, 0, 1, 2, 3]})


@pytest.mark.parametrize("options, message", [
    (dict(vocab_size=5, bidirectional=True), "bidirectional=True cannot be used with task='lm'"),
    (dict(task="classify", input_size=3), "task='classify' needs num_classes"),
    (dict(task="classify", input_size=3, num_classes=2, output_size=2), "takes num_classes, not output_size"),
    (dict(task="regress", input_size=3), "task='regress' needs output_size"),
    (dict(task="regress", input_size=3, vocab_size=4, output_size=1), "exactly one of vocab_size"),
    (dict(input_size=3), "input_size .* is for task='classify' or task='regress'"),
    (dict(vocab_size=4, output_size=2), "output_size is for task='regress'"),
    (dict(task="regress", input_size=3, output_size=1, embedding=4), "give vocab_size, not input_size"),
    (dict(vocab_size=4, num_classes=3), "num_classes is for task='classify'"),
    (dict(task="classify", input_size=3, num_classes=2, loss="mse"), "needs a loss with indices targets"),
    (dict(task="regress", input_size=3, output_size=1, loss="softmax_cross_entropy"), "needs a loss with dense"),
    (dict(task="classify", vocab=D.Vocabulary("ab"), num_classes=2), "vocab is for generating text"),
    (dict(task="sort", vocab_size=3), "task must be one of"),
    (dict(task="classify", vocab_size=3, num_classes=2, embedding=0), "embedding must be a positive integer"),
])
def test_contradictions_are_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        numbarnn.make_trainer("lstm", hidden_size=3, **options)


def test_bad_batches_are_clear_errors():
    clf = numbarnn.make_trainer("lstm", task="classify", input_size=3, num_classes=4, hidden_size=3)
    X, y = np.zeros((2, 5, 3)), np.array([1, 3])
    cases = [
        (lambda: clf.train_step(np.zeros((2, 5, 4)), y), r"inputs must be shaped \(B, T, 3\).*input_size=3, got shape "
                                                         r"\(2, 5, 4\)"),
        (lambda: clf.train_step(X, y, lengths=[5, 6]), r"lengths\[1\] is 6, outside \[1, 5\]"),
        (lambda: clf.train_step(X, y, lengths=[0, 2]), r"lengths\[0\] is 0, outside \[1, 5\]"),
        (lambda: clf.train_step(X, y, lengths=[5]), r"lengths must be \(2,\) integers"),
        (lambda: clf.train_step(X, np.array([1, 4])), r"targets holds 4, outside the classes \[0, 4\)"),
        (lambda: clf.train_step(X, np.zeros((2, 5), int)), r"targets for task='classify' must be \(2,\) class"),
        (lambda: clf.train_step(X, y, mask=[[1, 0, 1, 0, 0], [1] * 5]), "row 0 is"),
        (lambda: clf.train_step(X, y, mask=np.ones((2, 5)), lengths=[5, 5]), "lengths or a mask, not both"),
        (lambda: clf.predict(X, lengths=[1, 9]), r"lengths\[1\] is 9"),
        (lambda: clf.generate(prime=[0], length=3), "generation needs a language model"),
        (lambda: clf.train_step(np.zeros((2, 5), int), y), r"inputs must be shaped \(B, T, 3\)"),
    ]
    before = clf.model.flat_params.copy()
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    assert np.array_equal(before, clf.model.flat_params)
    emb = numbarnn.make_trainer("lstm", vocab_size=4, embedding=2, hidden_size=3)
    with pytest.raises(ValueError, match=r"inputs holds 4, outside the vocabulary \[0, 4\)"):
        emb.train_step([[0, 4]], [[1, 2]])
    with pytest.raises(ValueError, match=r"input index 7 is outside the vocabulary"):
        emb.model.forward(np.array([[7]]))


# ---- checkpoints --------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [
    dict(task="classify", vocab_size=6, embedding=3, num_classes=4, bidirectional=True, layers=2),
    dict(task="regress", input_size=3, output_size=2, bidirectional=True),
    dict(vocab_size=6, embedding=2),
])
def test_checkpoints_keep_the_new_options(tmp_path, options):
    trainer = numbarnn.make_trainer("lstm", hidden_size=3, dtype="float64", seed=0, **options)
    path = trainer.save(tmp_path / "model.ckpt")
    loaded = load_checkpoint(path)
    for key, value in options.items():
        assert loaded.config[key] == value
    for name, value in trainer.model.params.items():
        np.testing.assert_array_equal(loaded.model.params[name], value)
    inputs = np.zeros((2, 4, 3)) if "input_size" in options else np.ones((2, 4), int)
    np.testing.assert_array_equal(loaded.predict(inputs), trainer.predict(inputs))


@pytest.mark.parametrize("change, message", [
    (dict(task="sort"), "config.task should be one of"),
    (dict(bidirectional="yes"), "config.bidirectional should be true or false"),
    (dict(num_classes=10**12), r"weight 'W_y' should be \(1000000000000, 6\)"),
    (dict(num_classes=None), "needs config.num_classes for task 'classify'"),
    (dict(embedding=-3), "config.embedding should be an integer >= 1"),
    (dict(input_size=3), "exactly one of config.vocab_size and config.input_size"),
    (dict(bidirectional=False), "unexpected .*W_x_reverse"),
    (dict(task="lm", num_classes=None), "needs config.bidirectional false"),
])
def test_hostile_model_fields_are_checkpoint_errors(tmp_path, change, message):
    trainer = numbarnn.make_trainer("rnn", task="classify", vocab_size=5, embedding=2, num_classes=3, hidden_size=3,
                                    bidirectional=True, seed=0)
    meta, arrays = read_checkpoint(trainer.save(tmp_path / "good.ckpt"))
    meta["config"].update(change)
    path = tmp_path / "bad.ckpt"
    with open(path, "wb") as f:
        np.savez(f, **arrays, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


@pytest.mark.parametrize("cell", CELLS)
def test_an_embedding_language_model_fused_step_equals_the_general_path(cell, monkeypatch):
    """The fused step folds the table into the input weights (W_x @ W_emb.T) and turns that
    gradient back into W_x's and W_emb's: the same losses, weights and generated text as the
    general path (embedding gather, the layer loops, the loss, scatter-add), to rounding."""
    x = np.array([[0, 1, 2, 3, 4], [4, 3, -1, -1, -1]])
    y = np.array([[1, 2, 3, 4, 0], [2, 1, 0, 0, 0]])
    mask = (x >= 0).astype(float)
    runs = []
    for fused in (True, False):
        trainer = numbarnn.make_trainer(cell, vocab_size=5, embedding=3, hidden_size=4, optimizer="adam", lr=0.05,
                                        dtype="float64", seed=2)
        assert trainer.backend.compiled_step
        trainer.backend.compiled_step = fused
        if not fused:
            monkeypatch.setattr(trainer.backend, "generate", lambda *args: None)  # step the model instead
        losses = [trainer.train_step(x, y, mask=mask) for _ in range(4)]
        losses.append(trainer.train_step(x, y, state=trainer.state))
        trainer.rng = np.random.default_rng(5)
        text = trainer.generate(prime=[0, 1], length=12)
        runs.append((losses, trainer.model.flat_params.copy(), text))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-12)
    np.testing.assert_allclose(runs[0][1], runs[1][1], rtol=1e-10, atol=1e-13)
    assert runs[0][2] == runs[1][2]


# ---- a bidirectional layer's two directions at the same time ---------------------------------------

@pytest.fixture
def one_blas_thread(monkeypatch):
    """BLAS at one thread per call, where a bidirectional layer runs its directions at the same
    time, and no lower bound on the size of the layers that do (the tests' layers are tiny)."""
    import scipy.linalg.cython_blas  # noqa: F401 -- the BLAS numba calls, loaded before it is limited
    from threadpoolctl import threadpool_limits

    import numbarnn.sequence_model as sm

    monkeypatch.setattr(sm, "_CONCURRENT_WORK", 0)
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def forward_backward(model, x, lengths=None, seed=0):
    """Outputs, final states and gradients (copies) of one training forward (dropout on) and backward."""
    outputs, state = model.forward(x, train=True, rng=np.random.default_rng(seed), lengths=lengths)
    model.backward_into_buffer(np.random.default_rng(seed + 1).normal(size=outputs.shape).astype(model.dtype))
    return [outputs.copy(), *[s.copy() for s in model.state_arrays(state)], model.flat_grads.copy()]


BIDIRECTIONAL_CASES = {  # dense inputs (dx flows into the input) and embedded indices with lengths
    "dense": (dict(input_size=5, output_size=3, index_input=False, task="regress"),
              lambda rng, T, B: (rng.normal(size=(T, B, 5)), None)),
    "embedded": (dict(input_size=6, output_size=3, embedding=4, task="classify"),
                 lambda rng, T, B: (rng.integers(-1, 6, (T, B)), rng.integers(1, T + 1, B))),
}


def bidirectional_model(cell, case, dtype="float64", concurrent=True, seed=1):
    options = dict(BIDIRECTIONAL_CASES[case][0])
    model = SequenceModel(cell, options.pop("input_size"), 6, options.pop("output_size"), layers=2, dropout=0.25,
                          bidirectional=True, dtype=dtype, seed=seed, **options)
    model.concurrent_directions = concurrent
    return model


def spy_on_directions(model, monkeypatch) -> list:
    """(direction, thread) of every RecurrentModel.forward the model's layers run from now on."""
    import threading

    seen = []
    for directions in model.stack:
        for d, recurrent in enumerate(directions):
            def spy(*args, _forward=recurrent.forward, _d=d, **kwargs):
                seen.append((_d, threading.current_thread()))
                return _forward(*args, **kwargs)
            monkeypatch.setattr(recurrent, "forward", spy)
    return seen


@pytest.mark.parametrize("case", BIDIRECTIONAL_CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", CELLS)
def test_concurrent_directions_give_the_bits_of_one_after_the_other(cell, dtype, case, one_blas_thread):
    """The reverse direction runs in the model's worker thread: outputs, final states and every
    gradient are the same bits as running the directions in turn, step after step."""
    x, lengths = BIDIRECTIONAL_CASES[case][1](np.random.default_rng(0), 7, 3)
    threaded, sequential = bidirectional_model(cell, case, dtype), bidirectional_model(cell, case, dtype, False)
    for step in range(2):
        for ours, theirs in zip(forward_backward(threaded, x, lengths, step),
                                forward_backward(sequential, x, lengths, step)):
            np.testing.assert_array_equal(ours, theirs)
        for model in (threaded, sequential):
            model.flat_params -= 0.1 * model.flat_grads
    assert threaded._pool is not None and sequential._pool is None


def test_the_reverse_direction_runs_in_one_persistent_worker_thread(monkeypatch, one_blas_thread):
    import threading

    model = bidirectional_model("lstm", "dense")
    seen = spy_on_directions(model, monkeypatch)
    x = np.zeros((4, 2, 5))
    for _ in range(3):
        forward_backward(model, x)
    forward_threads = {thread for d, thread in seen if d == 0}
    reverse_threads = {thread for d, thread in seen if d == 1}
    assert forward_threads == {threading.current_thread()}
    assert len(reverse_threads) == 1 and reverse_threads != forward_threads  # one worker, kept between steps
    one_way = SequenceModel("lstm", 5, 6, 3, index_input=False, task="regress", seed=0)
    forward_backward(one_way, x)
    assert one_way._pool is None  # a unidirectional model makes no thread at all


def test_with_a_multithreaded_blas_the_directions_run_in_turn(monkeypatch):
    """Two directions each on a multi-threaded OpenBLAS were slower than in turn: no worker then."""
    import threading

    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=2, user_api="blas"):
        model = bidirectional_model("lstm", "dense")
        seen = spy_on_directions(model, monkeypatch)
        forward_backward(model, np.zeros((4, 2, 5)))
    assert {thread for _, thread in seen} == {threading.current_thread()} and model._pool is None


def test_small_layers_run_their_directions_in_turn(monkeypatch):
    """Below _CONCURRENT_WORK multiply-adds a direction, waking the worker costs more than it saves."""
    import threading

    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import threadpool_limits

    import numbarnn.sequence_model as sm

    with threadpool_limits(limits=1, user_api="blas"):
        small = bidirectional_model("lstm", "dense")
        seen = spy_on_directions(small, monkeypatch)
        forward_backward(small, np.zeros((4, 2, 5)))
        assert {thread for _, thread in seen} == {threading.current_thread()} and small._pool is None
        assert small._work(4, 2, 5) < sm._CONCURRENT_WORK
        large = SequenceModel("lstm", 32, 128, 2, bidirectional=True, index_input=False, task="regress", seed=0)
        assert large._work(16, 32, 32) >= sm._CONCURRENT_WORK
        forward_backward(large, np.zeros((16, 32, 32), np.float32))
        assert large._pool is not None


@pytest.mark.parametrize("failure", ["submit", "pool"])
def test_without_threads_the_directions_run_in_turn(monkeypatch, failure, one_blas_thread):
    """A platform (or an exiting interpreter) that cannot start a thread: the same results, in this thread."""
    import numbarnn.sequence_model as sm

    class NoThreads:
        def __init__(self, *args, **kwargs):
            if failure == "pool":
                raise RuntimeError("can't start new thread")

        def submit(self, *args, **kwargs):
            raise RuntimeError("can't start new thread")

    x, lengths = BIDIRECTIONAL_CASES["embedded"][1](np.random.default_rng(0), 5, 2)
    expected = forward_backward(bidirectional_model("gru", "embedded", concurrent=False), x, lengths)
    monkeypatch.setattr(sm, "ThreadPoolExecutor", NoThreads)
    model = bidirectional_model("gru", "embedded")
    for ours, theirs in zip(forward_backward(model, x, lengths), expected):
        np.testing.assert_array_equal(ours, theirs)


def test_an_error_in_the_reverse_direction_reaches_the_caller(one_blas_thread):
    model = bidirectional_model("lstm", "dense")
    x = np.zeros((4, 2, 5))
    state = model.zero_state(2)
    state[1] = (np.zeros((3, 6)), np.zeros((2, 6)))  # layer 0's reverse direction: a wrong batch
    with pytest.raises(ValueError, match=r"initial state 'h' has shape \(3, 6\), expected \(2, 6\)"):
        model.forward(x, state)
    forward_backward(model, x)  # and the model still works


def test_models_trained_from_several_threads_at_once_match_one_thread(one_blas_thread):
    """Each thread trains its own bidirectional model (each with its own worker): the same bits as alone."""
    from concurrent.futures import ThreadPoolExecutor

    x, lengths = BIDIRECTIONAL_CASES["dense"][1](np.random.default_rng(0), 6, 3)

    def train(seed):
        model = bidirectional_model("lstm", "dense", "float32", seed=seed)
        results = []
        for step in range(3):
            results.append(forward_backward(model, x, lengths, step))
            model.flat_params -= 0.1 * model.flat_grads
        return results, model._pool is not None

    expected = [train(seed) for seed in range(4)]
    with ThreadPoolExecutor(max_workers=4) as callers:
        got = list(callers.map(train, range(4)))
    for (ours, threaded), (theirs, _) in zip(got, expected):
        assert threaded
        for step_ours, step_theirs in zip(ours, theirs):
            for a, b in zip(step_ours, step_theirs):
                np.testing.assert_array_equal(a, b)


def test_the_loops_a_direction_runs_release_the_gil():
    from numbarnn.kernels.loops import loops_for

    for name in CELLS:
        loops = loops_for(numbarnn.get_cell(name))
        for kernel in (loops.forward_dense, loops.forward_indices, loops.backward_dense, loops.backward_indices):
            assert kernel.targetoptions.get("nogil") is True, (name, kernel)


def test_a_model_with_a_direction_worker_can_be_copied_and_pickled():
    import copy
    import pickle

    model = SequenceModel("lstm", 5, 6, 3, index_input=False, task="regress", bidirectional=True, seed=0)
    model._direction_pool()  # as after a step that ran the two directions at the same time
    assert model._pool is not None
    x = np.random.default_rng(0).normal(size=(4, 2, 5))
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert twin._pool is None and model._pool is not None
        np.testing.assert_array_equal(twin.forward(x)[0], model.forward(x)[0])


@pytest.mark.parametrize("lengths, message", [
    ([1, 2], r"lengths must be \(3,\) integers \(one per sequence of X\), got shape \(2,\)"),
    ([1.0, 2.0, 3.0], r"lengths must be \(3,\) integers \(one per sequence of X\), got dtype float64"),
    ([1, 2, 5], r"lengths\[2\] is 5, outside \[1, 4\] \(X has 4 steps\)"),
    ([0, 1, 1], r"lengths\[0\] is 0, outside \[1, 4\] \(X has 4 steps\)"),
])
def test_array_batches_refuse_lengths_that_train_step_would_refuse(lengths, message):
    """ArrayBatches checks lengths by train_step's rules (checked_lengths) when it is made, as a DataError."""
    X, y = np.zeros((3, 4), np.int64), np.zeros(3, np.int64)
    with pytest.raises(D.DataError, match=message):
        D.ArrayBatches(X, y, 2, lengths=lengths)
    with pytest.raises(ValueError, match=message.replace("of X", "of the batch").replace("X has", "the batch has")):
        numbarnn.make_trainer("rnn", task="classify", vocab_size=3, num_classes=2, hidden_size=2).train_step(
            X, y, lengths=lengths)
