"""The per-cell compiled loops: a template that :func:`numbarnn.kernels.loops.loops_for` instantiates.

This is a real module (it runs the tanh RNN as written), but numbarnn never imports it:
``loops_for(cell)`` copies its text with the import marked ``CELL KERNELS`` rewritten to
import the cell's own kernels, writes that to a file in the cache directory and imports it.
The kernels are then plain globals of ordinary ``cache=True`` functions, so every cell's
loops are compiled once and cached on disk like the rest (a kernel passed as an argument
cannot be: Numba treats it as a dynamic global). Each training step crosses from Python
into compiled code once per layer and direction (or once in all, ``language_model_step``).
"""
import numpy as np  # noqa: F401
from numba import njit

from numbarnn.kernels.cells import rnn_backward as cell_backward  # CELL KERNELS
from numbarnn.kernels.cells import rnn_forward as cell_forward  # CELL KERNELS
from numbarnn.kernels.loops import (input_weight_gradients_dense, input_weight_gradients_indices, project_dense,
                                    project_indices, recurrent_weight_gradients)
from numbarnn.kernels.losses import softmax_cross_entropy
from numbarnn.kernels.sampling import apply_temperature as apply_softmax
from numbarnn.kernels.sampling import argmax as argmax_row
from numbarnn.kernels.sampling import sample_categorical, top_k_filter, top_p_filter


@njit(cache=True)
def sequence_forward(xz, W_h, b_h, states, cache, hz):
    """Run the cell's forward kernel over T steps.

    xz (T, B, G*H); states (S, T+1, B, H) with ``states[:, 0]`` set to the initial
    state; cache (T, B, C*H); hz (B, G*H) scratch for the recurrent projection.
    """
    T = xz.shape[0]
    B, GH = hz.shape
    for t in range(T):
        np.dot(states[0, t], W_h.T, hz)
        for b in range(B):
            for k in range(GH):
                hz[b, k] += b_h[k]
        cell_forward(xz[t], hz, states, t, cache[t])


@njit(cache=True)
def sequence_backward(W_h, states, cache, d_outputs, dstate, dstate_prev,
                      dxz, dhz, dh_recurrent):
    """Backpropagation through time.

    d_outputs (T, B, H): upstream gradient of every hidden state h_1..h_T.
    dstate (S, B, H): on entry the gradient w.r.t. the final state (zeros if none);
    on exit the gradient w.r.t. the initial state. dstate_prev (S, B, H) and
    dh_recurrent (B, H) are scratch. dxz, dhz (T, B, G*H) receive the gradients of
    the two projections (they may be the same array, see the cell protocol).
    """
    T = d_outputs.shape[0]
    S, B, H = dstate.shape
    for t in range(T - 1, -1, -1):
        for b in range(B):
            for j in range(H):
                dstate[0, b, j] += d_outputs[t, b, j]
        cell_backward(dstate, states, t, cache[t], dxz[t], dhz[t], dstate_prev)
        np.dot(dhz[t], W_h, dh_recurrent)
        for b in range(B):
            for j in range(H):
                dstate_prev[0, b, j] += dh_recurrent[b, j]
        for s in range(S):
            for b in range(B):
                for j in range(H):
                    dstate[s, b, j] = dstate_prev[s, b, j]


# ---- one call per layer and direction ---------------------------------------------------------

@njit(cache=True)
def forward_indices(idx, W_x, b_x, W_h, b_h, xz, states, cache, hz):
    """project_indices then sequence_forward; idx (T*B,) integer inputs, xz (T, B, G*H)."""
    T, B, GH = xz.shape
    project_indices(idx, W_x, b_x, xz.reshape(T * B, GH))
    sequence_forward(xz, W_h, b_h, states, cache, hz)

@njit(cache=True)
def forward_dense(x2d, W_x, b_x, W_h, b_h, xz, states, cache, hz):
    """project_dense then sequence_forward; x2d (T*B, X)."""
    T, B, GH = xz.shape
    project_dense(x2d, W_x, b_x, xz.reshape(T * B, GH))
    sequence_forward(xz, W_h, b_h, states, cache, hz)

@njit(cache=True)
def backward_indices(idx, W_h, states, cache, d_outputs, dstate, dstate_prev, dxz, dhz, dh_recurrent,
                     dW_x, dW_h, db_x, db_h):
    """sequence_backward then the hoisted weight gradients, for integer inputs."""
    T, B, GH = dxz.shape
    H = W_h.shape[1]
    sequence_backward(W_h, states, cache, d_outputs, dstate, dstate_prev, dxz, dhz,
                      dh_recurrent)
    recurrent_weight_gradients(dhz.reshape(T * B, GH), states[0, :T].reshape(T * B, H), dW_h, db_h)
    input_weight_gradients_indices(dxz.reshape(T * B, GH), idx, dW_x, db_x)

