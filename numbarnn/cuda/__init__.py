"""numba.cuda kernels for numbarnn: the same trainer on an NVIDIA GPU (``device="cuda"``).

Importing :mod:`numbarnn` never imports this package, and importing this package does
not import ``numba.cuda`` either: the kernel modules (:mod:`numbarnn.cuda.cells`,
``loops``, ``heads``, ``losses``, ``optim``, ``sampling``, whose names mirror
:mod:`numbarnn.kernels`; ``steps`` for the fused recurrent step,
``matmul``, ``arrays``, ``model`` and ``backend``) import it when they are first imported
themselves, which :func:`require` does only after checking that the target can work.
What they all share (this configuration, the errors, the kernel cache, which components
run on the device) is in ``numbarnn.cuda._support``, which imports no ``numba.cuda``.

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
from typing import Optional

import numpy as np

# numba-cuda (0.30.4 and before) overloads np.row_stack while loading its typing registries,
# at the first CUDA compile; NumPy 2.5 removed that name (an alias of np.vstack since 2.0),
# so without this every kernel compile fails with "module 'numpy' has no attribute
# 'row_stack'" on NumPy 2.5. Seen on an H100 with numba 0.68.0, numba-cuda 0.30.4, NumPy 2.5.2.
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack

# The configuration and the errors live in _support, which the kernel modules import too.
from ._support import Config, CudaUnavailableError, UnsupportedOnCuda, config, grid1d, simulator  # noqa: E402

__all__ = ["CudaUnavailableError", "UnsupportedOnCuda", "available", "require", "unavailable_reason", "simulator", "config",
           "Config", "grid1d"]

INSTALL_HINT = 'pip install "numbarnn[cuda]"'


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
