"""The per-cell compiled loops: a template that :func:`numbarnn.kernels.loops.loops_for` instantiates.

This is a real module (it runs the tanh RNN as written), but numbarnn never imports it:
``loops_for(cell)`` copies its text with the import marked ``CELL KERNELS`` rewritten to
import the cell's own kernels (and the lines marked ``CELL CALL`` and ``CELL SHAPE`` to pass
a cell's own parameters and to leave out the recurrent product of a cell without ``W_h``)
and runs that text as a module, its machine code cached in a
private directory (see ``docs/trust.md``: the text runs from memory, never from the file).
The kernels are then plain globals of ordinary ``cache=True`` functions, so every cell's
loops are compiled once and cached on disk like the rest (a kernel passed as an argument
cannot be: Numba treats it as a dynamic global). Each training step crosses from Python
into compiled code once per layer and direction (or once in all, ``language_model_step``).

The examples reach these functions as a cell's loops, ``loops_for(cell).<name>``. Shapes:
T steps, B sequences, H hidden units, a cell of G gates, S states and C cached blocks
(the tanh RNN: G = S = 1, C = 0), X input features or V input indices, and V_out outputs
of the head. One float dtype for all float arrays; integer arrays are int64.

``own`` is the tuple of the cell's own parameters (``CellSpec.params``, in declared order;
``()`` for a cell without any) and ``d_own`` the tuple of their gradients, which the backward
loops zero and then accumulate over the steps. For a cell without recurrent weights
(``CellSpec.recurrent_weights=False``) ``W_h`` is a ``(0, H)`` placeholder and ``b_h``,
``dW_h``, ``db_h`` scratch the loops do not use.
"""
import numpy as np  # noqa: F401
from numba import literal_unroll, njit

from numbarnn.kernels.cells import rnn_backward as cell_kernel_backward  # CELL KERNELS
from numbarnn.kernels.cells import rnn_forward as cell_kernel_forward  # CELL KERNELS
from numbarnn.kernels.loops import (_gather_row, gathers_in_place, input_weight_gradients_dense,
                                    input_weight_gradients_indices, project_dense, recurrent_product,
                                    recurrent_weight_gradients, tiled_operand)
from numbarnn.kernels.losses import softmax_cross_entropy
from numbarnn.kernels.sampling import apply_temperature as apply_softmax
from numbarnn.kernels.sampling import argmax as argmax_row
from numbarnn.kernels.sampling import GREEDY, TOP_K, TOP_P, sample_categorical, top_k_filter, top_p_filter

#: False for a cell without recurrent weights: no ``h @ W_h.T`` and no ``dhz @ W_h`` in the loops.
RECURRENT = True  # CELL SHAPE
#: True for a cell with parameters of its own. Numba compiles a global as a constant and drops
#: the branch not taken, so ``zero_gradients`` is never typed for a cell's empty ``d_own``.
OWN_PARAMS = False  # CELL SHAPE
#: False for a cell without projection biases: b_x and b_h are zero placeholders, so the loops
#: neither add b_h each step nor sum the gradients of either (a pass over all steps' dxz or dhz).
BIASES = True  # CELL SHAPE
#: True when dxz and dhz are one array (the cell's ``shared_gate_grad``): db_h is then db_x.
SHARED_GRADIENT = True  # CELL SHAPE


@njit(cache=True)
def cell_forward(xz_t, hz_t, states, t, cache_t, own):
    """The cell's forward kernel; a cell with parameters of its own also gets ``own``."""
    cell_kernel_forward(xz_t, hz_t, states, t, cache_t)  # CELL CALL


@njit(cache=True)
def cell_backward(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev, own, d_own):
    """The cell's backward kernel; a cell with parameters of its own also gets ``own, d_own``."""
    cell_kernel_backward(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev)  # CELL CALL


@njit(cache=True)
def zero_gradients(d_own):
    """Zero each array of ``d_own`` (a tuple of arrays of any shapes) before they accumulate."""
    for d in literal_unroll(d_own):
        flat = d.reshape(d.size)
        for k in range(flat.size):
            flat[k] = 0.0


