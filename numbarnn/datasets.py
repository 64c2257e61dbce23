"""Real data sets for the classify and regress tasks, read from packages that ship them (no download).

* :func:`digits`: scikit-learn's 1,797 handwritten digits, each read as a sequence of its
  8 rows of 8 pixels: ``X`` ``(n, 8, 8)`` floats in [0, 1], ``y`` ``(n,)`` classes 0-9.
* :func:`co2`: the Mauna Loa CO2 concentration shipped with statsmodels, weekly from March
  1958 to December 2001 (2,284 weeks, ppm), its 59 missing weeks filled by linear
  interpolation; :func:`sunspots`: statsmodels' yearly sunspot numbers, 1700-2008.
* :func:`windows` cuts a series into supervised windows for a per-step forecaster (the
  target of every step is the next value), :class:`Standardiser` scales with statistics
  of the training part only, and :func:`forecast_windows` does both on a split in time.

The loaders need the optional ``datasets`` extra (``pip install "numbarnn[datasets]"``:
scikit-learn and statsmodels); without it they raise an ``ImportError`` that says so. The
helpers need NumPy only.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

EXTRA = "datasets"


def _require(module: str, package: str, what: str):
    """Import ``module`` or say which extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{what} needs {package}, which is not installed: pip install \"numbarnn[{EXTRA}]\" "
                          f"(or pip install {package})") from error


def _float_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def digits(dtype="float32"):
    """scikit-learn's handwritten digits as sequences: ``(X, y)``.

    ``X`` ``(1797, 8, 8)``: each image's 8 rows, top to bottom, as 8 steps of 8 pixels,
    scaled from 0-16 to [0, 1]; ``y`` ``(1797,)`` int64 digits 0-9, about 180 of each. The
    order is scikit-learn's (the images are not sorted by class); shuffle before splitting.
    """
    sklearn_datasets = _require("sklearn.datasets", "scikit-learn", "numbarnn.datasets.digits")
    bunch = sklearn_datasets.load_digits()
    X = (np.asarray(bunch.images, dtype=np.float64) / 16.0).astype(_float_dtype(dtype))
    return np.ascontiguousarray(X), np.asarray(bunch.target, dtype=np.int64)


def _fill_gaps(values: np.ndarray) -> np.ndarray:
    """Missing values (NaN) by linear interpolation between their neighbours; ends by the nearest value."""
    values = np.array(values, dtype=np.float64)
    missing = np.isnan(values)
    if missing.all():
        raise ValueError("the series has no values")
    steps = np.arange(len(values))
    values[missing] = np.interp(steps[missing], steps[~missing], values[~missing])
    return values


def co2(dtype="float64") -> np.ndarray:
    """Weekly atmospheric CO2 at Mauna Loa (ppm), 1958-03-29 to 2001-12-29: ``(2284,)``.

    statsmodels' ``co2`` data set; its 59 missing weeks are filled by linear interpolation
    between the weeks around them, so the series has no NaN. A rising trend with a yearly
    cycle of about 52 weeks.
    """
    module = _require("statsmodels.datasets.co2", "statsmodels", "numbarnn.datasets.co2")
    values = module.load().data["co2"].to_numpy(dtype=np.float64)
    return _fill_gaps(values).astype(_float_dtype(dtype))


def sunspots(dtype="float64") -> np.ndarray:
    """Yearly mean sunspot numbers, 1700 to 2008: ``(309,)`` (statsmodels' ``sunspots``; no gaps)."""
    module = _require("statsmodels.datasets.sunspots", "statsmodels", "numbarnn.datasets.sunspots")
    values = module.load().data["SUNACTIVITY"].to_numpy(dtype=np.float64)
    return _fill_gaps(values).astype(_float_dtype(dtype))


