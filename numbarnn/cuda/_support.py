"""What every module of :mod:`numbarnn.cuda` shares: the launch configuration, the errors,
the kernel cache, and which components have CUDA kernels.

It imports neither ``numba.cuda`` nor the trainer, so the package's face
(:mod:`numbarnn.cuda`, which re-exports ``Config``, ``config``, the errors, ``grid1d`` and
``simulator``), its kernel modules and the trainer can all import it, and a configuration
can be checked before anything CUDA is loaded. The component checks (:func:`check_loss`,
:func:`check_optimizer`; a cell's in :func:`numbarnn.cuda.cells.resolve`)
are each written once, here.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, fields, replace
from typing import Optional

from .. import losses as _losses

__all__ = ["CudaUnavailableError", "UnsupportedOnCuda", "Config", "config", "grid1d", "simulator", "kernel_cache",
           "DEVICE_LOSSES", "check_loss", "check_optimizer"]


# ---- errors -------------------------------------------------------------------------------------

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


# Shown, pickled and documented as the package's own (``numbarnn.cuda.UnsupportedOnCuda``).
CudaUnavailableError.__module__ = UnsupportedOnCuda.__module__ = "numbarnn.cuda"


# ---- launch configuration -------------------------------------------------------------------

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
            from the batch and hidden sizes (:func:`numbarnn.cuda.steps.step_tiles`). A
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


# ---- kernels built once per key ------------------------------------------------------------

def kernel_cache(builder=None, *, key=None):
    """Decorator: call ``builder`` once per key and hand out what it built from then on.

    CUDA device functions are not first-class values, so kernels are built per cell,
    dtype and launch shape by small factories; this is their one cache. The key is the
    builder's positional arguments (hashable ones: dtypes, ints, tuples of ints), or
    ``key(*args)`` for arguments that are not hashable or not the identity (a cell spec).
    Configuration a builder reads (``config.threads``...) belongs in its arguments, so a
    changed configuration builds new kernels. Host-only:

    >>> from numbarnn.cuda._support import kernel_cache
    >>> @kernel_cache
    ... def build(dtype, width):
    ...     print("building", dtype, width)
    ...     return [dtype, width]
    >>> first = build("float32", 4)
    building float32 4
    >>> first is build("float32", 4), build("float64", 4) == ["float64", 4]
    building float64 4
    (True, True)
    >>> @kernel_cache(key=lambda spec, dtype: (spec["name"], dtype))
    ... def build_for(spec, dtype):  # a dict is not hashable: the key names it
    ...     return object()
    >>> build_for({"name": "rnn"}, "float64") is build_for({"name": "rnn"}, "float64")
    True
    """
    if builder is None:
        return functools.partial(kernel_cache, key=key)
    built = {}

    @functools.wraps(builder)
    def cached(*args):
        k = args if key is None else key(*args)
        kernels = built.get(k)
        if kernels is None:
            kernels = built[k] = builder(*args)
        return kernels

    return cached


# ---- which components run on the device ---------------------------------------------------
# A cell has CUDA kernels when its spec names a pair (numbarnn.cuda.cells.resolve says so), an
# optimizer when its class names a ``cuda_update``, a sampler when its class declares a
# ``generation_mode`` (else it runs on the host); losses when they are in this table.

DEVICE_LOSSES = {_losses.softmax_cross_entropy: "softmax_cross_entropy", _losses.mse: "mse"}
"""Loss function -> name, for the losses with a CUDA kernel (:mod:`numbarnn.cuda.losses`)."""


def check_loss(loss) -> None:
    """Raise :class:`UnsupportedOnCuda` unless ``loss`` (a :class:`numbarnn.losses.LossSpec`)
    has a CUDA kernel.

    >>> import numbarnn
    >>> from numbarnn.cuda._support import check_loss
    >>> check_loss(numbarnn.get_loss("mse"))
    >>> import dataclasses
    >>> check_loss(dataclasses.replace(numbarnn.get_loss("mse"), name="mine", forward_backward=print))
    Traceback (most recent call last):
        ...
    numbarnn.cuda.UnsupportedOnCuda: loss 'mine' has no CUDA kernel; on device='cuda' use softmax_cross_entropy or mse
    """
    if loss.forward_backward not in DEVICE_LOSSES:
        raise UnsupportedOnCuda(f"loss {loss.name!r} has no CUDA kernel; on device='cuda' use "
                                "softmax_cross_entropy or mse")


def check_optimizer(optimizer) -> None:
    """Raise :class:`UnsupportedOnCuda` unless ``optimizer`` (a
    :class:`numbarnn.optimizers.Optimizer`) has CUDA kernels.

    >>> import numpy as np
    >>> from numbarnn.cuda._support import check_optimizer
    >>> from numbarnn.optimizers import SGD, Adam
    >>> params = {"w": np.zeros(2)}
    >>> check_optimizer(Adam(params))
    >>> class Mine(SGD):  # a plugin's optimizer: CPU kernels only
    ...     name = "mine"
    >>> try:
    ...     check_optimizer(Mine(params))
    ... except ValueError as error:  # UnsupportedOnCuda is a ValueError
    ...     print(type(error).__name__, error)
    UnsupportedOnCuda optimizer 'mine' has no CUDA kernels; on device='cuda' use one of sgd, momentum, adagrad, rmsprop, adam, adamw
    """
    if type(optimizer).__dict__.get("cuda_update") is None:  # declared by the class itself, never inherited
        raise UnsupportedOnCuda(f"optimizer {optimizer.name!r} has no CUDA kernels; on device='cuda' use one of "
                                "sgd, momentum, adagrad, rmsprop, adam, adamw")