@njit(cache=True)
def sequence_forward(xz, W_h, b_h, own, states, cache, hz):
    """Run the cell's forward kernel over T steps.

    xz (T, B, G*H); states (S, T+1, B, H) with ``states[:, 0]`` set to the initial
    state; cache (T, B, C*H); hz (B, G*H) scratch for the recurrent projection.
    W_h (G*H, H), b_h (G*H,); own the cell's own parameters (a tuple).

    >>> import numpy as np
    >>> import numbarnn
    >>> from numbarnn.kernels.loops import loops_for
    >>> rnn = loops_for(numbarnn.get_cell("rnn"))
    >>> rng = np.random.default_rng(0)
    >>> T, B, H = 3, 2, 2
    >>> xz, W_h, b_h = rng.normal(size=(T, B, H)), rng.normal(size=(H, H)), rng.normal(size=H)
    >>> states = np.zeros((1, T + 1, B, H))  # h_0 = 0
    >>> rnn.sequence_forward(xz, W_h, b_h, (), states, np.empty((T, B, 0)), np.empty((B, H)))
    >>> h = np.zeros((B, H))
    >>> for t in range(T):
    ...     h = np.tanh(xz[t] + h @ W_h.T + b_h)
    >>> np.allclose(states[0, T], h)
    True
    """
    T = xz.shape[0]
    if not RECURRENT:
        hz[:, :] = 0.0
    tiled_W_hT = tiled_operand(W_h.T, hz.shape[0])
    for t in range(T):
        forward_step(xz[t], W_h, b_h, own, states, t, cache[t], hz, tiled_W_hT)


@njit(cache=True)
def sequence_forward_indices(idx, W_x, b_x, W_h, b_h, own, xz_t, states, cache, hz):
    """:func:`sequence_forward` from integer inputs, each step's input projection made just
    before the step into xz_t (B, G*H): the same values as ``project_indices`` for all steps
    first, without writing and then reading back all T steps of it (T*B*G*H values).

    idx (T*B,) time-major, -1 an all-zero input; W_x (G*H, V), b_x (G*H,); the rest as
    :func:`sequence_forward`, whose steps it runs. Every loop over integer inputs (training,
    the general forward, generation) runs this one, so a cell's kernels are compiled into
    one forward loop for them, not two."""
    T, B = cache.shape[0], hz.shape[0]
    if not RECURRENT:
        hz[:, :] = 0.0
    tiled_W_hT = tiled_operand(W_h.T, B)
    few = gathers_in_place(B, W_x)
    W_xT = W_x[:0] if few else np.ascontiguousarray(W_x.T)
    for t in range(T):
        for b in range(B):
            if few:
                _gather_row(idx[t * B + b], W_x.T, b_x, xz_t[b])
            else:
                _gather_row(idx[t * B + b], W_xT, b_x, xz_t[b])
        forward_step(xz_t, W_h, b_h, own, states, t, cache[t], hz, tiled_W_hT)


@njit(cache=True)
def forward_step(xz_t, W_h, b_h, own, states, t, cache_t, hz, tiled_W_hT):
    """Step t of the forward: the recurrent projection into hz (B, G*H) (which stays zero
    without recurrent weights), then the cell's kernel."""
    if RECURRENT:
        recurrent_product(states[0, t], W_h.T, hz, tiled_W_hT)
        if BIASES:
            for b in range(hz.shape[0]):
                for k in range(hz.shape[1]):
                    hz[b, k] += b_h[k]
    cell_forward(xz_t, hz, states, t, cache_t, own)