def windows(series, length: int, stride: int = 1):
    """Supervised windows of a 1-D series for a per-step forecaster: ``(X, y)``.

    ``X`` ``(n, length, 1)`` holds ``series[s : s + length]`` and ``y`` ``(n, length, 1)``
    the values one step later, ``series[s + 1 : s + length + 1]``, for window starts
    ``s = 0, stride, 2 * stride, ...`` while a whole window and its last target fit.
    So ``y[:, t] == X[:, t + 1]`` for ``t < length - 1``: every step's target is the next input.

    >>> X, y = windows(np.arange(7.0), length=3, stride=2)
    >>> X[:, :, 0].tolist(), y[:, :, 0].tolist()
    ([[0.0, 1.0, 2.0], [2.0, 3.0, 4.0]], [[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
    """
    series = np.asarray(series)
    if series.ndim != 1 or not np.issubdtype(series.dtype, np.floating):
        raise ValueError(f"series must be a 1-D float array, got shape {series.shape} dtype {series.dtype}")
    for name, value in (("length", length), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if len(series) < length + 1:
        raise ValueError(f"a series of {len(series)} values has no window of length {length} "
                         f"(it needs at least {length + 1}: the inputs and the next value)")
    # Each row of the sliding view is length + 1 values: the inputs, shifted by one the targets.
    view = np.lib.stride_tricks.sliding_window_view(series, length + 1)[::stride]
    return (np.ascontiguousarray(view[:, :-1, None]), np.ascontiguousarray(view[:, 1:, None]))


@dataclass(frozen=True)
class Standardiser:
    """``(x - mean) / std`` with a mean and standard deviation fitted on training data only,
    so nothing about the test part leaks into the model's inputs.

    >>> scaler = Standardiser.fit(np.array([1.0, 2.0, 3.0]))
    >>> scaler.mean, round(scaler.std, 4), scaler.transform(np.array([4.0])).round(4).tolist()
    (2.0, 0.8165, [2.4495])
    >>> scaler.inverse(scaler.transform(np.array([4.0]))).tolist()
    [4.0]
    """

    mean: float
    std: float

    @classmethod
    def fit(cls, train) -> "Standardiser":
        train = np.asarray(train, dtype=np.float64)
        if train.size == 0 or not np.isfinite(train).all():
            raise ValueError("Standardiser.fit needs a non-empty array of finite values")
        std = float(train.std())
        # A constant training part would divide by zero: scale by 1 instead.
        return cls(float(train.mean()), std if std > 0 else 1.0)

    def transform(self, values):
        values = np.asarray(values)
        return ((values - self.mean) / self.std).astype(values.dtype if values.dtype.kind == "f" else np.float64)

    def inverse(self, values):
        values = np.asarray(values)
        return (values * self.std + self.mean).astype(values.dtype if values.dtype.kind == "f" else np.float64)


class ForecastData(NamedTuple):
    """What :func:`forecast_windows` gives: standardised windows of the training and test
    parts, and the :class:`Standardiser` (fitted on the training part) to undo the scaling."""
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    scaler: Standardiser


def forecast_windows(series, length: int, *, test_fraction: float = 0.2, stride: int = 1,
                     test_stride: int | None = None) -> ForecastData:
    """Split a series in time, standardise it with the training part's statistics, and cut
    each part into :func:`windows`.

    The first ``1 - test_fraction`` of the series is the training part, the rest the test
    part; no window crosses the split (a test window's inputs and targets are all test
    values), and the mean and standard deviation come from the training part alone.
    ``test_stride`` defaults to ``length`` (test windows side by side, each value once).

    >>> data = forecast_windows(np.arange(20.0), length=3, test_fraction=0.4)
    >>> data.X_train.shape, data.X_test.shape, data.scaler.mean
    ((9, 3, 1), (2, 3, 1), 5.5)
    """
    series = np.asarray(series)
    if series.ndim != 1 or not np.issubdtype(series.dtype, np.floating):
        raise ValueError(f"series must be a 1-D float array, got shape {series.shape} dtype {series.dtype}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction!r}")
    split = int(round(len(series) * (1.0 - test_fraction)))
    train, test = series[:split], series[split:]
    scaler = Standardiser.fit(train)
    X_train, y_train = windows(scaler.transform(train), length, stride)
    X_test, y_test = windows(scaler.transform(test), length, length if test_stride is None else test_stride)
    return ForecastData(X_train, y_train, X_test, y_test, scaler)
