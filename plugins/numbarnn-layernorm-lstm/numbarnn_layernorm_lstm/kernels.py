"""Pointwise kernels of the layer-normalised LSTM (Ba et al. 2016, as in haste).

With ``xz_t = x_t @ W_x.T`` and ``hz_t = h_{t-1} @ W_h.T`` (the spec sets
``projection_biases=False``: the loops add no bias), one step is::

    z   = LN(xz_t) * gamma_x + LN(hz_t) * gamma_h + b_x       LN over the 4H gate vector
    i, f, g, o = sigmoid(z_i), sigmoid(z_f), tanh(z_g), sigmoid(z_o)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(LN(c_t) * gamma_c + beta_c)                 LN over H

``LN(a) = (a - mean(a)) / sqrt(biased variance(a) + 1e-5)``, no gain or shift of its own.
The cell's own parameters come in ``params = (b_x, gamma_x, gamma_h, gamma_c, beta_c)``
((4H,), (4H,), (4H,), (H,), (H,)); the backward adds each step's gradients into
``grads``, the arrays of the same shapes in the same order.

G = 4, S = 2 (h, c), C = 17 H-wide blocks of ``cache_t`` per step:

====== =====================================================================
blocks what the forward saves for the backward
====== =====================================================================
0-3    the gate activations i, f, g, o
4-7    ``LN(xz_t)`` (4H)
8-11   ``LN(hz_t)`` (4H)
12     ``tanh(LN(c_t) * gamma_c + beta_c)``
13     element 0: ``1 / sqrt(var(xz_t) + eps)`` (the rest of the block unused)
14     element 0: ``1 / sqrt(var(hz_t) + eps)``
15     element 0: ``mean(c_t)``
16     element 0: ``1 / sqrt(var(c_t) + eps)``
====== =====================================================================

A per-row scalar gets a block of its own so the layout holds for H = 1. ``LN(c_t)`` is
not saved but recomputed from ``c_t`` (in ``states``) and blocks 15-16, a subtraction and
a multiplication per unit instead of H more values written and read per step. The two
projections enter through different layer norms, so ``dxz_t`` and ``dhz_t`` differ
(``shared_gate_grad=False``); the kernel leaves no direct gradient on ``h_{t-1}``
(``dstate_prev[0] = 0``; the loops add ``dhz_t @ W_h``).

Style, for speed, as numbarnn's kernels: one short loop per output array (such loops
vectorise), constants in the arrays' dtype, no allocation; and in the forward fused
multiply-adds (``CONTRACT``), so its last bits depend on whether the machine has FMA. The sums over a row (means,
variances, the layer norms' backward sums) are :mod:`numbarnn_layernorm_lstm.reductions`'
vectorised ``row_sum``, ``row_dot`` and ``row_dot_pair`` (both sums of a layer norm's
backward in one pass): a plain summing loop stays scalar without fastmath.
"""
import numpy as np
from numba import njit

from numbarnn.kernels.activations import sigmoid, tanh

from .reductions import row_dot, row_dot_pair, row_sum

CACHE_WIDTH = 17
LN_EPS = 1e-5  # inside the square root, as torch.nn.LayerNorm and haste
#: The one fast-math flag the forward takes: a multiply and an add may fuse into one FMA (the
#: activations' polynomials, ``z``, the layer norms' scalings). No reassociation, and NaN and
#: inf stay IEEE, so the NaN guard still sees them; the forward took 0.85x the time. Not the
#: backward: there ``dy * gamma_c - m1`` is exactly 0 when H is 1 (``m1`` is that product
#: rounded), fused it is the product's rounding error, times ``rstd_c`` (up to 316).
CONTRACT = {"contract"}


# ---- the two pointwise kernels -----------------------------------------------------------------