@njit(cache=True)
def sequence_backward(W_h, own, states, cache, d_outputs, dstate, dstate_prev,
                      dxz, dhz, dh_recurrent, d_own):
    """Backpropagation through time.

    d_outputs (T, B, H): upstream gradient of every hidden state h_1..h_T.
    dstate (S, B, H): on entry the gradient w.r.t. the final state (zeros if none);
    on exit the gradient w.r.t. the initial state. dstate_prev (S, B, H) and
    dh_recurrent (B, H) are scratch. dxz, dhz (T, B, G*H) receive the gradients of
    the two projections (they may be the same array, see the cell protocol). W_h
    (G*H, H); own as given to :func:`sequence_forward`, whose states and cache it left;
    d_own receives the gradients of own (zeroed here, then summed over the steps).

    >>> import numpy as np
    >>> import numbarnn
    >>> from numbarnn.kernels.loops import loops_for
    >>> rnn = loops_for(numbarnn.get_cell("rnn"))
    >>> rng = np.random.default_rng(0)
    >>> T, B, H = 3, 2, 2
    >>> xz, W_h = rng.normal(size=(T, B, H)), rng.normal(size=(H, H))
    >>> states, cache = np.zeros((1, T + 1, B, H)), np.empty((T, B, 0))
    >>> rnn.sequence_forward(xz, W_h, np.zeros(H), (), states, cache, np.empty((B, H)))
    >>> d_outputs = rng.normal(size=(T, B, H))
    >>> dstate, dxz = np.zeros((1, B, H)), np.empty((T, B, H))
    >>> rnn.sequence_backward(W_h, (), states, cache, d_outputs, dstate, np.empty((1, B, H)), dxz, dxz,
    ...                       np.empty((B, H)), ())
    >>> dh = np.zeros((B, H))  # the same by hand, newest step first
    >>> for t in reversed(range(T)):
    ...     dh = ((dh + d_outputs[t]) * (1 - states[0, t + 1] ** 2)) @ W_h
    >>> np.allclose(dstate[0], dh)  # the gradient w.r.t. h_0
    True
    """
    T = d_outputs.shape[0]
    S, B, H = dstate.shape
    if OWN_PARAMS:
        zero_gradients(d_own)
    tiled_W_h = tiled_operand(W_h, B)
    for t in range(T - 1, -1, -1):
        for b in range(B):
            for j in range(H):
                dstate[0, b, j] += d_outputs[t, b, j]
        cell_backward(dstate, states, t, cache[t], dxz[t], dhz[t], dstate_prev, own, d_own)
        if RECURRENT:
            recurrent_product(dhz[t], W_h, dh_recurrent, tiled_W_h)
            for b in range(B):
                for j in range(H):
                    dstate_prev[0, b, j] += dh_recurrent[b, j]
        for s in range(S):
            for b in range(B):
                for j in range(H):
                    dstate[s, b, j] = dstate_prev[s, b, j]


@njit(cache=True)
def recurrent_gradients(dhz, states, dW_h, db_h, db_x):
    """dW_h and db_h from every step's dhz (T, B, G*H) and states, once db_x is made: db_h is
    a copy of db_x where dhz is dxz (their sums are the same), and left as it is without biases
    or recurrent weights."""
    if RECURRENT:
        T, B, GH = dhz.shape
        H = dW_h.shape[1]
        recurrent_weight_gradients(dhz.reshape(T * B, GH), states[0, :T].reshape(T * B, H), dW_h, db_h,
                                   BIASES and not SHARED_GRADIENT)
        if BIASES and SHARED_GRADIENT:
            db_h[:] = db_x


# ---- one call per layer and direction ---------------------------------------------------------

