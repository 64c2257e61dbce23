"""The vectorisable activations against NumPy/SciPy, in both precisions, at the edges too."""
import numpy as np
import pytest
from numba import njit
from scipy.special import expit

from numbarnn.kernels.activations import exp_nonpositive, sigmoid, tanh


@njit
def apply_sigmoid(z, out):
    for i in range(z.shape[0]):
        out[i] = sigmoid(z[i])


@njit
def apply_tanh(z, out):
    for i in range(z.shape[0]):
        out[i] = tanh(z[i])


@njit
def apply_exp_nonpositive(x, out):
    for i in range(x.shape[0]):
        out[i] = exp_nonpositive(x[i])


def arguments(dtype):
    rng = np.random.default_rng(0)
    edges = [0.0, -0.0, 1e-300, -1e-30, 1e-8, -1e-4, 0.3465, -0.3466, 0.35, 1.0, -1.0, 9.0, 19.0, 20.0, -40.0, 88.0,
             -90.0, 700.0, -710.0, 1e300, -1e300]
    z = np.concatenate([edges, rng.normal(scale=3, size=5000), rng.uniform(-1e-3, 1e-3, 1000),
                        rng.uniform(-30, 30, 5000)])
    with np.errstate(over="ignore"):
        return z.astype(dtype)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-15), (np.float32, 4e-7)])
def test_sigmoid_and_tanh_match_the_references(dtype, rtol):
    z = arguments(dtype)
    out = np.empty_like(z)
    apply_tanh(z, out)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, np.tanh(z.astype(np.float64)), rtol=rtol, atol=0)
    assert np.signbit(out[1]) and out[0] == 0.0  # tanh(-0.0) = -0.0
    apply_sigmoid(z, out)
    expected = expit(z.astype(np.float64))
    tiny = expected < np.finfo(dtype).tiny * 1e3  # far tails: any tiny value is right
    np.testing.assert_allclose(out[~tiny], expected[~tiny], rtol=rtol, atol=0)
    assert (out[tiny] >= 0).all() and (out[tiny] < 1e-30).all()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nan_and_infinities(dtype):
    z = np.array([np.nan, np.inf, -np.inf], dtype=dtype)
    out = np.empty_like(z)
    apply_tanh(z, out)
    assert np.isnan(out[0]) and out[1] == 1.0 and out[2] == -1.0
    apply_sigmoid(z, out)
    assert np.isnan(out[0]) and out[1] == 1.0 and 0.0 <= out[2] < 1e-30


@pytest.mark.parametrize("dtype, rtol, low", [(np.float64, 3e-16, -708.0), (np.float32, 1.2e-7, -87.0)])
def test_exp_nonpositive_matches_exp_and_is_zero_below_its_range(dtype, rtol, low):
    z = arguments(dtype)
    x = -np.abs(z)
    out = np.empty_like(x)
    apply_exp_nonpositive(x, out)
    assert out.dtype == dtype
    in_range = x >= low
    np.testing.assert_allclose(out[in_range], np.exp(x[in_range].astype(np.float64)), rtol=rtol, atol=0)
    assert (out[~in_range] == 0.0).all() and (~in_range).sum() >= 3  # -90/-710/-1e300 are in the edges
    special = np.array([0.0, -0.0, -np.inf, np.nan], dtype)
    out = np.empty_like(special)
    apply_exp_nonpositive(special, out)
    assert out[0] == 1.0 and out[1] == 1.0 and out[2] == 0.0 and np.isnan(out[3])


def test_python_fallbacks_agree():
    assert sigmoid(0.5) == pytest.approx(expit(0.5), rel=1e-15)
    assert tanh(0.5) == pytest.approx(np.tanh(0.5), rel=1e-15)
