"""Every CUDA kernel against its CPU twin (numbarnn.kernels), tiny shapes, several blocks."""
import numpy as np
import pytest
from numba import cuda

import numbarnn
from numbarnn.cuda import UnsupportedOnCuda, arrays as darrays, cells as dcells, config, loops as dloops
from numbarnn.cuda import steps as dsteps
from numbarnn.cuda import losses as dlosses, matmul, optim as doptim, sampling as dsampling
from numbarnn.kernels import loops, losses, optim
from numbarnn.samplers import CategoricalSampler, GreedySampler, TemperatureSampler, TopKSampler, TopPSampler

CUDA_CELLS = [numbarnn.get_cell(n) for n in numbarnn.list_cells() if numbarnn.get_cell(n).cuda_pointwise]
TOL = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-6)}


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def close(actual, expected, dtype):
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64), **TOL[dtype])


def test_every_builtin_and_plugin_cell_has_a_cuda_pair():
    assert {c.name for c in CUDA_CELLS} >= {"rnn", "lstm", "gru"}


# ---- the matrix product ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (False, True), (True, False), (True, True)])
def test_gemm_matches_numpy(dtype, trans_a, trans_b):
    rng = np.random.default_rng(0)
    M, N, K = 5, 7, 9  # none a multiple of the (4, 4, 2) tile: partial tiles on every edge
    A = rng.normal(size=(K, M) if trans_a else (M, K)).astype(dtype)
    B = rng.normal(size=(N, K) if trans_b else (K, N)).astype(dtype)
    bias = rng.normal(size=N).astype(dtype)
    C = cuda.device_array((M, N), dtype)
    matmul.gemm(dev(A), dev(B), C, bias=dev(bias), trans_a=trans_a, trans_b=trans_b)
    expected = (A.T if trans_a else A).astype(np.float64) @ (B.T if trans_b else B) + bias
    close(C.copy_to_host(), expected, dtype)
    matmul.gemm(dev(A), dev(B), C, trans_a=trans_a, trans_b=trans_b)
    close(C.copy_to_host(), expected - bias, dtype)


def test_gemm_register_tiles_of_several_rows_and_columns():
    rng = np.random.default_rng(1)
    A, B = rng.normal(size=(6, 5)), rng.normal(size=(5, 10))
    C = cuda.device_array((6, 10))
    matmul.gemm(dev(A), dev(B), C, tile=(4, 8, 3, 2, 4))
    close(C.copy_to_host(), A @ B, np.float64)


def test_gemm_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes do not agree"):
        matmul.gemm(dev(np.ones((2, 3))), dev(np.ones((4, 2))), cuda.device_array((2, 2)))


# ---- projections and weight gradients ----------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_projections_and_weight_gradients(dtype):
    rng = np.random.default_rng(2)
    N, X, GH, H, V = 7, 3, 6, 5, 4
    x2d = rng.normal(size=(N, X)).astype(dtype)
    W_x, b_x = rng.normal(size=(GH, X)).astype(dtype), rng.normal(size=GH).astype(dtype)
    out = np.empty((N, GH), dtype)
    loops.project_dense(x2d, W_x, b_x, out)
    d_out = cuda.device_array((N, GH), dtype)
    dloops.project_dense(dev(x2d), dev(W_x), dev(b_x), d_out)
    close(d_out.copy_to_host(), out, dtype)

    idx = np.array([2, -1, 0, 3, 2, 2, -1], np.int64)
    W_v = rng.normal(size=(GH, V)).astype(dtype)
    loops.project_indices(idx, W_v, b_x, out)
    dloops.project_indices(dev(idx), dev(W_v), dev(b_x), d_out)
    np.testing.assert_array_equal(d_out.copy_to_host(), out)  # a gather and one add: exact

    dxz = rng.normal(size=(N, GH)).astype(dtype)
    h_prev = rng.normal(size=(N, H)).astype(dtype)
    dW_h, db_h = np.empty((GH, H), dtype), np.empty(GH, dtype)
    loops.recurrent_weight_gradients(dxz, h_prev, dW_h, db_h)
    d_dW_h, d_db_h = cuda.device_array((GH, H), dtype), cuda.device_array(GH, dtype)
    dloops.recurrent_weight_gradients(dev(dxz), dev(h_prev), d_dW_h, d_db_h)
    close(d_dW_h.copy_to_host(), dW_h, dtype)
    close(d_db_h.copy_to_host(), db_h, dtype)

    dW_x, db_x, dx = np.empty((GH, X), dtype), np.empty(GH, dtype), np.empty((N, X), dtype)
    loops.input_weight_gradients_dense(dxz, x2d, W_x, dW_x, db_x, dx)
    d_dW_x, d_db_x, d_dx = cuda.device_array((GH, X), dtype), cuda.device_array(GH, dtype), cuda.device_array((N, X), dtype)
    dloops.input_weight_gradients_dense(dev(dxz), dev(x2d), dev(W_x), d_dW_x, d_db_x, d_dx)
    for a, e in ((d_dW_x, dW_x), (d_db_x, db_x), (d_dx, dx)):
        close(a.copy_to_host(), e, dtype)

    dW_v = np.empty((GH, V), dtype)
    loops.input_weight_gradients_indices(dxz, idx, dW_v, db_x)
    order, starts = dloops.index_segments(idx, V)
    d_dW_v = cuda.device_array((GH, V), dtype)
    dloops.input_weight_gradients_indices(dev(dxz), dev(order), dev(starts), d_dW_v, d_db_x)
    # Same additions in the same (time) order as the CPU scatter: exact.
    np.testing.assert_array_equal(d_dW_v.copy_to_host(), dW_v)
    close(d_db_x.copy_to_host(), db_x, dtype)