@njit(cache=True, nogil=True)
def forward_indices(idx, W_x, b_x, W_h, b_h, own, xz, states, cache, hz):
    """:func:`sequence_forward_indices`; idx (T*B,) integer inputs, xz (1, B, G*H) scratch
    for one step's input projection (a larger xz: only ``xz[0]`` is used).

    W_x (G*H, V), b_x (G*H,); the rest as :func:`sequence_forward`. idx is time-major
    (row ``t*B + b``); -1 is an all-zero input.

    >>> import numpy as np
    >>> import numbarnn
    >>> from numbarnn.kernels.loops import loops_for
    >>> rnn = loops_for(numbarnn.get_cell("rnn"))
    >>> rng = np.random.default_rng(0)
    >>> T, B, H, V = 2, 2, 3, 4
    >>> W_x, b_x, W_h, b_h = rng.normal(size=(H, V)), rng.normal(size=H), rng.normal(size=(H, H)), rng.normal(size=H)
    >>> idx = np.array([1, 3, 0, -1], np.int64)
    >>> states = np.zeros((1, T + 1, B, H))
    >>> rnn.forward_indices(idx, W_x, b_x, W_h, b_h, (), np.empty((T, B, H)), states, np.empty((T, B, 0)),
    ...                     np.empty((B, H)))
    >>> x = (np.eye(V)[idx] * (idx >= 0)[:, None]).reshape(T, B, V)  # the one-hot inputs
    >>> h = np.zeros((B, H))
    >>> for t in range(T):
    ...     h = np.tanh(x[t] @ W_x.T + b_x + h @ W_h.T + b_h)
    >>> np.allclose(states[0, T], h)
    True
    """
    sequence_forward_indices(idx, W_x, b_x, W_h, b_h, own, xz[0], states, cache, hz)

@njit(cache=True, nogil=True)
def forward_dense(x2d, W_x, b_x, W_h, b_h, own, xz, states, cache, hz):
    """project_dense then sequence_forward; x2d (T*B, X).

    W_x (G*H, X), b_x (G*H,); xz (T, B, G*H) receives the input projection; the rest
    as :func:`sequence_forward`.

    >>> import numpy as np
    >>> import numbarnn
    >>> from numbarnn.kernels.loops import loops_for
    >>> rnn = loops_for(numbarnn.get_cell("rnn"))
    >>> rng = np.random.default_rng(0)
    >>> T, B, H, X = 2, 2, 3, 4
    >>> W_x, b_x, W_h, b_h = rng.normal(size=(H, X)), rng.normal(size=H), rng.normal(size=(H, H)), rng.normal(size=H)
    >>> x = rng.normal(size=(T, B, X))
    >>> states = np.zeros((1, T + 1, B, H))
    >>> rnn.forward_dense(x.reshape(T * B, X), W_x, b_x, W_h, b_h, (), np.empty((T, B, H)), states,
    ...                   np.empty((T, B, 0)), np.empty((B, H)))
    >>> h = np.zeros((B, H))
    >>> for t in range(T):
    ...     h = np.tanh(x[t] @ W_x.T + b_x + h @ W_h.T + b_h)
    >>> np.allclose(states[0, T], h)
    True
    """
    T, B, GH = xz.shape
    project_dense(x2d, W_x, b_x, xz.reshape(T * B, GH))
    sequence_forward(xz, W_h, b_h, own, states, cache, hz)

@njit(cache=True, nogil=True)
def backward_indices(idx, W_h, own, states, cache, d_outputs, dstate, dstate_prev, dxz, dhz, dh_recurrent,
                     dW_x, dW_h, db_x, db_h, d_own):
    """sequence_backward then the hoisted weight gradients, for integer inputs.

    idx (T*B,) as given to :func:`forward_indices`; the arrays up to dh_recurrent as
    :func:`sequence_backward`; writes dW_x (G*H, V), dW_h (G*H, H), db_x and db_h (G*H,) and
    d_own.
    One step from a given h_0, checked by hand:

    >>> import numpy as np
    >>> import numbarnn
    >>> from numbarnn.kernels.loops import loops_for
    >>> rnn = loops_for(numbarnn.get_cell("rnn"))
    >>> rng = np.random.default_rng(0)
    >>> B, H, V = 2, 2, 3
    >>> W_x, W_h, idx = rng.normal(size=(H, V)), rng.normal(size=(H, H)), np.array([2, 0], np.int64)
    >>> states, cache = np.zeros((1, 2, B, H)), np.empty((1, B, 0))
    >>> states[0, 0] = rng.normal(size=(B, H))  # h_0
    >>> rnn.forward_indices(idx, W_x, np.zeros(H), W_h, np.zeros(H), (), np.empty((1, B, H)), states, cache,
    ...                     np.empty((B, H)))
    >>> d_out, dstate, dxz = rng.normal(size=(1, B, H)), np.zeros((1, B, H)), np.empty((1, B, H))
    >>> dW_x, dW_h, db_x, db_h = np.empty((H, V)), np.empty((H, H)), np.empty(H), np.empty(H)
    >>> rnn.backward_indices(idx, W_h, (), states, cache, d_out, dstate, np.empty((1, B, H)), dxz, dxz,
    ...                      np.empty((B, H)), dW_x, dW_h, db_x, db_h, ())
    >>> dz = d_out[0] * (1 - states[0, 1] ** 2)  # through the tanh
    >>> [np.allclose(a, b) for a, b in [(dW_x, dz.T @ np.eye(V)[idx]), (dW_h, dz.T @ states[0, 0]),
    ...                                 (db_x, dz.sum(axis=0)), (dstate[0], dz @ W_h)]]
    [True, True, True, True]
    """
    T, B, GH = dxz.shape
    sequence_backward(W_h, own, states, cache, d_outputs, dstate, dstate_prev, dxz, dhz,
                      dh_recurrent, d_own)
    input_weight_gradients_indices(dxz.reshape(T * B, GH), idx, dW_x, db_x, BIASES)
    recurrent_gradients(dhz, states, dW_h, db_h, db_x)

