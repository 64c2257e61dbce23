"""Tests of the reference implementations themselves (tests/naive.py and
tests/course_reference.py), before anything is compared against them."""

import contextlib
import io
import string
from pathlib import Path

import numpy as np
import pytest

try:  # works whether or not tests/ is a package
    from . import course_reference as cr
    from . import naive
except ImportError:
    import course_reference as cr
    import naive

# The course's own dinos.txt, outside the repository (beside the checkout, in shared/data/):
# the notebook's printed output depends on its exact lines and order, which the shipped,
# sorted and de-duplicated numbarnn/data/dinosaurs.txt does not keep.
DINOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "dinos.txt"
DINOS_MISSING = (f"the course's dinos.txt is not at {DINOS}, outside the repository (the shipped "
                 "numbarnn/data/dinosaurs.txt is sorted and de-duplicated: it cannot reproduce the notebook's output)")

FD_RTOL = 1e-6
FD_ATOL = 1e-8
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def make_problem(kind, seed, T=3, B=2, X=3, H=4, scale=0.7):
    rng = np.random.default_rng(seed)
    G = GATES[kind]
    p = dict(
        x=rng.standard_normal((T, B, X)),
        W_x=rng.standard_normal((G * H, X)) * scale,
        W_h=rng.standard_normal((G * H, H)) * scale,
        b_x=rng.standard_normal(G * H) * scale,
        b_h=rng.standard_normal(G * H) * scale,
        h0=rng.standard_normal((B, H)) * 0.5,
    )
    if kind == "lstm":
        p["c0"] = rng.standard_normal((B, H)) * 0.5
    upstream = dict(
        d_outputs=rng.standard_normal((T, B, H)),
        d_hT=rng.standard_normal((B, H)),
    )
    if kind == "lstm":
        upstream["d_cT"] = rng.standard_normal((B, H))
    return p, upstream


def forward(kind, p):
    if kind == "rnn":
        return naive.rnn_forward(p["x"], p["W_x"], p["W_h"], p["b_x"], p["b_h"], p["h0"])
    if kind == "lstm":
        return naive.lstm_forward(p["x"], p["W_x"], p["W_h"], p["b_x"], p["b_h"], p["h0"], p["c0"])
    return naive.gru_forward(p["x"], p["W_x"], p["W_h"], p["b_x"], p["b_h"], p["h0"])


def backward(kind, p, up):
    args = (p["x"], p["W_x"], p["W_h"], p["b_x"], p["b_h"], p["h0"])
    if kind == "rnn":
        return naive.rnn_backward(*args, up["d_outputs"], d_hT=up.get("d_hT"))
    if kind == "lstm":
        return naive.lstm_backward(*args, p["c0"], up["d_outputs"], d_hT=up.get("d_hT"),
                                   d_cT=up.get("d_cT"))
    return naive.gru_backward(*args, up["d_outputs"], d_hT=up.get("d_hT"))


def scalar_loss(kind, p, up):
    out = forward(kind, p)
    loss = np.sum(out[0] * up["d_outputs"])
    if up.get("d_hT") is not None:
        loss += np.sum(out[1] * up["d_hT"])
    if kind == "lstm" and up.get("d_cT") is not None:
        loss += np.sum(out[2] * up["d_cT"])
    return loss


GRAD_NAME = dict(x="dx", W_x="dW_x", W_h="dW_h", b_x="db_x", b_h="db_h", h0="dh0", c0="dc0")


# ---------------------------------------------------------------------------
# naive.py: backward vs finite differences
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("final_grads", [False, True], ids=["outputs-only", "with-final-state-grads"])
def test_naive_backward_matches_finite_differences(kind, seed, final_grads):
    p, up = make_problem(kind, seed)
    if not final_grads:
        up = {"d_outputs": up["d_outputs"]}
    grads = backward(kind, p, up)
    expected_keys = {"dx", "dW_x", "dW_h", "db_x", "db_h", "dh0"} | ({"dc0"} if kind == "lstm" else set())
    assert set(grads) == expected_keys
    for name, arr in p.items():
        fd = naive.finite_difference_grad(lambda: scalar_loss(kind, p, up), arr)
        got = grads[GRAD_NAME[name]]
        assert got.shape == arr.shape, name
        np.testing.assert_allclose(got, fd, rtol=FD_RTOL, atol=FD_ATOL, err_msg=f"{kind} {name}")


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_naive_final_state_grads_alone(kind):
    """Only d_hT (and d_cT) non-zero: gradient must equal FD of sum(h_T*d_hT [+ c_T*d_cT])."""
    p, up = make_problem(kind, 7, T=4)
    up["d_outputs"] = np.zeros_like(up["d_outputs"])
    grads = backward(kind, p, up)
    for name, arr in p.items():
        fd = naive.finite_difference_grad(lambda: scalar_loss(kind, p, up), arr)
        np.testing.assert_allclose(grads[GRAD_NAME[name]], fd, rtol=FD_RTOL, atol=FD_ATOL,
                                   err_msg=f"{kind} {name}")


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_naive_forward_returns_last_state(kind):
    p, _ = make_problem(kind, 3, T=5)
    out = forward(kind, p)
    assert out[0].shape == (5, 2, 4)
    np.testing.assert_array_equal(out[1], out[0][-1])
    if kind == "lstm":
        assert out[2].shape == (2, 4)


