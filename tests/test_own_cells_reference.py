"""Tests of tests/own_cells_reference.py, the references for issue 16's cells (IndRNN and the
layer-normalised LSTM), before any plugin is compared against them: the NumPy forward
against the PyTorch one, PyTorch's gradients against finite differences of the NumPy
forward, and properties of the equations that a slip in both would break."""
import functools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

try:  # works whether or not tests/ is a package
    from . import naive
    from . import own_cells_reference as ref
except ImportError:
    import naive
    import own_cells_reference as ref

FORWARD_RTOL = 1e-12
FD_RTOL = 1e-7

# tiny shapes: T, B, X, H from 1 (a single hidden unit makes LN(c) identically zero: an edge worth keeping)
SHAPES = st.tuples(st.integers(1, 3), st.integers(1, 2), st.integers(1, 3), st.integers(1, 3))
SEEDS = st.integers(0, 2**32 - 1)


def random_case(cell, T, B, X, H, seed, with_state):
    """Parameters at a general point, inputs, upstream gradients and (maybe) an initial state."""
    rng = np.random.default_rng(seed)
    params = ref.random_params(cell, X, H, rng)
    x = rng.normal(size=(T, B, X))
    d_outputs = rng.normal(size=(T, B, H))
    state = None
    if with_state:
        state = [rng.normal(size=(B, H)) for _ in range(ref.STATE_COUNTS[cell])]
        state = state[0] if len(state) == 1 else tuple(state)
    return params, x, d_outputs, state


@pytest.mark.parametrize("cell", ref.CELLS)
def test_init_params_has_the_issues_names_shapes_and_values(cell):
    X, H = 3, 16
    p = ref.init_params(cell, X, H, np.random.default_rng(0))
    G = 4 if cell == "layernorm_lstm" else 1
    expected = {"indrnn": {"W_x": (H, X), "b_x": (H,), "u": (H,)},
                "layernorm_lstm": {"W_x": (G * H, X), "W_h": (G * H, H), "b_x": (G * H,), "gamma_x": (G * H,),
                                   "gamma_h": (G * H,), "gamma_c": (H,), "beta_c": (H,)}}[cell]
    assert {name: a.shape for name, a in p.items()} == expected
    bound = 1 / np.sqrt(H)
    for name, a in p.items():
        assert a.dtype == np.float64
        if name.startswith("W_"):
            assert np.all(np.abs(a) <= bound) and np.abs(a).max() > bound / 2, name   # the whole ±1/sqrt(H) range
        elif name == "u":
            assert np.all((a >= 0) & (a < 1)) and a.max() > 0.5, name
        elif name.startswith("gamma_"):
            assert np.all(a == 1), name
        else:
            assert np.all(a == 0), name
    assert ref.init_params(cell, X, H, np.random.default_rng(0), dtype=np.float32)["W_x"].dtype == np.float32


@pytest.mark.parametrize("cell", ref.CELLS)
@settings(max_examples=10, deadline=None)
@given(shape=SHAPES, seed=SEEDS, with_state=st.booleans())
def test_numpy_forward_matches_the_torch_forward(cell, shape, seed, with_state):
    torch = pytest.importorskip("torch")
    params, x, _, state = random_case(cell, *shape, seed, with_state)
    outputs, final = ref.numpy_forward(cell, params, x, state)
    tparams = {name: torch.from_numpy(p) for name, p in params.items()}
    tstate = None if state is None else ref._state_like([torch.from_numpy(s) for s in ref._state_list(state)], state)
    t_outputs, t_final = ref.torch_forward(cell, tparams, torch.from_numpy(x), tstate)
    np.testing.assert_allclose(outputs, t_outputs.numpy(), rtol=FORWARD_RTOL, atol=FORWARD_RTOL)
    for ours, theirs in zip(ref._state_list(final), ref._state_list(t_final)):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=FORWARD_RTOL, atol=FORWARD_RTOL)


@pytest.mark.parametrize("cell", ref.CELLS)
@settings(max_examples=8, deadline=None)
@given(shape=SHAPES, seed=SEEDS, with_state=st.booleans(), with_d_final=st.booleans())
def test_torch_gradients_match_finite_differences_of_the_numpy_forward(cell, shape, seed, with_state, with_d_final):
    pytest.importorskip("torch")
    params, x, d_outputs, state = random_case(cell, *shape, seed, with_state)
    assume(ref.smooth_enough_for_differences(cell, params, x, state))   # no kink, no near-constant LN input
    _, final = ref.numpy_forward(cell, params, x, state)
    rng = np.random.default_rng(seed + 1)
    d_final = None
    if with_d_final:
        d_final = ref._state_like([rng.normal(size=s.shape) for s in ref._state_list(final)], final)
    expected = ref.finite_difference_gradients(functools.partial(ref.numpy_forward, cell), params, x, d_outputs,
                                               state, d_final)
    grads = ref.torch_gradients(cell, params, x, d_outputs, state, d_final)
    assert set(grads) == {"d" + name for name in params} | {"dx"} | ({"dstate"} if with_state else set())
    ref.assert_gradients_close(grads, expected, FD_RTOL)


