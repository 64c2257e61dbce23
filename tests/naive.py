"""Plain NumPy reference implementations of RNN, LSTM and GRU (PyTorch conventions).

These are deliberately slow and simple: one Python loop iteration per time
step, one line per equation.  The test suite compares the fast kernels
against them, and ``tests/test_references.py`` checks them against finite
differences and against ``torch.nn``.

Conventions (identical to a single-layer, unidirectional ``torch.nn`` module
with ``batch_first=False``):

* ``x`` is time-major, shape ``(T, B, X)``.
* ``W_x`` is ``weight_ih_l0``, shape ``(G*H, X)``;  ``W_h`` is ``weight_hh_l0``,
  shape ``(G*H, H)``;  ``b_x`` is ``bias_ih_l0`` and ``b_h`` is ``bias_hh_l0``,
  both shape ``(G*H,)``.  G = 1 (RNN), 4 (LSTM), 3 (GRU).
* LSTM gate rows are ordered i, f, g, o;  GRU gate rows are ordered r, z, n.
* Initial states ``h0`` / ``c0`` have shape ``(B, H)``.

Backward functions take ``d_outputs`` (T, B, H): the upstream gradient of
every hidden state h_1..h_T, plus optional ``d_hT`` (added to the gradient of
h_T) and, for the LSTM, ``d_cT`` (gradient of the final cell state c_T).
They return the gradient of the scalar
``sum(outputs * d_outputs) + sum(h_T * d_hT) [+ sum(c_T * d_cT)]``.
"""

import numpy as np


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------

def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _hidden_size(W_h):
    return W_h.shape[1]


# ---------------------------------------------------------------------------
# Elman RNN (tanh)
# ---------------------------------------------------------------------------

def rnn_forward(x, W_x, W_h, b_x, b_h, h0):
    """h_t = tanh(W_x x_t + b_x + W_h h_{t-1} + b_h).

    Returns (outputs (T, B, H), h_T (B, H)).
    """
    T, B, _ = x.shape
    H = _hidden_size(W_h)
    outputs = np.zeros((T, B, H), dtype=x.dtype)
    h = h0
    for t in range(T):
        pre = x[t] @ W_x.T + b_x + h @ W_h.T + b_h
        h = np.tanh(pre)
        outputs[t] = h
    return outputs, h.copy()


def rnn_backward(x, W_x, W_h, b_x, b_h, h0, d_outputs, d_hT=None):
    """Backpropagation through time for :func:`rnn_forward`.

    Returns dict(dx, dW_x, dW_h, db_x, db_h, dh0).
    """
    T, B, _ = x.shape
    outputs, _ = rnn_forward(x, W_x, W_h, b_x, b_h, h0)

    dx = np.zeros_like(x)
    dW_x = np.zeros_like(W_x)
    dW_h = np.zeros_like(W_h)
    db_x = np.zeros_like(b_x)
    db_h = np.zeros_like(b_h)

    dh_next = np.zeros_like(h0)  # gradient flowing into h_t from step t+1
    if d_hT is not None:
        dh_next = dh_next + d_hT

    for t in reversed(range(T)):
        h = outputs[t]
        h_prev = outputs[t - 1] if t > 0 else h0
        dh = d_outputs[t] + dh_next
        dpre = dh * (1.0 - h * h)          # through tanh
        dW_x += dpre.T @ x[t]
        dW_h += dpre.T @ h_prev
        db_x += dpre.sum(axis=0)
        db_h += dpre.sum(axis=0)
        dx[t] = dpre @ W_x
        dh_next = dpre @ W_h

    return dict(dx=dx, dW_x=dW_x, dW_h=dW_h, db_x=db_x, db_h=db_h, dh0=dh_next)


# ---------------------------------------------------------------------------
# LSTM (gate rows i, f, g, o)
# ---------------------------------------------------------------------------

def _lstm_step(x_t, h_prev, c_prev, W_x, W_h, b_x, b_h):
    H = h_prev.shape[1]
    pre = x_t @ W_x.T + b_x + h_prev @ W_h.T + b_h      # (B, 4H)
    i = sigmoid(pre[:, 0 * H:1 * H])
    f = sigmoid(pre[:, 1 * H:2 * H])
    g = np.tanh(pre[:, 2 * H:3 * H])
    o = sigmoid(pre[:, 3 * H:4 * H])
    c = f * c_prev + i * g
    h = o * np.tanh(c)
    return h, c, i, f, g, o