@njit(cache=True, nogil=True)
def backward_dense(x2d, W_x, W_h, own, states, cache, d_outputs, dstate, dstate_prev, dxz, dhz, dh_recurrent,
                   dW_x, dW_h, db_x, db_h, d_own, dx2d):
    """sequence_backward then the hoisted weight gradients and dx, for dense inputs.

    x2d (T*B, X) and W_x (G*H, X) as given to :func:`forward_dense`; the arrays up to
    dh_recurrent as :func:`sequence_backward`; writes dW_x (G*H, X), dW_h (G*H, H),
    db_x and db_h (G*H,), d_own and dx2d (T*B, X). One step from a given h_0, checked by hand:

    >>> import numpy as np
    >>> import numbarnn
    >>> from numbarnn.kernels.loops import loops_for
    >>> rnn = loops_for(numbarnn.get_cell("rnn"))
    >>> rng = np.random.default_rng(0)
    >>> B, H, X = 2, 2, 3
    >>> x2d, W_x, W_h = rng.normal(size=(B, X)), rng.normal(size=(H, X)), rng.normal(size=(H, H))
    >>> states, cache = np.zeros((1, 2, B, H)), np.empty((1, B, 0))
    >>> states[0, 0] = rng.normal(size=(B, H))  # h_0
    >>> rnn.forward_dense(x2d, W_x, np.zeros(H), W_h, np.zeros(H), (), np.empty((1, B, H)), states, cache,
    ...                   np.empty((B, H)))
    >>> d_out, dstate, dxz = rng.normal(size=(1, B, H)), np.zeros((1, B, H)), np.empty((1, B, H))
    >>> dW_x, dW_h, db_x, db_h, dx2d = np.empty((H, X)), np.empty((H, H)), np.empty(H), np.empty(H), np.empty((B, X))
    >>> rnn.backward_dense(x2d, W_x, W_h, (), states, cache, d_out, dstate, np.empty((1, B, H)), dxz, dxz,
    ...                    np.empty((B, H)), dW_x, dW_h, db_x, db_h, (), dx2d)
    >>> dz = d_out[0] * (1 - states[0, 1] ** 2)  # through the tanh
    >>> [np.allclose(a, b) for a, b in [(dW_x, dz.T @ x2d), (dW_h, dz.T @ states[0, 0]),
    ...                                 (db_x, dz.sum(axis=0)), (dx2d, dz @ W_x), (dstate[0], dz @ W_h)]]
    [True, True, True, True, True]
    """
    T, B, GH = dxz.shape
    sequence_backward(W_h, own, states, cache, d_outputs, dstate, dstate_prev, dxz, dhz,
                      dh_recurrent, d_own)
    input_weight_gradients_dense(dxz.reshape(T * B, GH), x2d, W_x, dW_x, db_x, dx2d, BIASES)
    recurrent_gradients(dhz, states, dW_h, db_h, db_x)

