"""The numbarnn-layernorm-lstm plugin: its kernels one step at a time against NumPy, PyTorch
autograd and central finite differences, its row sums, whole sequences (the kernels driven
step by step as numbarnn's loops drive them) against the PyTorch autograd reference, the
spec and the entry point.

Needs the package installed (``pip install -e plugins/numbarnn-layernorm-lstm``). The
reference is numbarnn's own ``tests/own_cells_reference.py``, written from issue 16's equations.
"""
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, example, given, settings, strategies as st
from numba import njit

import numbarnn_layernorm_lstm
from numbarnn.cellcheck import check_cell
from numbarnn.models import RecurrentModel
from numbarnn_layernorm_lstm import reductions
from numbarnn_layernorm_lstm.kernels import CACHE_WIDTH, layernorm_lstm_backward, layernorm_lstm_forward

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from installed_registry import assert_registered_by_entry_point, entry_point_registry  # noqa: E402,F401  (autouse: this module's tests see the entry points)
import naive  # noqa: E402  (numbarnn's tests/naive.py)
import own_cells_reference as ref  # noqa: E402

SPEC = numbarnn_layernorm_lstm.LAYERNORM_LSTM
OWN = ("b_x", "gamma_x", "gamma_h", "gamma_c", "beta_c")
TOL = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-5)}

sizes = st.integers(1, 5)
seeds = st.integers(0, 2**32 - 1)


# ---- one step ------------------------------------------------------------------------------------

def one_step_case(B, H, seed, dtype=np.float64):
    """The step's inputs at a general point: xz_t, hz_t (B, 4H), h_{t-1}, c_{t-1} (B, H), the own
    parameters (gains away from 1, biases away from 0) and upstream gradients dstate (2, B, H)."""
    rng = np.random.default_rng(seed)
    G = 4 * H
    inputs = {"xz_t": rng.normal(size=(B, G)), "hz_t": rng.normal(size=(B, G)),
              "h_prev": rng.normal(size=(B, H)), "c_prev": rng.normal(size=(B, H))}
    own = {"b_x": rng.normal(scale=0.5, size=G), "gamma_x": 1 + rng.normal(scale=0.3, size=G),
           "gamma_h": 1 + rng.normal(scale=0.3, size=G), "gamma_c": 1 + rng.normal(scale=0.3, size=H),
           "beta_c": rng.normal(scale=0.5, size=H)}
    dstate = rng.normal(size=(2, B, H))
    cast = {name: a.astype(dtype) for name, a in {**inputs, **own}.items()}
    return cast, dstate.astype(dtype)


def forward_step(a):
    """The kernel's step at t = 0 -> (states (2, 2, B, H), cache_t)."""
    B, H = a["h_prev"].shape
    states = np.full((2, 2, B, H), np.nan, a["xz_t"].dtype)
    states[0, 0], states[1, 0] = a["h_prev"], a["c_prev"]
    cache_t = np.full((B, CACHE_WIDTH * H), np.nan, a["xz_t"].dtype)  # unsaved blocks read as NaN
    layernorm_lstm_forward(a["xz_t"], a["hz_t"], states, 0, cache_t, tuple(a[n] for n in OWN))
    return states, cache_t


def backward_step(a, dstate, states, cache_t):
    """The kernel's backward at t = 0 -> {name: gradient}: dxz_t, dhz_t, dh_prev, dc_prev and
    "d" + each own parameter."""
    B, H = a["h_prev"].shape
    dtype = a["xz_t"].dtype
    dxz_t, dhz_t = np.full((B, 4 * H), np.nan, dtype), np.full((B, 4 * H), np.nan, dtype)
    dstate_prev = np.full((2, B, H), np.nan, dtype)
    grads = tuple(np.zeros_like(a[n]) for n in OWN)
    layernorm_lstm_backward(dstate.copy(), states, 0, cache_t, dxz_t, dhz_t, dstate_prev,
                            tuple(a[n] for n in OWN), grads)
    return {"dxz_t": dxz_t, "dhz_t": dhz_t, "dh_prev": dstate_prev[0], "dc_prev": dstate_prev[1],
            **{"d" + n: g for n, g in zip(OWN, grads)}}


def numpy_step(a):
    """One step of the issue's equations in float64 NumPy, from the projections -> (h_t, c_t)."""
    a = {name: v.astype(np.float64) for name, v in a.items()}
    H = a["h_prev"].shape[1]
    z = ref.layer_norm(a["xz_t"]) * a["gamma_x"] + ref.layer_norm(a["hz_t"]) * a["gamma_h"] + a["b_x"]
    i, f, g, o = z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:]
    c = naive.sigmoid(f) * a["c_prev"] + naive.sigmoid(i) * np.tanh(g)
    h = naive.sigmoid(o) * np.tanh(ref.layer_norm(c) * a["gamma_c"] + a["beta_c"])
    return h, c