def test_index_segments_group_rows_by_index_in_time_order():
    order, starts = dloops.index_segments(np.array([1, -1, 0, 1, 0]), 3)
    assert order.tolist()[starts[0]:starts[1]] == [2, 4]
    assert order.tolist()[starts[1]:starts[2]] == [0, 3]
    assert starts[2] == starts[3] == 5


# ---- the cells' pointwise kernels --------------------------------------------------------

def _random_step(cell, rng, dtype, B=3, H=5, t=1, T=3):
    G, S, C = cell.gates, cell.states, max(cell.cache_width, 1)
    arrays = dict(
        xz=rng.normal(size=(B, G * H)), hz=rng.normal(size=(B, G * H)),
        states=rng.normal(size=(S, T + 1, B, H)), cache=np.zeros((B, C * H)),
        dstate=rng.normal(size=(S, B, H)))
    return {k: v.astype(dtype) for k, v in arrays.items()}


@pytest.mark.parametrize("cell", CUDA_CELLS, ids=lambda c: c.name)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_pointwise_kernels_match_cpu(cell, dtype):
    rng = np.random.default_rng(3)
    a = _random_step(cell, rng, dtype)
    t, B, H = 1, 3, 5
    kernels = dcells.pointwise_kernels(cell, dtype)
    assert dcells.pointwise_kernels(cell, dtype) is kernels  # built once per cell and dtype

    cpu_states, cpu_cache = a["states"].copy(), a["cache"].copy()
    cell.forward(a["xz"], a["hz"], cpu_states, t, cpu_cache[:, :cell.cache_width * H])
    d_states, d_cache = dev(a["states"]), dev(a["cache"])
    kernels.forward(dev(a["xz"]), dev(a["hz"]), d_states, t, d_cache)
    close(d_states.copy_to_host(), cpu_states, dtype)
    close(d_cache.copy_to_host()[:, :cell.cache_width * H], cpu_cache[:, :cell.cache_width * H], dtype)

    GH = cell.gates * H
    dxz, dhz, dprev = np.empty((B, GH), dtype), np.empty((B, GH), dtype), np.empty((cell.states, B, H), dtype)
    cell.backward(a["dstate"], cpu_states, t, cpu_cache[:, :cell.cache_width * H], dxz, dhz, dprev)
    d_dxz, d_dhz, d_dprev = (cuda.device_array(x.shape, dtype) for x in (dxz, dhz, dprev))
    kernels.backward(dev(a["dstate"]), d_states, t, d_cache, d_dxz, d_dhz, d_dprev)
    for actual, expected in ((d_dxz, dxz), (d_dhz, dhz), (d_dprev, dprev)):
        close(actual.copy_to_host(), expected, dtype)


