"""Cells with parameters of their own (CellSpec.params, recurrent_weights, projection_biases):
the core's side of the protocol, on two small test cells (tests/own_param_cells.py). The
plugins in plugins/ test the real ones (IndRNN, the layer-normalised LSTM) against PyTorch."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numbarnn
from numbarnn import plugins
from numbarnn.cellcheck import CellCheckError, check_cell
from numbarnn.cells import LSTM, RNN, CellSpec, ParamSpec, ones, uniform
from numbarnn.checkpoint import expected_param_shapes
from numbarnn.models import RecurrentModel
from numbarnn.sequence_model import SequenceModel

import naive
from own_param_cells import DIAG_RNN, GAINED_RNN, OWN_PARAM_CELLS, diag_backward, diag_forward, numpy_forward

CELL_IDS = [cell.name for cell in OWN_PARAM_CELLS]


def finite_differences(f, params):
    """Central differences of the scalar f() w.r.t. every array in params, by name."""
    return {name: naive.finite_difference_grad(f, p) for name, p in params.items()}


# ---- declarations ------------------------------------------------------------------------------

def test_params_have_the_declared_names_shapes_and_order():
    model = RecurrentModel(GAINED_RNN, input_size=3, hidden_size=5, seed=0)
    assert {k: v.shape for k, v in model.params.items()} == {"W_x": (5, 3), "W_h": (5, 5), "g": (5,), "c": (5,)}
    assert list(model.params) == list(GAINED_RNN.param_names)
    model = RecurrentModel(DIAG_RNN, input_size=3, hidden_size=5, seed=0)
    assert {k: v.shape for k, v in model.params.items()} == {"W_x": (5, 3), "b_x": (5,), "u": (5,)}
    # the initialisers: U(0.5, 1.5) gains, zero biases, U(0, 1) recurrent weights
    gained = RecurrentModel(GAINED_RNN, 3, 50, seed=1).params
    assert ((0.5 <= gained["g"]) & (gained["g"] < 1.5)).all() and gained["g"].std() > 0.1
    assert (gained["c"] == 0).all()
    u = RecurrentModel(DIAG_RNN, 3, 50, seed=1).params["u"]
    assert ((0 <= u) & (u < 1)).all() and u.std() > 0.1


def test_the_same_seed_gives_the_same_parameters_and_the_fused_ones_as_before():
    a = RecurrentModel(DIAG_RNN, 3, 4, seed=7).params
    b = RecurrentModel(DIAG_RNN, 3, 4, seed=7).params
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # the fused weights are drawn first, as for any cell: W_x is the RNN's W_x for the same seed
    np.testing.assert_array_equal(a["W_x"], RecurrentModel(RNN, 3, 4, seed=7).params["W_x"])


def test_backward_names_a_gradient_for_every_parameter():
    model = RecurrentModel(DIAG_RNN, 2, 3, seed=0)
    outputs, _ = model.forward(np.ones((4, 2, 2)))
    grads = model.backward(np.ones_like(outputs))
    assert sorted(grads) == ["dW_x", "db_x", "dstate", "du", "dx"]


@pytest.mark.parametrize("bad, match", [
    (lambda: ParamSpec("W_y", ("H",)), "reserved"),
    (lambda: ParamSpec("gain_l1", ("H",)), "reserved"),
    (lambda: ParamSpec("gain_reverse", ("H",)), "reserved"),
    (lambda: ParamSpec("two words", ("H",)), "identifier"),
    (lambda: ParamSpec("gain", ("K",)), "positive int or one of"),
    (lambda: ParamSpec("gain", ()), "non-empty tuple"),
    (lambda: ParamSpec("gain", (0,)), "positive int"),
    (lambda: ParamSpec("gain", ("H",), init="ones"), "callable"),
    (lambda: dataclasses.replace(RNN, name="twice", params=(ParamSpec("g", ("H",)), ParamSpec("g", ("H",)))),
     r"declared twice"),
    (lambda: dataclasses.replace(RNN, name="clash", params=(ParamSpec("b_x", ("H",)),)), r"also a fused"),
    (lambda: dataclasses.replace(RNN, name="nowh", recurrent_weights=False, shared_gate_grad=False),
     "shared_gate_grad=True"),
    (lambda: dataclasses.replace(RNN, name="notuple", params=[ParamSpec("g", ("H",))]), "tuple of"),
    (lambda: uniform(1.0, 0.0), "low <= high"),
])
def test_bad_declarations_are_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_a_cell_without_projection_biases_may_name_its_own_b_x():
    cell = dataclasses.replace(GAINED_RNN, name="own_b_x", params=(ParamSpec("b_x", ("H",), ones),
                                                                   ParamSpec("c", ("H",))))
    assert cell.param_names == ("W_x", "W_h", "b_x", "c")


def test_expected_param_shapes_counts_a_cells_own_parameters():
    model = SequenceModel(DIAG_RNN, 5, 3, 5, layers=2, dtype="float64", seed=0)
    assert expected_param_shapes(DIAG_RNN, 5, 3, 2) == {k: v.shape for k, v in model.params.items()}
    assert "u_l1" in model.params and "W_h" not in model.params


# ---- numbers -------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", OWN_PARAM_CELLS, ids=CELL_IDS)
@settings(max_examples=12, deadline=None)
@given(T=st.integers(1, 4), B=st.integers(1, 3), X=st.integers(1, 3), H=st.integers(1, 4), seed=st.integers(0, 10**6))
def test_forward_and_every_gradient_against_numpy_and_finite_differences(cell, T, B, X, H, seed):
    rng = np.random.default_rng(seed)
    model = RecurrentModel(cell, X, H, seed=seed)
    for p in model.params.values():  # away from the initialisers' special values (zero biases)
        p[...] = rng.uniform(-1, 1, size=p.shape)
    x, h0 = rng.normal(size=(T, B, X)), rng.normal(size=(B, H))
    d_out, d_final = rng.normal(size=(T, B, H)), rng.normal(size=(B, H))
    outputs, final = model.forward(x, h0)
    expected, expected_final = numpy_forward(cell, model.params, x, h0)
    np.testing.assert_allclose(outputs, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(final, expected_final, rtol=1e-12, atol=1e-14)
    grads = model.backward(d_out, d_final)

    inputs = {"x": x, "h0": h0}

    def loss():
        out, last = numpy_forward(cell, model.params, inputs["x"], inputs["h0"])
        return (out * d_out).sum() + (last * d_final).sum()

    numeric = finite_differences(loss, {**model.params, **inputs})
    for name in model.params:
        np.testing.assert_allclose(grads["d" + name], numeric[name], rtol=1e-6, atol=1e-8, err_msg=name)
    np.testing.assert_allclose(grads["dx"], numeric["x"], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grads["dstate"], numeric["h0"], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("cell", OWN_PARAM_CELLS, ids=CELL_IDS)
def test_integer_inputs_and_float32_agree_with_float64_dense(cell):
    rng = np.random.default_rng(3)
    V, H, T, B = 5, 4, 6, 3
    model64 = RecurrentModel(cell, V, H, seed=3)
    model32 = RecurrentModel(cell, V, H, seed=3, dtype="float32")
    idx = rng.integers(-1, V, size=(T, B))
    onehot = np.eye(V)[idx] * (idx >= 0)[..., None]
    out_idx, _ = model64.forward(idx)
    out_dense, _ = model64.forward(onehot)
    np.testing.assert_allclose(out_idx, out_dense, rtol=1e-12, atol=1e-14)
    d = rng.normal(size=out_idx.shape)
    g_dense = model64.backward(d)
    model64.forward(idx)
    g_idx = model64.backward(d)
    out32, _ = model32.forward(idx)
    g32 = model32.backward(d.astype(np.float32))
    np.testing.assert_allclose(out32, out_idx, rtol=1e-4, atol=1e-5)
    for name in cell.param_names:
        np.testing.assert_allclose(g_idx["d" + name], g_dense["d" + name], rtol=1e-10, atol=1e-12)
        assert g32["d" + name].dtype == np.float32
        np.testing.assert_allclose(g32["d" + name], g_idx["d" + name], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("cell", OWN_PARAM_CELLS, ids=CELL_IDS)
def test_a_stacked_bidirectional_model_over_padded_sequences_against_finite_differences(cell):
    rng = np.random.default_rng(5)
    T, B, X, H, C = 4, 2, 2, 2, 3
    model = SequenceModel(cell, X, H, C, layers=2, bidirectional=True, task="classify", index_input=False,
                          dtype="float64", seed=5)
    for p in model.params.values():
        p[...] = rng.uniform(-1, 1, size=p.shape)
    assert {"u_l1_reverse", "W_x_l1_reverse"} <= set(model.params) if cell is DIAG_RNN else \
        {"g_l1_reverse", "c_reverse"} <= set(model.params)
    x, lengths = rng.normal(size=(T, B, X)), np.array([4, 2])
    d_logits = rng.normal(size=(B, C))
    model.forward(x, lengths=lengths)
    grads = model.backward(d_logits)

    def loss():
        logits, _ = model.forward(x, lengths=lengths)
        return (logits * d_logits).sum()

    numeric = finite_differences(loss, model.params)
    for name in model.params:
        np.testing.assert_allclose(grads["d" + name], numeric[name], rtol=1e-6, atol=1e-8, err_msg=name)


# ---- trainer: the compiled language-model step and generation --------------------------------------

@pytest.mark.parametrize("cell", OWN_PARAM_CELLS, ids=CELL_IDS)
def test_the_compiled_step_and_generation_equal_the_general_path(cell):
    V, H, T, B = 6, 5, 7, 3
    rng = np.random.default_rng(11)
    x, y = rng.integers(0, V, size=(T, B)), rng.integers(0, V, size=(T, B))
    compiled = numbarnn.make_trainer(cell, vocab_size=V, hidden_size=H, dtype="float64", seed=2, clip=None)
    general = numbarnn.make_trainer(cell, vocab_size=V, hidden_size=H, dtype="float64", seed=2, clip=None)
    assert compiled.backend.compiled_step
    general.backend.compiled_step = False  # the model's forward and backward, layer by layer
    for _ in range(3):
        a, b = compiled.train_step(x, y), general.train_step(x, y)
        assert a == pytest.approx(b, rel=1e-12)
    for name in compiled.model.params:
        np.testing.assert_allclose(compiled.model.params[name], general.model.params[name], rtol=1e-11,
                                   atol=1e-13, err_msg=name)
    # compiled generation against stepping the model one index at a time (greedy)
    fast = compiled.generate(prime=[1, 2], length=8, sampler="greedy")
    model, state, index = compiled.model, None, None
    for index in (1, 2):
        logits, state = model.forward(np.array([[index]]), state)
    slow = []
    for _ in range(8):
        index = int(np.argmax(logits[0, 0]))
        slow.append(index)
        logits, state = model.forward(np.array([[index]]), state)
    assert fast == slow


@pytest.mark.parametrize("cell", OWN_PARAM_CELLS, ids=CELL_IDS)
def test_training_lowers_the_loss_and_a_checkpoint_resumes_exactly(cell, tmp_path):
    class Cells:
        @numbarnn.hookimpl
        def register_cells(self, register):
            register(cell)

    plugins.register_plugin(Cells(), name="own-param-test-cells")
    try:
        rng = np.random.default_rng(0)
        x = rng.integers(0, 4, size=(8, 4))
        y = (x + 1) % 4  # learnable: the next index
        trainer = numbarnn.make_trainer(cell.name, vocab_size=4, hidden_size=8, dtype="float64", seed=0, lr=0.05)
        first = trainer.train_step(x, y)
        for _ in range(30):
            last = trainer.train_step(x, y)
        assert last < 0.5 * first
        path = trainer.save(tmp_path / "own.ckpt")
        resumed = numbarnn.load(path)
        assert list(resumed.model.params) == list(trainer.model.params)
        assert resumed.train_step(x, y) == trainer.train_step(x, y)
        for name in trainer.model.params:
            np.testing.assert_array_equal(resumed.model.params[name], trainer.model.params[name])
    finally:
        plugins.unregister_plugin("own-param-test-cells")


# ---- registration checks and devices -----------------------------------------------------------

def test_the_dry_run_checks_own_parameters():
    # a kernel that writes into its parameter, and one sized beyond the declared shape
    wrong_kernels = dataclasses.replace(DIAG_RNN, name="diag_old_protocol", forward=RNN.forward)
    with pytest.raises(CellCheckError, match="takes 5 arguments.*takes 6 \\(the cell declares parameters"):
        check_cell(wrong_kernels)
    too_small = dataclasses.replace(DIAG_RNN, name="diag_u_too_small", params=(ParamSpec("u", (1,), ones),))
    with pytest.raises(CellCheckError, match="wrote outside du|reads outside|wrote NaN"):
        check_cell(too_small)
    check_cell(DIAG_RNN)
    check_cell(GAINED_RNN)


def test_a_kernel_writing_into_its_own_parameter_is_refused():
    from numba import njit

    @njit
    def clobbering_forward(xz_t, hz_t, states, t, cache_t, params):
        diag_forward(xz_t, hz_t, states, t, cache_t, params)
        params[0][0] = 0.0

    cell = dataclasses.replace(DIAG_RNN, name="diag_clobber", forward=clobbering_forward, backward=diag_backward)
    with pytest.raises(CellCheckError, match="wrote into its parameter u"):
        check_cell(cell)


def test_cuda_refuses_a_cell_with_its_own_parameters_clearly():
    pytest.importorskip("numba.cuda")
    from numbarnn.cuda import UnsupportedOnCuda
    from numbarnn.cuda.cells import resolve

    with pytest.raises(UnsupportedOnCuda, match="parameters of its own \\(u\\).*device='cpu'"):
        resolve(DIAG_RNN)
    with pytest.raises(UnsupportedOnCuda, match="no recurrent weights"):
        resolve(dataclasses.replace(LSTM, name="lstm_no_wh", recurrent_weights=False))
    assert isinstance(GAINED_RNN, CellSpec)