def conditioned_rtol(a, rtol):
    """The kernel's bound for the step at ``a``, from its bound ``rtol`` on a well-conditioned
    step (float32 against float64: 1e-4; float64 against autograd: 1e-12): that bound where
    every layer norm is well conditioned (each row's variance over 1e-3, as the
    finite-difference test assumes), growing with ``1/sqrt(var + eps)`` below that (up to 10x
    at a constant row).

    A layer norm of a nearly constant row turns the rounding of its centred values into
    relative errors ``rstd`` times larger (H = 2 with ``c_t``'s two units close, about 1 case in
    500), in either precision and in autograd's result as in ours; the bound follows that. LN
    over one unit (H = 1) is exactly 0, so ``c_t`` of one unit keeps ``rtol``: in float32 that
    case caught a fused multiply-add in the backward (stop 25). Float64 against autograd stays
    at most 1e-11, a hundredth of the issue's 1e-9."""
    def rstd(rows):
        return 1.0 / np.sqrt(rows.astype(np.float64).var(axis=1).min() + ref.LN_EPS)
    worst = max(rstd(a["xz_t"]), rstd(a["hz_t"]))
    if a["h_prev"].shape[1] > 1:
        worst = max(worst, rstd(numpy_step(a)[1]))
    return rtol * max(1.0, worst * np.sqrt(1e-3))


