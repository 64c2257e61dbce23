"""Plain-NumPy reference training step and sampling loop for the benchmark suite.

Built on the equations of ``tests/naive.py`` (the references the test suite checks
against finite differences and ``torch.nn``): the forward uses naive's own per-step
functions; the backward is naive's BPTT loop, but fed from a cache of the forward
instead of recomputing the forward (``naive.lstm_backward`` recomputes it, which would
charge the reference for a second forward pass that neither numbarnn nor PyTorch does).

One step does what ``numbarnn.Trainer.train_step`` does: one-hot inputs (index -1 is a
zero input, as the course's ``None``), the recurrent layer, the dense head
``logits = h @ W_y.T + b_y``, softmax cross-entropy summed over time and averaged over the
batch, BPTT, clipping (``"value"``: ``np.clip`` on every array; ``"norm"``:
``clip_grad_norm_``'s ``clip / (norm + 1e-6)``), then SGD or PyTorch's Adam. Everything
stays in the parameters' dtype.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import naive  # noqa: E402


def one_hot(indices_tb, V, dtype):
    """(T, B) integer indices -> (T, B, V) one-hot; -1 gives a zero vector."""
    indices_tb = np.asarray(indices_tb)
    out = np.zeros(indices_tb.shape + (V,), dtype)
    t, b = np.nonzero(indices_tb >= 0)
    out[t, b, indices_tb[t, b]] = 1
    return out


# ---- forward with a cache, backward from the cache (naive's equations) -------------------------

def forward(cell, x, p, h0, c0=None):
    """-> outputs (T, B, H), cache."""
    T = x.shape[0]
    outputs = np.empty((T,) + h0.shape, x.dtype)
    saved = []
    h, c = h0, c0
    for t in range(T):
        if cell == "lstm":
            h, c, i, f, g, o = naive._lstm_step(x[t], h, c, p["W_x"], p["W_h"], p["b_x"], p["b_h"])
            saved.append((c, i, f, g, o))
        elif cell == "gru":
            h, r, z, n, hn = naive._gru_step(x[t], h, p["W_x"], p["W_h"], p["b_x"], p["b_h"])
            saved.append((r, z, n, hn))
        else:
            h = np.tanh(x[t] @ p["W_x"].T + p["b_x"] + h @ p["W_h"].T + p["b_h"])
        outputs[t] = h
    return outputs, (h0, c0, saved)


def backward(cell, x, p, outputs, cache, d_outputs):
    """Gradients dict of W_x, W_h, b_x, b_h (naive.*_backward's loops, from the cache)."""
    h0, c0, saved = cache
    grads = {k: np.zeros_like(p[k]) for k in ("W_x", "W_h", "b_x", "b_h")}
    dh_next = np.zeros_like(h0)
    dc_next = None if c0 is None else np.zeros_like(c0)
    for t in reversed(range(x.shape[0])):
        h_prev = outputs[t - 1] if t > 0 else h0
        dh = d_outputs[t] + dh_next
        if cell == "lstm":
            c, i, f, g, o = saved[t]
            c_prev = saved[t - 1][0] if t > 0 else c0
            tanh_c = np.tanh(c)
            do = dh * tanh_c
            dc = dc_next + dh * o * (1.0 - tanh_c * tanh_c)
            dpre = np.concatenate([dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f),
                                   dc * i * (1.0 - g * g), do * o * (1.0 - o)], axis=1)
            dgi = dgh = dpre
            dc_next = dc * f
            dh_next = dpre @ p["W_h"]
        elif cell == "gru":
            r, z, n, hn = saved[t]
            dn_pre = dh * (1.0 - z) * (1.0 - n * n)
            dr_pre = dn_pre * hn * r * (1.0 - r)
            dz_pre = dh * (h_prev - n) * z * (1.0 - z)
            dgi = np.concatenate([dr_pre, dz_pre, dn_pre], axis=1)
            dgh = np.concatenate([dr_pre, dz_pre, dn_pre * r], axis=1)
            dh_next = dh * z + dgh @ p["W_h"]
        else:
            dgi = dgh = dh * (1.0 - outputs[t] * outputs[t])
            dh_next = dgh @ p["W_h"]
        grads["W_x"] += dgi.T @ x[t]
        grads["W_h"] += dgh.T @ h_prev
        grads["b_x"] += dgi.sum(axis=0)
        grads["b_h"] += dgh.sum(axis=0)
    return grads


