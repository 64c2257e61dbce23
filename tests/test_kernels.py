"""Kernels and RecurrentModel against the naive NumPy references and finite differences."""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from numba import njit

import naive
from numbarnn.cells import LSTM, RNN
from numbarnn.kernels import loops, tiles
from numbarnn.models import RecurrentModel

NAIVE = {
    "rnn": (naive.rnn_forward, naive.rnn_backward),
    "lstm": (naive.lstm_forward, naive.lstm_backward),
}
CELLS = {"rnn": RNN, "lstm": LSTM}
TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=2e-4, atol=2e-5)}

shapes = st.fixed_dictionaries({
    "T": st.integers(1, 6), "B": st.integers(1, 4), "X": st.integers(1, 5), "H": st.integers(1, 6),
    "seed": st.integers(0, 2**16),
})


def make_case(name, T, B, X, H, seed, dtype=np.float64, index_input=False):
    rng = np.random.default_rng(seed)
    model = RecurrentModel(CELLS[name], X, H, dtype=dtype, seed=seed)
    # Biases drawn larger than the default init so the two biases are clearly distinct.
    for key in ("b_x", "b_h"):
        model.params[key][:] = rng.normal(size=model.params[key].shape)
    if index_input:
        x = rng.integers(-1, X, size=(T, B))
    else:
        x = rng.normal(size=(T, B, X)).astype(dtype)
    state = [rng.normal(size=(B, H)).astype(dtype) for _ in range(CELLS[name].states)]
    d_out = rng.normal(size=(T, B, H)).astype(dtype)
    d_final = [rng.normal(size=(B, H)).astype(dtype) for _ in range(CELLS[name].states)]
    return model, x, state, d_out, d_final


def packed(state):
    return state[0] if len(state) == 1 else tuple(state)


def naive_run(name, model, x, state, d_out, d_final):
    p = {k: v.astype(np.float64) for k, v in model.params.items()}
    if np.issubdtype(np.asarray(x).dtype, np.integer):
        x = naive.one_hot(x, model.input_size)
    x = np.asarray(x, np.float64)
    st64 = [s.astype(np.float64) for s in state]
    fwd, bwd = NAIVE[name]
    out = fwd(x, p["W_x"], p["W_h"], p["b_x"], p["b_h"], *st64)
    extra = {"d_hT": d_final[0].astype(np.float64)}
    if name == "lstm":
        extra["d_cT"] = d_final[1].astype(np.float64)
    grads = bwd(x, p["W_x"], p["W_h"], p["b_x"], p["b_h"], *st64, d_out.astype(np.float64), **extra)
    return out, grads


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("index_input", [False, True])
@settings(max_examples=15, deadline=None)
@given(shape=shapes)
def test_forward_and_backward_match_naive(name, dtype, index_input, shape):
    model, x, state, d_out, d_final = make_case(name, dtype=dtype, index_input=index_input, **shape)
    outputs, final = model.forward(x, packed(state))
    grads = model.backward(d_out, packed(d_final))
    (ref_out, *ref_final), ref = naive_run(name, model, x, state, d_out, d_final)
    tol = TOL[dtype]
    assert outputs.dtype == dtype
    np.testing.assert_allclose(outputs, ref_out, **tol)
    final = [final] if CELLS[name].states == 1 else list(final)
    for got, want in zip(final, ref_final):
        np.testing.assert_allclose(got, want, **tol)
    for key in ("W_x", "W_h", "b_x", "b_h"):
        assert grads["d" + key].dtype == dtype
        np.testing.assert_allclose(grads["d" + key], ref["d" + key], **tol, err_msg=key)
    dstate = [grads["dstate"]] if CELLS[name].states == 1 else list(grads["dstate"])
    np.testing.assert_allclose(dstate[0], ref["dh0"], **tol)
    if name == "lstm":
        np.testing.assert_allclose(dstate[1], ref["dc0"], **tol)
    if index_input:
        assert grads["dx"] is None
    else:
        np.testing.assert_allclose(grads["dx"], ref["dx"], **tol)


@pytest.mark.parametrize("name", sorted(CELLS))
@settings(max_examples=8, deadline=None)
@given(shape=st.fixed_dictionaries({"T": st.integers(1, 4), "B": st.integers(1, 3), "X": st.integers(1, 3),
                                    "H": st.integers(1, 3), "seed": st.integers(0, 2**16)}))