@njit(cache=True)
def generate(prime, length, W_x, b_x, W_h, b_h, own, W_y, b_y, mode, temperature, top_k, top_p, uniforms,
             stop_index, out, states, cache, xz, hz, logits, probs, kept, index):
    """Generate up to ``length`` indices into ``out`` with one layer and a dense head.

    The same operations as stepping ``RecurrentModel.forward`` one index at a time
    and choosing with a built-in sampler (``mode``: 0 categorical, 1 greedy,
    2 temperature, 3 top-k, 4 top-p), with ``uniforms`` pre-drawn. states
    (S, 2, 1, H) start at the initial state. Returns (indices written, uniforms used).

    prime (P,) int64 indices fed first (P may be 0: one zero input); W_x (G*H, V),
    W_h (G*H, H), W_y (V, H), biases (G*H,) and (V,); uniforms (at least one per drawn
    index) float64; out (length,) int64; stop_index ends early when drawn (-1: never).
    Scratch: cache (1, 1, C*H), xz (1, 1, G*H), hz (1, G*H), logits (1, V), probs and
    kept (V,), index (1,) int64. Greedy decoding, checked against a NumPy loop:

    >>> import numpy as np
    >>> import numbarnn
    >>> from numbarnn.kernels.loops import loops_for
    >>> rnn = loops_for(numbarnn.get_cell("rnn"))
    >>> rng = np.random.default_rng(0)
    >>> V, H = 4, 3
    >>> W_x, W_h, W_y = rng.normal(size=(H, V)), rng.normal(size=(H, H)), rng.normal(size=(V, H))
    >>> b_x, b_h, b_y = np.zeros(H), np.zeros(H), np.zeros(V)
    >>> out, e = np.empty(5, np.int64), np.empty
    >>> rnn.generate(np.array([0], np.int64), 5, W_x, b_x, W_h, b_h, (), W_y, b_y, 1, 1.0, 1, 1.0, e(0), -1, out,
    ...              np.zeros((1, 2, 1, H)), e((1, 1, 0)), e((1, 1, H)), e((1, H)), e((1, V)), e(V), e(V),
    ...              e(1, np.int64))
    (5, 0)
    >>> h, i, expected = np.zeros(H), 0, []
    >>> for _ in range(5):
    ...     h = np.tanh(W_x[:, i] + W_h @ h)
    ...     i = int(np.argmax(W_y @ h))
    ...     expected.append(i)
    >>> out.tolist() == expected
    True
    """
    n_prime = prime.shape[0]
    for t in range(max(n_prime, 1)):  # feed the prime (or the zero input)
        index[0] = prime[t] if n_prime else -1
        _step(index, W_x, b_x, W_h, b_h, own, W_y, b_y, states, cache, xz, hz, logits)
    used = 0
    for n in range(length):
        if mode == GREEDY:
            chosen = argmax_row(logits[0])
        else:
            apply_softmax(logits[0], temperature, probs)
            if mode == TOP_K:
                top_k_filter(probs, top_k, kept)
                chosen = sample_categorical(kept, uniforms[used])
            elif mode == TOP_P:
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
            _step(index, W_x, b_x, W_h, b_h, own, W_y, b_y, states, cache, xz, hz, logits)
    return length, used

@njit(cache=True)
def _step(index, W_x, b_x, W_h, b_h, own, W_y, b_y, states, cache, xz, hz, logits):
    sequence_forward_indices(index, W_x, b_x, W_h, b_h, own, xz[0], states, cache, hz)
    for s in range(states.shape[0]):
        for j in range(states.shape[3]):
            states[s, 0, 0, j] = states[s, 1, 0, j]
    project_dense(states[0, 1], W_y, b_y, logits)

