"""numba.cuda kernels for numbarnn: the same trainer on an NVIDIA GPU (``device="cuda"``).

Importing :mod:`numbarnn` never imports this package, and importing this package does
not import ``numba.cuda`` either: the kernel modules (:mod:`numbarnn.cuda.cells`,
``loops``, ``matmul``, ``heads``, ``losses``, ``optim``, ``sampling``, ``trainer``; the
names mirror :mod:`numbarnn.kernels`) import it when they are first imported themselves,
which :func:`require` does only after checking that the target can work.

The CUDA target is an optional extra, ``pip install "numbarnn[cuda]"``, which installs
NVIDIA's ``numba-cuda`` package. :func:`available` says whether a GPU can be used and
:func:`require` raises :class:`CudaUnavailableError` naming what is missing: the
``numba-cuda`` package, the NVIDIA driver, or a GPU. Under the CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1`` set before numba is imported) everything is available; that
is how the kernels are tested without a GPU (``tests/cuda_sim``).

``config`` holds the launch shapes (thread-block sizes and tiles). The defaults are for a
real GPU; the simulator tests shrink them so that tiny problems still span several
blocks. Kernels are built per configuration, so changing it takes effect on the next
trainer or kernel request.

Example (no GPU on the machine that runs the doctests, so this shows the error path):
    >>> import numbarnn.cuda as nc
    >>> isinstance(nc.available(), bool)
    True
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, fields, replace
from typing import Optional

import numpy as np

# numba-cuda (0.30.4 and before) overloads np.row_stack while loading its typing registries,
# at the first CUDA compile; NumPy 2.5 removed that name (an alias of np.vstack since 2.0),
# so without this every kernel compile fails with "module 'numpy' has no attribute
# 'row_stack'" on NumPy 2.5. Seen on an H100 with numba 0.68.0, numba-cuda 0.30.4, NumPy 2.5.2.
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack

__all__ = ["CudaUnavailableError", "UnsupportedOnCuda", "available", "require", "unavailable_reason", "simulator", "config",
           "make_cuda_trainer", "CudaTrainer"]

INSTALL_HINT = 'pip install "numbarnn[cuda]"'


class CudaUnavailableError(RuntimeError):
    """``device="cuda"`` was asked for but cannot work here; the message says why.

    ``missing`` is ``"package"`` (neither numba-cuda nor numba's built-in CUDA target is
    importable), ``"driver"`` (no usable NVIDIA driver) or ``"gpu"`` (a driver but no GPU).

    ``CudaUnavailableError(missing, message)``, both strings; a RuntimeError. :func:`require`
    raises it with the reason :func:`unavailable_reason` gives.

    >>> from numbarnn.cuda import CudaUnavailableError
    >>> error = CudaUnavailableError("gpu", "device='cuda': the NVIDIA driver is installed but found no GPU")
    >>> isinstance(error, RuntimeError), error.missing, str(error)
    (True, 'gpu', "device='cuda': the NVIDIA driver is installed but found no GPU")
    """

    def __init__(self, missing: str, message: str):
        super().__init__(message)
        self.missing = missing


class UnsupportedOnCuda(ValueError):
    """A component (cell, loss, optimizer, sampler, option) that has no CUDA implementation.

    A ValueError with a message naming the component, so code that checks a configuration
    with ``except ValueError`` catches it too.

    >>> from numbarnn.cuda import UnsupportedOnCuda
    >>> try:
    ...     raise UnsupportedOnCuda("cell 'cpu_only' has no CUDA kernels")
    ... except ValueError as error:
    ...     print(type(error).__name__, error)
    UnsupportedOnCuda cell 'cpu_only' has no CUDA kernels
    """


@dataclass
class Config:
    """Launch shapes. Tests shrink them to force several thread blocks on tiny problems.

    Attributes:
        threads: threads per block of the one-dimensional (elementwise) kernels.
        max_blocks: at most this many blocks for those kernels; they loop over the rest
            (grid-stride loops), so the simulator can run big arrays on few threads.
        gemm_tile: ``(BM, BN, BK, TM, TN)`` of the tiled matrix product: a block computes a
            BM x BN tile of the output in K-steps of BK through shared memory, each thread a
            TM x TN register tile (so a block has (BM/TM) * (BN/TN) threads).
        step_tile: ``(BM, BJ, BK, TM)`` of the fused recurrent step, or None to derive it
            from the batch and hidden sizes (:func:`numbarnn.cuda.loops.step_tiles`). A
            forward block computes rows BM of the batch and hidden units BJ of every gate.
        step_kernel: which fused step kernels run the recurrence: ``"tiled"`` (a block owns
            a BM x BJ tile of batch rows and units, the product staged through shared
            memory), ``"rowdot"`` (a warp owns one hidden unit and up to ``rowdot_batch``
            batch rows; its lanes read the unit's weight rows contiguously and reduce with
            warp shuffles: many small independent dot products, which is what a small batch
            needs to spread one step over the whole GPU) or ``"auto"`` (rowdot for batches
            up to ``rowdot_max_batch``, tiled above).
        rowdot_batch: batch rows per warp of the rowdot kernels (more rows share each
            weight read; more registers).
        rowdot_warps: warps per block of the rowdot kernels.
        rowdot_max_batch: the largest batch ``"auto"`` gives to the rowdot kernels.
        loop: ``"launch"`` (one kernel launch per time step), ``"persistent"`` (one
            cooperative launch for the whole sequence, the grid synchronised between
            steps) or ``"auto"`` (persistent for batches up to ``persistent_max_batch``
            rows, per-step launches above; always per-step launches on the simulator).
            Measured on an H100 (LSTM H1024 T100): persistent 4.1 vs 10.7 ms at batch 1
            and 6.9 vs 11.2 ms at batch 4; launches 40.7 vs 51.4 ms at batch 64.
        persistent_max_batch: the largest batch ``loop="auto"`` runs persistent.
        reduce_threads: threads of the single block that reduces a loss or a norm to one number.

    Every field is an int, a tuple of ints, a string or None, as above; ``threads`` and
    ``reduce_threads`` must be powers of two. The kernels read the module's ``config``;
    :meth:`update` changes fields by name and checks them all first. A fresh Config holds
    the defaults (here, so the module's ``config`` stays as it is):

    >>> from numbarnn.cuda import Config
    >>> c = Config()
    >>> c.threads, c.gemm_tile, c.step_tile, c.loop
    (256, (64, 64, 16, 4, 4), None, 'auto')
    >>> c.update(threads=64, step_tile=(2, 4, 3, 1)) is c, c.threads, c.step_tile
    (True, 64, (2, 4, 3, 1))
    >>> c.update(threads=48)
    Traceback (most recent call last):
        ...
    ValueError: threads must be a power of two, got 48
    >>> c.update(gemm_tile=(64, 64, 16, 3, 4))
    Traceback (most recent call last):
        ...
    ValueError: gemm_tile (64, 64, 16, 3, 4): TM must divide BM and TN divide BN
    >>> c.update(thread=64)
    Traceback (most recent call last):
        ...
    ValueError: numbarnn.cuda.config has no field 'thread'; fields: [...]
    >>> c.update(threads=128, loop="sometimes")
    Traceback (most recent call last):
        ...
    ValueError: loop must be 'auto', 'launch' or 'persistent', got 'sometimes'
    >>> c.threads  # nothing changes unless everything checks
    64
    """

    threads: int = 256
    max_blocks: int = 1024
    gemm_tile: tuple = (64, 64, 16, 4, 4)
    step_tile: Optional[tuple] = None
    step_kernel: str = "auto"
    # Measured on an H100 (docs/gpu.md): rowdot beat the tiled kernels at batch 1, 4 and 64
    # (2.0x at 64, 9x at 4, 40x at 1), and 4 warps per block beat 8 and 16 at batch 1 and 4.
    rowdot_batch: int = 8
    rowdot_warps: int = 4
    rowdot_max_batch: int = 64
    loop: str = "auto"
    persistent_max_batch: int = 16
    reduce_threads: int = 256

    def update(self, **changes) -> "Config":
        """Set fields by name (unknown names are an error); returns self."""
        names = {f.name for f in fields(self)}
        for key in changes:
            if key not in names:
                raise ValueError(f"numbarnn.cuda.config has no field {key!r}; fields: {sorted(names)}")
        replace(self, **changes).check()  # nothing changes unless everything checks
        for key, value in changes.items():
            setattr(self, key, value)
        return self

    def check(self):
        BM, BN, BK, TM, TN = self.gemm_tile
        if BM % TM or BN % TN or min(BM, BN, BK, TM, TN) < 1:
            raise ValueError(f"gemm_tile {self.gemm_tile}: TM must divide BM and TN divide BN")
        if self.step_tile is not None:
            BM, BJ, BK, TM = self.step_tile
            if BM % TM or min(BM, BJ, BK, TM) < 1:
                raise ValueError(f"step_tile {self.step_tile}: TM must divide BM")
        if self.step_kernel not in ("auto", "tiled", "rowdot"):
            raise ValueError(f"step_kernel must be 'auto', 'tiled' or 'rowdot', got {self.step_kernel!r}")
        for name in ("rowdot_batch", "rowdot_warps", "rowdot_max_batch", "persistent_max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.loop not in ("auto", "launch", "persistent"):
            raise ValueError(f"loop must be 'auto', 'launch' or 'persistent', got {self.loop!r}")
        if self.max_blocks < 1:
            raise ValueError(f"max_blocks must be at least 1, got {self.max_blocks}")
        for name in ("threads", "reduce_threads"):
            value = getattr(self, name)
            if value < 1 or value & (value - 1):
                raise ValueError(f"{name} must be a power of two, got {value}")


config = Config()


def grid1d(n: int) -> int:
    """Blocks for a one-dimensional kernel over n items (grid-stride loops do the rest).

    n an int >= 0; returns ``ceil(n / config.threads)`` clipped to ``[1, config.max_blocks]``
    (an int). Host arithmetic only:

    >>> from numbarnn.cuda import config, grid1d
    >>> saved = config.threads, config.max_blocks
    >>> _ = config.update(threads=4, max_blocks=3)
    >>> [grid1d(n) for n in (0, 1, 4, 5, 8, 9, 1000)]  # blocks of 4 threads, at most 3 of them
    [1, 1, 1, 2, 2, 3, 3]
    >>> _ = config.update(threads=saved[0], max_blocks=saved[1])
    """
    return int(max(1, min(config.max_blocks, (n + config.threads - 1) // config.threads)))


def simulator() -> bool:
    """True when numba runs CUDA kernels on its simulator (``NUMBA_ENABLE_CUDASIM=1``).

    Returns a bool; numba reads the variable when it is first imported.

    >>> import os
    >>> from numbarnn.cuda import simulator
    >>> simulator() == (os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1")
    True
    """
    try:
        from numba.core import config as numba_config
    except ImportError:  # pragma: no cover - numba is a dependency
        return False
    return bool(getattr(numba_config, "ENABLE_CUDASIM", False))


# ---- what can be missing ---------------------------------------------------------------------
# Three probes, each its own function so tests can replace one to simulate a machine.

def _has_package() -> bool:
    """numba-cuda installed, or numba's own (deprecated) built-in CUDA target present."""
    if importlib.util.find_spec("numba_cuda") is not None:
        return True
    try:
        return importlib.util.find_spec("numba.cuda") is not None
    except ImportError:  # pragma: no cover
        return False


def _driver_error() -> Optional[str]:
    """None when the NVIDIA driver initialises; else the driver's message."""
    from numba import cuda  # imported only here, after the package check

    if cuda.is_available():
        return None
    error = cuda.cuda_error()
    return str(error) if error is not None else "the CUDA driver reported no usable device"


def _gpu_count() -> int:
    from numba import cuda

    try:
        return len(cuda.gpus)
    except Exception:  # noqa: BLE001 - the driver's own errors are reported by _driver_error
        return 0


def unavailable_reason() -> Optional[tuple]:
    """None when ``device="cuda"`` can work; else ``(missing, message)``.

    ``missing`` is one of ``"package"``, ``"driver"`` and ``"gpu"`` (as in
    :class:`CudaUnavailableError`), ``message`` a string that says what to install or check.
    Always None on the simulator. Whether a GPU is here decides which, so the example
    checks what holds either way:

    >>> from numbarnn.cuda import available, simulator, unavailable_reason
    >>> reason = unavailable_reason()
    >>> reason is None or (reason[0] in ("package", "driver", "gpu") and isinstance(reason[1], str))
    True
    >>> (reason is None) == available(), reason is None or not simulator()
    (True, True)
    """
    if simulator():
        return None
    if not _has_package():
        return ("package", "device='cuda' needs the numba-cuda package, which is not installed: "
                f'{INSTALL_HINT} (for the CUDA toolkit libraries too: pip install "numba-cuda[cu12]" '
                'or "numba-cuda[cu13]", matching your driver)')
    message = _driver_error()
    if message is not None:
        lowered = message.lower()
        if "no_device" in lowered or "no cuda-capable device" in lowered or "no device" in lowered:
            return ("gpu", "device='cuda': the NVIDIA driver is installed but found no GPU "
                           f"({message.strip()})")
        return ("driver", "device='cuda': no usable NVIDIA driver (numba-cuda is installed, but "
                          f"the driver did not load: {message.strip()})")
    if _gpu_count() < 1:
        return ("gpu", "device='cuda': the NVIDIA driver is installed but found no GPU")
    return None


def available() -> bool:
    """True when ``device="cuda"`` can work here (always on the simulator).

    Returns a bool and never raises: a probe that fails counts as "not available".

    >>> from numbarnn.cuda import available, simulator, unavailable_reason
    >>> available() == (unavailable_reason() is None), available() or not simulator()
    (True, True)
    """
    try:
        return unavailable_reason() is None
    except Exception:  # noqa: BLE001 - a probe that crashes means "not available"
        return False


def require() -> None:
    """Raise :class:`CudaUnavailableError` naming what is missing, or return None.

    numbarnn's model and trainer factories call it for ``device="cuda"`` before they import
    the kernel modules. It raises exactly when :func:`available` is False (here, with or
    without a GPU):

    >>> import numbarnn.cuda as nc
    >>> try:
    ...     nc.require()
    ...     print(nc.available())
    ... except nc.CudaUnavailableError as error:
    ...     print(not nc.available() and error.missing in ("package", "driver", "gpu"))
    True
    """
    reason = unavailable_reason()
    if reason is not None:
        raise CudaUnavailableError(*reason)


def __getattr__(name):
    # Lazy: the trainer module imports numba.cuda, so it is only loaded when asked for.
    if name in ("make_cuda_trainer", "CudaTrainer"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'numbarnn.cuda' has no attribute {name!r}")
