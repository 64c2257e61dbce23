"""Parity with PyTorch on identical weights: outputs and every gradient, float64, via numbarnn.interop."""
import numpy as np
import pytest

import numbarnn
from numbarnn.interop import from_torch, to_torch
from numbarnn.kernels import loops, tiles
from numbarnn.models import RecurrentModel

torch = pytest.importorskip("torch")

# Every registered cell with a PyTorch twin, plugins included (the GRU plugin: nn.GRU).
CASES = [numbarnn.get_cell(name) for name in numbarnn.list_cells() if numbarnn.get_cell(name).torch_module]


def torch_run(module, x, state, d_out, d_final):
    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s[None], requires_grad=True) for s in state]
    out, final = module(xt, st[0] if len(st) == 1 else tuple(st))
    final = [final] if len(st) == 1 else list(final)
    loss = (out * torch.tensor(d_out)).sum() + sum((f[0] * torch.tensor(d)).sum() for f, d in zip(final, d_final))
    loss.backward()
    return out.detach().numpy(), [f.detach().numpy()[0] for f in final], xt.grad.numpy(), [s.grad.numpy()[0] for s in st]


@pytest.mark.parametrize("cell", CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("T, B, X, H", [(1, 1, 1, 1), (7, 3, 4, 5), (12, 2, 6, 3), (30, 8, 64, 80)])
def test_outputs_and_gradients_match_torch(cell, batch_first, T, B, X, H):
    """The last size is large enough for the whole-sequence products (the input projection,
    dW_x, dx, dW_h) to take the tiles where they are AVX-512 (checked), M read in place or
    packed."""
    rng = np.random.default_rng(T * 100 + H)
    module = getattr(torch.nn, cell.torch_module)(X, H, batch_first=batch_first, dtype=torch.float64)
    # N(0, 1) weights at the largest size make the recurrence chaotic: any two products'
    # rounding (BLAS's too) grows to 1e-8 over its 30 steps. Scaled by 1/sqrt(H), as
    # PyTorch initialises, it stays conditioned.
    scale = 1.0 / np.sqrt(H) if H == 80 else 1.0
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.tensor(rng.normal(size=tuple(p.shape)) * scale))
    model = from_torch(module)
    assert model.cell is cell and model.batch_first is batch_first and model.dtype == np.float64
    x = rng.normal(size=(B, T, X) if batch_first else (T, B, X))
    state = [rng.normal(size=(B, H)) for _ in range(cell.states)]
    d_out = rng.normal(size=x.shape[:2] + (H,))
    d_final = [rng.normal(size=(B, H)) for _ in range(cell.states)]

    out, final = model.forward(x, state[0] if cell.states == 1 else tuple(state))
    grads = model.backward(d_out, d_final[0] if cell.states == 1 else tuple(d_final))
    t_out, t_final, t_dx, t_dstate = torch_run(module, x, state, d_out, d_final)

    if H == 80 and tiles.VECTOR_BYTES == 64:
        N, GH = T * B, cell.gates * H
        assert loops.whole_product_path(np.zeros((N, X)), np.zeros((GH, X)).T, np.zeros((N, GH))) == loops.TILES
        assert loops.whole_product_path(np.zeros((N, GH)).T, np.zeros((N, H)), np.zeros((GH, H))) == (
            loops.TILES_IN_PLACE if GH <= loops.IN_PLACE_MAX_ROWS else loops.TILES)
    tol = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out, t_out, **tol)
    for got, want in zip([final] if cell.states == 1 else final, t_final):
        np.testing.assert_allclose(got, want, **tol)
    np.testing.assert_allclose(grads["dx"], t_dx, **tol)
    for got, want in zip([grads["dstate"]] if cell.states == 1 else grads["dstate"], t_dstate):
        np.testing.assert_allclose(got, want, **tol)
    for ours, theirs in (("dW_x", "weight_ih_l0"), ("dW_h", "weight_hh_l0"), ("db_x", "bias_ih_l0"),
                         ("db_h", "bias_hh_l0")):
        np.testing.assert_allclose(grads[ours], getattr(module, theirs).grad.numpy(), **tol, err_msg=ours)


@pytest.mark.parametrize("cell", CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_through_torch_keeps_weights_exactly(cell, dtype):
    model = RecurrentModel(cell, 3, 4, dtype=dtype, seed=5, batch_first=True)
    module = to_torch(model)
    assert type(module).__name__ == cell.torch_module and module.batch_first
    back = from_torch(module)
    assert back.dtype == model.dtype
    for key, value in model.params.items():
        np.testing.assert_array_equal(back.params[key], value)
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(dtype)
    with torch.no_grad():
        t_out = module(torch.tensor(x))[0].numpy()
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(model.forward(x)[0], t_out, **tol)


def test_bias_free_torch_module_gives_zero_biases():
    module = torch.nn.LSTM(2, 3, bias=False, dtype=torch.float64)
    model = from_torch(module)
    assert not model.params["b_x"].any() and not model.params["b_h"].any()


@pytest.mark.parametrize("module, message", [
    (lambda: torch.nn.RNN(2, 3, nonlinearity="relu"), "uses 'relu'"),
    (lambda: torch.nn.LSTM(2, 3, proj_size=2), "proj_size"),
    (lambda: torch.nn.Linear(2, 3), "expects a torch.nn.RNN, LSTM or GRU"),
])
def test_unsupported_modules_are_refused_clearly(module, message):
    # (stacked and bidirectional modules convert since issue 15: tests/test_interop_stacks.py)
    with pytest.raises(ValueError, match=message):
        from_torch(module())