def test_the_gradient_check_fails_on_a_wrong_gradient():
    """assert_gradients_close is what the FD test rests on: a gradient off by 1e-5 of its scale fails it."""
    pytest.importorskip("torch")
    params, x, d_outputs, state = random_case("layernorm_lstm", 3, 2, 2, 3, seed=0, with_state=True)
    expected = ref.finite_difference_gradients(functools.partial(ref.numpy_forward, "layernorm_lstm"), params, x,
                                               d_outputs, state)
    grads = ref.torch_gradients("layernorm_lstm", params, x, d_outputs, state)
    ref.assert_gradients_close(grads, expected, FD_RTOL)
    grads["dgamma_c"][1] += 1e-5 * np.abs(grads["dgamma_c"]).max()
    with pytest.raises(AssertionError, match="dgamma_c"):
        ref.assert_gradients_close(grads, expected, FD_RTOL)


def test_layernorm_lstm_with_unit_gains_and_zero_shifts_still_differs_from_the_plain_lstm():
    """LN matters: gammas 1 and betas 0 do not make it a plain LSTM with the same W_x, W_h, b_x."""
    rng = np.random.default_rng(3)
    T, B, X, H = 4, 3, 5, 6
    params = ref.init_params("layernorm_lstm", X, H, rng)
    params["b_x"] = rng.normal(scale=0.5, size=4 * H)
    x = rng.normal(size=(T, B, X))
    outputs, (h, c) = ref.numpy_forward("layernorm_lstm", params, x)
    zeros = np.zeros((B, H))
    plain, plain_h, plain_c = naive.lstm_forward(x, params["W_x"], params["W_h"], params["b_x"], np.zeros(4 * H),
                                                 zeros, zeros)
    assert np.abs(outputs - plain).max() > 1e-2
    assert np.abs(c - plain_c).max() > 1e-2


def test_layernorm_lstm_gates_are_i_f_g_o_as_in_the_plain_lstm():
    """One step from a non-zero (h, c): the LSTM update of tests/naive.py (checked against
    torch.nn.LSTM, gate order i, f, g, o), fed the normalised pre-activations as its input
    through an identity W_x, gives the same c_t; and h_t is its o gate times tanh(LN(c_t) gamma_c + beta_c)."""
    rng = np.random.default_rng(4)
    B, X, H = 3, 4, 5
    params = ref.random_params("layernorm_lstm", X, H, rng)
    x_t, h0, c0 = rng.normal(size=(B, X)), rng.normal(size=(B, H)), rng.normal(size=(B, H))
    _, (h, c) = ref.numpy_forward("layernorm_lstm", params, x_t[None], (h0, c0))
    z_without_bias = (ref.layer_norm(x_t @ params["W_x"].T) * params["gamma_x"]
                      + ref.layer_norm(h0 @ params["W_h"].T) * params["gamma_h"])
    G = 4 * H
    _, plain_c, _, _, _, plain_o = naive._lstm_step(z_without_bias, h0, c0, np.eye(G), np.zeros((G, H)),
                                                    params["b_x"], np.zeros(G))
    np.testing.assert_allclose(c, plain_c, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(h, plain_o * np.tanh(ref.layer_norm(plain_c) * params["gamma_c"] + params["beta_c"]),
                               rtol=1e-13, atol=1e-13)


def test_layer_norm_uses_the_biased_variance_plus_eps_inside_the_root():
    a = np.array([[1.0, 2.0, 4.0, 9.0]])
    by_hand = (a - 4.0) / np.sqrt(((a - 4.0) ** 2).sum() / 4 + 1e-5)   # mean 4, divide by n (not n - 1)
    np.testing.assert_allclose(ref.layer_norm(a), by_hand, rtol=1e-15)


def test_indrnn_with_u_zero_is_relu_of_the_input_projection_at_every_step():
    rng = np.random.default_rng(5)
    T, B, X, H = 5, 3, 4, 6
    params = ref.random_params("indrnn", X, H, rng)
    params["u"] = np.zeros(H)
    x = rng.normal(size=(T, B, X))
    outputs, h = ref.numpy_forward("indrnn", params, x, rng.normal(size=(B, H)))   # the state must not matter
    np.testing.assert_array_equal(outputs, np.maximum(x @ params["W_x"].T + params["b_x"], 0.0))
    assert (outputs == 0).any() and (outputs > 0).any()   # both sides of the relu were exercised
    np.testing.assert_array_equal(h, outputs[-1])


def test_indrnn_recurrence_is_element_wise():
    """With u != 0 each unit sees only its own previous value: h_t = relu(a_t + u * h_{t-1})."""
    rng = np.random.default_rng(6)
    params = ref.random_params("indrnn", 2, 3, rng)
    x, h0 = rng.normal(size=(4, 2, 2)), np.abs(rng.normal(size=(2, 3)))
    outputs, _ = ref.numpy_forward("indrnn", params, x, h0)
    previous = h0
    for t in range(4):
        for unit in range(3):
            a = x[t] @ params["W_x"][unit] + params["b_x"][unit] + params["u"][unit] * previous[:, unit]
            np.testing.assert_allclose(outputs[t, :, unit], np.maximum(a, 0.0), rtol=1e-15)
        previous = outputs[t]


def test_unknown_cell_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'peephole'"):
        ref.init_params("peephole", 2, 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="'peephole'"):
        ref.numpy_forward("peephole", {}, np.zeros((1, 1, 1)))
