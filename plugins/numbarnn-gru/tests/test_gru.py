"""The numbarnn-gru plugin: kernels vs the NumPy reference, finite differences, torch.nn.GRU
parity through numbarnn.interop, and registration through the ``numbarnn`` entry point.

Needs the package installed (``pip install -e plugins/numbarnn-gru``): the cell is looked up
by name, as a user would. The NumPy reference is numbarnn's own ``tests/naive.py``.
"""
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from numba import njit

import numbarnn
import numbarnn_gru
from numbarnn import cli, plugins
from numbarnn.kernels import loops
from numbarnn.models import RecurrentModel

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from installed_registry import assert_registered_by_entry_point, entry_point_registry  # noqa: E402,F401  (autouse: this module's tests see the entry points)
import naive  # noqa: E402  (numbarnn's tests/naive.py: gru_forward / gru_backward)

TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=2e-4, atol=2e-5)}

shapes = st.fixed_dictionaries({
    "T": st.integers(1, 6), "B": st.integers(1, 4), "X": st.integers(1, 5), "H": st.integers(1, 6),
    "seed": st.integers(0, 2**16),
})


def gru():
    return numbarnn.get_cell("gru")


def make_case(T, B, X, H, seed, dtype=np.float64, index_input=False):
    rng = np.random.default_rng(seed)
    model = RecurrentModel(gru(), X, H, dtype=dtype, seed=seed)
    # Biases larger than the default init, so b_x and b_h (which enter n differently) differ clearly.
    for key in ("b_x", "b_h"):
        model.params[key][:] = rng.normal(size=model.params[key].shape)
    if index_input:
        x = rng.integers(-1, X, size=(T, B))
    else:
        x = rng.normal(size=(T, B, X)).astype(dtype)
    h0 = rng.normal(size=(B, H)).astype(dtype)
    d_out = rng.normal(size=(T, B, H)).astype(dtype)
    d_hT = rng.normal(size=(B, H)).astype(dtype)
    return model, x, h0, d_out, d_hT


def naive_run(model, x, h0, d_out, d_hT):
    p = {k: v.astype(np.float64) for k, v in model.params.items()}
    if np.issubdtype(np.asarray(x).dtype, np.integer):
        x = naive.one_hot(x, model.input_size)
    x = np.asarray(x, np.float64)
    args = (x, p["W_x"], p["W_h"], p["b_x"], p["b_h"], h0.astype(np.float64))
    out = naive.gru_forward(*args)
    grads = naive.gru_backward(*args, d_out.astype(np.float64), d_hT=d_hT.astype(np.float64))
    return out, grads


# ---- against the NumPy reference -----------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("index_input", [False, True])
@settings(max_examples=15, deadline=None)
@given(shape=shapes)
def test_forward_and_backward_match_naive(dtype, index_input, shape):
    model, x, h0, d_out, d_hT = make_case(dtype=dtype, index_input=index_input, **shape)
    outputs, h_T = model.forward(x, h0)
    grads = model.backward(d_out, d_hT)
    (ref_out, ref_hT), ref = naive_run(model, x, h0, d_out, d_hT)
    tol = TOL[dtype]
    assert outputs.dtype == h_T.dtype == dtype
    np.testing.assert_allclose(outputs, ref_out, **tol)
    np.testing.assert_allclose(h_T, ref_hT, **tol)
    for key in ("W_x", "W_h", "b_x", "b_h"):
        assert grads["d" + key].dtype == dtype
        np.testing.assert_allclose(grads["d" + key], ref["d" + key], **tol, err_msg=key)
    np.testing.assert_allclose(grads["dstate"], ref["dh0"], **tol)
    if index_input:
        assert grads["dx"] is None
    else:
        np.testing.assert_allclose(grads["dx"], ref["dx"], **tol)


def test_the_two_bias_gradients_differ_in_the_candidate_block_only():
    # What shared_gate_grad=False is for: db_h's n block carries the reset gate, db_x's does not.
    model, x, h0, d_out, d_hT = make_case(4, 3, 2, 5, seed=11)
    model.forward(x, h0)
    grads = model.backward(d_out, d_hT)
    H = 5
    np.testing.assert_allclose(grads["db_x"][:2 * H], grads["db_h"][:2 * H], rtol=1e-13)
    assert not np.allclose(grads["db_x"][2 * H:], grads["db_h"][2 * H:])


