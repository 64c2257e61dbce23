"""numbarnn.datasets: the shipped real data sets (the ``datasets`` extra) and the forecasting helpers."""
import sys

import numpy as np
import pytest

from numbarnn import datasets
from numbarnn.datasets import Standardiser, forecast_windows, windows


def _needs(module):
    return pytest.importorskip(module, reason=f"{module} is not installed (pip install 'numbarnn[datasets]')")


# ---- the loaders ------------------------------------------------------------------------------------

def test_digits_are_sequences_of_rows():
    sklearn_datasets = _needs("sklearn.datasets")
    X, y = datasets.digits()
    assert X.shape == (1797, 8, 8) and X.dtype == np.float32 and X.flags.c_contiguous
    assert y.shape == (1797,) and y.dtype == np.int64
    assert np.isfinite(X).all() and X.min() == 0.0 and X.max() == 1.0
    assert sorted(set(y.tolist())) == list(range(10))
    # step t of a sequence is row t of its image, left to right
    images = sklearn_datasets.load_digits().images
    np.testing.assert_array_equal(X[5, 2], (images[5, 2] / 16).astype(np.float32))
    X64, _ = datasets.digits(dtype="float64")
    assert X64.dtype == np.float64


def test_co2_is_weekly_and_its_gaps_are_filled():
    co2_module = _needs("statsmodels.datasets.co2")
    series = datasets.co2()
    raw = co2_module.load().data["co2"].to_numpy(dtype=float)
    assert series.shape == (2284,) == raw.shape and series.dtype == np.float64
    assert not np.isnan(series).any() and np.isnan(raw).sum() > 0
    known = ~np.isnan(raw)
    np.testing.assert_array_equal(series[known], raw[known])
    # a missing week lies on the line between the known weeks around it
    gap = int(np.flatnonzero(np.isnan(raw))[0])
    before = gap - 1
    after = gap + int(np.argmax(known[gap:]))
    expected = raw[before] + (raw[after] - raw[before]) * (gap - before) / (after - before)
    assert series[gap] == pytest.approx(expected)
    assert 310 < series.min() < series.max() < 380
    assert datasets.co2(dtype="float32").dtype == np.float32


def test_sunspots():
    _needs("statsmodels.datasets.sunspots")
    series = datasets.sunspots()
    assert series.shape == (309,) and series.dtype == np.float64 and np.isfinite(series).all()
    assert series[:3].tolist() == [5.0, 11.0, 16.0]          # 1700, 1701, 1702


@pytest.mark.parametrize("loader, package, module", [
    (datasets.digits, "scikit-learn", "sklearn.datasets"),
    (datasets.co2, "statsmodels", "statsmodels.datasets.co2"),
    (datasets.sunspots, "statsmodels", "statsmodels.datasets.sunspots"),
])
def test_a_missing_extra_is_named(monkeypatch, loader, package, module):
    monkeypatch.setitem(sys.modules, module, None)            # as if the package were not installed
    with pytest.raises(ImportError, match=rf"needs {package}.*pip install \"numbarnn\[datasets\]\""):
        loader()


def test_bad_dtype_is_refused():
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        datasets.digits(dtype="int32")


# ---- windows and standardisation --------------------------------------------------------------------

@pytest.mark.parametrize("length, stride", [(1, 1), (5, 1), (5, 3), (19, 1)])
def test_windows_line_up_with_the_series(length, stride):
    series = np.random.default_rng(0).normal(size=20)
    X, y = windows(series, length, stride)
    n = (len(series) - length - 1) // stride + 1
    assert X.shape == y.shape == (n, length, 1) and X.dtype == y.dtype == np.float64
    for i in range(n):
        start = i * stride
        np.testing.assert_array_equal(X[i, :, 0], series[start:start + length])
        np.testing.assert_array_equal(y[i, :, 0], series[start + 1:start + length + 1])
    np.testing.assert_array_equal(y[:, :-1], X[:, 1:])        # every step's target is the next input


def test_windows_refuse_bad_input():
    with pytest.raises(ValueError, match="at least 6"):
        windows(np.zeros(5), 5)
    with pytest.raises(ValueError, match="length must be a positive integer"):
        windows(np.zeros(5), 0)
    with pytest.raises(ValueError, match="stride must be a positive integer"):
        windows(np.zeros(5), 2, stride=1.5)
    with pytest.raises(ValueError, match="1-D float array"):
        windows(np.zeros((5, 1)), 2)


def test_standardiser():
    scaler = Standardiser.fit([2.0, 4.0, 6.0])
    np.testing.assert_allclose(scaler.transform(np.array([2.0, 4.0, 6.0])), [-1.2247449, 0.0, 1.2247449])
    np.testing.assert_allclose(scaler.inverse(scaler.transform(np.array([7.5]))), [7.5])
    assert Standardiser.fit([3.0, 3.0]).std == 1.0           # constant: no division by zero
    assert scaler.transform(np.array([1.0], dtype=np.float32)).dtype == np.float32
    with pytest.raises(ValueError, match="finite"):
        Standardiser.fit([1.0, np.nan])


def test_forecast_windows_use_training_statistics_only():
    rng = np.random.default_rng(1)
    series = rng.normal(size=100)
    data = forecast_windows(series, 10, test_fraction=0.25, stride=2)
    train, test = series[:75], series[75:]
    assert data.scaler == Standardiser.fit(train)
    assert data.scaler.mean != pytest.approx(series.mean())
    # changing the test part changes neither the statistics nor the training windows
    shifted = series.copy()
    shifted[75:] += 100.0
    other = forecast_windows(shifted, 10, test_fraction=0.25, stride=2)
    assert other.scaler == data.scaler
    np.testing.assert_array_equal(other.X_train, data.X_train)
    # the windows are those of each part, scaled; no window crosses the split
    X, y = windows((train - train.mean()) / train.std(), 10, 2)
    np.testing.assert_allclose(data.X_train, X)
    np.testing.assert_allclose(data.y_train, y)
    X, y = windows((test - train.mean()) / train.std(), 10, 10)
    np.testing.assert_allclose(data.X_test, X)
    np.testing.assert_allclose(data.y_test, y)
    assert data.X_test.shape == (2, 10, 1)
    np.testing.assert_allclose(data.scaler.inverse(data.y_test[:, :, 0]), [test[1:11], test[11:21]])


def test_forecast_windows_refuse_a_bad_fraction():
    with pytest.raises(ValueError, match="test_fraction"):
        forecast_windows(np.zeros(50), 5, test_fraction=1.0)