def torch_step_gradients(a, dstate):
    """PyTorch autograd (F.layer_norm) of ``sum(dh * h_t) + sum(dc * c_t)`` through one step,
    float64, w.r.t. every input the step reads -> {name: gradient} (keys as backward_step's)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    t = {name: torch.tensor(v.astype(np.float64), requires_grad=True) for name, v in a.items()}
    G, H = t["xz_t"].shape[1], t["h_prev"].shape[1]
    z = (F.layer_norm(t["xz_t"], (G,), eps=ref.LN_EPS) * t["gamma_x"]
         + F.layer_norm(t["hz_t"], (G,), eps=ref.LN_EPS) * t["gamma_h"] + t["b_x"])
    i, f, g, o = z.chunk(4, dim=1)
    c = torch.sigmoid(f) * t["c_prev"] + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(F.layer_norm(c, (H,), eps=ref.LN_EPS) * t["gamma_c"] + t["beta_c"])
    d = torch.from_numpy(dstate.astype(np.float64))
    ((h * d[0]).sum() + (c * d[1]).sum()).backward()
    grad = {name: (np.zeros(tuple(v.shape)) if v.grad is None else v.grad.numpy()) for name, v in t.items()}
    return {"dxz_t": grad["xz_t"], "dhz_t": grad["hz_t"], "dh_prev": grad["h_prev"], "dc_prev": grad["c_prev"],
            **{"d" + n: grad[n] for n in OWN}}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=25, deadline=None)
@given(B=sizes, H=sizes, seed=seeds)
def test_forward_step_matches_numpy(dtype, B, H, seed):
    a, _ = one_step_case(B, H, seed, dtype)
    states, _ = forward_step(a)
    h, c = numpy_step(a)
    assert states.dtype == dtype
    np.testing.assert_allclose(states[1, 1], c, **TOL[dtype])
    np.testing.assert_allclose(states[0, 1], h, **TOL[dtype])
    np.testing.assert_array_equal(states[:, 0], np.stack([a["h_prev"], a["c_prev"]]))   # only read


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=25, deadline=None)
@given(B=sizes, H=sizes, seed=seeds)
@example(B=2, H=2, seed=54)   # c_t's second row nearly constant (rstd 198): float64 1.5e-12 against autograd, bound 6.3e-12
def test_backward_step_matches_torch_autograd(dtype, B, H, seed):
    a, dstate = one_step_case(B, H, seed, dtype)
    grads = backward_step(a, dstate, *forward_step(a))
    expected = torch_step_gradients(a, dstate)
    assert all(g.dtype == dtype for g in grads.values())
    assert np.all(grads["dh_prev"] == 0)   # h_{t-1} enters only through hz_t: the loops add dhz_t @ W_h
    # relative to each gradient's scale (own_cells_reference.relative_error)
    ref.assert_gradients_close(grads, expected, rtol=conditioned_rtol(a, 1e-12 if dtype == np.float64 else 1e-4))


@settings(max_examples=25, deadline=None)
@given(B=sizes, H=sizes, seed=seeds)
@example(B=5, H=2, seed=579793008)   # a row of c_t with its two units 0.0016 apart: 1.5e-4, bound 9.7e-4
@example(B=2, H=1, seed=285)   # one unit: a fused multiply-add in the backward gave 1.1e-3 here
def test_backward_step_in_float32_is_close_to_float64(B, H, seed):
    """Without PyTorch too: float32 constants and arithmetic stay float32 and close (the float64
    kernel is checked against autograd and finite differences)."""
    a64, dstate64 = one_step_case(B, H, seed)
    a32, dstate32 = one_step_case(B, H, seed, np.float32)
    grads64 = backward_step(a64, dstate64, *forward_step(a64))
    grads32 = backward_step(a32, dstate32, *forward_step(a32))
    assert all(g.dtype == np.float32 for g in grads32.values())
    ref.assert_gradients_close(grads32, grads64, rtol=conditioned_rtol(a64, 1e-4))


@settings(max_examples=25, deadline=None)
@given(B=sizes, H=sizes, seed=seeds)
def test_backward_step_matches_finite_differences(B, H, seed):
    """Of L = sum(dh * h_t) + sum(dc * c_t) w.r.t. every input of the step: xz_t, hz_t, both
    states and the five own parameters (fourth-order central differences, float64)."""
    a, dstate = one_step_case(B, H, seed)
    # LN of an almost constant vector curves too sharply for differences (see own_cells_reference)
    assume(min(a["xz_t"].var(axis=1).min(), a["hz_t"].var(axis=1).min()) > 1e-3)
    assume(H == 1 or numpy_step(a)[1].var(axis=1).min() > 1e-3)

    def loss():
        states, _ = forward_step(a)
        return np.sum(dstate * states[:, 1])

    def difference(array, eps=1e-4):   # Richardson: (4 D(eps) - D(2 eps)) / 3
        return (4 * naive.finite_difference_grad(loss, array, eps) - naive.finite_difference_grad(loss, array, 2 * eps)) / 3

    grads = backward_step(a, dstate, *forward_step(a))
    keys = {"xz_t": "dxz_t", "hz_t": "dhz_t", "h_prev": "dh_prev", "c_prev": "dc_prev", **{n: "d" + n for n in OWN}}
    expected = {keys[name]: difference(array) for name, array in a.items()}
    ref.assert_gradients_close(grads, expected, rtol=1e-7)


def test_one_hidden_unit_makes_the_cell_norm_zero():
    """LN(c_t) over one unit is 0: h_t = sigmoid(o) * tanh(beta_c), and no gradient reaches
    c_t through it (dc_{t-1} is the gradient given to c_t times f)."""
    a, dstate = one_step_case(3, 1, seed=2)
    states, cache_t = forward_step(a)
    z = ref.layer_norm(a["xz_t"]) * a["gamma_x"] + ref.layer_norm(a["hz_t"]) * a["gamma_h"] + a["b_x"]
    np.testing.assert_allclose(states[0, 1], naive.sigmoid(z[:, 3:]) * np.tanh(a["beta_c"]), rtol=1e-14)
    dstate[0] = 0.0
    grads = backward_step(a, dstate, states, cache_t)
    np.testing.assert_allclose(grads["dc_prev"], dstate[1] * naive.sigmoid(z[:, 1:2]), rtol=1e-14)
    np.testing.assert_array_equal(grads["dgamma_c"], 0.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_layer_norm_is_unmoved_by_a_large_common_offset(dtype):
    """Two passes (mean, then squares about it): a row 1e3 times its spread away from 0 is
    normalised as well as a centred one (one pass, E[a^2] - mean^2, loses it in float32)."""
    a, _ = one_step_case(4, 8, seed=3, dtype=dtype)
    centred, _ = forward_step(a)
    a["xz_t"] = a["xz_t"] + dtype(1e3)
    offset, _ = forward_step(a)
    np.testing.assert_allclose(offset[:, 1], centred[:, 1], rtol=2e-3 if dtype == np.float32 else 1e-10, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_nan_reaches_the_states_and_the_gradients(dtype):
    """numbarnn's non-finite guard must see a NaN: one in a row's projection poisons that row."""
    a, dstate = one_step_case(3, 4, seed=4, dtype=dtype)
    a["xz_t"][1, 5] = np.nan
    states, _ = forward_step(a)
    assert np.isnan(states[:, 1, 1]).all() and np.isfinite(states[:, 1, [0, 2]]).all()
    a["xz_t"][1, 5] = 0.5
    dstate[0, 2, 1] = np.nan
    grads = backward_step(a, dstate, *forward_step(a))
    for name in ("dxz_t", "dhz_t", "dgamma_x", "dgamma_h", "db_x", "dgamma_c", "dbeta_c"):
        assert np.isnan(grads[name]).any(), name


def test_backward_adds_into_the_own_gradients():
    a, dstate = one_step_case(3, 4, seed=5)
    states, cache_t = forward_step(a)
    once = backward_step(a, dstate, states, cache_t)
    accumulated = tuple(np.full_like(a[n], 10.0) for n in OWN)
    B, H = 3, 4
    layernorm_lstm_backward(dstate.copy(), states, 0, cache_t, np.empty((B, 4 * H)), np.empty((B, 4 * H)),
                            np.empty((2, B, H)), tuple(a[n] for n in OWN), accumulated)
    for name, d in zip(OWN, accumulated):
        np.testing.assert_allclose(d, 10.0 + once["d" + name], rtol=1e-14, err_msg=name)


# ---- the row sums ---------------------------------------------------------------------------------

@njit
def _sums(a, b):
    return reductions.row_sum(a), reductions.row_dot(a, b)


@njit
def _pair(a, b, c):
    return reductions.row_dot_pair(a, b, c)


def _documented_order(a, b):
    """row_dot's order in plain Python: 32 lane sums, lane-wise tree of the 4 vectors, tree of
    the 8 lanes, then the leftover elements' running sum."""
    dt = a.dtype.type
    n, chunk = len(a), reductions.LANES * reductions.VECTORS
    whole = n // chunk * chunk
    lanes = [dt(0.0)] * chunk
    for i in range(whole):
        lanes[i % chunk] = dt(lanes[i % chunk] + dt(a[i] * b[i]))
    vectors = [lanes[k * reductions.LANES:(k + 1) * reductions.LANES] for k in range(reductions.VECTORS)]
    while len(vectors) > 1:
        vectors = [[dt(x + y) for x, y in zip(vectors[k], vectors[k + 1])] for k in range(0, len(vectors), 2)]
    parts = vectors[0]
    while len(parts) > 1:
        parts = [dt(parts[k] + parts[k + 1]) for k in range(0, len(parts), 2)]
    tail = dt(0.0)
    for i in range(whole, n):
        tail = dt(tail + dt(a[i] * b[i]))
    return dt(parts[0] + tail)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", [0, 1, 5, 8, 31, 32, 33, 64, 100, 512, 515])