def test_index_input_equals_one_hot_input():
    model, idx, h0, d_out, _ = make_case(5, 3, 4, 3, seed=7, index_input=True)
    idx[0, 0] = -1  # the all-zero input
    out_i, fin_i = model.forward(idx, h0)
    g_i = model.backward(d_out)
    out_d, fin_d = model.forward(naive.one_hot(idx, 4), h0)
    g_d = model.backward(d_out)
    np.testing.assert_allclose(out_i, out_d, rtol=1e-13)
    np.testing.assert_allclose(fin_i, fin_d, rtol=1e-13)
    for key in ("dW_x", "dW_h", "db_x", "db_h", "dstate"):
        np.testing.assert_allclose(g_i[key], g_d[key], rtol=1e-12, atol=1e-14, err_msg=key)


def test_continuing_from_final_state_equals_one_long_run():
    model, x, h0, _, _ = make_case(9, 2, 3, 4, seed=3)
    whole, final_whole = model.forward(x, h0)
    first, mid = model.forward(x[:4], h0)
    second, final_split = model.forward(x[4:], mid)
    np.testing.assert_allclose(np.concatenate([first, second]), whole, rtol=1e-14)
    np.testing.assert_allclose(final_split, final_whole, rtol=1e-14)


def test_saturated_gates_give_the_reference_values():
    """Weights and inputs scaled by 1e3: every gate is exactly 0 or 1 and the candidate
    exactly +-1. Outputs and gradients are finite and equal the NumPy reference's: the
    state passes through z = 1 untouched (its gradient too), no gradient reaches a weight."""
    model, x, h0, d_out, d_hT = make_case(3, 2, 2, 3, seed=9)
    for key in model.params:
        model.params[key] *= 1e3
    x = x * 1e3
    outputs, h_T = model.forward(x, h0)
    grads = model.backward(d_out, d_hT)
    with np.errstate(over="ignore"):  # the reference's exp(-a) overflows to inf: sigmoid 0, as it should
        (ref_out, ref_hT), ref = naive_run(model, x, h0, d_out, d_hT)
    assert (np.abs(outputs) == 1.0).any() and np.isin(h0, outputs[0]).any()  # saturated, and holding h0
    np.testing.assert_allclose(outputs, ref_out, rtol=1e-12, atol=0)
    np.testing.assert_allclose(h_T, ref_hT, rtol=1e-12, atol=0)
    assert np.abs(ref["dh0"]).max() > 0.1
    np.testing.assert_allclose(grads["dstate"], ref["dh0"], rtol=1e-12, atol=1e-300)
    for key in ("dx", "dW_x", "dW_h", "db_x", "db_h"):
        assert np.isfinite(grads[key]).all(), key
        np.testing.assert_allclose(grads[key], ref[key], rtol=1e-12, atol=1e-300, err_msg=key)


# ---- central finite differences, float64 ----------------------------------------------------------

@settings(max_examples=8, deadline=None)
@given(shape=st.fixed_dictionaries({"T": st.integers(1, 4), "B": st.integers(1, 3), "X": st.integers(1, 3),
                                    "H": st.integers(1, 3), "seed": st.integers(0, 2**16)}))
def test_gradients_match_finite_differences(shape):
    model, x, h0, d_out, d_hT = make_case(**shape)

    def loss():
        outputs, h_T = model.forward(x, h0)
        return np.sum(outputs * d_out) + np.sum(h_T * d_hT)

    loss()
    grads = model.backward(d_out, d_hT)
    for key, value in model.params.items():
        np.testing.assert_allclose(grads["d" + key], naive.finite_difference_grad(loss, value),
                                   rtol=1e-6, atol=1e-8, err_msg=key)
    np.testing.assert_allclose(grads["dx"], naive.finite_difference_grad(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grads["dstate"], naive.finite_difference_grad(loss, h0), rtol=1e-6, atol=1e-8)


# ---- parity with torch.nn.GRU through numbarnn.interop -------------------------------------------

@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("T, B, X, H", [(1, 1, 1, 1), (7, 3, 4, 5), (12, 2, 6, 3)])
def test_outputs_and_gradients_match_torch(batch_first, T, B, X, H):
    torch = pytest.importorskip("torch")
    from numbarnn.interop import from_torch

    rng = np.random.default_rng(T * 100 + H)
    module = torch.nn.GRU(X, H, batch_first=batch_first, dtype=torch.float64)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.tensor(rng.normal(size=tuple(p.shape))))
    model = from_torch(module)
    assert model.cell is numbarnn_gru.GRU and model.batch_first is batch_first
    assert model.dtype == np.float64
    x = rng.normal(size=(B, T, X) if batch_first else (T, B, X))
    h0 = rng.normal(size=(B, H))
    d_out = rng.normal(size=x.shape[:2] + (H,))
    d_hT = rng.normal(size=(B, H))

    out, h_T = model.forward(x, h0)
    grads = model.backward(d_out, d_hT)

    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0[None], requires_grad=True)
    t_out, t_hT = module(xt, h0t)
    ((t_out * torch.tensor(d_out)).sum() + (t_hT[0] * torch.tensor(d_hT)).sum()).backward()

    tol = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out, t_out.detach().numpy(), **tol)
    np.testing.assert_allclose(h_T, t_hT.detach().numpy()[0], **tol)
    np.testing.assert_allclose(grads["dx"], xt.grad.numpy(), **tol)
    np.testing.assert_allclose(grads["dstate"], h0t.grad.numpy()[0], **tol)
    for ours, theirs in (("dW_x", "weight_ih_l0"), ("dW_h", "weight_hh_l0"), ("db_x", "bias_ih_l0"),
                         ("db_h", "bias_hh_l0")):
        np.testing.assert_allclose(grads[ours], getattr(module, theirs).grad.numpy(), **tol, err_msg=ours)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_through_torch_keeps_weights_exactly(dtype):
    torch = pytest.importorskip("torch")
    from numbarnn.interop import from_torch, to_torch

    model = RecurrentModel(gru(), 3, 4, dtype=dtype, seed=5, batch_first=True)
    module = to_torch(model)
    assert isinstance(module, torch.nn.GRU) and module.batch_first
    back = from_torch(module)
    assert back.cell is numbarnn_gru.GRU and back.dtype == model.dtype
    for key, value in model.params.items():
        np.testing.assert_array_equal(back.params[key], value)
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(dtype)
    with torch.no_grad():
        t_out = module(torch.tensor(x))[0].numpy()
    np.testing.assert_allclose(model.forward(x)[0], t_out, rtol=1e-5 if dtype == "float32" else 1e-12,
                               atol=1e-6)