@njit(inline="always")
def _centre(a, out, inv_n, eps):
    """A layer norm's statistics of the 1-D row ``a`` (``inv_n`` = 1/len(a)): writes
    ``out = a - mean(a)`` and returns ``(mean, 1 / sqrt(biased variance + eps))``."""
    mean = row_sum(a) * inv_n
    for k in range(a.shape[0]):
        out[k] = a[k] - mean
    return mean, a.dtype.type(1.0) / np.sqrt(row_dot(out, out) * inv_n + eps)


@njit(cache=True, fastmath=CONTRACT)
def layernorm_lstm_forward(xz_t, hz_t, states, t, cache_t, params):
    """One step of the layer-normalised LSTM, from the two projections to ``states[:, t+1]``.

    xz_t, hz_t (B, 4H): ``x_t @ W_x.T`` and ``h_{t-1} @ W_h.T`` (no biases), gate blocks
    i, f, g, o; states (2, T+1, B, H) (h, then c); cache_t (B, 17H), see the module
    docstring; params ``(b_x, gamma_x, gamma_h, gamma_c, beta_c)``. One float dtype for
    all. One step, against the equations in NumPy:

    >>> import numpy as np
    >>> from numbarnn_layernorm_lstm.kernels import layernorm_lstm_forward
    >>> rng = np.random.default_rng(0)
    >>> B, H = 2, 3
    >>> xz_t, hz_t = rng.normal(size=(B, 4 * H)), rng.normal(size=(B, 4 * H))
    >>> params = tuple(rng.normal(size=n) for n in (4 * H, 4 * H, 4 * H, H, H))
    >>> states = rng.normal(size=(2, 2, B, H))   # h_0, c_0 given, T = 1
    >>> layernorm_lstm_forward(xz_t, hz_t, states, 0, np.empty((B, 17 * H)), params)
    >>> b_x, gamma_x, gamma_h, gamma_c, beta_c = params
    >>> ln = lambda a: (a - a.mean(1, keepdims=True)) / np.sqrt(a.var(1, keepdims=True) + 1e-5)
    >>> sig = lambda a: 1 / (1 + np.exp(-a))
    >>> i, f, g, o = np.split(ln(xz_t) * gamma_x + ln(hz_t) * gamma_h + b_x, 4, axis=1)
    >>> c = sig(f) * states[1, 0] + sig(i) * np.tanh(g)
    >>> h = sig(o) * np.tanh(ln(c) * gamma_c + beta_c)
    >>> np.allclose(states[1, 1], c), np.allclose(states[0, 1], h)
    (True, True)
    """
    b_x, gamma_x, gamma_h, gamma_c, beta_c = params
    B, H = states.shape[2], states.shape[3]
    G = 4 * H
    one, eps = states.dtype.type(1.0), states.dtype.type(LN_EPS)
    inv_G, inv_H = one / states.dtype.type(G), one / states.dtype.type(H)
    for b in range(B):
        # Each block as its own 1-D view: loops indexed by one j alone vectorise.
        x, hz, cache = xz_t[b], hz_t[b], cache_t[b]
        z = cache[0:G]  # the pre-activations, made the activations i, f, g, o in place
        i, f, g, o = cache[0:H], cache[H:2 * H], cache[2 * H:3 * H], cache[3 * H:G]
        nx, nh, tanh_y = cache[G:2 * G], cache[2 * G:3 * G], cache[3 * G:3 * G + H]
        h_new, c_prev, c_new = states[0, t + 1, b], states[1, t, b], states[1, t + 1, b]
        # LN(a) = (a - mean) * rstd: centre into the cached block, then scale it in place.
        _, rstd_x = _centre(x, nx, inv_G, eps)
        for k in range(G):
            nx[k] *= rstd_x
        _, rstd_h = _centre(hz, nh, inv_G, eps)
        for k in range(G):
            nh[k] *= rstd_h
        for k in range(G):
            z[k] = nx[k] * gamma_x[k] + nh[k] * gamma_h[k] + b_x[k]
        for j in range(H):
            i[j] = sigmoid(i[j])
        for j in range(H):
            f[j] = sigmoid(f[j])
        for j in range(H):
            g[j] = tanh(g[j])
        for j in range(H):
            o[j] = sigmoid(o[j])
        for j in range(H):  # c = f * c_prev + i * g
            c_new[j] = f[j] * c_prev[j] + i[j] * g[j]
        mean_c, rstd_c = _centre(c_new, tanh_y, inv_H, eps)  # in tanh_y's block until tanh_y is made from it
        for j in range(H):
            tanh_y[j] = tanh(tanh_y[j] * rstd_c * gamma_c[j] + beta_c[j])
        for j in range(H):  # h = o * tanh(y)
            h_new[j] = o[j] * tanh_y[j]
        cache[3 * G + H] = rstd_x
        cache[3 * G + 2 * H] = rstd_h
        cache[3 * G + 3 * H] = mean_c
        cache[3 * G + 4 * H] = rstd_c


