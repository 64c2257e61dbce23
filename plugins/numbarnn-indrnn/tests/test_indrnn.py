"""The numbarnn-indrnn plugin: its kernels one step at a time against NumPy and central
finite differences, whole sequences (the kernels driven step by step as numbarnn's loops
drive them) against the PyTorch autograd reference, the spec and the entry point.

Needs the package installed (``pip install -e plugins/numbarnn-indrnn``). The reference is
numbarnn's own ``tests/own_cells_reference.py``, written from issue 16's equations.
"""
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, example, given, settings, strategies as st

import numbarnn_indrnn
from numbarnn.cellcheck import check_cell
from numbarnn.models import RecurrentModel
from numbarnn_indrnn.kernels import indrnn_backward, indrnn_forward

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from installed_registry import assert_registered_by_entry_point, entry_point_registry  # noqa: E402,F401  (autouse: this module's tests see the entry points)
import naive  # noqa: E402  (numbarnn's tests/naive.py)
import own_cells_reference as ref  # noqa: E402

SPEC = numbarnn_indrnn.INDRNN
TOL = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=2e-6, atol=2e-6)}

sizes = st.integers(1, 5)
seeds = st.integers(0, 2**32 - 1)
FD_STEP = 1e-4  # central differences' step (see test_backward_step_matches_finite_differences)


# ---- one step ------------------------------------------------------------------------------------

def one_step_case(B, H, seed, dtype=np.float64):
    """xz_t, h_{t-1}, u and an upstream gradient dh_t, at a general point."""
    rng = np.random.default_rng(seed)
    xz_t, h_prev = rng.normal(size=(B, H)), rng.normal(size=(B, H))
    u, dh = rng.normal(scale=0.8, size=H), rng.normal(size=(B, H))
    return [a.astype(dtype) for a in (xz_t, h_prev, u, dh)]


def forward_step(xz_t, h_prev, u):
    """The kernel's step at t = 0: ``states (1, 2, B, H)`` after it."""
    B, H = xz_t.shape
    states = np.zeros((1, 2, B, H), xz_t.dtype)
    states[0, 0] = h_prev
    indrnn_forward(xz_t, np.zeros_like(xz_t), states, 0, np.empty((B, 0), xz_t.dtype), (u,))
    return states


def backward_step(states, u, dh, dhz_t=None):
    """The kernel's backward at t = 0 -> (dxz_t, dhz_t, dstate_prev, du). One array serves as
    dxz_t and dhz_t, as the loops pass them, unless ``dhz_t`` is given."""
    B, H = dh.shape
    dxz_t, dstate_prev, du = np.full((B, H), np.nan, u.dtype), np.full((1, B, H), np.nan, u.dtype), np.zeros_like(u)
    dhz_t = dxz_t if dhz_t is None else dhz_t
    indrnn_backward(dh[None].copy(), states, 0, np.empty((B, 0), u.dtype), dxz_t, dhz_t, dstate_prev, (u,), (du,))
    return dxz_t, dhz_t, dstate_prev, du


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=25, deadline=None)
@given(B=sizes, H=sizes, seed=seeds)
def test_forward_step_matches_numpy(dtype, B, H, seed):
    xz_t, h_prev, u, _ = one_step_case(B, H, seed, dtype)
    states = forward_step(xz_t, h_prev, u)
    assert states.dtype == dtype
    expected = np.maximum(xz_t.astype(np.float64) + u.astype(np.float64) * h_prev, 0.0)
    np.testing.assert_allclose(states[0, 1], expected, **TOL[dtype])
    np.testing.assert_array_equal(states[0, 0], h_prev)   # the previous state is only read


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=25, deadline=None)
@given(B=sizes, H=sizes, seed=seeds)
def test_backward_step_matches_numpy(dtype, B, H, seed):
    xz_t, h_prev, u, dh = one_step_case(B, H, seed, dtype)
    states = forward_step(xz_t, h_prev, u)
    dxz_t, _, dstate_prev, du = backward_step(states, u, dh)
    a = xz_t.astype(np.float64) + u.astype(np.float64) * h_prev   # the relu's input
    da = np.where(a > 0, dh, 0.0)
    np.testing.assert_allclose(dxz_t, da, **TOL[dtype])
    np.testing.assert_allclose(dstate_prev[0], da * u, **TOL[dtype])   # all of it: there is no W_h
    np.testing.assert_allclose(du, (da * h_prev).sum(axis=0), **TOL[dtype])


