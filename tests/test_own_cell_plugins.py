"""The two plugin packages with cells of parameters of their own (plugins/numbarnn-indrnn,
plugins/numbarnn-layernorm-lstm), through numbarnn: the model's parameters and gradients
against PyTorch autograd of the issue's equations (tests/own_cells_reference.py), stacked
and bidirectional models against finite differences, make_trainer, the command line,
checkpoints with exact resume, and the CUDA backend's refusal. Each package's own tests
check its kernels step by step; tests/test_every_component.py runs the registry-wide checks
on them too. Skipped (with the reason) when a package is not installed."""
import numpy as np
import pytest

import numbarnn
from numbarnn import cli
from numbarnn.models import RecurrentModel
from numbarnn.sequence_model import SequenceModel

import naive
import own_cells_reference as ref

PLUGINS = {"indrnn": "numbarnn-indrnn", "layernorm_lstm": "numbarnn-layernorm-lstm"}
# The issue's parameters, names and shapes (X inputs, H hidden units), in this order.
EXPECTED = {
    "indrnn": lambda X, H: {"W_x": (H, X), "b_x": (H,), "u": (H,)},
    "layernorm_lstm": lambda X, H: {"W_x": (4 * H, X), "W_h": (4 * H, H), "b_x": (4 * H,), "gamma_x": (4 * H,),
                                    "gamma_h": (4 * H,), "gamma_c": (H,), "beta_c": (H,)},
}


@pytest.fixture(params=sorted(PLUGINS))
def cell(request):
    name = request.param
    if name not in numbarnn.list_cells():
        pytest.skip(f"the {PLUGINS[name]} plugin is not installed (pip install ./plugins/{PLUGINS[name]})")
    return name


def test_params_are_exactly_the_issues_names_and_shapes(cell):
    model = RecurrentModel(numbarnn.get_cell(cell), input_size=3, hidden_size=5, seed=0)
    expected = EXPECTED[cell](3, 5)
    assert {name: p.shape for name, p in model.params.items()} == expected
    assert list(model.params) == list(expected)
    outputs, _ = model.forward(np.ones((2, 1, 3)))
    grads = model.backward(np.ones_like(outputs))
    assert set(grads) == {"d" + name for name in expected} | {"dx", "dstate"}


def test_initialisation_follows_the_issue(cell):
    H = 400
    p = RecurrentModel(numbarnn.get_cell(cell), input_size=3, hidden_size=H, seed=1).params
    k = 1 / np.sqrt(H)
    assert np.abs(p["W_x"]).max() <= k and p["W_x"].std() > 0.5 * k / np.sqrt(3)
    if cell == "indrnn":
        assert (p["b_x"] == 0).all() and ((0 <= p["u"]) & (p["u"] < 1)).all() and p["u"].std() > 0.2
    else:
        assert np.abs(p["W_h"]).max() <= k
        assert all((p[g] == 1).all() for g in ("gamma_x", "gamma_h", "gamma_c"))
        assert (p["b_x"] == 0).all() and (p["beta_c"] == 0).all()


@pytest.mark.torch
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forward_and_every_gradient_against_pytorch_autograd(cell, seed):
    pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    T, B, X, H = 6, 3, 4, 5
    model = RecurrentModel(numbarnn.get_cell(cell), X, H, seed=seed)
    params = ref.random_params(cell, X, H, rng)
    for name, value in params.items():
        model.params[name][...] = value
    x = rng.normal(size=(T, B, X))
    initial = rng.normal(size=(B, H)) if cell == "indrnn" else (rng.normal(size=(B, H)), rng.normal(size=(B, H)))
    d_out = rng.normal(size=(T, B, H))
    d_final = rng.normal(size=(B, H)) if cell == "indrnn" else (rng.normal(size=(B, H)), rng.normal(size=(B, H)))
    outputs, final = model.forward(x, initial)
    expected_outputs, expected_final = ref.numpy_forward(cell, params, x, initial)
    np.testing.assert_allclose(outputs, expected_outputs, rtol=1e-12, atol=1e-13)
    grads = model.backward(d_out, d_final)
    expected = ref.torch_gradients(cell, params, x, d_out, initial, d_final)
    errors = ref.assert_gradients_close(grads, expected, rtol=1e-9)
    assert set(errors) == {"d" + n for n in params} | {"dx", "dstate"}