def lstm_forward(x, W_x, W_h, b_x, b_h, h0, c0):
    """PyTorch LSTM.  Returns (outputs (T, B, H), h_T, c_T)."""
    T, B, _ = x.shape
    H = _hidden_size(W_h)
    outputs = np.zeros((T, B, H), dtype=x.dtype)
    h, c = h0, c0
    for t in range(T):
        h, c, _, _, _, _ = _lstm_step(x[t], h, c, W_x, W_h, b_x, b_h)
        outputs[t] = h
    return outputs, h.copy(), c.copy()


def lstm_backward(x, W_x, W_h, b_x, b_h, h0, c0, d_outputs, d_hT=None, d_cT=None):
    """Backpropagation through time for :func:`lstm_forward`.

    Returns dict(dx, dW_x, dW_h, db_x, db_h, dh0, dc0).
    """
    T, B, _ = x.shape

    # Recompute the forward pass, remembering everything.
    hs, cs, gates = [], [], []
    h, c = h0, c0
    for t in range(T):
        h, c, i, f, g, o = _lstm_step(x[t], h, c, W_x, W_h, b_x, b_h)
        hs.append(h)
        cs.append(c)
        gates.append((i, f, g, o))

    dx = np.zeros_like(x)
    dW_x = np.zeros_like(W_x)
    dW_h = np.zeros_like(W_h)
    db_x = np.zeros_like(b_x)
    db_h = np.zeros_like(b_h)

    dh_next = np.zeros_like(h0)
    dc_next = np.zeros_like(c0)
    if d_hT is not None:
        dh_next = dh_next + d_hT
    if d_cT is not None:
        dc_next = dc_next + d_cT

    for t in reversed(range(T)):
        i, f, g, o = gates[t]
        c = cs[t]
        h_prev = hs[t - 1] if t > 0 else h0
        c_prev = cs[t - 1] if t > 0 else c0

        dh = d_outputs[t] + dh_next
        tanh_c = np.tanh(c)
        do = dh * tanh_c
        dc = dc_next + dh * o * (1.0 - tanh_c * tanh_c)
        di = dc * g
        dg = dc * i
        df = dc * c_prev
        dc_prev = dc * f

        # through the gate nonlinearities
        di_pre = di * i * (1.0 - i)
        df_pre = df * f * (1.0 - f)
        dg_pre = dg * (1.0 - g * g)
        do_pre = do * o * (1.0 - o)
        dpre = np.concatenate([di_pre, df_pre, dg_pre, do_pre], axis=1)  # (B, 4H)

        dW_x += dpre.T @ x[t]
        dW_h += dpre.T @ h_prev
        db_x += dpre.sum(axis=0)
        db_h += dpre.sum(axis=0)
        dx[t] = dpre @ W_x
        dh_next = dpre @ W_h
        dc_next = dc_prev

    return dict(dx=dx, dW_x=dW_x, dW_h=dW_h, db_x=db_x, db_h=db_h,
                dh0=dh_next, dc0=dc_next)


# ---------------------------------------------------------------------------
# GRU (PyTorch variant, gate rows r, z, n)
# ---------------------------------------------------------------------------

def _gru_step(x_t, h_prev, W_x, W_h, b_x, b_h):
    H = h_prev.shape[1]
    gi = x_t @ W_x.T + b_x          # (B, 3H) input part
    gh = h_prev @ W_h.T + b_h       # (B, 3H) hidden part
    r = sigmoid(gi[:, 0 * H:1 * H] + gh[:, 0 * H:1 * H])
    z = sigmoid(gi[:, 1 * H:2 * H] + gh[:, 1 * H:2 * H])
    hn = gh[:, 2 * H:3 * H]         # W_hn h + b_hn
    n = np.tanh(gi[:, 2 * H:3 * H] + r * hn)
    h = (1.0 - z) * n + z * h_prev
    return h, r, z, n, hn


def gru_forward(x, W_x, W_h, b_x, b_h, h0):
    """PyTorch GRU.  Returns (outputs (T, B, H), h_T)."""
    T, B, _ = x.shape
    H = _hidden_size(W_h)
    outputs = np.zeros((T, B, H), dtype=x.dtype)
    h = h0
    for t in range(T):
        h, _, _, _, _ = _gru_step(x[t], h, W_x, W_h, b_x, b_h)
        outputs[t] = h
    return outputs, h.copy()


