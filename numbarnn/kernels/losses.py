"""Losses on logits. fastmath stays off: these feed NaN checks."""
import math

import numpy as np

from ._jit import jit
from .activations import exp_nonpositive


@jit
def _softmax_row(logits2d, n, probs2d):
    """Writes softmax of row n into probs2d[n]; returns log of the normaliser (log-sum-exp)."""
    # One short loop per step so the exp and the scaling vectorise (exp_nonpositive, unlike
    # libm's, is plain arithmetic); the maximum and the sum keep four partial ones to break
    # their dependency chains (the maximum is the same whatever the order; a NaN never
    # replaces one, as in a single chain, and its exp makes the row NaN either way).
    V = logits2d.shape[1]
    row = logits2d[n]
    probs = probs2d[n]
    V4 = V - V % 4
    m0 = m1 = m2 = m3 = row[0]
    for k in range(0, V4, 4):
        if row[k] > m0:
            m0 = row[k]
        if row[k + 1] > m1:
            m1 = row[k + 1]
        if row[k + 2] > m2:
            m2 = row[k + 2]
        if row[k + 3] > m3:
            m3 = row[k + 3]
    for k in range(V4, V):
        if row[k] > m0:
            m0 = row[k]
    m = m0
    for other in (m1, m2, m3):
        if other > m:
            m = other
    for k in range(V):
        probs[k] = exp_nonpositive(row[k] - m)
    s0 = s1 = s2 = s3 = 0.0
    for k in range(0, V4, 4):
        s0 += probs[k]
        s1 += probs[k + 1]
        s2 += probs[k + 2]
        s3 += probs[k + 3]
    for k in range(V4, V):
        s0 += probs[k]
    s = (s0 + s1) + (s2 + s3)
    inv = 1.0 / s
    for k in range(V):
        probs[k] *= inv
    return m + math.log(s)


@jit
def softmax_rows(logits2d, probs2d):
    """Row-wise softmax, max-shifted so exp never overflows.

    logits2d (N, V) -> probs2d (N, V), one float dtype.

    >>> import numpy as np
    >>> from numbarnn.kernels.losses import softmax_rows
    >>> logits2d = np.array([[0.0, 0.0], [1000.0, 1000.0 + np.log(3.0)]])
    >>> probs2d = np.empty_like(logits2d)
    >>> softmax_rows(logits2d, probs2d)
    >>> probs2d.round(4).tolist()
    [[0.5, 0.5], [0.25, 0.75]]
    """
    for n in range(logits2d.shape[0]):
        _softmax_row(logits2d, n, probs2d)


@jit
def softmax_cross_entropy(logits2d, targets, mask, probs2d, dlogits2d):
    """Sum over rows of ``-mask * log softmax(logits)[target]``; writes probs and the gradient.

    targets (N,) integers in [0, V); mask (N,) weights (0 for padding). Returns the
    loss as float64, computed from log-sum-exp so a tiny probability never gives log(0).
    dlogits2d = mask * (probs - onehot(target)).

    logits2d, probs2d, dlogits2d (N, V), one float dtype; targets int64; mask of the
    logits' dtype.

    >>> import numpy as np
    >>> from numbarnn.kernels.losses import softmax_cross_entropy
    >>> rng = np.random.default_rng(0)
    >>> logits2d, targets, mask = rng.normal(size=(3, 4)), np.array([0, 3, 1], np.int64), np.array([1.0, 1.0, 0.0])
    >>> probs2d, dlogits2d = np.empty((3, 4)), np.empty((3, 4))
    >>> loss = softmax_cross_entropy(logits2d, targets, mask, probs2d, dlogits2d)
    >>> p = np.exp(logits2d) / np.exp(logits2d).sum(axis=1, keepdims=True)
    >>> np.allclose(loss, -np.log(p[[0, 1], [0, 3]]).sum())  # the masked row adds nothing
    True
    >>> np.allclose(dlogits2d, mask[:, None] * (p - np.eye(4)[targets]))
    True
    """
    N, V = logits2d.shape
    loss = 0.0
    for n in range(N):
        lse = _softmax_row(logits2d, n, probs2d)
        w = mask[n]
        y = targets[n]
        if w != 0.0:
            loss -= w * (logits2d[n, y] - lse)
        for k in range(V):
            dlogits2d[n, k] = w * probs2d[n, k]
        dlogits2d[n, y] -= w
    return loss


@jit
def squared_error(outputs2d, targets2d, mask, dout2d):
    """Half the masked sum of squared errors: ``0.5 * sum_n mask[n] * sum_k (out - target)^2``.

    outputs2d, targets2d, dout2d (N, V); mask (N,) weights (0 for padding). The 0.5
    makes the gradient exactly ``dout2d = mask * (out - target)``. Rows with mask 0
    get a zero gradient whatever their targets hold (padding may be NaN). Returns float64.

    >>> import numpy as np
    >>> from numbarnn.kernels.losses import squared_error
    >>> outputs2d = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> targets2d = np.array([[0.0, 2.0], [np.nan, 0.0]])  # row 1 is padding
    >>> dout2d = np.empty((2, 2))
    >>> squared_error(outputs2d, targets2d, np.array([2.0, 0.0]), dout2d)
    1.0
    >>> dout2d.tolist()
    [[2.0, 0.0], [0.0, 0.0]]
    """
    N, V = outputs2d.shape
    loss = 0.0
    for n in range(N):
        w = mask[n]
        if w == 0.0:
            for k in range(V):
                dout2d[n, k] = 0.0
            continue
        row = 0.0
        for k in range(V):
            d = outputs2d[n, k] - targets2d[n, k]
            row += np.float64(d) * np.float64(d)
            dout2d[n, k] = w * d
        loss += 0.5 * w * row
    return loss