def test_a_stacked_bidirectional_model_against_finite_differences(cell):
    rng = np.random.default_rng(3)
    T, B, X, H, C = 4, 2, 3, 2, 3
    model = SequenceModel(cell, X, H, C, layers=2, bidirectional=True, task="classify", index_input=False,
                          dtype="float64", seed=3)
    for name, value in model.params.items():
        if name.startswith(("gamma", "u")):
            value[...] = rng.uniform(0.5, 1.5, size=value.shape)
        else:
            value[...] = rng.uniform(-1, 1, size=value.shape)
    x, lengths, d_logits = rng.normal(size=(T, B, X)), np.array([4, 3]), rng.normal(size=(B, C))
    model.forward(x, lengths=lengths)
    grads = model.backward(d_logits)

    def loss():
        return float((model.forward(x, lengths=lengths)[0] * d_logits).sum())

    for name, value in model.params.items():
        np.testing.assert_allclose(grads["d" + name], naive.finite_difference_grad(loss, value), rtol=1e-5,
                                   atol=1e-7, err_msg=name)


def test_make_trainer_trains_and_the_compiled_step_equals_the_general_path(cell):
    names = numbarnn.data.dinosaur_names()[:64]
    vocab = numbarnn.data.Vocabulary.from_text("\n".join(names))
    trainer = numbarnn.make_trainer(cell, vocab=vocab, hidden_size=16, lr=0.01, seed=0, mode="names")
    assert trainer.backend.compiled_step
    batches = numbarnn.data.NamesBatches(names, vocab, batch_size=16, seed=0)
    trainer.fit(batches, steps=40, progress=False, sample_every=0)
    losses = [loss for _, loss in trainer.history]
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5])
    assert len(trainer.sample_texts(3, seed=0)) == 3
    # the one-call step against the layer-by-layer path, float64, same start
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 8, size=(5, 3)), rng.integers(0, 8, size=(5, 3))
    a = numbarnn.make_trainer(cell, vocab_size=8, hidden_size=6, dtype="float64", seed=1)
    b = numbarnn.make_trainer(cell, vocab_size=8, hidden_size=6, dtype="float64", seed=1)
    b.backend.compiled_step = False
    for _ in range(3):
        assert a.train_step(x, y) == pytest.approx(b.train_step(x, y), rel=1e-12)
    for name in a.model.params:
        np.testing.assert_allclose(a.model.params[name], b.model.params[name], rtol=1e-10, atol=1e-12)


def test_the_command_line_trains_samples_and_resumes_exactly(cell, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tiny = ["--cell", cell, "--hidden", "8", "--batch", "4", "--sample-every", "0", "--no-progress",
            "--eval-every", "1000", "--seed", "3"]
    assert cli.main(["train", "--steps", "6", *tiny, "--out", "straight.ckpt"]) == 0
    assert cli.main(["train", "--steps", "3", *tiny, "--out", "half.ckpt"]) == 0
    assert cli.main(["train", "--resume", "half.ckpt", "--steps", "3", "--sample-every", "0", "--no-progress",
                     "--eval-every", "1000", "--out", "resumed.ckpt"]) == 0
    straight, resumed = numbarnn.load("straight.ckpt"), numbarnn.load("resumed.ckpt")
    assert straight.model.cell.name == cell and list(straight.model.params) == list(resumed.model.params)
    for name in straight.model.params:
        np.testing.assert_array_equal(resumed.model.params[name], straight.model.params[name], err_msg=name)
    capsys.readouterr()
    assert cli.main(["sample", "straight.ckpt", "--seed", "1", "--n", "2"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_the_cuda_backend_refuses_them_clearly(cell):
    pytest.importorskip("numba.cuda")
    from numbarnn.cuda import UnsupportedOnCuda
    from numbarnn.cuda.cells import resolve

    with pytest.raises(UnsupportedOnCuda, match=r"parameters of its own .*device='cpu'"):
        resolve(numbarnn.get_cell(cell))