def test_a_cell_without_cuda_kernels_is_a_clear_error():
    cell = numbarnn.cells.CellSpec(name="cpu_only", description="", gates=1, states=1, cache_width=0,
                                   forward=numbarnn.RNN.forward, backward=numbarnn.RNN.backward)
    with pytest.raises(UnsupportedOnCuda, match="cell 'cpu_only' has no CUDA kernels"):
        dcells.pointwise_kernels(cell, np.float64)
    for path, message in (("no_colon", "must be 'package.module:NAME'"),
                          ("numbarnn_no_such_module:X", "cannot import"),
                          ("numbarnn.cuda.cells:NOPE", "has no 'NOPE'"),
                          ("numbarnn.cuda.cells:config", "must be a CudaPointwise")):
        bad = numbarnn.cells.CellSpec(name="bad", description="", gates=1, states=1, cache_width=0,
                                      forward=numbarnn.RNN.forward, backward=numbarnn.RNN.backward,
                                      cuda_pointwise=path)
        with pytest.raises(UnsupportedOnCuda, match=message):
            dcells.resolve(bad)


# ---- the recurrence: fused step kernels, both loop strategies -------------------------------

def _cpu_sequence(cell, xz, W_h, b_h, h0, d_out, d_final):
    T, B, _ = xz.shape
    S, H = cell.states, W_h.shape[1]
    states = np.empty((S, T + 1, B, H), xz.dtype)
    states[:, 0] = h0
    cache = np.empty((T, B, cell.cache_width * H), xz.dtype)
    cpu = loops.loops_for(cell)
    cpu.sequence_forward(xz, W_h, b_h, (), states, cache, np.empty((B, cell.gates * H), xz.dtype))  # (): no own params
    dstate = d_final.copy()
    dxz = np.empty_like(xz)
    dhz = dxz if cell.shared_gate_grad else np.empty_like(xz)
    cpu.sequence_backward(W_h, (), states, cache, d_out, dstate, np.empty_like(dstate), dxz, dhz,
                          np.empty((B, H), xz.dtype), ())
    return states, dxz, dhz, dstate


def _device_sequence(cell, xz, W_h, b_h, h0, d_out, d_final, loop):
    T, B, _ = xz.shape
    S, H, dtype = cell.states, W_h.shape[1], xz.dtype
    states = np.zeros((S, T + 1, B, H), dtype)
    states[:, 0] = h0
    d_states = dev(states)
    d_cache = cuda.device_array((T, B, max(cell.cache_width, 1) * H), dtype)
    kernels = dsteps.step_kernels(cell, dtype, B, H)
    d_xz, d_W_h = dev(xz), dev(W_h)
    dloops.sequence_forward(kernels, d_xz, d_W_h, dev(b_h), d_states, d_cache,
                            cuda.device_array((B, cell.gates * H), dtype), loop=loop)
    d_dstate = dev(d_final)
    d_dxz = cuda.device_array(xz.shape, dtype)
    d_dhz = d_dxz if cell.shared_gate_grad else cuda.device_array(xz.shape, dtype)
    dloops.sequence_backward(kernels, d_W_h, d_states, d_cache, dev(d_out), d_dstate,
                             cuda.device_array(d_final.shape, dtype), d_dxz, d_dhz, loop=loop)
    return d_states.copy_to_host(), d_dxz.copy_to_host(), d_dhz.copy_to_host(), d_dstate.copy_to_host()


def _sequence_inputs(cell, dtype, T, B, H, seed):
    rng = np.random.default_rng(seed)
    G, S = cell.gates, cell.states
    scale = 0.5
    return [a.astype(dtype) for a in (rng.normal(size=(T, B, G * H)), scale * rng.normal(size=(G * H, H)),
                                      rng.normal(size=G * H), rng.normal(size=(S, B, H)),
                                      rng.normal(size=(T, B, H)), rng.normal(size=(S, B, H)))]