def test_gradients_match_finite_differences(name, shape):
    model, x, state, d_out, d_final = make_case(name, **shape)

    def loss():
        outputs, final = model.forward(x, packed(state))
        final = [final] if CELLS[name].states == 1 else list(final)
        return np.sum(outputs * d_out) + sum(np.sum(f * d) for f, d in zip(final, d_final))

    loss()
    grads = model.backward(d_out, packed(d_final))
    for key, value in model.params.items():
        np.testing.assert_allclose(grads["d" + key], naive.finite_difference_grad(loss, value),
                                   rtol=1e-6, atol=1e-8, err_msg=key)
    np.testing.assert_allclose(grads["dx"], naive.finite_difference_grad(loss, x), rtol=1e-6, atol=1e-8)
    dstate = [grads["dstate"]] if CELLS[name].states == 1 else list(grads["dstate"])
    for got, s in zip(dstate, state):
        np.testing.assert_allclose(got, naive.finite_difference_grad(loss, s), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_index_input_equals_one_hot_input(name):
    model, idx, state, d_out, d_final = make_case(name, 5, 3, 4, 3, seed=7, index_input=True)
    idx[0, 0] = -1  # the all-zero input
    out_i, fin_i = model.forward(idx, packed(state))
    g_i = model.backward(d_out)
    out_d, fin_d = model.forward(naive.one_hot(idx, 4), packed(state))
    g_d = model.backward(d_out)
    np.testing.assert_allclose(out_i, out_d, rtol=1e-13)
    for key in ("dW_x", "dW_h", "db_x", "db_h"):
        np.testing.assert_allclose(g_i[key], g_d[key], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_continuing_from_final_state_equals_one_long_run(name):
    model, x, state, _, _ = make_case(name, 9, 2, 3, 4, seed=3)
    whole, final_whole = model.forward(x, packed(state))
    first, mid = model.forward(x[:4], packed(state))
    second, final_split = model.forward(x[4:], mid)
    np.testing.assert_allclose(np.concatenate([first, second]), whole, rtol=1e-14)
    np.testing.assert_allclose(np.asarray(final_split), np.asarray(final_whole), rtol=1e-14)


def test_batch_first_is_the_transpose():
    model, x, state, d_out, _ = make_case("lstm", 5, 3, 2, 4, seed=1)
    out_t, _ = model.forward(x, packed(state))
    g_t = model.backward(d_out)
    model.batch_first = True
    out_b, _ = model.forward(np.swapaxes(x, 0, 1), packed(state))
    g_b = model.backward(np.swapaxes(d_out, 0, 1))
    np.testing.assert_array_equal(out_b, np.swapaxes(out_t, 0, 1))
    np.testing.assert_array_equal(g_b["dx"], np.swapaxes(g_t["dx"], 0, 1))
    np.testing.assert_array_equal(g_b["dW_h"], g_t["dW_h"])


def test_zero_initial_state_by_default():
    model, x, state, _, _ = make_case("lstm", 3, 2, 2, 3, seed=2)
    a, _ = model.forward(x)
    b, _ = model.forward(x, model.zero_state(2))
    np.testing.assert_array_equal(a, b)


def test_kernels_callable_from_user_njit_code():
    sequence_forward = loops.loops_for(LSTM).sequence_forward

    @njit
    def user_code_running_the_lstm(xz, W_h, b_h, states, cache, hz):
        # numba-stats style: the kernels are usable from a user's own @njit code.
        sequence_forward(xz, W_h, b_h, (), states, cache, hz)  # (): the LSTM has no parameters of its own
        return states[0, -1].sum()

    model, x, state, _, _ = make_case("lstm", 4, 2, 3, 5, seed=4)
    outputs, (h, c) = model.forward(x, packed(state))
    p = model.params
    xz = (x @ p["W_x"].T + p["b_x"]).astype(np.float64)
    states = np.empty((2, 5, 2, 5))
    states[0, 0], states[1, 0] = state
    total = user_code_running_the_lstm(xz, p["W_h"], p["b_h"], states, np.empty((4, 2, 25)), np.empty((2, 20)))
    assert total == pytest.approx(h.sum(), rel=1e-12)


def test_float32_kernels_keep_float32():
    model, x, state, d_out, _ = make_case("lstm", 3, 2, 2, 3, seed=5, dtype=np.float32)
    out, (h, c) = model.forward(x)
    assert out.dtype == h.dtype == c.dtype == np.float32
    assert all(g.dtype == np.float32 for k, g in model.backward(d_out).items() if k != "dstate")


# ---- bad input ----------------------------------------------------------------------------------

@pytest.fixture
def lstm():
    return RecurrentModel(LSTM, 3, 4, seed=0)


@pytest.mark.parametrize("x, message", [
    (np.zeros((5, 2, 4)), r"float inputs must have shape \(T, B, 3\), got \(5, 2, 4\)"),
    (np.zeros((5, 3)), r"float inputs must have shape"),
    (np.array([[0, 3]]), r"input index 3 is outside the vocabulary \[0, 3\)"),
    (np.array([[0, -2]]), r"input index -2 is outside the vocabulary"),
    (np.zeros((5,), dtype=int), r"integer inputs must have shape \(T, B\), got \(5,\)"),
    (np.array([["a"]]), r"inputs must be floats"),
    (np.zeros((0, 2, 3)), r"need at least one step and one sequence"),
])
def test_bad_inputs_raise_before_the_kernels(lstm, x, message):
    with pytest.raises(ValueError, match=message):
        lstm.forward(x)


def test_bad_states_and_parameters(lstm):
    x = np.zeros((2, 5, 3))
    with pytest.raises(ValueError, match=r"tuple of 2 arrays \('h', 'c'\)"):
        lstm.forward(x, np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"initial state 'c' has shape \(5, 3\), expected \(5, 4\)"):
        lstm.forward(x, (np.zeros((5, 4)), np.zeros((5, 3))))
    with pytest.raises(ValueError, match=r"parameter 'W_h' has shape \(16, 3\), expected \(16, 4\)"):
        RecurrentModel(LSTM, 3, 4, params={**lstm.params, "W_h": np.zeros((16, 3))})
    with pytest.raises(ValueError, match=r"missing parameter 'b_h'"):
        RecurrentModel(LSTM, 3, 4, params={k: v for k, v in lstm.params.items() if k != "b_h"})
    with pytest.raises(ValueError, match=r"dtype must be 'float32' or 'float64', got 'float16'"):
        RecurrentModel(LSTM, 3, 4, dtype="float16")
    with pytest.raises(ValueError, match=r"hidden_size must be a positive integer, got 0"):
        RecurrentModel(LSTM, 3, 0)


def test_backward_needs_forward_and_matching_gradients(lstm):
    with pytest.raises(RuntimeError, match="needs a forward"):
        lstm.backward()
    lstm.forward(np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match=r"d_outputs has shape \(5, 2, 4\), expected \(2, 5, 4\)"):
        lstm.backward(np.zeros((5, 2, 4)))


@pytest.mark.parametrize("N", [1, 4, 5, 30])  # 8N < V = 40 reads W_x's columns in place; larger N transposes first
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_project_indices_both_ways_equal_the_one_hot_product(N, dtype):
    rng = np.random.default_rng(N)
    GH, V = 12, 40
    W_x, b_x = rng.normal(size=(GH, V)).astype(dtype), rng.normal(size=GH).astype(dtype)
    idx = rng.integers(-1, V, size=N)
    idx[0] = -1  # the all-zero input
    xz = np.empty((N, GH), dtype)
    loops.project_indices(idx, W_x, b_x, xz)
    one_hot = np.zeros((N, V), dtype)
    one_hot[np.arange(N)[idx >= 0], idx[idx >= 0]] = 1
    np.testing.assert_array_equal(xz, (one_hot @ W_x.T) + b_x)  # exact: one term per output


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=30, deadline=None)
@given(N=st.integers(1, 60), GH=st.integers(1, 40), V=st.integers(1, 9), seed=st.integers(0, 2**32 - 1))
def test_the_input_gradients_bias_sum_is_column_sums_bit_for_bit(dtype, N, GH, V, seed):
    """db_x is summed in the scatter's pass, row by row as column_sums adds them: the same bits
    (and dW_x the one-hot product; -1 inputs add to db_x but to no column)."""
    rng = np.random.default_rng(seed)
    dxz, idx = rng.normal(size=(N, GH)).astype(dtype), rng.integers(-1, V, size=N)
    dW_x, db_x, expected = np.empty((GH, V), dtype), np.empty(GH, dtype), np.empty(GH, dtype)
    loops.input_weight_gradients_indices(dxz, idx, dW_x, db_x)
    loops.column_sums(dxz, expected)
    np.testing.assert_array_equal(db_x, expected)
    one_hot = np.zeros((N, V))
    one_hot[np.arange(N)[idx >= 0], idx[idx >= 0]] = 1
    # a sum of N terms in order: within (N - 1) eps of the sum of their magnitudes
    bound = (N - 1) * np.finfo(dtype).eps * (np.abs(dxz.T.astype(np.float64)) @ one_hot)
    assert (np.abs(dW_x - dxz.T.astype(np.float64) @ one_hot) <= bound).all()


def test_weight_gradients_without_bias_leave_the_bias_as_it_is():
    """``with_bias=False`` (a cell without projection biases): the same weight gradients, and
    the bias's array untouched (NaN stays NaN)."""
    rng = np.random.default_rng(0)
    N, GH, H, V = 7, 8, 2, 5
    dz, h, x, idx = rng.normal(size=(N, GH)), rng.normal(size=(N, H)), rng.normal(size=(N, V)), rng.integers(-1, V, N)
    W_x = rng.normal(size=(GH, V))
    calls = {
        "recurrent": lambda db, bias: loops.recurrent_weight_gradients(dz, h, out["recurrent"], db, bias),
        "dense": lambda db, bias: loops.input_weight_gradients_dense(dz, x, W_x, out["dense"], db, dx, bias),
        "indices": lambda db, bias: loops.input_weight_gradients_indices(dz, idx, out["indices"], db, bias),
    }
    dx = np.empty((N, V))
    for name, call in calls.items():
        out = {"recurrent": np.empty((GH, H)), "dense": np.empty((GH, V)), "indices": np.empty((GH, V))}
        db = np.empty(GH)
        call(db, True)
        with_bias = out[name].copy()
        np.testing.assert_allclose(db, dz.sum(axis=0), rtol=1e-12)
        db[:] = np.nan
        call(db, False)
        np.testing.assert_array_equal(out[name], with_bias)
        assert np.isnan(db).all(), name


def test_the_loops_skip_the_bias_work_of_a_cell_without_biases_and_share_a_shared_one():
    """A cell without projection biases (GAINED_RNN): its loops neither add b_h (NaN here) nor
    write db_x or db_h. The LSTM, whose dxz is its dhz: db_h is db_x, both the steps' sum."""
    from own_param_cells import GAINED_RNN
    rng = np.random.default_rng(1)
    T, B, H, V = 4, 3, 5, 6
    idx = rng.integers(-1, V, size=T * B)
    for cell, biased in ((GAINED_RNN, False), (LSTM, True)):
        G, C = cell.gates, cell.cache_width
        run = loops.loops_for(cell)
        W_x, W_h = rng.normal(size=(G * H, V)), rng.normal(size=(G * H, H))
        b_x, b_h = (rng.normal(size=G * H), rng.normal(size=G * H)) if biased else (np.zeros(G * H), np.full(G * H, np.nan))
        own = tuple(rng.uniform(0.5, 1.5, size=H) for _ in cell.params)
        states, cache = np.zeros((cell.states, T + 1, B, H)), np.empty((T, B, C * H))
        run.forward_indices(idx, W_x, b_x, W_h, b_h, own, np.empty((T, B, G * H)), states, cache, np.empty((B, G * H)))
        assert np.isfinite(states).all()
        dxz = np.empty((T, B, G * H))
        dhz = dxz if cell.shared_gate_grad else np.empty((T, B, G * H))
        db_x, db_h = np.full(G * H, np.nan), np.full(G * H, np.nan)
        d_own = tuple(np.empty(H) for _ in cell.params)
        run.backward_indices(idx, W_h, own, states, cache, rng.normal(size=(T, B, H)), np.zeros((cell.states, B, H)),
                             np.empty((cell.states, B, H)), dxz, dhz, np.empty((B, H)), np.empty((G * H, V)),
                             np.empty((G * H, H)), db_x, db_h, d_own)
        if biased:
            np.testing.assert_array_equal(db_h, db_x)
            np.testing.assert_allclose(db_x, dxz.sum(axis=(0, 1)), rtol=1e-12)
        else:
            assert np.isnan(db_x).all() and np.isnan(db_h).all()


def test_kernel_modules_take_their_njit_options_from_one_decorator():
    # numbarnn/kernels/_jit.py sets cache=True and refuses fastmath in one place. cell_loops.py
    # keeps its own: it is a template whose "@njit(cache=True)" loops_for rewrites.
    folder = Path(loops.__file__).parent
    for path in sorted(folder.glob("*.py")):
        if path.name in ("_jit.py", "cell_loops.py"):
            continue
        own = [line.strip() for line in path.read_text().splitlines() if line.lstrip().startswith("@njit")]
        assert not own, f"{path.name} decorates with njit directly: {own}"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=30, deadline=None)