def test_row_sums_are_the_sums_in_the_documented_order(dtype, n):
    rng = np.random.default_rng(n)
    a, b = rng.normal(size=n).astype(dtype), rng.normal(size=n).astype(dtype)
    c = rng.normal(size=n).astype(dtype)
    total, dot = _sums(a, b)
    assert dot == _documented_order(a, b)   # the same bits, whatever the machine's vector width
    assert total == _documented_order(a, np.ones_like(a))
    assert _pair(a, b, c) == (dot, _documented_order(a * b, c))   # (a b) c, in that order
    np.testing.assert_allclose([total, dot], [a.astype(np.float64).sum(), a.astype(np.float64) @ b],
                               rtol=1e-5 if dtype == np.float32 else 1e-13, atol=1e-5 if dtype == np.float32 else 1e-13)


def test_row_sums_of_strided_views_and_of_nan_and_inf():
    a = np.arange(100.0)
    assert _sums(a[::3], a[::3]) == (a[::3].sum(), a[::3] @ a[::3])
    assert _pair(a[::3], a[::3], a[::3]) == (a[::3] @ a[::3], (a[::3] ** 3).sum())
    for bad, expected in ((np.nan, np.isnan), (np.inf, np.isposinf)):
        b = np.ones(70)
        b[65] = bad   # in the leftover part, then in the vector part
        assert expected(_sums(b, b)[0])
        b[65], b[3] = 1.0, bad
        assert expected(_sums(b, b)[0])
    b = np.ones(70)
    b[3], b[40] = np.inf, -np.inf
    assert np.isnan(_sums(b, b)[0])


# ---- whole sequences, through numbarnn's loops -------------------------------

def run_loops(spec, params, x, initial_state, d_outputs, d_final_state):
    """The cell over a sequence through numbarnn's own compiled loops (a RecurrentModel).
    Returns (outputs (T, B, H), final states (S, B, H) = (h, c), grads) with ``"d" + name``
    for every parameter, ``dx`` and ``dstate`` (S, B, H)."""
    model = RecurrentModel(spec, x.shape[2], initial_state.shape[-1], dtype=x.dtype, params=params)
    outputs, (h, c) = model.forward(x, tuple(initial_state))
    grads = model.backward(d_outputs, tuple(d_final_state))
    grads["dstate"] = np.stack(grads["dstate"])
    return outputs, np.stack([h, c]), grads


