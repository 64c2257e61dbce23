"""The speed anchors of benchmarks/own_cells_anchors.py compute the same training step as the
references: at the quick sizes, their first losses equal the float64 NumPy reference's on the
same weights, and the PyTorch loop and JAX agree after an update (the clip and Adam match).
No timing is checked here."""
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import own_cells_anchors as anchors  # noqa: E402

try:  # works whether or not tests/ is a package
    from . import naive
    from . import own_cells_reference as ref
except ImportError:
    import naive
    import own_cells_reference as ref

LOSS_RTOL = 1e-5   # float32 steps against a float64 reference


def quick_case(cell, seed=0):
    """Quick-size weights moved off the initialisation (gammas away from 1, biases and beta_c
    away from 0: a step that dropped one of them would still match at the init) and a batch."""
    V, H, B, T = (anchors.QUICK[k] for k in "VHBT")
    rng = np.random.default_rng(seed)
    weights = {name: (a + rng.normal(scale=0.3, size=a.shape)).astype(np.float32)
               for name, a in anchors.make_weights(cell, V, H, seed).items()}
    return weights, *anchors.make_batch(V, B, T, seed)


@pytest.mark.parametrize("cell", anchors.CELLS)
def test_reference_loss_is_the_summed_cross_entropy_over_the_batch(cell):
    weights, inputs, targets = quick_case(cell)
    w = {name: a.astype(np.float64) for name, a in weights.items()}
    x = naive.one_hot(inputs.T, w["W_y"].shape[0])
    outputs, _ = ref.numpy_forward(cell, {k: a for k, a in w.items() if k not in anchors.HEAD}, x)
    logits = outputs @ w["W_y"].T + w["b_y"]
    total, _ = naive.softmax_cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.T.reshape(-1))
    assert anchors.reference_loss(cell, weights, inputs, targets) == pytest.approx(total / inputs.shape[0],
                                                                                   rel=1e-12)


@pytest.mark.parametrize("cell", anchors.CELLS)
def test_pytorch_loop_and_jax_anchors_compute_the_reference_loss(cell):
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    weights, inputs, targets = quick_case(cell)
    expected = anchors.reference_loss(cell, weights, inputs, targets)
    torch_step = anchors.torch_loop_train_step(cell, weights, inputs, targets)
    jax_step = anchors.jax_train_step(cell, weights, inputs, targets)
    torch_first, jax_first = torch_step(), jax_step()
    assert torch_first == pytest.approx(expected, rel=LOSS_RTOL)
    assert jax_first == pytest.approx(expected, rel=LOSS_RTOL)
    torch_second, jax_second = torch_step(), jax_step()
    assert torch_second != pytest.approx(torch_first, rel=1e-6)   # the update moved the weights
    assert jax_second == pytest.approx(torch_second, rel=1e-4)     # by the same clip and Adam


def test_jax_lstm_anchor_computes_numbarnns_lstm_loss_on_its_weights():
    pytest.importorskip("jax")
    V, H, B, T = (anchors.QUICK[k] for k in "VHBT")
    inputs, targets = anchors.make_batch(V, B, T)
    trainer = anchors.numbarnn_trainer("lstm", V, H)
    jax_step = anchors.jax_train_step("lstm", {k: a.copy() for k, a in trainer.model.params.items()}, inputs, targets)
    assert jax_step() == pytest.approx(trainer.train_step(inputs, targets), rel=LOSS_RTOL)
    assert jax_step() == pytest.approx(trainer.train_step(inputs, targets), rel=1e-4)


def test_check_losses_reports_a_mismatch():
    """The benchmark's exit status rests on check_losses: a wrong first loss is named."""
    results = {"numbarnn lstm": [2.0, 1.9], "jax lstm": [2.1, 1.9], "jax indrnn": [3.0, 2.9]}
    problems = anchors.check_losses(results, {"jax lstm": "numbarnn lstm", "jax indrnn": 3.0})
    assert len(problems) == 1 and problems[0].startswith("jax lstm: first loss 2.1")
