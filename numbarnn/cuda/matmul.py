"""A tiled shared-memory matrix product for the large, non-recurrent products.

``gemm(A, B, C, bias=None, trans_a=False, trans_b=False)`` computes
``C (M, N) = op(A) (M, K) @ op(B) (K, N) [+ bias (N,)]`` with ``op(A) = A.T`` when
``trans_a`` (A stored (K, M)) and likewise for B. It serves the input projection
``XZ = X @ W_x.T + b_x``, the head ``logits = H @ W_y.T + b_y`` and every weight gradient
(``dW_h = dHZ^T H_prev``, ``dW_x = dXZ^T X``, ``dW_y = dlogits^T H``) and input gradient.

numba-cuda installs no BLAS (cuBLAS comes with other packages, such as CuPy, which the
``cuda`` extra does not pull in), so the product is written here: a block computes a
BM x BN tile of C, stepping through K in slices of BK staged in shared memory; each
thread accumulates a TM x TN register tile (rows ``ty + i*BM/TM``, columns
``tx + j*BN/TN``, so neighbouring threads read neighbouring shared-memory words). The
accumulator has the arrays' dtype, as a BLAS call on the CPU would. Kernels are built per
(transposes, bias, dtype, tile) and cached; the tile comes from ``numbarnn.cuda.config``.
"""
from __future__ import annotations

import numpy as np
from numba import cuda
from numba.np import numpy_support

from ._support import config, kernel_cache


@kernel_cache
def _build(trans_a: bool, trans_b: bool, with_bias: bool, dtype: np.dtype, tile: tuple):
    BM, BN, BK, TM, TN = tile
    NTX, NTY = BN // TN, BM // TM
    NT = NTX * NTY
    nb_dtype = numpy_support.from_dtype(dtype)
    zero = dtype.type(0)

    @cuda.jit
    def gemm_kernel(A, B, bias, C):
        As = cuda.shared.array((BK, BM), nb_dtype)
        Bs = cuda.shared.array((BK, BN), nb_dtype)
        acc = cuda.local.array((TM, TN), nb_dtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * NTX + tx
        m0 = cuda.blockIdx.y * BM
        n0 = cuda.blockIdx.x * BN
        M = C.shape[0]
        N = C.shape[1]
        K = A.shape[0] if trans_a else A.shape[1]
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = zero
        for k0 in range(0, K, BK):
            # Stage op(A)[m0:m0+BM, k0:k0+BK] as As[k, m]; loads run along the stored rows.
            for e in range(tid, BK * BM, NT):
                if trans_a:
                    kk = e // BM
                    mm = e - kk * BM
                else:
                    mm = e // BK
                    kk = e - mm * BK
                gm = m0 + mm
                gk = k0 + kk
                v = zero
                if gm < M and gk < K:
                    if trans_a:
                        v = A[gk, gm]
                    else:
                        v = A[gm, gk]
                As[kk, mm] = v
            # Stage op(B)[k0:k0+BK, n0:n0+BN] as Bs[k, n].
            for e in range(tid, BK * BN, NT):
                if trans_b:
                    nn = e // BK
                    kk = e - nn * BK
                else:
                    kk = e // BN
                    nn = e - kk * BN
                gn = n0 + nn
                gk = k0 + kk
                v = zero
                if gn < N and gk < K:
                    if trans_b:
                        v = B[gn, gk]
                    else:
                        v = B[gk, gn]
                Bs[kk, nn] = v
            cuda.syncthreads()
            for kk in range(BK):
                for i in range(TM):
                    a = As[kk, ty + i * NTY]
                    for j in range(TN):
                        acc[i, j] += a * Bs[kk, tx + j * NTX]
            cuda.syncthreads()
        for i in range(TM):
            m = m0 + ty + i * NTY
            if m < M:
                for j in range(TN):
                    n = n0 + tx + j * NTX
                    if n < N:
                        if with_bias:
                            C[m, n] = acc[i, j] + bias[n]
                        else:
                            C[m, n] = acc[i, j]

    return gemm_kernel


@kernel_cache
def _dummy(dtype: np.dtype):
    """A one-element device array standing in for ``bias`` when there is none."""
    return cuda.to_device(np.zeros(1, dtype))


def gemm_kernel(trans_a: bool, trans_b: bool, with_bias: bool, dtype, tile=None):
    """The cached kernel for one combination (``tile`` defaults to ``config.gemm_tile``).

    ``tile`` is ``(BM, BN, BK, TM, TN)``; the kernel takes ``(A, B, bias, C)`` and runs on
    a grid of ``(ceil(N / BN), ceil(M / BM))`` blocks of ``(BN // TN, BM // TM)`` threads,
    which :func:`gemm` sets up.

    >>> import numpy as np
    >>> from numbarnn.cuda.matmul import gemm_kernel
    >>> kernel = gemm_kernel(False, True, True, np.float32, tile=(4, 4, 2, 2, 2))
    >>> kernel is gemm_kernel(False, True, True, "float32", tile=(4, 4, 2, 2, 2))  # built once
    True
    >>> kernel is gemm_kernel(False, True, True, np.float64, tile=(4, 4, 2, 2, 2))  # another dtype
    False
    """
    tile = tuple(config.gemm_tile if tile is None else tile)
    return _build(bool(trans_a), bool(trans_b), bool(with_bias), np.dtype(dtype), tile)


def gemm(A, B, C, bias=None, trans_a=False, trans_b=False, stream=0, tile=None):
    """``C = op(A) @ op(B) [+ bias]`` on the device (all arguments device arrays, one dtype).

    C (M, N); A (M, K), or (K, M) with ``trans_a``; B (K, N), or (N, K) with ``trans_b``;
    bias (N,) or None. Shapes that do not agree are a ValueError.

    >>> import numpy as np
    >>> from numba import cuda
    >>> from numbarnn.cuda.matmul import gemm
    >>> rng = np.random.default_rng(0)
    >>> A, B, bias = rng.normal(size=(3, 5)), rng.normal(size=(4, 5)), rng.normal(size=4)
    >>> C = cuda.device_array((3, 4))
    >>> gemm(cuda.to_device(A), cuda.to_device(B), C, bias=cuda.to_device(bias), trans_b=True)
    >>> np.allclose(C.copy_to_host(), A @ B.T + bias)
    True
    """
    M, N = C.shape
    K = A.shape[0] if trans_a else A.shape[1]
    if (A.shape[1] if trans_a else A.shape[0]) != M or (B.shape[1] if trans_b else B.shape[0]) != K \
            or (B.shape[0] if trans_b else B.shape[1]) != N:
        raise ValueError(f"gemm: shapes do not agree: A {A.shape}{'.T' if trans_a else ''}, "
                         f"B {B.shape}{'.T' if trans_b else ''}, C {C.shape}")
    tile = tuple(config.gemm_tile if tile is None else tile)
    BM, BN, BK, TM, TN = tile
    kernel = gemm_kernel(trans_a, trans_b, bias is not None, C.dtype, tile)
    grid = ((N + BN - 1) // BN, (M + BM - 1) // BM)
    kernel[grid, (BN // TN, BM // TM), stream](A, B, _dummy(np.dtype(C.dtype)) if bias is None else bias, C)