def sequence_case(T, B, X, H, seed, with_state, with_d_final):
    rng = np.random.default_rng(seed)
    params = ref.random_params("layernorm_lstm", X, H, rng)
    x, d_outputs = rng.normal(size=(T, B, X)), rng.normal(size=(T, B, H))
    state = (rng.normal(size=(B, H)), rng.normal(size=(B, H))) if with_state else None
    d_final = (rng.normal(size=(B, H)), rng.normal(size=(B, H))) if with_d_final else None
    return params, x, state, d_outputs, d_final


@settings(max_examples=20, deadline=None)
@given(T=st.integers(1, 5), B=st.integers(1, 3), X=st.integers(1, 4), H=sizes, seed=seeds,
       with_state=st.booleans(), with_d_final=st.booleans())
# long enough for the whole-sequence products (input projection, dW_x, dx, dW_h) to take
# numbarnn's tiles where they are AVX-512
@example(T=30, B=8, X=64, H=80, seed=1, with_state=True, with_d_final=True)
def test_sequence_matches_the_torch_reference(T, B, X, H, seed, with_state, with_d_final):
    pytest.importorskip("torch")
    params, x, state, d_outputs, d_final = sequence_case(T, B, X, H, seed, with_state, with_d_final)
    zeros = np.zeros((2, B, H))
    outputs, final, grads = run_loops(SPEC, params, x, zeros if state is None else np.stack(state), d_outputs,
                                      zeros if d_final is None else np.stack(d_final))
    expected_outputs, (expected_h, expected_c) = ref.numpy_forward("layernorm_lstm", params, x, state)
    np.testing.assert_allclose(outputs, expected_outputs, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(final, np.stack([expected_h, expected_c]), rtol=1e-12, atol=1e-12)
    expected = ref.torch_gradients("layernorm_lstm", params, x, d_outputs, state, d_final)
    assert set(expected) <= set(grads)
    grads["dstate"] = tuple(grads["dstate"])   # the reference's form, (dh_0, dc_0)
    ref.assert_gradients_close(grads, expected, rtol=1e-9)


def test_sequence_in_float32_is_close_to_float64():
    params, x, state, d_outputs, d_final = sequence_case(6, 4, 3, 5, seed=7, with_state=True, with_d_final=True)
    runs = {}
    for dtype in (np.float64, np.float32):
        p = {name: a.astype(dtype) for name, a in params.items()}
        runs[dtype] = run_loops(SPEC, p, x.astype(dtype), np.stack(state).astype(dtype), d_outputs.astype(dtype),
                                np.stack(d_final).astype(dtype))
    (out64, _, g64), (out32, _, g32) = runs[np.float64], runs[np.float32]
    assert out32.dtype == np.float32 and all(g.dtype == np.float32 for g in g32.values())
    np.testing.assert_allclose(out32, out64, rtol=1e-5, atol=1e-5)
    ref.assert_gradients_close(g32, g64, rtol=1e-4)


# ---- the spec and the entry point ----------------------------------------------------------------

def test_spec_declares_the_issues_parameters():
    assert (SPEC.name, SPEC.gates, SPEC.states, SPEC.cache_width) == ("layernorm_lstm", 4, 2, 17)
    assert SPEC.recurrent_weights is True and SPEC.projection_biases is False and SPEC.shared_gate_grad is False
    assert SPEC.torch_module is None and SPEC.cuda_pointwise is None and SPEC.state_names == ("h", "c")
    assert SPEC.forward is layernorm_lstm_forward and SPEC.backward is layernorm_lstm_backward
    assert SPEC.own_param_names == OWN
    assert SPEC.param_shapes(input_size=3, hidden_size=5) == ref.param_shapes("layernorm_lstm", 3, 5)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_initialisation_is_the_issues(dtype):
    """W_x and W_h uniform in ±1/sqrt(H), drawn first from the generator as the reference draws
    them (so the same generator gives the same values); gammas 1, b_x and beta_c 0."""
    X, H = 3, 16
    params = SPEC.init_params(np.random.default_rng(0), X, H, dtype)
    expected = ref.init_params("layernorm_lstm", X, H, np.random.default_rng(0), dtype=dtype)
    ref.assert_params_identical(params, expected, dtype)


def test_the_cell_passes_numbarnns_registration_check():
    check_cell(SPEC)   # raises CellCheckError naming the problem otherwise


def test_entry_point_registers_this_spec():
    assert_registered_by_entry_point(SPEC, "numbarnn-layernorm-lstm", numbarnn_layernorm_lstm)
