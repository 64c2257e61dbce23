"""The per-step recurrent products at small batches: one matrix product (gemm), one
matrix-vector product per row (gemv) and numbarnn's tiled product (one thread, ``W_h`` packed
once), the choice ``numbarnn.kernels.loops.tiled_operand`` and ``GEMV_MAX_ROWS`` make.

    python benchmarks/small_batch_products.py                       # float32 and float64, H 16-512, B 1-64
    python benchmarks/small_batch_products.py --dtype float32 --hidden 128 --batch 8 16 32

Each row times T=50 steps of the forward product ``h @ W_h.T`` (B x H by H x 4H) and of
BPTT's ``dhz @ W_h`` (B x 4H by 4H x H), written each way inside ``@njit`` as the loops
write them (the tiled product reads ``W_h.T`` or ``W_h`` packed in panels, made once), and prints
the ratios gemm / gemv and gemm / tiled (above 1: faster than gemm) and which one
numbarnn's loops take at that batch. Medians over ``--repeats`` runs with the BLAS thread
count capped at ``--threads``. Measurements, not targets.
"""
from __future__ import annotations

import argparse

import numpy as np
from numba import njit
from threadpoolctl import threadpool_limits

from breakdown import median_ms  # this folder is on sys.path when a script here runs
from numbarnn.kernels.loops import GEMV_MAX_ROWS, tiled_operand
from numbarnn.kernels.tiles import pack_panels, tiled_product


@njit
def forward_gemm(h, W_h, hz, T):
    for _ in range(T):
        np.dot(h, W_h.T, hz)


@njit
def forward_gemv(h, W_h, hz, T):
    for _ in range(T):
        for b in range(h.shape[0]):
            np.dot(W_h, h[b], hz[b])


@njit
def backward_gemm(dhz, W_h, dh, T):
    for _ in range(T):
        np.dot(dhz, W_h, dh)


@njit
def backward_gemv(dhz, W_h, dh, T):
    for _ in range(T):
        for b in range(dhz.shape[0]):
            np.dot(dhz[b], W_h, dh[b])


@njit
def forward_tiled(h, W_h, hz, T):
    panels = pack_panels(W_h.T)  # once per loop, as sequence_forward does
    for _ in range(T):
        tiled_product(h, panels, hz)


@njit
def backward_tiled(dhz, W_h, dh, T):
    panels = pack_panels(W_h)  # once per loop, as sequence_backward does
    for _ in range(T):
        tiled_product(dhz, panels, dh)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"], choices=("float32", "float64"))
    parser.add_argument("--hidden", nargs="+", type=int, default=[16, 32, 128, 512])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 2, 3, 4, 6, 8, 16, 32, 48, 64])
    parser.add_argument("--T", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"T={args.T} steps, {args.threads} BLAS threads, median of {args.repeats}; ms for the T products; "
          f"ratios = gemm / per-row gemv and gemm / tiled")
    print(f"{'dtype':<8} {'H':>4} {'B':>3} | {'fwd gemm':>9} {'gemv':>8} {'tiled':>8} {'ratios':>11} | "
          f"{'bwd gemm':>9} {'gemv':>8} {'tiled':>8} {'ratios':>11} | numbarnn")
    with threadpool_limits(args.threads):
        for dtype in args.dtype:
            for H in args.hidden:
                W_h = rng.normal(size=(4 * H, H)).astype(dtype)
                for B in args.batch:
                    h, hz = rng.normal(size=(B, H)).astype(dtype), np.empty((B, 4 * H), dtype)
                    dhz, dh = rng.normal(size=(B, 4 * H)).astype(dtype), np.empty((B, H), dtype)
                    times = [median_ms(lambda f=f, a=a, out=out: f(a, W_h, out, args.T), args.repeats)
                             for f, a, out in ((forward_gemm, h, hz), (forward_gemv, h, hz), (forward_tiled, h, hz),
                                               (backward_gemm, dhz, dh), (backward_gemv, dhz, dh),
                                               (backward_tiled, dhz, dh))]
                    taken = ("tiled" if tiled_operand(W_h, B).size else "gemv" if 1 < B <= GEMV_MAX_ROWS else "gemm")
                    columns = []
                    for gemm, gemv, tiled in (times[:3], times[3:]):
                        columns.append(f"{gemm:>9.3f} {gemv:>8.3f} {tiled:>8.3f} {gemm / gemv:>5.2f} {gemm / tiled:>5.2f}")
                    print(f"{dtype:<8} {H:>4} {B:>3} | {columns[0]} | {columns[1]} | {taken}")

if __name__ == "__main__":
    main()