@given(B=st.integers(1, 80), H=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_recurrent_products_match_numpy_on_every_path(dtype, B, H, seed):
    """The per-step products in either dtype, ``h @ W_h.T`` and ``dhz @ W_h`` as NumPy computes
    them in float64, by the path the rows choose (the tiled product up to 16 or 32 rows, twice
    that with AVX-512) and by BLAS (an empty ``tiled_M``: one gemm, or one gemv per row for 2 to
    GEMV_MAX_ROWS rows)."""
    rng = np.random.default_rng(seed)
    W_h, h, dhz = rng.normal(size=(4 * H, H)), rng.normal(size=(B, H)), rng.normal(size=(B, 4 * H))
    W = W_h.astype(dtype)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)
    rows = loops.TILED_MAX_ROW_BYTES // np.dtype(dtype).itemsize
    assert (loops.tiled_operand(W, B).size > 0) == (2 <= B <= rows)  # W fits: 51 kB at most
    for forward_M, backward_M in [(loops.tiled_operand(W.T, B), loops.tiled_operand(W, B)),
                                  (np.empty((0, 0, 0), dtype), np.empty((0, 0, 0), dtype))]:
        hz, dh = np.full((B, 4 * H), np.nan, dtype), np.full((B, H), np.nan, dtype)
        loops.recurrent_product(h.astype(dtype), W.T, hz, forward_M)
        loops.recurrent_product(dhz.astype(dtype), W, dh, backward_M)
        np.testing.assert_allclose(hz, h @ W_h.T, **tol)
        np.testing.assert_allclose(dh, dhz @ W_h, **tol)