@njit(cache=True)
def layernorm_lstm_backward(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev, params, grads):
    """The backward of :func:`layernorm_lstm_forward` at step t.

    dstate (2, B, H): the total gradients w.r.t. ``states[:, t+1]`` (h, then c); states and
    cache_t (B, 17H) as the forward left them; params as the forward's; grads
    ``(db_x, dgamma_x, dgamma_h, dgamma_c, dbeta_c)``, which this step's gradients are
    added into. Writes dxz_t and dhz_t (B, 4H), the gradients w.r.t. the two projections,
    and overwrites dstate_prev (2, B, H) with the direct gradients w.r.t. ``states[:, t]``:
    0 for h (the loops add ``dhz_t @ W_h``), ``dc_t * f`` for c. Along each gradient, the
    slope of ``L = sum(dstate * states[:, 1])`` is the gradient's squared norm:

    >>> import numpy as np
    >>> from numbarnn_layernorm_lstm.kernels import layernorm_lstm_backward, layernorm_lstm_forward
    >>> rng = np.random.default_rng(0)
    >>> B, H = 2, 3
    >>> xz_t, hz_t, c_prev = rng.normal(size=(B, 4 * H)), rng.normal(size=(B, 4 * H)), rng.normal(size=(B, H))
    >>> params = tuple(rng.normal(size=n) for n in (4 * H, 4 * H, 4 * H, H, H))
    >>> def run(xz_t, hz_t, c_prev, params):
    ...     states, cache_t = np.zeros((2, 2, B, H)), np.empty((B, 17 * H))
    ...     states[1, 0] = c_prev
    ...     layernorm_lstm_forward(xz_t, hz_t, states, 0, cache_t, params)
    ...     return states, cache_t
    >>> states, cache_t = run(xz_t, hz_t, c_prev, params)
    >>> dstate, grads = rng.normal(size=(2, B, H)), tuple(np.zeros_like(p) for p in params)
    >>> dxz_t, dhz_t, dstate_prev = np.empty((B, 4 * H)), np.empty((B, 4 * H)), np.empty((2, B, H))
    >>> layernorm_lstm_backward(dstate, states, 0, cache_t, dxz_t, dhz_t, dstate_prev, params, grads)
    >>> def slope(xz, hz, c, ps):   # central difference of L along its gradient, step 1e-6
    ...     L = lambda s: np.sum(dstate * run(xz + s * dxz_t, hz + s * dhz_t, c + s * dstate_prev[1],
    ...                                       tuple(p + s * d for p, d in zip(ps, grads)))[0][:, 1])
    ...     return (L(1e-6) - L(-1e-6)) / 2e-6
    >>> norm = sum(np.sum(d * d) for d in (dxz_t, dhz_t, dstate_prev[1]) + grads)
    >>> bool(np.isclose(slope(xz_t, hz_t, c_prev, params), norm)), bool((dstate_prev[0] == 0).all())
    (True, True)
    """
    b_x, gamma_x, gamma_h, gamma_c, beta_c = params
    db_x, dgamma_x, dgamma_h, dgamma_c, dbeta_c = grads
    B, H = states.shape[2], states.shape[3]
    G = 4 * H
    one = states.dtype.type(1.0)
    inv_G, inv_H = one / states.dtype.type(G), one / states.dtype.type(H)
    for b in range(B):
        cache, dz, dhz = cache_t[b], dxz_t[b], dhz_t[b]
        i, f, g, o = cache[0:H], cache[H:2 * H], cache[2 * H:3 * H], cache[3 * H:G]
        nx, nh, tanh_y = cache[G:2 * G], cache[2 * G:3 * G], cache[3 * G:3 * G + H]
        rstd_x, rstd_h = cache[3 * G + H], cache[3 * G + 2 * H]
        mean_c, rstd_c = cache[3 * G + 3 * H], cache[3 * G + 4 * H]
        d_i, d_f, d_g, d_o = dz[0:H], dz[H:2 * H], dz[2 * H:3 * H], dz[3 * H:G]
        dh, dc_in, c_prev, c_new = dstate[0, b], dstate[1, b], states[1, t, b], states[1, t + 1, b]
        # Scratch until the end: dhz's first block holds LN(c_t), dstate_prev[0] (the direct
        # gradient of h_{t-1} is 0) holds dy, the gradient of y = LN(c_t) * gamma_c + beta_c.
        # dstate_prev[1] first holds the total gradient of c_t, then becomes dc * f.
        nc, dy, dc = dhz[0:H], dstate_prev[0, b], dstate_prev[1, b]
        for j in range(H):
            nc[j] = (c_new[j] - mean_c) * rstd_c
        for j in range(H):  # d output gate
            d_o[j] = dh[j] * tanh_y[j] * o[j] * (one - o[j])
        for j in range(H):
            dy[j] = dh[j] * o[j] * (one - tanh_y[j] * tanh_y[j])
        for j in range(H):
            dgamma_c[j] += dy[j] * nc[j]
        for j in range(H):
            dbeta_c[j] += dy[j]
        # LN's backward, d a = rstd * (dn - mean(dn) - n * mean(dn * n)), with dn = dy * gamma_c
        s1, s2 = row_dot_pair(dy, gamma_c, nc)
        m1, m2 = s1 * inv_H, s2 * inv_H
        for j in range(H):
            dc[j] = dc_in[j] + rstd_c * (dy[j] * gamma_c[j] - m1 - nc[j] * m2)
        for j in range(H):  # d input gate
            d_i[j] = dc[j] * g[j] * i[j] * (one - i[j])
        for j in range(H):  # d forget gate
            d_f[j] = dc[j] * c_prev[j] * f[j] * (one - f[j])
        for j in range(H):  # d candidate
            d_g[j] = dc[j] * i[j] * (one - g[j] * g[j])
        for j in range(H):
            dc[j] = dc[j] * f[j]
        for j in range(H):
            dy[j] = 0.0
        # dz (in dxz_t) now holds d z: the gradients of z's parameters, then the two layer norms'.
        for k in range(G):
            db_x[k] += dz[k]
        for k in range(G):
            dgamma_x[k] += dz[k] * nx[k]
        for k in range(G):
            dgamma_h[k] += dz[k] * nh[k]
        s1, s2 = row_dot_pair(dz, gamma_h, nh)
        m1, m2 = s1 * inv_G, s2 * inv_G
        for k in range(G):
            dhz[k] = rstd_h * (dz[k] * gamma_h[k] - m1 - nh[k] * m2)
        s1, s2 = row_dot_pair(dz, gamma_x, nx)
        m1, m2 = s1 * inv_G, s2 * inv_G
        for k in range(G):  # last: dz is overwritten in place
            dz[k] = rstd_x * (dz[k] * gamma_x[k] - m1 - nx[k] * m2)