def test_finite_difference_grad_restores_array():
    a = np.array([[1.0, -2.0], [0.5, 3.0]])
    before = a.copy()
    g = naive.finite_difference_grad(lambda: np.sum(a ** 3), a)
    np.testing.assert_array_equal(a, before)
    np.testing.assert_allclose(g, 3 * before ** 2, rtol=1e-8)
    assert g.dtype == np.float64


# ---------------------------------------------------------------------------
# naive.py: forward (and backward) vs torch.nn
# ---------------------------------------------------------------------------

def _torch_module(torch, kind, X, H):
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind]
    kwargs = dict(nonlinearity="tanh") if kind == "rnn" else {}
    return cls(X, H, num_layers=1, bias=True, batch_first=False, dtype=torch.float64, **kwargs)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("seed", [0, 1])
def test_naive_matches_torch(kind, seed):
    torch = pytest.importorskip("torch")
    T, B, X, H = 5, 3, 4, 6
    p, up = make_problem(kind, seed, T=T, B=B, X=X, H=H)
    m = _torch_module(torch, kind, X, H)
    with torch.no_grad():
        m.weight_ih_l0.copy_(torch.from_numpy(p["W_x"]))
        m.weight_hh_l0.copy_(torch.from_numpy(p["W_h"]))
        m.bias_ih_l0.copy_(torch.from_numpy(p["b_x"]))
        m.bias_hh_l0.copy_(torch.from_numpy(p["b_h"]))

    xt = torch.from_numpy(p["x"].copy()).requires_grad_(True)
    h0t = torch.from_numpy(p["h0"].copy()[None]).requires_grad_(True)
    if kind == "lstm":
        c0t = torch.from_numpy(p["c0"].copy()[None]).requires_grad_(True)
        out_t, (hT_t, cT_t) = m(xt, (h0t, c0t))
    else:
        out_t, hT_t = m(xt, h0t)

    ours = forward(kind, p)
    tol = dict(rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours[0], out_t.detach().numpy(), **tol)
    np.testing.assert_allclose(ours[1], hT_t.detach().numpy()[0], **tol)
    if kind == "lstm":
        np.testing.assert_allclose(ours[2], cT_t.detach().numpy()[0], **tol)

    # gradients through torch autograd as a second opinion
    loss = (out_t * torch.from_numpy(up["d_outputs"])).sum() + (hT_t[0] * torch.from_numpy(up["d_hT"])).sum()
    if kind == "lstm":
        loss = loss + (cT_t[0] * torch.from_numpy(up["d_cT"])).sum()
    loss.backward()
    grads = backward(kind, p, up)
    gtol = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["dx"], xt.grad.numpy(), **gtol)
    np.testing.assert_allclose(grads["dW_x"], m.weight_ih_l0.grad.numpy(), **gtol)
    np.testing.assert_allclose(grads["dW_h"], m.weight_hh_l0.grad.numpy(), **gtol)
    np.testing.assert_allclose(grads["db_x"], m.bias_ih_l0.grad.numpy(), **gtol)
    np.testing.assert_allclose(grads["db_h"], m.bias_hh_l0.grad.numpy(), **gtol)
    np.testing.assert_allclose(grads["dh0"], h0t.grad.numpy()[0], **gtol)
    if kind == "lstm":
        np.testing.assert_allclose(grads["dc0"], c0t.grad.numpy()[0], **gtol)


# ---------------------------------------------------------------------------
# naive.py: one_hot and softmax_cross_entropy
# ---------------------------------------------------------------------------

def test_one_hot():
    idx = np.array([[0, 2], [-1, 1], [3, -1]])
    oh = naive.one_hot(idx, 4, np.float32)
    assert oh.shape == (3, 2, 4) and oh.dtype == np.float32
    expected = np.zeros((3, 2, 4), np.float32)
    expected[0, 0, 0] = expected[0, 1, 2] = expected[1, 1, 1] = expected[2, 0, 3] = 1
    np.testing.assert_array_equal(oh, expected)