@settings(max_examples=25, deadline=None)
@given(B=sizes, H=sizes, seed=seeds)
@example(B=1, H=2, seed=4127058)   # du ~ 4e-3: at a 1e-6 step the differences' rounding alone was 1.7e-8 of it
def test_backward_step_matches_finite_differences(B, H, seed):
    """Of L = sum(dh * h_t) w.r.t. every input of the forward: xz_t, hz_t, h_{t-1}, u.

    Away from relu's kink L is linear in each input, so central differences have no
    truncation error and their step sets only their rounding error (about 1e-16 |L| / step):
    a 1e-4 step, with every pre-activation further from the kink than the step can move it
    (the step times |h_{t-1}|, |u| or 1), ten times over. Over 1,500 random cases the worst
    error was 1.8e-9 at this step, 4.1e-8 at the 1e-6 step used before (above the 1e-8 asked)."""
    xz_t, h_prev, u, dh = one_step_case(B, H, seed)
    reach = FD_STEP * max(1.0, np.abs(h_prev).max(), np.abs(u).max())
    assume(np.abs(xz_t + u * h_prev).min() > max(1e-3, 10 * reach))   # away from relu's kink
    hz_t = np.zeros_like(xz_t)

    def loss():
        states = np.zeros((1, 2, B, H))
        states[0, 0] = h_prev
        indrnn_forward(xz_t, hz_t, states, 0, np.empty((B, 0)), (u,))
        return np.sum(dh * states[0, 1])

    dxz_t, dhz_t, dstate_prev, du = backward_step(forward_step(xz_t, h_prev, u), u, dh, np.empty((B, H)))
    expected = {name: naive.finite_difference_grad(loss, array, eps=FD_STEP) for name, array in
                (("dxz_t", xz_t), ("dhz_t", hz_t), ("dh_prev", h_prev), ("du", u))}
    ref.assert_gradients_close({"dxz_t": dxz_t, "dh_prev": dstate_prev[0], "du": du},
                               {k: v for k, v in expected.items() if k != "dhz_t"}, rtol=1e-8)
    # hz_t (zeros, no W_h) does not enter the step; the kernel writes dhz_t = dxz_t only
    # because the loops pass one array for both.
    np.testing.assert_array_equal(expected["dhz_t"], 0.0)
    np.testing.assert_array_equal(dhz_t, dxz_t)


