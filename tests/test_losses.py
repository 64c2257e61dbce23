"""Losses: kernels against NumPy references, gradients against central finite differences."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numbarnn.kernels import losses as kl
from numbarnn.losses import BUILTIN_LOSSES, MSE, SOFTMAX_CROSS_ENTROPY, LossSpec

DTYPES = (np.float32, np.float64)
FAST = settings(max_examples=25, deadline=None)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


# ---- plain NumPy references -------------------------------------------------------------------

def ref_softmax_cross_entropy(logits, targets, mask):
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    rows = np.arange(len(targets))
    safe = np.where(mask != 0, targets, 0)
    loss = -np.sum(mask * logp[rows, safe])
    dlogits = np.exp(logp) * mask[:, None]
    dlogits[rows, safe] -= mask
    return loss, dlogits, np.exp(logp)


def ref_squared_error(outputs, targets, mask):
    diff = outputs.astype(np.float64) - targets.astype(np.float64)
    diff[mask == 0] = 0.0
    return 0.5 * np.sum(mask[:, None] * diff ** 2), mask[:, None] * diff


def make_case(seed, N, V, targets_kind, dtype=np.float64):
    rng = np.random.default_rng(seed)
    outputs = rng.standard_normal((N, V)).astype(dtype)
    mask = rng.choice([0.0, 0.5, 1.0, 1.0], size=N).astype(dtype)
    if targets_kind == "indices":
        targets = rng.integers(0, V, size=N)
        targets[mask == 0] = -1  # padding: ignored
    else:
        targets = rng.standard_normal((N, V)).astype(dtype)
        targets[mask == 0] = np.nan  # padding: ignored
    return outputs, targets, mask


def tol(dtype):
    return dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)


# ---- kernels and wrappers ---------------------------------------------------------------------

@FAST
@given(N=st.integers(1, 12), V=st.integers(1, 15), seed=seeds, dtype=st.sampled_from(DTYPES))
def test_squared_error_kernel(N, V, seed, dtype):
    outputs, targets, mask = make_case(seed, N, V, "dense", dtype)
    dout = np.full_like(outputs, 7.0)
    loss = kl.squared_error(outputs, targets, mask, dout)
    expected_loss, expected_grad = ref_squared_error(outputs, targets, mask)
    assert isinstance(loss, float)
    np.testing.assert_allclose(loss, expected_loss, **tol(dtype))
    np.testing.assert_allclose(dout, expected_grad, **tol(dtype))
    assert dout.dtype == dtype


@FAST
@given(N=st.integers(1, 12), V=st.integers(1, 15), seed=seeds, dtype=st.sampled_from(DTYPES))
def test_softmax_cross_entropy_wrapper(N, V, seed, dtype):
    outputs, targets, mask = make_case(seed, N, V, "indices", dtype)
    dout, probs = np.empty_like(outputs), np.empty_like(outputs)
    loss = SOFTMAX_CROSS_ENTROPY.forward_backward(outputs, targets, mask, dout, probs)
    expected_loss, expected_grad, expected_probs = ref_softmax_cross_entropy(outputs, targets, mask)
    assert type(loss) is float
    np.testing.assert_allclose(loss, expected_loss, **tol(dtype))
    np.testing.assert_allclose(dout, expected_grad, **tol(dtype))
    np.testing.assert_allclose(probs, expected_probs, **tol(dtype))


@FAST
@given(V=st.integers(1, 70), seed=seeds, dtype=st.sampled_from(DTYPES))
def test_the_softmax_shifts_by_the_row_maximum_wherever_it_lies(V, seed, dtype):
    """The maximum is kept in four partial ones (every fourth entry, then the ones left over):
    logits far from zero put it at every position in turn, where a shift by anything but the
    maximum would overflow exp (inf, then NaN) or lose the row to zeros. A NaN anywhere makes
    its row NaN."""
    rng = np.random.default_rng(seed)
    base = (rng.standard_normal(V) + 500.0).astype(dtype)  # exp(500) overflows float32 and float64 alike
    logits = np.stack([base + np.where(np.arange(V) == k, dtype(1000.0), dtype(0.0)) for k in range(V)])
    probs = np.empty_like(logits)
    kl.softmax_rows(logits, probs)
    expected = ref_softmax_cross_entropy(logits, np.zeros(V, np.int64), np.ones(V))[2]
    np.testing.assert_allclose(probs, expected, **tol(dtype))
    k = int(rng.integers(0, V))
    logits[k, int(rng.integers(0, V))] = np.nan
    kl.softmax_rows(logits, probs)
    assert np.isnan(probs[k]).all() and np.isfinite(np.delete(probs, k, axis=0)).all()


@FAST
@given(N=st.integers(1, 12), V=st.integers(1, 15), seed=seeds, dtype=st.sampled_from(DTYPES))
def test_mse_wrapper(N, V, seed, dtype):
    outputs, targets, mask = make_case(seed, N, V, "dense", dtype)
    dout, scratch = np.empty_like(outputs), np.full_like(outputs, 3.0)
    loss = MSE.forward_backward(outputs, targets, mask, dout, scratch)
    expected_loss, expected_grad = ref_squared_error(outputs, targets, mask)
    assert type(loss) is float
    np.testing.assert_allclose(loss, expected_loss, **tol(dtype))
    np.testing.assert_allclose(dout, expected_grad, **tol(dtype))
    np.testing.assert_array_equal(scratch, 3.0)  # untouched


def test_mse_has_the_half():
    dout = np.empty((1, 2))
    loss = MSE.forward_backward(np.array([[3.0, 0.0]]), np.array([[1.0, 0.0]]), np.ones(1), dout, dout)
    assert loss == 2.0  # 0.5 * (3 - 1)^2
    np.testing.assert_array_equal(dout, [[2.0, 0.0]])


# ---- gradients against central finite differences (every registered loss) --------------------

@pytest.mark.parametrize("spec", BUILTIN_LOSSES, ids=lambda s: s.name)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_matches_finite_differences(spec, seed):
    N, V, eps = 5, 4, 1e-6
    outputs, targets, mask = make_case(seed, N, V, spec.targets_kind)
    scratch, dout = np.empty_like(outputs), np.empty_like(outputs)

    def loss_at(x):
        return spec.forward_backward(x, targets, mask, np.empty_like(x), np.empty_like(x))

    spec.forward_backward(outputs, targets, mask, dout, scratch)
    numeric = np.zeros_like(outputs)
    for idx in np.ndindex(outputs.shape):
        plus, minus = outputs.copy(), outputs.copy()
        plus[idx] += eps
        minus[idx] -= eps
        numeric[idx] = (loss_at(plus) - loss_at(minus)) / (2 * eps)
    np.testing.assert_allclose(dout, numeric, rtol=1e-6, atol=1e-8)
    assert np.all(dout[mask == 0] == 0.0)


# ---- the registry entries and errors ----------------------------------------------------------

def test_builtin_losses():
    assert [s.name for s in BUILTIN_LOSSES] == ["softmax_cross_entropy", "mse"]
    assert SOFTMAX_CROSS_ENTROPY.targets_kind == "indices" and MSE.targets_kind == "dense"
    for spec in BUILTIN_LOSSES:
        assert isinstance(spec, LossSpec) and dict(spec.defaults) == {}
        with pytest.raises(Exception):
            spec.name = "other"  # frozen


def test_loss_spec_rejects_unknown_targets_kind():
    with pytest.raises(ValueError, match="targets_kind must be one of \\('indices', 'dense'\\), got 'onehot'"):
        LossSpec(name="x", description="", forward_backward=lambda *a: 0.0, targets_kind="onehot")


def test_softmax_cross_entropy_checks_targets_and_shapes():
    outputs = np.zeros((3, 4))
    dout, probs, mask = np.empty_like(outputs), np.empty_like(outputs), np.ones(3)
    with pytest.raises(ValueError, match="target 4 of row 1 is outside \\[0, 4\\)"):
        SOFTMAX_CROSS_ENTROPY.forward_backward(outputs, np.array([0, 4, 1]), mask, dout, probs)
    with pytest.raises(ValueError, match="target -1 of row 2"):
        SOFTMAX_CROSS_ENTROPY.forward_backward(outputs, np.array([0, 1, -1]), mask, dout, probs)
    with pytest.raises(ValueError, match="integers"):
        SOFTMAX_CROSS_ENTROPY.forward_backward(outputs, np.zeros(3), mask, dout, probs)
    with pytest.raises(ValueError, match="mask must have shape"):
        SOFTMAX_CROSS_ENTROPY.forward_backward(outputs, np.zeros(3, int), np.ones(2), dout, probs)
    # a padded row (mask 0) may carry any target
    loss = SOFTMAX_CROSS_ENTROPY.forward_backward(outputs, np.array([0, 1, -1]), np.array([1.0, 1.0, 0.0]),
                                                  dout, probs)
    np.testing.assert_allclose(loss, 2 * np.log(4))


def test_mse_checks_shapes():
    outputs = np.zeros((3, 4))
    with pytest.raises(ValueError, match="targets must have the shape of the outputs"):
        MSE.forward_backward(outputs, np.zeros(3), np.ones(3), np.empty_like(outputs), outputs)
    with pytest.raises(ValueError, match="dout2d must have shape"):
        MSE.forward_backward(outputs, outputs, np.ones(3), np.empty((3, 3)), outputs)


def test_no_fastmath_in_loss_kernels():
    for name in ("softmax_cross_entropy", "squared_error"):
        assert not getattr(kl, name).targetoptions.get("fastmath"), name
