"""Where one training step's time goes: each compiled part of the step timed on its own.

    python benchmarks/breakdown.py                                   # the suite's mid case (LSTM H128 B32 T50 f32)
    python benchmarks/breakdown.py --hidden 512 --batch 64           # the large case
    python benchmarks/breakdown.py --cell rnn --hidden 100 --batch 1 --T 25 --vocab 27 --dtype float64  # course
    python benchmarks/breakdown.py --cell layernorm_lstm             # a plugin cell (suite's owncells case)

The parts are the kernels the trainer's compiled step (``language_model_step``) runs, in
its order, on the same arrays: the input projection and its weight gradient, the forward
time loop, the head and loss, BPTT, the recurrent weight gradient. The recurrent products
alone (one per time step, each direction) are timed with 1 and with 2 BLAS threads, to
show whether BLAS splits them over the cores (a cell without ``W_h``, such as ``indrnn``,
has neither these nor the recurrent weight gradient). A cell's own parameters come from its
initialiser. ``train_step`` is the whole step from
Python (clip and optimizer update included). Medians over ``--repeats`` runs; the
numbers explain the suite's table (docs/performance.md) and are not targets.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from numba import njit
from threadpoolctl import threadpool_limits

import numbarnn
from numbarnn.kernels import loops as L
from numbarnn.kernels.loops import loops_for
from numbarnn.kernels.losses import softmax_cross_entropy


@njit
def forward_products(states, W_h, hz, T):
    for t in range(T):
        np.dot(states[0, t], W_h.T, hz)


@njit
def backward_products(dhz, W_h, dh, T):
    for t in range(T):
        np.dot(dhz[t], W_h, dh)


def median_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--T", type=int, default=50)
    parser.add_argument("--vocab", type=int, default=65)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads for everything but the 1-thread row")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    threadpool_limits(args.threads)

    cell = numbarnn.get_cell(args.cell)
    H, B, T, V, dt = args.hidden, args.batch, args.T, args.vocab, np.dtype(args.dtype)
    G, S, C = cell.gates, cell.states, cell.cache_width
    N, GH = T * B, G * H
    rng = np.random.default_rng(0)
    idx, targets = rng.integers(0, V, N), rng.integers(0, V, N)
    weights = lambda *shape: (rng.normal(size=shape) * 0.1).astype(dt)  # noqa: E731
    empty = lambda *shape: np.empty(shape, dt)  # noqa: E731
    W_x, W_h, W_y, b_x, b_h, b_y = weights(GH, V), weights(GH, H), weights(V, H), weights(GH), weights(GH), weights(V)
    if not cell.recurrent_weights:  # IndRNN: the loops take an empty W_h and do no recurrent product
        W_h = empty(0, H)
    # A cell's own parameters (layernorm_lstm's gains, indrnn's u), as its initialiser makes them.
    params = cell.init_params(rng, V, H, dt)
    own = tuple(params[name] for name in cell.own_param_names)
    d_own = tuple(np.empty_like(p) for p in own)
    states, xz, cache, hz = np.zeros((S, T + 1, B, H), dt), empty(T, B, GH), empty(T, B, C * H), empty(B, GH)
    logits, probs, dlogits, d_hidden = empty(N, V), empty(N, V), empty(N, V), empty(T, B, H)
    dstate, dstate_prev, dh = empty(S, B, H), empty(S, B, H), empty(B, H)
    dxz = empty(T, B, GH)
    dhz = dxz if cell.shared_gate_grad else empty(T, B, GH)
    dW_x, dW_h, db_x, db_h, dW_y, db_y = empty(GH, V), np.empty_like(W_h), empty(GH), empty(GH), empty(V, H), empty(V)
    ones = np.ones(N, dt)
    step = loops_for(cell)
    hidden = states[0, 1:].reshape(N, H)
    r = args.repeats

    def head_and_loss():
        L.project_dense(hidden, W_y, b_y, logits)
        softmax_cross_entropy(logits, targets, ones, probs, dlogits)
        L.input_weight_gradients_dense(dlogits, hidden, W_y, dW_y, db_y, d_hidden.reshape(N, H))

    def input_parts():
        L.project_indices(idx, W_x, b_x, xz.reshape(N, GH))
        L.input_weight_gradients_indices(dxz.reshape(N, GH), idx, dW_x, db_x)

    rows = {
        "compiled step (forward, loss, BPTT, gradients)": median_ms(lambda: step.language_model_step(
            idx, targets, ones, dt.type(1.0 / B), W_x, b_x, W_h, b_h, own, W_y, b_y, xz, states, cache, hz, logits,
            probs, dlogits, d_hidden, dstate, dstate_prev, dxz, dhz, dh, dW_x, dW_h, db_x, db_h, d_own, dW_y, db_y), r),
        "  input projection + its weight gradient": median_ms(input_parts, r),
        "  forward time loop": median_ms(lambda: step.sequence_forward(xz, W_h, b_h, own, states, cache, hz), r),
        "  head, softmax cross-entropy, head backward": median_ms(head_and_loss, r),
        "  BPTT time loop": median_ms(lambda: step.sequence_backward(W_h, own, states, cache, d_hidden, dstate,
                                                                     dstate_prev, dxz, dhz, dh, d_own), r),
    }
    if cell.recurrent_weights:
        rows["  recurrent weight gradient (one product)"] = median_ms(lambda: L.recurrent_weight_gradients(
            dhz.reshape(N, GH), states[0, :T].reshape(N, H), dW_h, db_h), r)
    for threads in (1, args.threads) if cell.recurrent_weights else ():
        with threadpool_limits(threads):
            fwd = median_ms(lambda: forward_products(states, W_h, hz, T), r)
            bwd = median_ms(lambda: backward_products(dhz, W_h, dh, T), r)
        gflops = 2 * B * GH * H * T / 1e9
        rows[f"recurrent products alone, {threads} BLAS thread(s): forward / backward"] = (
            f"{fwd:.3f} / {bwd:.3f} ms ({gflops / fwd * 1e3:.0f} / {gflops / bwd * 1e3:.0f} GFLOP/s)")
    trainer = numbarnn.make_trainer(args.cell, "softmax_cross_entropy", "adam", "categorical", vocab_size=V,
                                    hidden_size=H, dtype=args.dtype, seed=0, clip=5.0, clip_mode="norm")
    x, y = rng.integers(0, V, size=(B, T)), rng.integers(0, V, size=(B, T))
    rows["train_step from Python (+ clip by norm, Adam)"] = median_ms(lambda: trainer.train_step(x, y), r)

    print(f"{args.cell} H{H} B{B} T{T} V{V} {args.dtype}, {args.threads} BLAS threads, median of {r}")
    for name, value in rows.items():
        print(f"  {name:<72} {value:.3f} ms" if isinstance(value, float) else f"  {name:<72} {value}")


if __name__ == "__main__":
    main()
