"""Which backend runs a device: ``"cpu"`` (:mod:`numbarnn.cpu_backend`) or ``"cuda"``
(:mod:`numbarnn.cuda.backend`, imported only when asked for).

A backend owns a device's side of training (weights, gradients, optimizer slots, buffers,
the fused step, compiled generation); :class:`~numbarnn.trainer.Trainer` is the same on
every device. See ``docs/concepts.md`` for the layers and ``numbarnn.cpu_backend`` for the
methods a backend has.

>>> backend_class("cpu").__name__
'CpuBackend'
>>> check_device("gpu")
Traceback (most recent call last):
...
ValueError: device must be 'cpu' or 'cuda', got 'gpu'
"""
from __future__ import annotations

DEVICES = ("cpu", "cuda")


def check_device(device) -> str:
    """``device`` if it names a backend, else a ValueError listing them."""
    if device not in DEVICES:
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return device


def require_device(device, why: str = "") -> None:
    """Raise unless ``device`` can run here: a ValueError for an unknown name, a
    :class:`numbarnn.cuda.CudaUnavailableError` naming what is missing for ``"cuda"``
    (``why``, when given, is put before that reason). A light check: it imports no kernels."""
    check_device(device)
    if device == "cuda":
        from .cuda import CudaUnavailableError, unavailable_reason

        reason = unavailable_reason()
        if reason is not None:
            missing, message = reason
            raise CudaUnavailableError(missing, f"{why}{message}" if why else message)


def backend_class(device):
    """The backend class of ``device`` (checked with :func:`require_device` first)."""
    require_device(device)
    if device == "cpu":
        from .cpu_backend import CpuBackend

        return CpuBackend
    from .cuda.backend import CudaBackend

    return CudaBackend