@njit(cache=True)
def backward_dense(x2d, W_x, W_h, states, cache, d_outputs, dstate, dstate_prev, dxz, dhz, dh_recurrent,
                   dW_x, dW_h, db_x, db_h, dx2d):
    """sequence_backward then the hoisted weight gradients and dx, for dense inputs."""
    T, B, GH = dxz.shape
    H = W_h.shape[1]
    sequence_backward(W_h, states, cache, d_outputs, dstate, dstate_prev, dxz, dhz,
                      dh_recurrent)
    recurrent_weight_gradients(dhz.reshape(T * B, GH), states[0, :T].reshape(T * B, H), dW_h, db_h)
    input_weight_gradients_dense(dxz.reshape(T * B, GH), x2d, W_x, dW_x, db_x, dx2d)

@njit(cache=True)
def generate(prime, length, W_x, b_x, W_h, b_h, W_y, b_y, mode, temperature, top_k, top_p, uniforms,
             stop_index, out, states, cache, xz, hz, logits, probs, kept, index):
    """Generate up to ``length`` indices into ``out`` with one layer and a dense head.

    The same operations as stepping ``RecurrentModel.forward`` one index at a time
    and choosing with a built-in sampler (``mode``: 0 categorical, 1 greedy,
    2 temperature, 3 top-k, 4 top-p), with ``uniforms`` pre-drawn. states
    (S, 2, 1, H) start at the initial state. Returns (indices written, uniforms used).
    """
    n_prime = prime.shape[0]
    for t in range(max(n_prime, 1)):  # feed the prime (or the zero input)
        index[0] = prime[t] if n_prime else -1
        _step(index, W_x, b_x, W_h, b_h, W_y, b_y, states, cache, xz, hz, logits)
    used = 0
    for n in range(length):
        if mode == 1:
            chosen = argmax_row(logits[0])
        else:
            apply_softmax(logits[0], temperature, probs)
            if mode == 3:
                top_k_filter(probs, top_k, kept)
                chosen = sample_categorical(kept, uniforms[used])
            elif mode == 4:
                top_p_filter(probs, top_p, kept)
                chosen = sample_categorical(kept, uniforms[used])
            else:
                chosen = sample_categorical(probs, uniforms[used])
            used += 1
        out[n] = chosen
        if chosen == stop_index:
            return n + 1, used
        if n + 1 < length:
            index[0] = chosen
            _step(index, W_x, b_x, W_h, b_h, W_y, b_y, states, cache, xz, hz, logits)
    return length, used

@njit(cache=True)
def _step(index, W_x, b_x, W_h, b_h, W_y, b_y, states, cache, xz, hz, logits):
    project_indices(index, W_x, b_x, xz[0])
    sequence_forward(xz, W_h, b_h, states, cache, hz)
    for s in range(states.shape[0]):
        for j in range(states.shape[3]):
            states[s, 0, 0, j] = states[s, 1, 0, j]
    project_dense(states[0, 1], W_y, b_y, logits)

@njit(cache=True)
def language_model_step(idx, targets, weights, scale, W_x, b_x, W_h, b_h, W_y, b_y, xz, states, cache, hz,
                        logits, probs, dlogits, d_hidden, dstate, dstate_prev, dxz, dhz, dh_recurrent,
                        dW_x, dW_h, db_x, db_h, dW_y, db_y):
    """Forward, softmax cross-entropy and BPTT of one layer with a dense head, in one call.

    The same kernels, in the same order, as ``RecurrentModel.forward``, the head,
    the ``softmax_cross_entropy`` loss, the head's backward and ``RecurrentModel.bptt``
    (bit for bit): the trainer's path for the common model, without a dozen
    crossings from Python. idx, targets, weights (T*B,); dlogits are scaled by
    ``scale`` (1/B, the batch mean). Returns the summed loss.
    """
    T, B, GH = xz.shape
    H = W_h.shape[1]
    project_indices(idx, W_x, b_x, xz.reshape(T * B, GH))
    sequence_forward(xz, W_h, b_h, states, cache, hz)
    hidden = states[0, 1:].reshape(T * B, H)
    project_dense(hidden, W_y, b_y, logits)
    loss = softmax_cross_entropy(logits, targets, weights, probs, dlogits)
    if scale != 1.0:
        for n in range(T * B):
            for v in range(logits.shape[1]):
                dlogits[n, v] *= scale
    input_weight_gradients_dense(dlogits, hidden, W_y, dW_y, db_y, d_hidden.reshape(T * B, H))
    dstate[...] = 0.0
    sequence_backward(W_h, states, cache, d_hidden, dstate, dstate_prev, dxz, dhz,
                      dh_recurrent)
    recurrent_weight_gradients(dhz.reshape(T * B, GH), states[0, :T].reshape(T * B, H), dW_h, db_h)
    input_weight_gradients_indices(dxz.reshape(T * B, GH), idx, dW_x, db_x)
    return loss