@pytest.mark.parametrize("use_mask", [False, True])
def test_softmax_cross_entropy_gradient(use_mask):
    rng = np.random.default_rng(11)
    N, V = 6, 5
    logits = rng.standard_normal((N, V)) * 3
    targets = rng.integers(0, V, N)
    mask = np.array([1, 0, 1, 1, 0, 1], dtype=np.float64) if use_mask else None
    if use_mask:
        targets[1] = -1  # masked rows may carry an invalid target
    loss, dlogits = naive.softmax_cross_entropy(logits, targets, mask)
    fd = naive.finite_difference_grad(lambda: naive.softmax_cross_entropy(logits, targets, mask)[0], logits)
    np.testing.assert_allclose(dlogits, fd, rtol=FD_RTOL, atol=FD_ATOL)
    if use_mask:
        assert np.all(dlogits[[1, 4]] == 0)
    # direct formula
    keep = np.ones(N, bool) if mask is None else mask.astype(bool)
    logp = logits - logits.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    np.testing.assert_allclose(loss, -logp[keep, targets[keep]].sum(), rtol=1e-13)


def test_softmax_cross_entropy_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((7, 9)) * 10
    targets = rng.integers(0, 9, 7)
    loss, dlogits = naive.softmax_cross_entropy(logits, targets)
    lt = torch.from_numpy(logits.copy()).requires_grad_(True)
    ref = torch.nn.functional.cross_entropy(lt, torch.from_numpy(targets), reduction="sum")
    ref.backward()
    np.testing.assert_allclose(loss, ref.item(), rtol=1e-12)
    np.testing.assert_allclose(dlogits, lt.grad.numpy(), rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------------------
# course_reference.py vs naive.py (same maths, different layout)
# ---------------------------------------------------------------------------

def test_course_rnn_equals_naive_rnn():
    rng = np.random.default_rng(0)
    n_x, n_a, n_y, m, T = 3, 5, 2, 4, 6
    x = rng.standard_normal((n_x, m, T))
    a0 = rng.standard_normal((n_a, m))
    par = dict(Wax=rng.standard_normal((n_a, n_x)), Waa=rng.standard_normal((n_a, n_a)) * 0.5,
               Wya=rng.standard_normal((n_y, n_a)), ba=rng.standard_normal((n_a, 1)),
               by=rng.standard_normal((n_y, 1)))
    a, _, caches = cr.step_by_step.rnn_forward(x, a0, par)
    xt = np.ascontiguousarray(x.transpose(2, 1, 0))
    zeros = np.zeros(n_a)
    out, _ = naive.rnn_forward(xt, par["Wax"], par["Waa"], par["ba"][:, 0], zeros, a0.T)
    np.testing.assert_allclose(a.transpose(2, 1, 0), out, rtol=1e-13, atol=1e-15)

    da = rng.standard_normal((n_a, m, T))
    g = cr.step_by_step.rnn_backward(da, caches)
    gn = naive.rnn_backward(xt, par["Wax"], par["Waa"], par["ba"][:, 0], zeros, a0.T, da.transpose(2, 1, 0))
    np.testing.assert_allclose(g["dx"].transpose(2, 1, 0), gn["dx"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g["dWax"], gn["dW_x"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g["dWaa"], gn["dW_h"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g["dba"][:, 0], gn["db_x"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g["da0"], gn["dh0"].T, rtol=1e-12, atol=1e-14)


def test_course_lstm_equals_naive_lstm():
    rng = np.random.default_rng(1)
    n_x, n_a, n_y, m, T = 3, 5, 2, 4, 6
    x = rng.standard_normal((n_x, m, T))
    a0 = rng.standard_normal((n_a, m))
    par = {}
    for g in "fioc":
        par["W" + g] = rng.standard_normal((n_a, n_a + n_x)) * 0.6
        par["b" + g] = rng.standard_normal((n_a, 1))
    par["Wy"] = rng.standard_normal((n_y, n_a))
    par["by"] = rng.standard_normal((n_y, 1))
    a, _, c, caches = cr.lstm_forward(x, a0, par)

    # PyTorch gate order i, f, g(=c~), o ; course concat is [a_prev; xt]
    W = np.vstack([par["Wi"], par["Wf"], par["Wc"], par["Wo"]])
    b = np.concatenate([par["bi"], par["bf"], par["bc"], par["bo"]])[:, 0]
    W_h, W_x = W[:, :n_a], W[:, n_a:]
    xt = np.ascontiguousarray(x.transpose(2, 1, 0))
    c0 = np.zeros((m, n_a))
    out, hT, cT = naive.lstm_forward(xt, W_x, W_h, b, np.zeros_like(b), a0.T, c0)
    np.testing.assert_allclose(a.transpose(2, 1, 0), out, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(c[:, :, -1].T, cT, rtol=1e-13, atol=1e-15)

    da = rng.standard_normal((n_a, m, T))
    g = cr.lstm_backward(da, caches)
    gn = naive.lstm_backward(xt, W_x, W_h, b, np.zeros_like(b), a0.T, c0, da.transpose(2, 1, 0))
    dW = np.hstack([gn["dW_h"], gn["dW_x"]])
    for k, name in enumerate("ifco"):
        np.testing.assert_allclose(g["dW" + name], dW[k * n_a:(k + 1) * n_a], rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(g["db" + name][:, 0], gn["db_x"][k * n_a:(k + 1) * n_a], rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(g["dx"].transpose(2, 1, 0), gn["dx"], rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(g["da0"], gn["dh0"].T, rtol=1e-11, atol=1e-13)


# ---------------------------------------------------------------------------
# course_reference.py: gradients vs finite differences
# ---------------------------------------------------------------------------

def _rnn_params(rng, n_x=3, n_a=4, n_y=2):
    return dict(Wax=rng.standard_normal((n_a, n_x)), Waa=rng.standard_normal((n_a, n_a)) * 0.5,
                Wya=rng.standard_normal((n_y, n_a)), ba=rng.standard_normal((n_a, 1)),
                by=rng.standard_normal((n_y, 1)))


def _lstm_params(rng, n_x=3, n_a=4, n_y=2):
    par = {}
    for g in "fico":
        par["W" + g] = rng.standard_normal((n_a, n_a + n_x)) * 0.6
        par["b" + g] = rng.standard_normal((n_a, 1))
    par["Wy"] = rng.standard_normal((n_y, n_a))
    par["by"] = rng.standard_normal((n_y, 1))
    return par


@pytest.mark.parametrize("seed", [0, 1])
def test_course_rnn_cell_backward_fd(seed):
    rng = np.random.default_rng(seed)
    par = _rnn_params(rng)
    xt = rng.standard_normal((3, 5))
    a_prev = rng.standard_normal((4, 5))
    da_next = rng.standard_normal((4, 5))
    _, _, cache = cr.rnn_cell_forward(xt, a_prev, par)
    g = cr.rnn_cell_backward(da_next, cache)
    f = lambda: np.sum(cr.rnn_cell_forward(xt, a_prev, par)[0] * da_next)  # noqa: E731
    for key, arr in [("dxt", xt), ("da_prev", a_prev), ("dWax", par["Wax"]), ("dWaa", par["Waa"]),
                     ("dba", par["ba"])]:
        np.testing.assert_allclose(g[key], naive.finite_difference_grad(f, arr),
                                   rtol=FD_RTOL, atol=FD_ATOL, err_msg=key)


@pytest.mark.parametrize("seed", [0, 1])
def test_course_rnn_backward_fd(seed):
    rng = np.random.default_rng(seed)
    par = _rnn_params(rng)
    x = rng.standard_normal((3, 2, 4))
    a0 = rng.standard_normal((4, 2))
    da = rng.standard_normal((4, 2, 4))
    _, _, caches = cr.step_by_step.rnn_forward(x, a0, par)
    g = cr.step_by_step.rnn_backward(da, caches)
    f = lambda: np.sum(cr.step_by_step.rnn_forward(x, a0, par)[0] * da)  # noqa: E731
    for key, arr in [("dx", x), ("da0", a0), ("dWax", par["Wax"]), ("dWaa", par["Waa"]), ("dba", par["ba"])]:
        np.testing.assert_allclose(g[key], naive.finite_difference_grad(f, arr),
                                   rtol=FD_RTOL, atol=FD_ATOL, err_msg=key)


@pytest.mark.parametrize("seed", [0, 1])
def test_course_lstm_cell_backward_fd(seed):
    rng = np.random.default_rng(seed)
    par = _lstm_params(rng)
    xt = rng.standard_normal((3, 5))
    a_prev = rng.standard_normal((4, 5))
    c_prev = rng.standard_normal((4, 5))
    da_next = rng.standard_normal((4, 5))
    dc_next = rng.standard_normal((4, 5))
    _, _, _, cache = cr.lstm_cell_forward(xt, a_prev, c_prev, par)
    g = cr.lstm_cell_backward(da_next, dc_next, cache)

    def f():
        a_next, c_next, _, _ = cr.lstm_cell_forward(xt, a_prev, c_prev, par)
        return np.sum(a_next * da_next) + np.sum(c_next * dc_next)

    pairs = [("dxt", xt), ("da_prev", a_prev), ("dc_prev", c_prev)]
    pairs += [("dW" + k, par["W" + k]) for k in "fico"] + [("db" + k, par["b" + k]) for k in "fico"]
    for key, arr in pairs:
        np.testing.assert_allclose(g[key], naive.finite_difference_grad(f, arr),
                                   rtol=FD_RTOL, atol=FD_ATOL, err_msg=key)


@pytest.mark.parametrize("seed", [0, 1])
def test_course_lstm_backward_fd(seed):
    rng = np.random.default_rng(seed)
    par = _lstm_params(rng)
    x = rng.standard_normal((3, 2, 4))
    a0 = rng.standard_normal((4, 2))
    da = rng.standard_normal((4, 2, 4))
    _, _, _, caches = cr.lstm_forward(x, a0, par)
    g = cr.lstm_backward(da, caches)
    f = lambda: np.sum(cr.lstm_forward(x, a0, par)[0] * da)  # noqa: E731
    pairs = [("dx", x), ("da0", a0)]
    pairs += [("dW" + k, par["W" + k]) for k in "fico"] + [("db" + k, par["b" + k]) for k in "fico"]
    for key, arr in pairs:
        np.testing.assert_allclose(g[key], naive.finite_difference_grad(f, arr),
                                   rtol=FD_RTOL, atol=FD_ATOL, err_msg=key)


def test_course_dino_rnn_backward_fd():
    rng = np.random.default_rng(3)
    vocab, n_a = 6, 5
    par = dict(Wax=rng.standard_normal((n_a, vocab)), Waa=rng.standard_normal((n_a, n_a)) * 0.5,
               Wya=rng.standard_normal((vocab, n_a)), b=rng.standard_normal((n_a, 1)),
               by=rng.standard_normal((vocab, 1)))
    a0 = rng.standard_normal((n_a, 1))
    X = [None, 2, 4, 1, 3]
    Y = X[1:] + [0]
    loss, cache = cr.dinosaur_island.rnn_forward(X, Y, a0, par, vocab_size=vocab)
    g, a = cr.dinosaur_island.rnn_backward(X, Y, par, cache)
    f = lambda: cr.dinosaur_island.rnn_forward(X, Y, a0, par, vocab_size=vocab)[0]  # noqa: E731
    for key, arr in [("dWax", par["Wax"]), ("dWaa", par["Waa"]), ("dWya", par["Wya"]), ("db", par["b"]),
                     ("dby", par["by"]), ("da_next", a0)]:
        np.testing.assert_allclose(g[key], naive.finite_difference_grad(f, arr),
                                   rtol=FD_RTOL, atol=FD_ATOL, err_msg=key)
    assert a[-1] is not a0 and np.array_equal(a[-1], a0)


# ---------------------------------------------------------------------------
# course_reference.py: the notebooks' published expected outputs
# ---------------------------------------------------------------------------

def test_published_rnn_cell_forward():
    np.random.seed(1)
    xt = np.random.randn(3, 10)
    a_prev = np.random.randn(5, 10)
    par = {}
    par["Waa"] = np.random.randn(5, 5)
    par["Wax"] = np.random.randn(5, 3)
    par["Wya"] = np.random.randn(2, 5)
    par["ba"] = np.random.randn(5, 1)
    par["by"] = np.random.randn(2, 1)
    a_next, yt_pred, cache = cr.rnn_cell_forward(xt, a_prev, par)
    np.testing.assert_allclose(a_next[4], [0.59584544, 0.18141802, 0.61311866, 0.99808218, 0.85016201,
                                           0.99980978, -0.18887155, 0.99815551, 0.6531151, 0.82872037],
                               atol=1e-8)
    np.testing.assert_allclose(yt_pred[1], [0.9888161, 0.01682021, 0.21140899, 0.36817467, 0.98988387,
                                            0.88945212, 0.36920224, 0.9966312, 0.9982559, 0.17746526],
                               atol=1e-8)
    assert a_next.shape == (5, 10) and yt_pred.shape == (2, 10)
    assert len(cache) == 4 and cache[0] is a_next and cache[1] is a_prev and cache[2] is xt


def test_published_rnn_forward():
    np.random.seed(1)
    x = np.random.randn(3, 10, 4)
    a0 = np.random.randn(5, 10)
    par = {}
    par["Waa"] = np.random.randn(5, 5)
    par["Wax"] = np.random.randn(5, 3)
    par["Wya"] = np.random.randn(2, 5)
    par["ba"] = np.random.randn(5, 1)
    par["by"] = np.random.randn(2, 1)
    a, y_pred, caches = cr.step_by_step.rnn_forward(x, a0, par)
    np.testing.assert_allclose(a[4][1], [-0.99999375, 0.77911235, -0.99861469, -0.99833267], atol=1e-8)
    np.testing.assert_allclose(y_pred[1][3], [0.79560373, 0.86224861, 0.11118257, 0.81515947], atol=1e-8)
    np.testing.assert_allclose(caches[1][1][3], [-1.1425182, -0.34934272, -0.20889423, 0.58662319], atol=1e-8)
    assert a.shape == (5, 10, 4) and y_pred.shape == (2, 10, 4) and len(caches) == 2


def _published_lstm_params():
    par = {}
    par["Wf"] = np.random.randn(5, 5 + 3)
    par["bf"] = np.random.randn(5, 1)
    par["Wi"] = np.random.randn(5, 5 + 3)
    par["bi"] = np.random.randn(5, 1)
    par["Wo"] = np.random.randn(5, 5 + 3)
    par["bo"] = np.random.randn(5, 1)
    par["Wc"] = np.random.randn(5, 5 + 3)
    par["bc"] = np.random.randn(5, 1)
    par["Wy"] = np.random.randn(2, 5)
    par["by"] = np.random.randn(2, 1)
    return par


def test_published_lstm_cell_forward_and_backward():
    np.random.seed(1)
    xt = np.random.randn(3, 10)
    a_prev = np.random.randn(5, 10)
    c_prev = np.random.randn(5, 10)
    par = _published_lstm_params()
    a_next, c_next, yt, cache = cr.lstm_cell_forward(xt, a_prev, c_prev, par)
    np.testing.assert_allclose(a_next[4], [-0.66408471, 0.0036921, 0.02088357, 0.22834167, -0.85575339,
                                           0.00138482, 0.76566531, 0.34631421, -0.00215674, 0.43827275],
                               atol=1e-8)
    np.testing.assert_allclose(c_next[2], [0.63267805, 1.00570849, 0.35504474, 0.20690913, -1.64566718,
                                           0.11832942, 0.76449811, -0.0981561, -0.74348425, -0.26810932],
                               atol=1e-8)
    np.testing.assert_allclose(yt[1], [0.79913913, 0.15986619, 0.22412122, 0.15606108, 0.97057211,
                                       0.31146381, 0.00943007, 0.12666353, 0.39380172, 0.07828381], atol=1e-8)
    np.testing.assert_allclose(cache[1][3], [-0.16263996, 1.03729328, 0.72938082, -0.54101719, 0.02752074,
                                             -0.30821874, 0.07651101, -1.03752894, 1.41219977, -0.37647422],
                               atol=1e-8)
    assert len(cache) == 10

    da_next = np.random.randn(5, 10)
    dc_next = np.random.randn(5, 10)
    g = cr.lstm_cell_backward(da_next, dc_next, cache)
    np.testing.assert_allclose(g["dxt"][1][2], 3.23055911511, atol=1e-10)
    np.testing.assert_allclose(g["da_prev"][2][3], -0.0639621419711, atol=1e-10)
    np.testing.assert_allclose(g["dc_prev"][2][3], 0.797522038797, atol=1e-10)
    np.testing.assert_allclose(g["dWf"][3][1], -0.147954838164, atol=1e-10)
    np.testing.assert_allclose(g["dWi"][1][2], 1.05749805523, atol=1e-10)
    np.testing.assert_allclose(g["dWc"][3][1], 2.30456216369, atol=1e-10)
    np.testing.assert_allclose(g["dWo"][1][2], 0.331311595289, atol=1e-10)
    np.testing.assert_allclose(g["dbf"][4], [0.18864637], atol=1e-8)
    np.testing.assert_allclose(g["dbi"][4], [-0.40142491], atol=1e-8)
    np.testing.assert_allclose(g["dbc"][4], [0.25587763], atol=1e-8)
    np.testing.assert_allclose(g["dbo"][4], [0.13893342], atol=1e-8)
    assert g["dxt"].shape == (3, 10) and g["dWf"].shape == (5, 8) and g["dbo"].shape == (5, 1)


def test_published_lstm_forward():
    np.random.seed(1)
    x = np.random.randn(3, 10, 7)
    a0 = np.random.randn(5, 10)
    par = _published_lstm_params()
    a, y, c, caches = cr.lstm_forward(x, a0, par)
    np.testing.assert_allclose(a[4][3][6], 0.172117767533, atol=1e-11)
    np.testing.assert_allclose(y[1][4][3], 0.95087346185, atol=1e-10)
    np.testing.assert_allclose(c[1][2][1], -0.855544916718, atol=1e-11)
    assert a.shape == (5, 10, 7) and y.shape == (2, 10, 7) and len(caches) == 2
    # T_x is taken from da: a shorter da only back-propagates through the first steps
    da = np.random.randn(5, 10, 4)
    g = cr.lstm_backward(da, caches)
    assert g["dx"].shape == (3, 10, 4) and g["da0"].shape == (5, 10) and g["dWf"].shape == (5, 8)


def test_published_rnn_cell_backward():
    np.random.seed(1)
    xt = np.random.randn(3, 10)
    a_prev = np.random.randn(5, 10)
    par = {}
    par["Wax"] = np.random.randn(5, 3)
    par["Waa"] = np.random.randn(5, 5)
    par["Wya"] = np.random.randn(2, 5)
    par["ba"] = np.random.randn(5, 1)
    par["by"] = np.random.randn(2, 1)
    _, _, cache = cr.rnn_cell_forward(xt, a_prev, par)
    da_next = np.random.randn(5, 10)
    g = cr.rnn_cell_backward(da_next, cache)
    np.testing.assert_allclose(g["dxt"][1][2], -1.3872130506, atol=1e-10)
    np.testing.assert_allclose(g["da_prev"][2][3], -0.152399493774, atol=1e-10)
    np.testing.assert_allclose(g["dWax"][3][1], 0.410772824935, atol=1e-10)
    np.testing.assert_allclose(g["dWaa"][1][2], 1.15034506685, atol=1e-10)
    np.testing.assert_allclose(g["dba"][4], [0.20023491], atol=1e-8)
    assert g["dxt"].shape == (3, 10) and g["da_prev"].shape == (5, 10) and g["dba"].shape == (5, 1)


def test_published_rnn_backward():
    np.random.seed(1)
    x = np.random.randn(3, 10, 4)
    a0 = np.random.randn(5, 10)
    par = {}
    par["Wax"] = np.random.randn(5, 3)
    par["Waa"] = np.random.randn(5, 5)
    par["Wya"] = np.random.randn(2, 5)
    par["ba"] = np.random.randn(5, 1)
    par["by"] = np.random.randn(2, 1)
    _, _, caches = cr.step_by_step.rnn_forward(x, a0, par)
    da = np.random.randn(5, 10, 4)
    g = cr.step_by_step.rnn_backward(da, caches)
    np.testing.assert_allclose(g["dx"][1][2], [-2.07101689, -0.59255627, 0.02466855, 0.01483317], atol=1e-8)
    np.testing.assert_allclose(g["da0"][2][3], -0.314942375127, atol=1e-10)
    np.testing.assert_allclose(g["dWax"][3][1], 11.2641044965, atol=1e-9)
    np.testing.assert_allclose(g["dWaa"][1][2], 2.30333312658, atol=1e-10)
    np.testing.assert_allclose(g["dba"][4], [-0.74747722], atol=1e-8)
    assert g["dx"].shape == (3, 10, 4) and g["da0"].shape == (5, 10)


# --- Dinosaur Island --------------------------------------------------------

NOTEBOOK_CHARS = ["\n"] + list(string.ascii_lowercase)
CHAR_TO_IX = {ch: i for i, ch in enumerate(NOTEBOOK_CHARS)}
IX_TO_CHAR = {i: ch for i, ch in enumerate(NOTEBOOK_CHARS)}


@pytest.mark.parametrize("max_value, expected", [
    (10, (10.0, -10.0, 0.2971381536101662, [10.0], [8.45833407])),
    (5, (5.0, -5.0, 0.2971381536101662, [5.0], [5.0])),
])
def test_published_clip(max_value, expected):
    np.random.seed(3)
    dWax = np.random.randn(5, 3) * 10
    dWaa = np.random.randn(5, 5) * 10
    dWya = np.random.randn(2, 5) * 10
    db = np.random.randn(5, 1) * 10
    dby = np.random.randn(2, 1) * 10
    gradients = {"dWax": dWax, "dWaa": dWaa, "dWya": dWya, "db": db, "dby": dby, "da_next": np.ones(3)}
    before = {k: v.copy() for k, v in gradients.items()}
    g2 = cr.clip(gradients, max_value)
    assert set(g2) == {"dWaa", "dWax", "dWya", "db", "dby"}
    for k in before:  # the input is not modified
        np.testing.assert_array_equal(gradients[k], before[k])
    np.testing.assert_allclose(g2["dWaa"][1][2], expected[0], atol=1e-12)
    np.testing.assert_allclose(g2["dWax"][3][1], expected[1], atol=1e-12)
    np.testing.assert_allclose(g2["dWya"][1][2], expected[2], atol=1e-12)
    np.testing.assert_allclose(g2["db"][4], expected[3], atol=1e-8)
    np.testing.assert_allclose(g2["dby"][1], expected[4], atol=1e-8)


def test_published_sample():
    vocab_size = 27
    np.random.seed(24)
    _, n_a = 20, 100
    Wax, Waa, Wya = np.random.randn(n_a, vocab_size), np.random.randn(n_a, n_a), np.random.randn(vocab_size, n_a)
    b, by = np.random.randn(n_a, 1), np.random.randn(vocab_size, 1)
    parameters = {"Wax": Wax, "Waa": Waa, "Wya": Wya, "b": b, "by": by}
    indices = cr.sample(parameters, CHAR_TO_IX, 0)
    assert [int(i) for i in indices] == [23, 16, 26, 26, 24, 3, 21, 1, 7, 24, 15, 3, 25, 20, 6, 13, 10, 8, 20,
                                         12, 2, 0]
    assert "".join(IX_TO_CHAR[i] for i in indices) == "wpzzxcuagxocytfmjhtlb\n"


def test_published_optimize():
    np.random.seed(1)
    vocab_size, n_a = 27, 100
    a_prev = np.random.randn(n_a, 1)
    Wax, Waa, Wya = np.random.randn(n_a, vocab_size), np.random.randn(n_a, n_a), np.random.randn(vocab_size, n_a)
    b, by = np.random.randn(n_a, 1), np.random.randn(vocab_size, 1)
    parameters = {"Wax": Wax, "Waa": Waa, "Wya": Wya, "b": b, "by": by}
    old = {k: v.copy() for k, v in parameters.items()}
    X = [12, 3, 5, 11, 22, 3]
    Y = [4, 14, 11, 22, 25, 26]
    loss, gradients, a_last = cr.optimize(X, Y, a_prev, parameters, learning_rate=0.01)
    np.testing.assert_allclose(loss, 126.50397572165389, rtol=1e-12)
    np.testing.assert_allclose(gradients["dWaa"][1][2], 0.19470931534713587, rtol=1e-10)
    assert np.argmax(gradients["dWax"]) == 93
    np.testing.assert_allclose(gradients["dWya"][1][2], -0.007773876032002162, rtol=1e-9)
    np.testing.assert_allclose(gradients["db"][4], [-0.06809825], atol=1e-8)
    np.testing.assert_allclose(gradients["dby"][1], [0.01538192], atol=1e-8)
    np.testing.assert_allclose(a_last[4], [-1.0], atol=1e-8)
    # parameters updated in place with the clipped gradients
    for k, gk in [("Wax", "dWax"), ("Waa", "dWaa"), ("Wya", "dWya"), ("b", "db"), ("by", "dby")]:
        np.testing.assert_allclose(parameters[k], old[k] - 0.01 * gradients[gk], rtol=1e-14)
        assert np.abs(gradients[gk]).max() <= 5


def test_initialize_parameters_and_helpers():
    p = cr.initialize_parameters(50, 27, 27)
    np.random.seed(1)
    np.testing.assert_array_equal(p["Wax"], np.random.randn(50, 27) * 0.01)
    np.testing.assert_array_equal(p["Waa"], np.random.randn(50, 50) * 0.01)
    np.testing.assert_array_equal(p["Wya"], np.random.randn(27, 50) * 0.01)
    assert not p["b"].any() and not p["by"].any() and p["b"].shape == (50, 1) and p["by"].shape == (27, 1)
    assert list(p) == ["Wax", "Waa", "Wya", "b", "by"]
    np.testing.assert_allclose(cr.get_initial_loss(27, 7), 7 * np.log(27))
    assert cr.smooth(10.0, 20.0) == pytest.approx(10.01)
    assert cr.get_sample([1, 2, 3, 0], IX_TO_CHAR) == "Abc\n"


EXPECTED_ITER_0 = """Iteration: 0, Loss: 23.087336

Nkzxwtdmfqoeyhsqwasjkjvu
Kneb
Kzxwtdmfqoeyhsqwasjkjvu
Neb
Zxwtdmfqoeyhsqwasjkjvu
Eb
Xwtdmfqoeyhsqwasjkjvu


"""

EXPECTED_ITER_2000 = """Iteration: 2000, Loss: 27.884160

Liusskeomnolxeros
Hmdaairus
Hytroligoraurus
Lecalosapaus
Xusicikoraurus
Abalpsamantisaurus
Tpraneronxeros


"""


@pytest.mark.skipif(not DINOS.exists(), reason=DINOS_MISSING)
def test_published_dinosaur_model():
    data = open(DINOS, "r").read()
    data = data.lower()
    chars = sorted(list(set(data)))
    assert chars == NOTEBOOK_CHARS
    char_to_ix = {ch: i for i, ch in enumerate(chars)}
    ix_to_char = {i: ch for i, ch in enumerate(chars)}
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        parameters, last_name = cr.model(data.split("\n"), ix_to_char, char_to_ix, 2001)
    out = buf.getvalue()
    assert out == EXPECTED_ITER_0 + EXPECTED_ITER_2000
    assert last_name == "Tpraneronxeros\n"
    assert set(parameters) == {"Wax", "Waa", "Wya", "b", "by"}