@pytest.mark.parametrize("cell", CUDA_CELLS, ids=lambda c: c.name)
@pytest.mark.parametrize("loop", ["launch", "persistent"])
@pytest.mark.parametrize("step_kernel", ["tiled", "rowdot"])
def test_sequence_forward_and_backward_match_cpu(cell, loop, step_kernel, small_blocks):
    # B 3, H 6. Tiled, (BM 2, BJ 4, BK 3) tiles: 4 tiles, partial in both directions.
    # Rowdot, 2 rows per warp and 1 warp per block: 12 warps (the second batch group
    # partial). On the simulator the persistent grid is one block that loops
    # over every tile.
    small_blocks.update(step_kernel=step_kernel)
    T, B, H = 3, 3, 6
    inputs = _sequence_inputs(cell, np.float64, T, B, H, seed=4)
    expected = _cpu_sequence(cell, *inputs)
    actual = _device_sequence(cell, *inputs, loop=loop)
    for a, e, name in zip(actual, expected, ("states", "dxz", "dhz", "dstate")):
        np.testing.assert_allclose(a, e, rtol=1e-11, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("cell", CUDA_CELLS, ids=lambda c: c.name)
def test_sequence_float32_and_register_tiles_of_several_rows(cell, small_blocks):
    small_blocks.update(step_tile=(4, 2, 2, 2))  # TM = 2: each thread two batch rows
    T, B, H = 2, 5, 3
    inputs = _sequence_inputs(cell, np.float32, T, B, H, seed=5)
    expected = _cpu_sequence(cell, *inputs)
    actual = _device_sequence(cell, *inputs, loop="launch")
    for a, e, name in zip(actual, expected, ("states", "dxz", "dhz", "dstate")):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("cell", CUDA_CELLS, ids=lambda c: c.name)
def test_rowdot_with_more_units_than_lanes_and_one_batch_row(cell, small_blocks):
    # H 40 > 32 lanes: each lane sums two slices of K (and of G*H in backward); B 1 leaves
    # one of the warp's two batch rows empty; 3 warps per block, the last block partial.
    # float32 against the CPU's float32.
    small_blocks.update(step_kernel="rowdot", rowdot_warps=3)
    T, B, H = 2, 1, 40
    inputs = _sequence_inputs(cell, np.float32, T, B, H, seed=7)
    expected = _cpu_sequence(cell, *inputs)
    actual = _device_sequence(cell, *inputs, loop="launch")
    for a, e, name in zip(actual, expected, ("states", "dxz", "dhz", "dstate")):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-5, err_msg=name)


def test_step_kind_choice(small_blocks):
    small_blocks.update(step_kernel="auto", rowdot_max_batch=4)
    assert [dsteps.step_kind(B) for B in (1, 4, 5, 64)] == ["rowdot", "rowdot", "tiled", "tiled"]
    small_blocks.update(step_kernel="tiled")
    assert dsteps.step_kind(1) == "tiled"
    small_blocks.update(step_kernel="rowdot", rowdot_batch=2, rowdot_warps=3)
    kernels = dsteps.step_kernels(numbarnn.get_cell("lstm"), np.float64, 5, 7)
    assert kernels.kind == "rowdot" and kernels.block == (96,) and kernels.backward_wants_transpose
    assert kernels.ntiles(5, 7) == 7  # 7 units x 3 batch groups = 21 warps, 3 per block
    with pytest.raises(ValueError, match="step_kernel"):
        small_blocks.update(step_kernel="fast")


def test_transpose():
    a = np.random.default_rng(8).normal(size=(5, 3))
    out = cuda.device_array((3, 5))
    darrays.transpose(dev(a), out)
    np.testing.assert_array_equal(out.copy_to_host(), a.T)
    with pytest.raises(ValueError, match="transpose"):
        darrays.transpose(dev(a), cuda.device_array((5, 3)))


def test_step_tiles_default_heuristic_and_override(small_blocks):
    small_blocks.update(step_tile=None)
    assert dsteps.step_tiles(64, 1024, 4) == (64, 16, 16, 4)
    assert dsteps.step_tiles(1, 1024, 4)[0] == 1
    for B in (1, 2, 3, 4, 7, 16, 64, 100):
        BM, BJ, BK, TM = dsteps.step_tiles(B, 1024, 4)
        assert BM % TM == 0 and BM <= 64
    small_blocks.update(step_tile=(2, 4, 3, 1))
    assert dsteps.step_tiles(64, 1024, 4) == (2, 4, 3, 1)


