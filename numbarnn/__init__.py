"""numbarnn: recurrent networks from scratch, fast, on Numba.

Cells, losses, optimizers, samplers and learning-rate schedules are plugins registered by name (see
``docs/plugins.md``); :mod:`numbarnn.course` gives the sequence-models course's own
functions on top of the same kernels.
"""
from .trust import secure_numba_cache_dir

secure_numba_cache_dir()  # before any cache=True kernel is defined: Numba fixes its cache path then

from .cells import LSTM, RNN, CellSpec  # noqa: E402
from .hookspecs import hookimpl
from .models import RecurrentModel
from .plugins import (get_cell, get_loss, get_optimizer, get_registry, get_sampler, get_schedule, list_cells,
                      list_losses, list_optimizers, list_plugins, list_samplers, list_schedules)
from .registry import DuplicateNameError, UnknownNameError
from .runtime import set_threads, warmup
from ._version import __version__
from .checkpoint import CheckpointError, load_checkpoint
from .cellcheck import CellCheckError
from .errors import NonFiniteLossError
from .trainer import SequenceModel, Trainer, make_model, make_trainer


def load(path, batches=None, device=None) -> Trainer:
    """The trainer saved at ``path`` by :meth:`Trainer.save` (or ``numbarnn train``), ready to
    continue; with ``batches``, their data position is restored too. ``device`` ("cpu" or
    "cuda") is where it runs; None means the device it was trained on (a clear error if that
    one is not here, naming ``device="cpu"`` as the way out). A file that is not a valid
    checkpoint raises :class:`CheckpointError`; nothing in it runs."""
    return load_checkpoint(path, batches, device=device)


__all__ = [
    "CellSpec", "RNN", "LSTM", "RecurrentModel", "SequenceModel", "Trainer", "make_model", "make_trainer",
    "hookimpl",
    "get_cell", "get_loss", "get_optimizer", "get_sampler", "get_schedule", "get_registry",
    "list_cells", "list_losses", "list_optimizers", "list_samplers", "list_schedules", "list_plugins",
    "DuplicateNameError", "UnknownNameError", "CheckpointError", "CellCheckError", "NonFiniteLossError",
    "set_threads", "warmup", "load", "__version__",
]