def softmax_cross_entropy(logits, targets):
    """logits (N, V), targets (N,) -> (summed loss, dlogits = softmax - onehot)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(logits.shape[0])
    loss = float(np.sum(np.log(s[:, 0]) - shifted[rows, targets], dtype=np.float64))
    d = e / s
    d[rows, targets] -= 1
    return loss, d


class ReferenceTrainer:
    """A plain-NumPy ``train_step`` with the numbarnn trainer's math (single layer + head)."""

    def __init__(self, cell, params, *, optimizer="adam", lr=1e-3, clip=5.0, clip_mode="norm",
                 betas=(0.9, 0.999), eps=1e-8):
        self.cell = cell
        self.params = {k: np.array(v, copy=True) for k, v in params.items()}
        self.dtype = self.params["W_h"].dtype
        self.optimizer, self.lr, self.clip, self.clip_mode = optimizer, lr, clip, clip_mode
        self.betas, self.eps = betas, eps
        self.m = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.step_count = 0

    def train_step(self, inputs, targets):
        p = self.params
        inputs, targets = np.atleast_2d(inputs), np.atleast_2d(targets)
        B, T = inputs.shape
        V, H = p["W_y"].shape
        x = one_hot(inputs.T, p["W_x"].shape[1], self.dtype)        # (T, B, V)
        h0 = np.zeros((B, H), self.dtype)
        c0 = np.zeros((B, H), self.dtype) if self.cell == "lstm" else None
        outputs, cache = forward(self.cell, x, p, h0, c0)
        hidden = outputs.reshape(T * B, H)
        logits = hidden @ p["W_y"].T + p["b_y"]
        loss, dlogits = softmax_cross_entropy(logits, np.ascontiguousarray(targets.T).reshape(-1))
        if B > 1:
            dlogits *= self.dtype.type(1.0 / B)
        grads = {"W_y": dlogits.T @ hidden, "b_y": dlogits.sum(axis=0)}
        d_outputs = (dlogits @ p["W_y"]).reshape(T, B, H)
        grads.update(backward(self.cell, x, p, outputs, cache, d_outputs))
        self._clip(grads)
        self._update(grads)
        return loss / B

    def _clip(self, grads):
        if self.clip is None:
            return
        if self.clip_mode == "value":
            for g in grads.values():
                np.clip(g, -self.clip, self.clip, out=g)
            return
        norm = np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads.values()))
        coef = self.clip / (norm + 1e-6)
        if coef < 1.0:
            for g in grads.values():
                g *= self.dtype.type(coef)

    def _update(self, grads):
        self.step_count += 1
        if self.optimizer == "sgd":
            for k, g in grads.items():
                self.params[k] -= self.dtype.type(self.lr) * g
            return
        b1, b2 = self.betas
        step_size = self.dtype.type(self.lr / (1.0 - b1 ** self.step_count))
        bc2_sqrt = self.dtype.type(np.sqrt(1.0 - b2 ** self.step_count))
        for k, g in grads.items():
            m, v = self.m[k], self.v[k]
            m *= self.dtype.type(b1)
            m += self.dtype.type(1.0 - b1) * g
            v *= self.dtype.type(b2)
            v += self.dtype.type(1.0 - b2) * (g * g)
            self.params[k] -= step_size * (m / (np.sqrt(v) / bc2_sqrt + self.dtype.type(self.eps)))


def generate_lstm(params, length, rng):
    """Sample ``length`` indices one step at a time (zero first input), categorical sampling
    from softmax(logits) with one uniform draw per character (as numbarnn's sampler)."""
    p = params
    dtype = p["W_h"].dtype
    V, H = p["W_y"].shape
    x = np.zeros((1, p["W_x"].shape[1]), dtype)
    h = np.zeros((1, H), dtype)
    c = np.zeros((1, H), dtype)
    out = []
    for _ in range(length):
        h, c, _, _, _, _ = naive._lstm_step(x, h, c, p["W_x"], p["W_h"], p["b_x"], p["b_h"])
        logits = (h[0] @ p["W_y"].T + p["b_y"]).astype(np.float64)
        e = np.exp(logits - logits.max())
        cdf = np.cumsum(e)
        idx = min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), V - 1)
        out.append(idx)
        x[...] = 0
        x[0, idx] = 1
    return out