def test_the_tiled_product_is_taken_only_where_it_was_measured_ahead():
    f32, f64 = np.zeros((128, 512), np.float32), np.zeros((128, 512), np.float64)  # 256 and 512 KiB
    # packed in strips of w32 float32 or w64 float64 columns: 16 and 8 on AVX2, 32 and 16 with AVX-512
    w32, w64 = tiles.panel_width(4), tiles.panel_width(8)
    assert (w32, w64) == ((16, 8) if tiles.VECTOR_BYTES == 32 else (32, 16))
    # up to 32 float32 or 16 float64 rows; with AVX-512, 64 and 32
    rows32, rows64 = (32, 16) if tiles.VECTOR_BYTES == 32 else (64, 32)
    assert loops.TILED_MAX_ROW_BYTES == 4 * rows32
    assert [loops.tiled_operand(f32, B).shape for B in (1, 2, rows32, rows32 + 1)] == [
        (0, 0, 0), (512 // w32, 128, w32), (512 // w32, 128, w32), (0, 0, 0)]
    assert loops.tiled_operand(f64, 8).shape == (512 // w64, 128, w64)
    assert loops.tiled_operand(f64[:64], rows64).shape == (512 // w64, 64, w64)
    assert loops.tiled_operand(f64[:64], rows64 + 1).size == 0
    at_the_limit = np.zeros((512, 2048), np.float32)  # 4 MiB: an LSTM's W_h at H512
    assert loops.tiled_operand(at_the_limit, 16).shape == (2048 // w32, 512, w32)
    assert loops.tiled_operand(np.zeros((512, 2049), np.float32), 16).size == 0  # beyond TILED_MAX_BYTES
    transposed = loops.tiled_operand(f32.T, 4)  # forward: W_h.T, packed once
    assert transposed.flags.c_contiguous and transposed.shape == (128 // w32, 512, w32)


@njit
def _pack_in_compiled_code(M):  # compiled once per array type, not once per example
    return tiles.pack_panels(M)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=40, deadline=None)
@given(K=st.integers(1, 20), N=st.integers(1, 40), layout=st.sampled_from(["C", "transposed", "strided", "reversed"]),
       seed=st.integers(0, 2**32 - 1))
def test_panels_hold_each_column_strip_of_M_in_order_and_zeros_beyond_it(dtype, K, N, layout, seed):
    """``pack_panels(M)[s, k, c] == M[k, s * width + c]`` for any layout of M (the forward packs
    the view ``W_h.T``; the packing reads along whichever axis is contiguous), zero past
    column N; from Python and from compiled code alike."""
    rng = np.random.default_rng(seed)
    def normal(*shape):
        return rng.normal(size=shape).astype(dtype)
    M = {"C": lambda: normal(K, N), "transposed": lambda: normal(N, K).T,
         "strided": lambda: normal(2 * K, 3 * N)[::2, ::3], "reversed": lambda: normal(N, K).T[::-1, ::-1]}[layout]()
    width = tiles.panel_width(M.itemsize)
    assert width == 2 * tiles.VECTOR_BYTES // M.itemsize  # two vector registers
    for panels in (tiles.pack_panels(M), _pack_in_compiled_code(M)):
        S = -(-N // width)
        assert panels.shape == (S, K, width) and panels.flags.c_contiguous
        expected = np.zeros((K, S * width), dtype)
        expected[:, :N] = M
        np.testing.assert_array_equal(panels, expected.reshape(K, S, width).transpose(1, 0, 2))


@njit
def _tiled(a, M, out):
    tiles.tiled_product(a, tiles.pack_panels(M), out)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=60, deadline=None)
@given(B=st.integers(1, 40), K=st.integers(1, 300), N=st.integers(1, 70), seed=st.integers(0, 2**32 - 1))
def test_the_tiled_product_matches_numpy_and_each_row_is_independent_of_the_others(dtype, B, K, N, seed):
    """Every row count (6- or 8-row tiles and the rows left over), column count (whole strips
    and one vector at a time for the rest) and depth (k in blocks of BLOCK_BYTES): ``a @ M`` as NumPy
    computes it in float64. And a row's bits do not depend on which rows share its tile: the
    product of any slice of the rows is those rows of the whole product, exactly (what lets a
    batch run as halves and still take the same per-step products)."""
    rng = np.random.default_rng(seed)
    a, M = rng.normal(size=(B, K)), rng.normal(size=(K, N))
    out = np.full((B, N), np.nan, dtype)
    _tiled(a.astype(dtype), M.astype(dtype), out)
    tol = dict(rtol=1e-12, atol=1e-12 * K) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-5 * K)
    np.testing.assert_allclose(out, a @ M, **tol)
    lo = int(rng.integers(0, B))
    hi = int(rng.integers(lo + 1, B + 1))
    part = np.full((hi - lo, N), np.nan, dtype)
    _tiled(np.ascontiguousarray(a[lo:hi].astype(dtype)), M.astype(dtype), part)
    np.testing.assert_array_equal(part, out[lo:hi])


@njit
def _tiled_transposed(a_T, M, out):  # a = a_T.T, an F-contiguous view: a weight gradient's dZ.T
    tiles.tiled_product(a_T.T, tiles.pack_panels(M), out)


@njit
def _in_place(a, M, out):
    tiles.tiled_product_in_place(a, M, out)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 40), K=st.integers(1, 200), strips=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_a_transposed_a_and_m_read_in_place_give_the_packed_products_bits(dtype, B, K, strips, seed):
    """``a`` given as the transposed view of a C-contiguous (K, B) array (how the weight
    gradients ``dZ.T @ X`` pass it) and ``M`` read where it lies (its columns whole strips)
    take the same sums in the same order as ``a`` C-contiguous and ``M`` packed: the same bits,
    and NumPy's product."""
    rng = np.random.default_rng(seed)
    N = strips * tiles.panel_width(np.dtype(dtype).itemsize)
    a, M = rng.normal(size=(B, K)).astype(dtype), rng.normal(size=(K, N)).astype(dtype)
    packed, transposed, in_place, both = (np.full((B, N), np.nan, dtype) for _ in range(4))
    _tiled(a, M, packed)
    _tiled_transposed(np.ascontiguousarray(a.T), M, transposed)
    _in_place(a, M, in_place)
    _in_place(np.ascontiguousarray(a.T).T, M, both)
    tol = dict(rtol=1e-12, atol=1e-12 * K) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-5 * K)
    np.testing.assert_allclose(packed, a.astype(np.float64) @ M, **tol)
    for out in (transposed, in_place, both):
        np.testing.assert_array_equal(out, packed)


def test_m_read_in_place_must_be_whole_strips():
    a = np.ones((3, 4))
    width = tiles.panel_width(8)
    with pytest.raises(ValueError, match="multiple of the panel width"):
        _in_place(a, np.ones((4, width + 1)), np.empty((3, width + 1)))
    with pytest.raises(ValueError, match="do not fit"):
        _in_place(a, np.ones((5, width)), np.empty((3, width)))


def test_whole_sequence_products_take_the_tiles_only_where_they_were_measured_ahead():
    """With AVX-512 tiles: at least 64 rows of out, 16 deep, 4 columns and 2**20 multiply-adds, and a transposed
    ``a`` stepping less than 4 KiB; ``M`` in place for at most 128 rows when its columns are
    whole strips. Never with AVX2 tiles (there they were no faster than OpenBLAS's own)."""
    takes = loops.takes_tiled_whole_product
    z = np.zeros
    path = loops.whole_product_path

    def weight_gradient(R, K, C, dtype=np.float32):  # dW = dZ.T @ X
        return path(z((K, R), dtype).T, z((K, C), dtype), z((R, C), dtype))

    def projection(N, K, C, dtype=np.float32):  # out = X @ W.T
        return path(z((N, K), dtype), z((C, K), dtype).T, z((N, C), dtype))
    if tiles.VECTOR_BYTES == 64:
        assert takes(64, 16, 1024) and takes(800, 128, 65) and takes(512, 800, 128) and takes(4096, 64, 4)
        assert not takes(63, 128, 65) and not takes(800, 15, 512) and not takes(512, 800, 3)
        assert not takes(64, 200, 64) and not takes(64, 16, 1023)  # under 2**20 multiply-adds
        assert projection(800, 128, 65) == loops.TILES  # the head's logits: W_y.T packed
        assert weight_gradient(65, 800, 128) == loops.TILES_IN_PLACE  # the head's dW_y
        assert weight_gradient(65, 800, 100) == loops.TILES  # columns not whole strips: packed
        assert weight_gradient(512, 800, 128) == loops.TILES  # an LSTM's dW_h at H128 float32
        assert weight_gradient(1023, 800, 128) == loops.TILES
        assert weight_gradient(1024, 800, 256) == loops.BLAS  # a step of 4 KiB
        assert weight_gradient(512, 800, 128, np.float64) == loops.BLAS
        assert weight_gradient(65, 800, 128, np.float64) == loops.TILES_IN_PLACE
        assert path(z((800, 128))[:, ::2], z((64, 65)), z((800, 65))) == loops.BLAS  # a strided a
    else:
        assert not takes(800, 128, 65) and not takes(512, 800, 128)
        assert projection(800, 128, 65) == weight_gradient(65, 800, 128) == loops.BLAS


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("R,K,C", [(800, 128, 65), (65, 800, 128), (512, 200, 64), (200, 70, 20), (70, 100, 3),
                                   (10, 300, 40), (300, 8, 40), (1100, 30, 16)])
def test_whole_products_match_numpy_on_every_path(dtype, R, K, C):
    """``whole_product`` over shapes on either side of its limits (tiles packed, tiles reading
    M in place, BLAS) and the layouts the loops pass: ``a`` C-contiguous or a transposed
    view, ``M`` C-contiguous or a transposed view (``W_x.T``)."""
    rng = np.random.default_rng(R + K + C)
    a, M = rng.normal(size=(R, K)), rng.normal(size=(K, C))
    expected = a @ M
    tol = dict(rtol=1e-12, atol=1e-12 * K) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-5 * K)
    for a_ in (a.astype(dtype), np.ascontiguousarray(a.T.astype(dtype)).T):
        for M_ in (M.astype(dtype), np.ascontiguousarray(M.T.astype(dtype)).T):
            out = np.full((R, C), np.nan, dtype)
            loops.whole_product(a_, M_, out)
            np.testing.assert_allclose(out, expected, **tol)


_OTHER_WIDTH_SCRIPT = """
import sys, numpy as np
from numba import njit
from numbarnn.kernels import tiles
assert (tiles.VECTOR_BYTES, tiles.MAX_TILE_ROWS) == (32, 6), (tiles.VECTOR_BYTES, tiles.MAX_TILE_ROWS)
product = njit(lambda a, M, out: tiles.tiled_product(a, tiles.pack_panels(M), out))
data = np.load(sys.argv[1])
results = {}
for name in data.files:
    if name.startswith("a"):
        a, M = data[name], data["M" + name[1:]]
        out = np.full((a.shape[0], M.shape[1]), np.nan, a.dtype)
        product(a, M, out)
        results["out" + name[1:]] = out
np.savez(sys.argv[2], **results)
"""


def test_the_tiles_on_a_cpu_without_avx512_give_the_same_bits(tmp_path):
    """Without AVX-512 the tiles are AVX2-wide (32 bytes, 6 rows): a fresh process told by
    ``NUMBA_CPU_FEATURES`` that the CPU has none (with a cache of its own: Numba keys its cache
    by those features) computes the same products to the bit, in every column (one sum over k
    in ascending order, one FMA a term, whatever the vector width, in whole strips and in the
    columns left over alike), and NumPy's product."""
    import os
    import subprocess
    import sys

    from numba.core.codegen import get_host_cpu_features

    features = ",".join("-" + f[1:] if f.startswith(("+avx512", "+evex512")) else f
                        for f in get_host_cpu_features().split(","))
    assert tiles.compiled_vector_bytes(features) == 32
    rng = np.random.default_rng(5)
    arrays, cases = {}, []
    shapes = [(np.float32, 16, 128, 512), (np.float32, 13, 70, 96), (np.float32, 8, 300, 40),
              (np.float64, 16, 128, 64), (np.float64, 7, 33, 48), (np.float64, 3, 5, 19)]
    for n, (dtype, B, K, N) in enumerate(shapes):
        arrays[f"a{n}"] = rng.normal(size=(B, K)).astype(dtype)
        arrays[f"M{n}"] = rng.normal(size=(K, N)).astype(dtype)
        cases.append((n, dtype, N))
    np.savez(tmp_path / "in.npz", **arrays)
    env = dict(os.environ, NUMBA_CPU_FEATURES=features, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    subprocess.run([sys.executable, "-c", _OTHER_WIDTH_SCRIPT, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                   env=env, check=True, timeout=600)
    other = np.load(tmp_path / "out.npz")
    for n, dtype, N in cases:
        a, M = arrays[f"a{n}"], arrays[f"M{n}"]
        here = np.full((a.shape[0], N), np.nan, dtype)
        _tiled(a, M, here)
        K = a.shape[1]
        tol = dict(rtol=1e-12, atol=1e-12 * K) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-5 * K)
        np.testing.assert_allclose(other[f"out{n}"], a.astype(np.float64) @ M, **tol)
        np.testing.assert_array_equal(other[f"out{n}"], here)  # every column, the ones left over too


def test_the_tiled_product_of_strided_views_falls_back_to_a_plain_loop():
    rng = np.random.default_rng(0)
    a, M = rng.normal(size=(5, 12)), rng.normal(size=(6, 19))
    out = np.full((5, 38), np.nan)
    _tiled(a[:, ::2], M, out[:, ::2])  # neither a nor out is C-contiguous: the plain loop takes them
    np.testing.assert_allclose(out[:, ::2], a[:, ::2] @ M, rtol=1e-12)
    assert np.isnan(out[:, 1::2]).all()


@pytest.mark.parametrize("strided", [False, True])
def test_the_tiled_product_refuses_shapes_that_do_not_fit(strided):
    """The kernel reads without bounds checks, so a mismatch raises before it reads."""
    rng = np.random.default_rng(2)
    a, M = rng.normal(size=(4, 6)), rng.normal(size=(6, 19))
    panels = tiles.pack_panels(M)
    wrong = {"depth": (a, tiles.pack_panels(M[:5]), np.empty((4, 19))),
             "columns": (a, panels, np.empty((4, 40))),  # 19 columns packed: strips of 8 or 16 float64 cannot hold 40
             "rows": (a, panels, np.empty((3, 19))),
             "width": (a, panels.astype(np.float32), np.empty((4, 19), np.float32))}
    for name, (a_, panels_, out) in wrong.items():
        if name == "width":  # float32 panels of a float64 M: strips half as wide as float32 ones
            a_, panels_ = a_.astype(np.float32), np.ascontiguousarray(panels_)
        if strided:
            a_, out = np.repeat(a_, 2, axis=1)[:, ::2], np.repeat(out, 2, axis=1)[:, ::2]
        with pytest.raises(ValueError, match="do not fit"):
            _product(a_, panels_, out)


@njit
def _product(a, panels, out):
    tiles.tiled_product(a, panels, out)


def test_the_tiled_product_from_python_is_numpys():
    rng = np.random.default_rng(1)
    a, M = rng.normal(size=(3, 5)), rng.normal(size=(5, 19))
    out = np.empty((3, 19))
    tiles.tiled_product(a, tiles.pack_panels(M), out)
    np.testing.assert_allclose(out, a @ M, rtol=1e-12)