def test_loop_strategy_choice(small_blocks):
    cell = numbarnn.get_cell("rnn")
    kernels = dsteps.step_kernels(cell, np.float64, 3, 6)
    # The simulator runs cooperative grids of one block: "auto" takes per-step launches,
    # "persistent" one block looping over every tile.
    assert dloops._strategy("auto", 4, kernels.forward_persistent, (), kernels.block, 3) == (False, 4)
    assert dloops._strategy("persistent", 4, kernels.forward_persistent, (), kernels.block, 3) == (True, 1)
    assert dloops._strategy("launch", 4, kernels.forward_persistent, (), kernels.block, 3) == (False, 4)


def test_auto_loop_rule_on_a_device(small_blocks, monkeypatch):
    # As on a GPU that holds 100 blocks at once: "auto" runs small batches persistent (the
    # blocks loop over the tiles when there are more tiles than blocks) and large ones with
    # a launch per step; without cooperative launches, always per-step launches.
    kernels = dsteps.step_kernels(numbarnn.get_cell("rnn"), np.float64, 3, 6)
    monkeypatch.setattr(dloops, "simulator", lambda: False)
    monkeypatch.setattr(dloops, "resident_blocks", lambda *a: 100)
    small_blocks.update(persistent_max_batch=16)
    strategy = lambda ntiles, batch: dloops._strategy("auto", ntiles, None, (), kernels.block, batch)  # noqa: E731
    assert strategy(40, 1) == (True, 40) and strategy(400, 16) == (True, 100) and strategy(400, 17) == (False, 400)
    monkeypatch.setattr(dloops, "resident_blocks", lambda *a: 0)
    assert strategy(40, 1) == (False, 40)


def test_state_helpers():
    rng = np.random.default_rng(6)
    states = rng.normal(size=(2, 4, 3, 5))
    d_states = dev(states)
    out = cuda.device_array((2, 3, 5))
    darrays.state_out(d_states, 2, out)
    np.testing.assert_array_equal(out.copy_to_host(), states[:, 2])
    darrays.state_in(out, d_states, 0)
    darrays.state_copy(d_states, 3, d_states, 1)
    expected = states.copy()
    expected[:, 0] = states[:, 2]
    expected[:, 1] = states[:, 3]
    np.testing.assert_array_equal(d_states.copy_to_host(), expected)
    flat = cuda.device_array(7, np.float32)
    darrays.fill(flat, 2.5)
    np.testing.assert_array_equal(flat.copy_to_host(), np.full(7, 2.5, np.float32))