def test_relu_gradient_at_exactly_zero_is_zero():
    """As PyTorch's: a pre-activation of exactly 0 passes no gradient (to xz_t, h_{t-1} or u)."""
    xz_t, h_prev = np.array([[0.0, -1.0, 2.0]]), np.array([[0.0, 1.0, 1.0]])
    u = np.array([0.5, 1.0, 0.5])   # pre-activations 0, 0 and 2.5
    states = forward_step(xz_t, h_prev, u)
    np.testing.assert_array_equal(states[0, 1], [[0.0, 0.0, 2.5]])
    dxz_t, _, dstate_prev, du = backward_step(states, u, np.ones((1, 3)))
    np.testing.assert_array_equal(dxz_t, [[0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(dstate_prev[0], [[0.0, 0.0, 0.5]])
    np.testing.assert_array_equal(du, [0.0, 0.0, 1.0])


def test_relu_gradient_at_zero_agrees_with_torch():
    torch = pytest.importorskip("torch")
    a = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    torch.relu(a).sum().backward()
    assert a.grad.tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_nan_reaches_the_state_and_the_gradients(dtype):
    """numbarnn's non-finite guard must see a NaN: relu does not turn one into 0."""
    xz_t, h_prev, u, dh = one_step_case(2, 3, seed=0, dtype=dtype)
    xz_t[1, 2] = np.nan
    states = forward_step(xz_t, h_prev, u)
    assert np.isnan(states[0, 1, 1, 2]) and np.isfinite(np.delete(states[0, 1].ravel(), 5)).all()
    dh[0, 0] = np.nan
    states = forward_step(np.abs(xz_t) + 1, np.abs(h_prev), np.abs(u))   # every unit active
    dxz_t, _, dstate_prev, du = backward_step(states, np.abs(u), dh)
    assert np.isnan(dxz_t[0, 0]) and np.isnan(dstate_prev[0, 0, 0]) and np.isnan(du[0])


def test_backward_adds_into_the_gradient_of_u():
    xz_t, h_prev, u, dh = one_step_case(3, 4, seed=1)
    states = forward_step(xz_t, h_prev, u)
    _, _, _, du = backward_step(states, u, dh)
    accumulated = np.full_like(u, 10.0)
    indrnn_backward(dh[None].copy(), states, 0, np.empty((3, 0)), np.empty((3, 4)), np.empty((3, 4)),
                    np.empty((1, 3, 4)), (u,), (accumulated,))
    np.testing.assert_allclose(accumulated, 10.0 + du, rtol=1e-15)


# ---- whole sequences, through numbarnn's loops -------------------------------

def run_loops(spec, params, x, initial_state, d_outputs, d_final_state):
    """The cell over a sequence through numbarnn's own compiled loops (a RecurrentModel).
    Returns (outputs (T, B, H), final states (S, B, H), grads) with ``"d" + name`` for every
    parameter, ``dx`` and ``dstate`` (S, B, H)."""
    model = RecurrentModel(spec, x.shape[2], initial_state.shape[-1], dtype=x.dtype, params=params)
    outputs, final = model.forward(x, initial_state[0])
    grads = model.backward(d_outputs, d_final_state[0])
    grads["dstate"] = grads["dstate"][None]
    return outputs, final[None], grads


def sequence_case(T, B, X, H, seed, with_state, with_d_final):
    rng = np.random.default_rng(seed)
    params = ref.random_params("indrnn", X, H, rng)
    x, d_outputs = rng.normal(size=(T, B, X)), rng.normal(size=(T, B, H))
    h0 = rng.normal(size=(B, H)) if with_state else None
    d_final = rng.normal(size=(B, H)) if with_d_final else None
    return params, x, h0, d_outputs, d_final


@settings(max_examples=20, deadline=None)
@given(T=st.integers(1, 5), B=st.integers(1, 3), X=st.integers(1, 4), H=sizes, seed=seeds,
       with_state=st.booleans(), with_d_final=st.booleans())
# long enough for the whole-sequence products (input projection, dW_x, dx, dW_h) to take
# numbarnn's tiles where they are AVX-512
@example(T=30, B=8, X=64, H=80, seed=1, with_state=True, with_d_final=True)
def test_sequence_matches_the_torch_reference(T, B, X, H, seed, with_state, with_d_final):
    pytest.importorskip("torch")
    params, x, h0, d_outputs, d_final = sequence_case(T, B, X, H, seed, with_state, with_d_final)
    outputs, final, grads = run_loops(SPEC, params, x, np.zeros((1, B, H)) if h0 is None else h0[None],
                                      d_outputs, np.zeros((1, B, H)) if d_final is None else d_final[None])
    expected_outputs, expected_h = ref.numpy_forward("indrnn", params, x, h0)
    np.testing.assert_allclose(outputs, expected_outputs, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(final[0], expected_h, rtol=1e-12, atol=1e-12)
    expected = ref.torch_gradients("indrnn", params, x, d_outputs, h0, d_final)
    assert set(expected) <= set(grads)
    if h0 is not None:
        grads["dstate"] = grads["dstate"][0]
    ref.assert_gradients_close(grads, expected, rtol=1e-9)


def test_sequence_in_float32_is_close_to_float64():
    params, x, h0, d_outputs, d_final = sequence_case(6, 4, 3, 5, seed=7, with_state=True, with_d_final=True)
    runs = {}
    for dtype in (np.float64, np.float32):
        p = {name: a.astype(dtype) for name, a in params.items()}
        runs[dtype] = run_loops(SPEC, p, x.astype(dtype), h0[None].astype(dtype), d_outputs.astype(dtype),
                                d_final[None].astype(dtype))
    (out64, _, g64), (out32, _, g32) = runs[np.float64], runs[np.float32]
    assert out32.dtype == np.float32 and all(g.dtype == np.float32 for g in g32.values())
    np.testing.assert_allclose(out32, out64, rtol=1e-5, atol=1e-5)
    ref.assert_gradients_close(g32, g64, rtol=1e-5)


# ---- the spec and the entry point ----------------------------------------------------------------

def test_spec_declares_the_issues_parameters():
    assert (SPEC.name, SPEC.gates, SPEC.states, SPEC.cache_width) == ("indrnn", 1, 1, 0)
    assert SPEC.recurrent_weights is False and SPEC.projection_biases is True and SPEC.shared_gate_grad is True
    assert SPEC.torch_module is None and SPEC.cuda_pointwise is None
    assert SPEC.forward is indrnn_forward and SPEC.backward is indrnn_backward
    assert SPEC.param_shapes(input_size=3, hidden_size=5) == ref.param_shapes("indrnn", 3, 5)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_initialisation_is_the_issues(dtype):
    """W_x uniform in ±1/sqrt(H), b_x zero, u uniform in (0, 1): drawn in the same order as the
    reference's init_params, so the same generator gives the same values."""
    X, H = 3, 64
    params = SPEC.init_params(np.random.default_rng(0), X, H, dtype)
    expected = ref.init_params("indrnn", X, H, np.random.default_rng(0), dtype=dtype)
    assert list(params) == list(expected) == ["W_x", "b_x", "u"]
    ref.assert_params_identical(params, expected, dtype)


def test_the_cell_passes_numbarnns_registration_check():
    check_cell(SPEC)   # raises CellCheckError naming the problem otherwise


def test_entry_point_registers_this_spec():
    assert_registered_by_entry_point(SPEC, "numbarnn-indrnn", numbarnn_indrnn)
