"""Losses as data: a frozen :class:`LossSpec` wrapping a kernel of :mod:`numbarnn.kernels.losses`.

Every loss has one wrapper signature,
``forward_backward(outputs2d, targets, mask, dout2d, scratch2d) -> float``:

* ``outputs2d`` (N, V): the head's output rows (logits), N = T*B;
* ``targets``: (N,) integers in [0, V) when ``targets_kind == "indices"``, or (N, V)
  floats when ``targets_kind == "dense"``; rows with mask 0 may hold anything;
* ``mask`` (N,): per-row weights, 0 for padding;
* ``dout2d`` (N, V): receives d loss / d outputs;
* ``scratch2d`` (N, V): loss-specific scratch (softmax cross-entropy leaves the
  probabilities there; mse does not touch it).

It returns the *summed* masked loss as a Python float; dividing by the number of
rows or sequences is the caller's choice.

Example:
    >>> import numpy as np
    >>> logits = np.zeros((2, 4)); dout = np.empty_like(logits); probs = np.empty_like(logits)
    >>> loss = SOFTMAX_CROSS_ENTROPY.forward_backward(logits, np.array([1, 3]), np.ones(2), dout, probs)
    >>> round(loss, 6), round(2 * float(np.log(4)), 6)
    (2.772589, 2.772589)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from .kernels import losses as _k

TARGETS_KINDS = ("indices", "dense")


@dataclass(frozen=True)
class LossSpec:
    """A registered loss.

    Attributes:
        name: registry name, e.g. ``"softmax_cross_entropy"``.
        description: one line for ``numbarnn list losses``.
        forward_backward: the wrapper described in the module docstring.
        targets_kind: ``"indices"`` ((N,) integer classes) or ``"dense"`` ((N, V) floats).
        defaults: default options, shown by ``numbarnn list losses`` (none for built-ins).

    Example, a loss plugin's spec wrapping a function of the module docstring's signature:
        >>> spec = LossSpec(name="half_mse", description="mse / 2",
        ...                 forward_backward=lambda *a: 0.5 * mse(*a), targets_kind="dense")
        >>> spec.targets_kind
        'dense'
    """

    name: str
    description: str
    forward_backward: Callable[..., float]
    targets_kind: str = "indices"
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"loss name must be a non-empty string, got {self.name!r}")
        if self.targets_kind not in TARGETS_KINDS:
            raise ValueError(f"loss {self.name!r}: targets_kind must be one of {TARGETS_KINDS}, "
                             f"got {self.targets_kind!r}")
        if not callable(self.forward_backward):
            raise ValueError(f"loss {self.name!r}: forward_backward must be callable")


def _check_rows(name, outputs2d, mask, dout2d):
    if outputs2d.ndim != 2:
        raise ValueError(f"{name}: outputs2d must be (N, V), got shape {outputs2d.shape}")
    N = outputs2d.shape[0]
    if mask.shape != (N,):
        raise ValueError(f"{name}: mask must have shape ({N},), got {mask.shape}")
    if dout2d.shape != outputs2d.shape:
        raise ValueError(f"{name}: dout2d must have shape {outputs2d.shape}, got {dout2d.shape}")


def softmax_cross_entropy(outputs2d, targets, mask, dout2d, scratch2d) -> float:
    """Sum of ``-mask * log softmax(outputs)[target]``; scratch2d receives the probabilities.

    dout2d = mask * (probs - onehot(target)). Targets of rows with mask 0 are ignored
    (padding may use -1). Shapes: outputs2d, dout2d, scratch2d (N, V); targets (N,) integers;
    mask (N,).

    >>> logits = np.array([[0.0, 0.0], [5.0, 0.0]])
    >>> dout, probs = np.empty_like(logits), np.empty_like(logits)
    >>> loss = softmax_cross_entropy(logits, np.array([1, -1]), np.array([1.0, 0.0]), dout, probs)
    >>> round(loss, 6), dout.tolist()       # the second row is padding: no loss, no gradient
    (0.693147, [[0.5, -0.5], [0.0, 0.0]])
    """
    _check_rows("softmax_cross_entropy", outputs2d, mask, dout2d)
    N, V = outputs2d.shape
    if targets.shape != (N,) or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"softmax_cross_entropy: targets must be (N,) = ({N},) integers, "
                         f"got shape {targets.shape} dtype {targets.dtype}")
    if scratch2d.shape != outputs2d.shape:
        raise ValueError(f"softmax_cross_entropy: scratch2d must have shape {outputs2d.shape}, "
                         f"got {scratch2d.shape}")
    # The kernel indexes with the target unchecked; an out-of-range target that counts
    # would read and write outside the row.
    bad = (mask != 0) & ((targets < 0) | (targets >= V))
    if bad.any():
        n = int(np.argmax(bad))
        raise ValueError(f"softmax_cross_entropy: target {targets[n]} of row {n} is outside [0, {V})")
    return float(_k.softmax_cross_entropy(outputs2d, targets, mask, scratch2d, dout2d))


def mse(outputs2d, targets, mask, dout2d, scratch2d) -> float:
    """``0.5 * sum mask * (outputs - targets)^2`` over rows and columns (a sum, not a mean).

    The 0.5 makes the gradient ``dout2d = mask * (outputs - targets)``, the usual
    convention; scratch2d is unused. Shapes: outputs2d, targets, dout2d (N, V); mask (N,).

    >>> outputs, targets = np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]])
    >>> dout = np.empty_like(outputs)
    >>> mse(outputs, targets, np.ones(1), dout, None), dout.tolist()
    (2.5, [[1.0, 2.0]])
    """
    _check_rows("mse", outputs2d, mask, dout2d)
    if targets.shape != outputs2d.shape:
        raise ValueError(f"mse: targets must have the shape of the outputs {outputs2d.shape}, "
                         f"got {targets.shape}")
    return float(_k.squared_error(outputs2d, targets, mask, dout2d))


SOFTMAX_CROSS_ENTROPY = LossSpec(
    name="softmax_cross_entropy",
    description="softmax over the outputs, then -log p[target] summed over unmasked rows",
    forward_backward=softmax_cross_entropy, targets_kind="indices",
)

MSE = LossSpec(
    name="mse",
    description="0.5 * sum of squared errors against dense targets, summed over unmasked rows",
    forward_backward=mse, targets_kind="dense",
)

BUILTIN_LOSSES = (SOFTMAX_CROSS_ENTROPY, MSE)