# ---- losses ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("scale", [None, 0.25])
def test_softmax_cross_entropy_matches_cpu(dtype, scale):
    rng = np.random.default_rng(7)
    N, V = 9, 5
    logits = (3 * rng.normal(size=(N, V))).astype(dtype)
    targets = rng.integers(0, V, size=N)
    mask = np.array([1, 1, 0, 1, 0.5, 1, 1, 0, 1], dtype)
    probs, dlogits = np.empty_like(logits), np.empty_like(logits)
    loss = losses.softmax_cross_entropy(logits, targets, mask, probs, dlogits)
    if scale is not None:
        dlogits *= dtype(scale)
    d_probs, d_dlogits = cuda.device_array((N, V), dtype), cuda.device_array((N, V), dtype)
    out = cuda.device_array(3, np.float64)
    dlosses.softmax_cross_entropy(dev(logits), dev(targets), dev(mask), d_probs, d_dlogits,
                                  cuda.device_array(N, np.float64), out, 2, scale=scale)
    np.testing.assert_allclose(out.copy_to_host()[2], loss, rtol=1e-12 if dtype == np.float64 else 1e-6)
    close(d_probs.copy_to_host(), probs, dtype)
    close(d_dlogits.copy_to_host(), dlogits, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_squared_error_matches_cpu(dtype):
    rng = np.random.default_rng(8)
    N, V = 6, 3
    outputs, targets = rng.normal(size=(N, V)).astype(dtype), rng.normal(size=(N, V)).astype(dtype)
    targets[2] = np.nan  # padding may hold anything
    mask = np.array([1, 1, 0, 1, 2, 1], dtype)
    dout = np.empty_like(outputs)
    loss = losses.squared_error(outputs, targets, mask, dout)
    d_dout, out = cuda.device_array((N, V), dtype), cuda.device_array(1, np.float64)
    dlosses.squared_error(dev(outputs), dev(targets), dev(mask), d_dout, cuda.device_array(N, np.float64), out)
    np.testing.assert_allclose(out.copy_to_host()[0], loss, rtol=1e-12 if dtype == np.float64 else 1e-6)
    close(d_dout.copy_to_host(), dout, dtype)


def test_reductions_over_several_blocks():
    x = np.random.default_rng(9).normal(size=37)
    out, partials = cuda.device_array(2, np.float64), cuda.device_array(dlosses.MAX_PARTIALS, np.float64)
    dlosses.reduce_sum(dev(x), out, 0, partials)
    dlosses.reduce_sum(dev(x.astype(np.float32)), out, 1, partials, square=True)
    np.testing.assert_allclose(out.copy_to_host(), [x.sum(), (x.astype(np.float32).astype(np.float64) ** 2).sum()],
                               rtol=1e-12)


# ---- optimizers and clipping ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_optimizer_updates_match_cpu(dtype):
    rng = np.random.default_rng(10)
    P = 11
    cases = {
        "sgd": (lambda p, g, s, step: optim.sgd_update(p, g, 0.1),
                lambda p, g, s, step: doptim.sgd_update(p, g, 0.1), 0),
        "momentum": (lambda p, g, s, step: optim.momentum_update(p, g, s[0], 0.1, 0.9, True),
                     lambda p, g, s, step: doptim.momentum_update(p, g, s[0], 0.1, 0.9, True), 1),
        "adagrad": (lambda p, g, s, step: optim.adagrad_update(p, g, s[0], 0.1, 1e-8),
                    lambda p, g, s, step: doptim.adagrad_update(p, g, s[0], 0.1, 1e-8), 1),
        "rmsprop": (lambda p, g, s, step: optim.rmsprop_update(p, g, s[0], 0.01, 0.99, 1e-8),
                    lambda p, g, s, step: doptim.rmsprop_update(p, g, s[0], 0.01, 0.99, 1e-8), 1),
        "adam": (lambda p, g, s, step: optim.adam_update(p, g, s[0], s[1], 0.01, 0.9, 0.999, 1e-8, step),
                 lambda p, g, s, step: doptim.adam_update(p, g, s[0], s[1], 0.01, 0.9, 0.999, 1e-8, step), 2),
        # weight decay: the L2 gradient of every built-in, and AdamW's decoupled decay
        "sgd_wd": (lambda p, g, s, step: optim.sgd_update(p, g, 0.1, 0.2),
                   lambda p, g, s, step: doptim.sgd_update(p, g, 0.1, 0.2), 0),
        "momentum_wd": (lambda p, g, s, step: optim.momentum_update(p, g, s[0], 0.1, 0.9, True, 0.2),
                        lambda p, g, s, step: doptim.momentum_update(p, g, s[0], 0.1, 0.9, True, 0.2), 1),
        "adagrad_wd": (lambda p, g, s, step: optim.adagrad_update(p, g, s[0], 0.1, 1e-8, 0.2),
                       lambda p, g, s, step: doptim.adagrad_update(p, g, s[0], 0.1, 1e-8, 0.2), 1),
        "rmsprop_wd": (lambda p, g, s, step: optim.rmsprop_update(p, g, s[0], 0.01, 0.99, 1e-8, 0.2),
                       lambda p, g, s, step: doptim.rmsprop_update(p, g, s[0], 0.01, 0.99, 1e-8, 0.2), 1),
        "adam_wd": (lambda p, g, s, step: optim.adam_update(p, g, s[0], s[1], 0.01, 0.9, 0.999, 1e-8, step, 0.2),
                    lambda p, g, s, step: doptim.adam_update(p, g, s[0], s[1], 0.01, 0.9, 0.999, 1e-8, step, 0.2), 2),
        "adamw": (lambda p, g, s, step: optim.adam_update(p, g, s[0], s[1], 0.01, 0.9, 0.999, 1e-8, step, 0.2, True),
                  lambda p, g, s, step: doptim.adam_update(p, g, s[0], s[1], 0.01, 0.9, 0.999, 1e-8, step, 0.2,
                                                           decoupled=True), 2),
    }
    for name, (cpu_update, gpu_update, nslots) in cases.items():
        p = rng.normal(size=P).astype(dtype)
        slots = [np.zeros(P, dtype) for _ in range(nslots)]
        d_p, d_slots = dev(p), [dev(s) for s in slots]
        for step in (1, 2):
            g = rng.normal(size=P).astype(dtype)
            cpu_update(p, g, slots, step)
            gpu_update(d_p, dev(g), d_slots, step)
        # One thread per element, the CPU's arithmetic: identical up to libm vs libdevice sqrt/pow.
        close(d_p.copy_to_host(), p, dtype)
        for d_s, s in zip(d_slots, slots):
            close(d_s.copy_to_host(), s, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_clipping_matches_cpu(dtype):
    g = np.array([3.0, -0.2, -7.0, 0.5, np.nan, 1.5], dtype)
    expected = g.copy()
    optim.clip_by_value(expected, 1.0)
    d_g = dev(g)
    doptim.clip_by_value(d_g, 1.0)
    np.testing.assert_array_equal(d_g.copy_to_host(), expected)

    g = np.array([3.0, -4.0, 0.5, 2.0, -1.0], dtype)
    norm_sq = cuda.device_array(2, np.float64)
    d_g = dev(g)
    doptim.sum_of_squares(d_g, norm_sq, 1)
    np.testing.assert_allclose(norm_sq.copy_to_host()[1], optim.sum_of_squares(g), rtol=1e-12)
    expected = g.copy()
    optim.scale(expected, 2.0 / (np.sqrt(optim.sum_of_squares(g)) + 1e-6))
    doptim.clip_by_norm(d_g, norm_sq[1:2], 2.0)
    close(d_g.copy_to_host(), expected, dtype)
    doptim.clip_by_norm(d_g, norm_sq[1:2], 100.0)  # coefficient above 1: unchanged
    close(d_g.copy_to_host(), expected, dtype)


# ---- sampling -------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", [CategoricalSampler(), GreedySampler(), TemperatureSampler(temperature=0.5),
                                     TopKSampler(k=2, temperature=1.5), TopPSampler(p=0.6)],
                         ids=lambda s: s.name)