# ---- the spec and the entry point ---------------------------------------------------------------

def test_spec_fields():
    spec = numbarnn_gru.GRU
    assert (spec.name, spec.gates, spec.states, spec.cache_width) == ("gru", 3, 1, 4)
    assert spec.shared_gate_grad is False and spec.torch_module == "GRU"
    assert spec.to_course is None and spec.from_course is None
    assert spec.forward is numbarnn_gru.gru_forward and spec.backward is numbarnn_gru.gru_backward


def test_entry_point_registers_this_spec():
    assert_registered_by_entry_point(numbarnn_gru.GRU, "numbarnn-gru", numbarnn_gru)
    assert "gru" in numbarnn.list_cells("g*")


def test_cli_shows_the_plugin(capsys):
    assert cli.main(["list", "cells", "gru"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[0] == "gru"
    assert cli.main(["plugins"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("gru "))
    assert line.split()[:4] == ["gru", "numbarnn-gru", "0.1.0", "cells:"]


def test_registering_in_process_as_the_plugin_guide_shows():
    # docs/plugins.md, "Testing a plugin": with the entry point switched off, the module
    # registers in-process and unregisters cleanly.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(plugins.ENV_ALLOW, "")
        plugins.reset()
        assert "gru" not in numbarnn.list_cells()
        plugins.register_plugin(numbarnn_gru, name="gru-test")
        try:
            assert numbarnn.get_cell("gru") is numbarnn_gru.GRU
        finally:
            plugins.unregister_plugin("gru-test")
        assert "gru" not in numbarnn.list_cells()
    plugins.reset()
    assert numbarnn.get_cell("gru") is numbarnn_gru.GRU


class AnotherGru:
    @numbarnn.hookimpl
    def register_cells(self, register):
        register(numbarnn_gru.GRU)


def test_a_second_gru_is_a_duplicate_name_error_naming_this_distribution():
    with pytest.raises(numbarnn.DuplicateNameError, match="numbarnn-gru"):
        plugins.register_plugin(AnotherGru(), name="gru-again")
    assert "gru-again" not in [p["name"] for p in numbarnn.list_plugins()]
    assert numbarnn.get_cell("gru") is numbarnn_gru.GRU


def test_kernels_callable_from_user_njit_code():
    sequence_forward = loops.loops_for(numbarnn_gru.GRU).sequence_forward

    @njit
    def user_code_running_the_gru(xz, W_h, b_h, states, cache, hz):
        sequence_forward(xz, W_h, b_h, (), states, cache, hz)  # (): no parameters of its own
        return states[0, -1].sum()

    model, x, h0, _, _ = make_case(4, 2, 3, 5, seed=4)
    _, h_T = model.forward(x, h0)
    p = model.params
    xz = np.ascontiguousarray(x @ p["W_x"].T + p["b_x"])
    states = np.empty((1, 5, 2, 5))
    states[0, 0] = h0
    total = user_code_running_the_gru(xz, p["W_h"], p["b_h"], states, np.empty((4, 2, 20)), np.empty((2, 15)))
    assert total == pytest.approx(h_T.sum(), rel=1e-12)
