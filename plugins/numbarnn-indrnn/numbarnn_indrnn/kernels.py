"""Pointwise kernels of the IndRNN cell (Li et al. 2018): ``h_t = relu(W_x x_t + b_x + u * h_{t-1})``.

G = 1, S = 1 (h), C = 0: nothing is cached, since ``h_t > 0`` exactly where the relu's
input is positive. The cell has no recurrent matrix (its spec sets
``recurrent_weights=False``): the loops pass ``hz_t`` as zeros, and the kernel reads
``h_{t-1}`` from ``states[0, t]`` and multiplies it by its own parameter ``u`` (H,)
element-wise. In the backward the loops add nothing to the gradient w.r.t. ``h_{t-1}``
(there is no ``W_h``): the kernel writes all of it, ``da * u``, and adds each step's
``sum_b da * h_{t-1}`` into ``du``. ``dhz_t`` is the same array as ``dxz_t``
(``shared_gate_grad=True``).

The relu's gradient at exactly 0 is 0, as PyTorch's. A NaN pre-activation stays NaN
(``np.maximum``), so it reaches numbarnn's non-finite guard.
"""
import numpy as np
from numba import njit


# One short loop per output array, as numbarnn's own kernels: such loops vectorise.

@njit(cache=True)
def indrnn_forward(xz_t, hz_t, states, t, cache_t, params):
    """One IndRNN step: ``states[0, t+1] = relu(xz_t + u * states[0, t])``.

    xz_t (B, H): ``x_t @ W_x.T + b_x``; hz_t (B, H): zeros (no recurrent matrix), unused.
    states (1, T+1, B, H); cache_t (B, 0), unused; params ``(u,)``, u (H,). One float
    dtype for all (float32 or float64). One step, against NumPy:

    >>> import numpy as np
    >>> from numbarnn_indrnn.kernels import indrnn_forward
    >>> rng = np.random.default_rng(0)
    >>> B, H = 2, 3
    >>> xz_t, u = rng.normal(size=(B, H)), rng.uniform(0, 1, size=H)
    >>> states = rng.normal(size=(1, 2, B, H))   # h_0 given, T = 1
    >>> indrnn_forward(xz_t, np.zeros((B, H)), states, 0, np.empty((B, 0)), (u,))
    >>> np.array_equal(states[0, 1], np.maximum(xz_t + u * states[0, 0], 0))
    True
    """
    u = params[0]
    B = states.shape[2]
    zero = states.dtype.type(0.0)
    for b in range(B):
        x, h_prev, h_new = xz_t[b], states[0, t, b], states[0, t + 1, b]
        for j in range(h_new.shape[0]):
            h_new[j] = np.maximum(x[j] + u[j] * h_prev[j], zero)


@njit(cache=True)
def indrnn_backward(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev, params, grads):
    """The backward of :func:`indrnn_forward` at step t.

    dstate (1, B, H): the total gradient w.r.t. ``states[0, t+1]``; states (1, T+1, B, H)
    as the forward left them; params ``(u,)``, grads ``(du,)`` (H,). Writes dxz_t (B, H),
    the gradient of the relu's input ``da = dh * (h_t > 0)``, and the same into dhz_t
    (the loops pass one array for both); overwrites dstate_prev (1, B, H) with the
    whole gradient w.r.t. ``h_{t-1}``, ``da * u``; adds ``sum_b da * h_{t-1}`` into du.

    >>> import numpy as np
    >>> from numbarnn_indrnn.kernels import indrnn_backward, indrnn_forward
    >>> rng = np.random.default_rng(0)
    >>> B, H = 2, 3
    >>> u, states = rng.uniform(0, 1, size=H), rng.normal(size=(1, 2, B, H))
    >>> indrnn_forward(rng.normal(size=(B, H)), np.zeros((B, H)), states, 0, np.empty((B, 0)), (u,))
    >>> dstate, du = rng.normal(size=(1, B, H)), np.zeros(H)
    >>> dxz_t, dstate_prev = np.empty((B, H)), np.empty((1, B, H))
    >>> indrnn_backward(dstate, states, 0, np.empty((B, 0)), dxz_t, dxz_t, dstate_prev, (u,), (du,))
    >>> da = dstate[0] * (states[0, 1] > 0)
    >>> np.allclose(dxz_t, da), np.allclose(dstate_prev[0], da * u), np.allclose(du, (da * states[0, 0]).sum(0))
    (True, True, True)
    """
    u, du = params[0], grads[0]
    B = states.shape[2]
    zero = states.dtype.type(0.0)
    for b in range(B):
        dh, h_new, h_prev = dstate[0, b], states[0, t + 1, b], states[0, t, b]
        da, dhz, dh_prev = dxz_t[b], dhz_t[b], dstate_prev[0, b]
        H = da.shape[0]
        for j in range(H):  # h > 0 exactly where the relu's input is > 0; 0 at the kink, as torch
            da[j] = dh[j] if h_new[j] > zero else zero
        for j in range(H):  # a no-op when the loops pass one array for both
            dhz[j] = da[j]
        for j in range(H):
            dh_prev[j] = da[j] * u[j]
        for j in range(H):
            du[j] += da[j] * h_prev[j]