@njit(cache=True, nogil=True)
def language_model_step(idx, targets, weights, scale, W_x, b_x, W_h, b_h, own, W_y, b_y, xz, states, cache, hz,
                        logits, probs, dlogits, d_hidden, dstate, dstate_prev, dxz, dhz, dh_recurrent,
                        dW_x, dW_h, db_x, db_h, d_own, dW_y, db_y):
    """Forward, softmax cross-entropy and BPTT of one layer with a dense head, in one call.

    The same kernels, in the same order, as ``RecurrentModel.forward``, the head,
    the ``softmax_cross_entropy`` loss, the head's backward and ``RecurrentModel.bptt``
    (bit for bit): the trainer's path for the common model, without a dozen
    crossings from Python. idx, targets, weights (T*B,); dlogits are scaled by
    ``scale`` (1/B, the batch mean). Returns the summed loss.

    idx, targets int64, weights float; W_y (V_out, H), b_y (V_out,); logits, probs and
    dlogits (T*B, V_out); d_hidden (T, B, H); dW_y, db_y the head's gradients; xz (1, B,
    G*H) scratch for one step's input projection (:func:`sequence_forward_indices`); the
    other arrays as :func:`forward_indices` and :func:`backward_indices`. ``dstate`` is
    zeroed here; ``states[:, 0]`` is the initial state.

    >>> import numpy as np
    >>> import numbarnn
    >>> from numbarnn.kernels.loops import loops_for
    >>> rnn = loops_for(numbarnn.get_cell("rnn"))
    >>> rng = np.random.default_rng(0)
    >>> T, B, H, V = 2, 2, 3, 4
    >>> idx, targets = np.array([0, 1, 2, 3], np.int64), np.array([1, 2, 3, 0], np.int64)
    >>> W_x, W_h, W_y = rng.normal(size=(H, V)), rng.normal(size=(H, H)), rng.normal(size=(V, H))
    >>> b_x, b_h, b_y = np.zeros(H), np.zeros(H), np.zeros(V)
    >>> e, N = np.empty, T * B
    >>> states, probs, dW_y, db_y = np.zeros((1, T + 1, B, H)), e((N, V)), e((V, H)), e(V)
    >>> loss = rnn.language_model_step(
    ...     idx, targets, np.ones(N), 1.0, W_x, b_x, W_h, b_h, (), W_y, b_y, e((1, B, H)), states, e((T, B, 0)),
    ...     e((B, H)), e((N, V)), probs, e((N, V)), e((T, B, H)), e((1, B, H)), e((1, B, H)), e((T, B, H)),
    ...     e((T, B, H)), e((B, H)), e((H, V)), e((H, H)), e(H), e(H), (), dW_y, db_y)
    >>> z = states[0, 1:].reshape(N, H) @ W_y.T  # the head's logits, from the hidden states
    >>> expected = -(z[np.arange(N), targets] - np.log(np.exp(z).sum(axis=1))).sum()
    >>> np.allclose(loss, expected), np.allclose(db_y, (probs - np.eye(V)[targets]).sum(axis=0))
    (True, True)
    """
    T, B, GH = dxz.shape
    H = W_h.shape[1]
    sequence_forward_indices(idx, W_x, b_x, W_h, b_h, own, xz[0], states, cache, hz)
    hidden = states[0, 1:].reshape(T * B, H)
    project_dense(hidden, W_y, b_y, logits)
    loss = softmax_cross_entropy(logits, targets, weights, probs, dlogits)
    if scale != 1.0:
        for n in range(T * B):
            for v in range(logits.shape[1]):
                dlogits[n, v] *= scale
    input_weight_gradients_dense(dlogits, hidden, W_y, dW_y, db_y, d_hidden.reshape(T * B, H))
    dstate[...] = 0.0
    sequence_backward(W_h, own, states, cache, d_hidden, dstate, dstate_prev, dxz, dhz,
                      dh_recurrent, d_own)
    input_weight_gradients_indices(dxz.reshape(T * B, GH), idx, dW_x, db_x, BIASES)
    recurrent_gradients(dhz, states, dW_h, db_h, db_x)
    return loss