def test_sampling_matches_cpu(sampler):
    rng = np.random.default_rng(11)
    V = 6
    logits = rng.normal(size=(3, V)).astype(np.float32)
    logits[1, 2] = logits[1, 4] = logits[1].max() + 1.0  # a tie: the lower index first
    uniforms = np.array([0.0, 0.3, 0.7, 0.999999])
    params = dsampling.sampler_mode(sampler)
    d_logits, d_u = dev(logits), dev(uniforms)
    probs, filtered = cuda.device_array(V, np.float64), cuda.device_array(V, np.float64)
    order, out = cuda.device_array(V, np.int64), cuda.device_array(len(uniforms) * 3, np.int64)
    nxt = dev(np.zeros((1, 1), np.int64))
    expected = []
    for row in range(3):
        for i, u in enumerate(uniforms):
            dsampling.sample(d_logits, row, params, d_u, i, probs, filtered, order, out[row * 4:(row + 1) * 4], nxt)
            class U:  # a Generator stand-in that returns the same u
                def random(self, u=u):
                    return u
            expected.append(sampler.choose(logits[row].astype(np.float64), U()))
    assert out.copy_to_host().tolist() == expected
    assert nxt.copy_to_host()[0, 0] == expected[-1]


def test_sampling_of_an_invalid_distribution_is_flagged():
    logits = np.array([[0.0, np.nan, 1.0]])
    out, nxt = cuda.device_array(1, np.int64), dev(np.zeros((1, 1), np.int64))
    dsampling.sample(dev(logits), 0, dsampling.sampler_mode(CategoricalSampler()), dev(np.array([0.5])), 0,
                     cuda.device_array(3, np.float64), cuda.device_array(3, np.float64),
                     cuda.device_array(3, np.int64), out, nxt)
    assert out.copy_to_host()[0] == dsampling.INVALID and nxt.copy_to_host()[0, 0] == -1


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="no field"):
        config.update(tiles=3)
    with pytest.raises(ValueError, match="TM must divide BM"):
        config.update(gemm_tile=(4, 4, 2, 3, 2))
    with pytest.raises(ValueError, match="loop must be"):
        config.update(loop="sometimes")
    with pytest.raises(ValueError, match="power of two"):
        config.update(threads=6)