def gru_backward(x, W_x, W_h, b_x, b_h, h0, d_outputs, d_hT=None):
    """Backpropagation through time for :func:`gru_forward`.

    Returns dict(dx, dW_x, dW_h, db_x, db_h, dh0).
    """
    T, B, _ = x.shape

    hs, saved = [], []
    h = h0
    for t in range(T):
        h, r, z, n, hn = _gru_step(x[t], h, W_x, W_h, b_x, b_h)
        hs.append(h)
        saved.append((r, z, n, hn))

    dx = np.zeros_like(x)
    dW_x = np.zeros_like(W_x)
    dW_h = np.zeros_like(W_h)
    db_x = np.zeros_like(b_x)
    db_h = np.zeros_like(b_h)

    dh_next = np.zeros_like(h0)
    if d_hT is not None:
        dh_next = dh_next + d_hT

    for t in reversed(range(T)):
        r, z, n, hn = saved[t]
        h_prev = hs[t - 1] if t > 0 else h0

        dh = d_outputs[t] + dh_next
        dn = dh * (1.0 - z)
        dz = dh * (h_prev - n)
        dh_prev = dh * z                      # direct path z * h_prev

        dn_pre = dn * (1.0 - n * n)           # through tanh
        dr = dn_pre * hn
        dhn = dn_pre * r
        dr_pre = dr * r * (1.0 - r)
        dz_pre = dz * z * (1.0 - z)

        dgi = np.concatenate([dr_pre, dz_pre, dn_pre], axis=1)   # (B, 3H)
        dgh = np.concatenate([dr_pre, dz_pre, dhn], axis=1)      # (B, 3H)

        dW_x += dgi.T @ x[t]
        dW_h += dgh.T @ h_prev
        db_x += dgi.sum(axis=0)
        db_h += dgh.sum(axis=0)
        dx[t] = dgi @ W_x
        dh_next = dh_prev + dgh @ W_h

    return dict(dx=dx, dW_x=dW_x, dW_h=dW_h, db_x=db_x, db_h=db_h, dh0=dh_next)


# ---------------------------------------------------------------------------
# inputs and losses
# ---------------------------------------------------------------------------

def one_hot(indices, X, dtype=np.float64):
    """(T, B) int indices -> (T, B, X) one-hot vectors; index -1 gives all zeros."""
    indices = np.asarray(indices)
    T, B = indices.shape
    out = np.zeros((T, B, X), dtype=dtype)
    for t in range(T):
        for b in range(B):
            k = int(indices[t, b])
            if k >= 0:
                out[t, b, k] = 1
    return out


def softmax_cross_entropy(logits, targets, mask=None):
    """Summed (optionally masked) softmax cross-entropy.

    logits (N, V), targets (N,) int, mask (N,) or None.
    loss = -sum_n mask[n] * log softmax(logits[n])[targets[n]]
    Returns (loss_sum, dlogits) with dlogits = mask[:, None] * (softmax - onehot).
    Rows with mask 0 contribute nothing and get zero gradient (their target
    may be any value, e.g. -1).
    """
    logits = np.asarray(logits)
    N, V = logits.shape
    if mask is None:
        mask = np.ones(N, dtype=logits.dtype)
    mask = np.asarray(mask, dtype=logits.dtype)

    loss = 0.0
    dlogits = np.zeros_like(logits)
    for n in range(N):
        if mask[n] == 0:
            continue
        row = logits[n]
        shifted = row - np.max(row)
        log_z = np.log(np.sum(np.exp(shifted)))
        log_p = shifted - log_z
        k = int(targets[n])
        loss -= mask[n] * log_p[k]
        p = np.exp(log_p)
        p[k] -= 1.0
        dlogits[n] = mask[n] * p
    return loss, dlogits


def finite_difference_grad(f, array, eps=1e-6):
    """Central-difference gradient of the scalar ``f()`` w.r.t. every entry of ``array``.

    ``array`` is modified in place while probing and restored afterwards.
    Returns a float64 array of ``array``'s shape.
    """
    grad = np.zeros(array.shape, dtype=np.float64)
    for idx in np.ndindex(array.shape):
        orig = array[idx]
        array[idx] = orig + eps
        f_plus = float(f())
        array[idx] = orig - eps
        f_minus = float(f())
        array[idx] = orig
        grad[idx] = (f_plus - f_minus) / (2.0 * eps)
    return grad
