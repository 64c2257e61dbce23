"""Picking the next token from one row of probabilities or logits.

Randomness stays outside: the caller draws ``u`` in [0, 1) from a NumPy Generator
and passes it in, so generated text is reproducible from a seed. Sums are taken in
float64 whatever the input dtype. These run once per generated character, not in a
time loop, so ``top_k_filter`` and ``top_p_filter`` may allocate (one argsort each).
"""
import math

import numpy as np

from ._jit import jit

# The sampler modes of the compiled generation loops (CPU ``generate`` in cell_loops.py and the
# CUDA sample kernel): a built-in sampler class declares its mode as ``generation_mode``.
CATEGORICAL, GREEDY, TEMPERATURE, TOP_K, TOP_P = 0, 1, 2, 3, 4


@jit
def sample_categorical(probs, u):
    """Index drawn from probs (V,) by inverse CDF with the uniform u in [0, 1).

    Exactly ``np.random.choice``'s rule: cdf = cumsum(probs) / sum(probs), then
    ``searchsorted(cdf, u, side='right')``; so ``Generator.choice(V, p=probs)`` and
    this kernel with ``u = Generator.random()`` from the same state pick the same index.
    probs need not be normalised; zero-probability entries are never picked.

    probs (V,) float32 or float64; u a float; returns an int.

    >>> import numpy as np
    >>> from numbarnn.kernels.sampling import sample_categorical
    >>> probs = np.array([0.1, 0.2, 0.0, 0.3, 0.4])
    >>> draws = [sample_categorical(probs, u) for u in np.random.default_rng(0).random(8)]
    >>> draws == np.random.default_rng(0).choice(5, size=8, p=probs).tolist()
    True
    >>> sample_categorical(np.array([2.0, 6.0]), 0.25)  # cdf [0.25, 1]: the first cdf above u
    1
    """
    V = probs.shape[0]
    if not (u >= 0.0 and u < 1.0):
        raise ValueError("sample_categorical: u must be in [0, 1)")
    total = 0.0
    for k in range(V):
        pk = np.float64(probs[k])
        if not (pk >= 0.0):  # also catches NaN
            raise ValueError("sample_categorical: probabilities must be non-negative and not NaN")
        total += pk
    if not (total > 0.0 and total < math.inf):
        raise ValueError("sample_categorical: probabilities must have a finite, positive sum")
    # The partial sums are the same sequential float64 sums as np.cumsum, and the scan
    # finds the first cdf > u, which is what the binary search of side='right' returns.
    c = 0.0
    for k in range(V):
        c += np.float64(probs[k])
        if c / total > u:
            return k
    return V - 1  # unreachable: the last cdf is total/total == 1 > u


@jit
def argmax(x):
    """Index of the first largest entry of x (V,), as np.argmax (a NaN counts as largest).

    x (V,) float32 or float64; returns an int.

    >>> import numpy as np
    >>> from numbarnn.kernels.sampling import argmax
    >>> argmax(np.array([1.0, 3.0, 3.0, 2.0])), argmax(np.array([1.0, np.nan, 3.0]))
    (1, 1)
    """
    best = 0
    for k in range(x.shape[0]):
        if math.isnan(x[k]):
            return k
        if x[k] > x[best]:
            best = k
    return best


@jit
def apply_temperature(logits, temperature, out_probs):
    """out_probs (V,) = softmax(logits (V,) / temperature), max-shifted so exp never overflows.

    logits and out_probs float32 or float64; the sums are float64.

    >>> import numpy as np
    >>> from numbarnn.kernels.sampling import apply_temperature
    >>> logits, probs = np.array([1.0, 2.0, 3.0]), np.empty(3)
    >>> apply_temperature(logits, 0.5, probs)
    >>> np.allclose(probs, np.exp(logits / 0.5) / np.exp(logits / 0.5).sum())
    True
    """
    if not (temperature > 0.0):
        raise ValueError("apply_temperature: temperature must be > 0")
    V = logits.shape[0]
    # np.float64, not float(): numba's float() leaves a float32 a float32.
    m = np.float64(logits[0])
    for k in range(1, V):
        if logits[k] > m:
            m = np.float64(logits[k])
    s = 0.0
    for k in range(V):
        e = math.exp((np.float64(logits[k]) - m) / temperature)
        out_probs[k] = e
        s += e
    for k in range(V):
        out_probs[k] /= s


@jit
def _renormalise_kept(probs, order, n_keep, out):
    """out = probs on the first n_keep indices of ``order``, zero elsewhere, summing to 1."""
    s = 0.0
    for r in range(n_keep):
        s += np.float64(probs[order[r]])
    if not (s > 0.0 and s < math.inf):
        raise ValueError("sampling filter: the kept probabilities must have a finite, positive sum")
    out[:] = 0.0
    for r in range(n_keep):
        j = order[r]
        out[j] = probs[j] / s


@jit
def _descending_order(probs):
    # A stable sort of -probs: largest first, equal values in increasing index order.
    return np.argsort(-probs.astype(np.float64), kind="mergesort")


@jit
def top_k_filter(probs, k, out):
    """Keep the k largest of probs (V,) (ties: lower index first), renormalised into out (V,).

    >>> import numpy as np
    >>> from numbarnn.kernels.sampling import top_k_filter
    >>> out = np.empty(4)
    >>> top_k_filter(np.array([0.1, 0.4, 0.2, 0.3]), 2, out)
    >>> out.round(4).tolist()
    [0.0, 0.5714, 0.0, 0.4286]
    """
    if k < 1:
        raise ValueError("top_k_filter: k must be >= 1")
    V = probs.shape[0]
    order = _descending_order(probs)
    _renormalise_kept(probs, order, min(k, V), out)


@jit
def top_p_filter(probs, p, out):
    """Nucleus filter of probs (V,) into out (V,).

    Keeps the smallest set of largest entries (ties: lower index first) whose mass
    reaches p * sum(probs), at least one entry, and renormalises it.

    probs and out float32 or float64; p in (0, 1].

    >>> import numpy as np
    >>> from numbarnn.kernels.sampling import top_p_filter
    >>> out = np.empty(4)
    >>> top_p_filter(np.array([0.1, 0.4, 0.2, 0.3]), 0.5, out)  # 0.4 < 0.5 <= 0.4 + 0.3
    >>> out.round(4).tolist()
    [0.0, 0.5714, 0.0, 0.4286]
    >>> top_p_filter(np.array([0.1, 0.4, 0.2, 0.3]), 0.1, out)  # at least one entry
    >>> out.tolist()
    [0.0, 1.0, 0.0, 0.0]
    """
    if not (p > 0.0 and p <= 1.0):
        raise ValueError("top_p_filter: p must be in (0, 1]")
    V = probs.shape[0]
    order = _descending_order(probs)
    total = 0.0
    for k in range(V):
        total += np.float64(probs[k])
    target = p * total
    c = 0.0
    n_keep = V  # if rounding keeps the running sum below the target, keep everything
    for r in range(V):
        c += np.float64(probs[order[r]])
        if c >= target:
            n_keep = r + 1
            break
    _renormalise_kept(probs, order, n_keep, out)
