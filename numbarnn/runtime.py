"""Runtime settings: one thread count for Numba and BLAS, and paying compile time up front."""
from __future__ import annotations

import time
from typing import Iterable, Optional

import numpy as np


def set_threads(n: Optional[int]):
    """Cap both Numba's and BLAS's thread pools at ``n`` threads (None: leave them as they are).

    On a small machine the two pools must not fight: oversubscribing two cores costs more
    than it gains. Returns the threadpoolctl limiter (kept alive for the process).

    >>> import numba
    >>> before = numba.get_num_threads()
    >>> limiter = set_threads(1)
    >>> numba.get_num_threads()
    1
    >>> limiter.restore_original_limits(); numba.set_num_threads(before)
    """
    if n is None:
        return None
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    import numba
    from threadpoolctl import threadpool_limits

    try:  # the BLAS the kernels call (SciPy's): load it now, or a call before the first step misses it
        import scipy.linalg.cython_blas  # noqa: F401
    except ImportError:
        pass
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    return threadpool_limits(limits=n)


def warmup(cells: Iterable[str] = ("rnn", "lstm"), dtypes: Iterable[str] = ("float32", "float64"),
           optimizer: str = "adam", verbose: bool = False) -> float:
    """Compile (or load from the disk cache) everything a training step and generation need.

    A fresh process otherwise pays this on its first ``train_step``. Returns the seconds spent.

    >>> seconds = warmup(cells=("rnn",), dtypes=("float64",))
    """
    from .trainer import make_trainer

    start = time.perf_counter()
    for cell in cells:
        for dtype in dtypes:
            t0 = time.perf_counter()
            trainer = make_trainer(cell=cell, optimizer=optimizer, vocab_size=3, hidden_size=2, dtype=dtype, seed=0)
            trainer.train_step(np.array([[-1, 0, 1]]), np.array([[0, 1, 2]]), mask=np.ones((1, 3)))
            trainer.generate(prime=[0], length=2)
            if verbose:
                print(f"warmup {cell} {dtype}: {time.perf_counter() - t0:.2f} s")
    return time.perf_counter() - start


def kernels_to_compile(trainer, phase: str) -> Optional[str]:
    """Whether ``phase`` of ``trainer.fit`` compiles the cell's time loops before it runs:
    ``None`` when they are compiled already (in this process, or in the disk cache for this
    machine and dtype), ``"cached"`` when they compile now and are cached on disk for later
    runs, ``"uncached"`` when they compile in every process (kernels that are not importable,
    see :func:`numbarnn.kernels.loops.loops_for`). ``phase`` is ``"step"``, ``"validation"``
    or ``"samples"``. Only CPU models of index inputs are looked at; for others it is None.

    ``fit`` uses it to say "compiling kernels" before a wait of seconds, not after it.

    >>> import numpy as np, numbarnn
    >>> trainer = numbarnn.make_trainer("rnn", vocab_size=3, hidden_size=2, seed=0)
    >>> _ = trainer.train_step(np.array([[0, 1]]), np.array([[1, 2]]))
    >>> kernels_to_compile(trainer, "step") is None   # compiled by the step above
    True
    """
    return trainer.backend.kernels_to_compile(phase, trainer.sampler)
