"""numbarnn: recurrent networks from scratch, fast, on Numba.

Cells, losses, optimizers and samplers are plugins registered by name (see
``docs/plugins.md``); :mod:`numbarnn.course` gives the sequence-models course's own
functions on top of the same kernels.
"""
from .trust import secure_numba_cache_dir

secure_numba_cache_dir()  # before any cache=True kernel is defined: Numba fixes its cache path then

from .cells import LSTM, RNN, CellSpec  # noqa: E402
from .hookspecs import hookimpl
from .models import RecurrentModel
from .plugins import (get_cell, get_loss, get_optimizer, get_registry, get_sampler, list_cells,
                      list_losses, list_optimizers, list_plugins, list_samplers)
from .registry import DuplicateNameError, UnknownNameError
from .runtime import set_threads, warmup
from .trainer import SequenceModel, Trainer, make_model, make_trainer

__version__ = "0.1.0"


def load(path, batches=None) -> Trainer:
    """The trainer saved at ``path`` by :meth:`Trainer.save` (or ``numbarnn train``), ready to
    continue; with ``batches``, their data position is restored too. A file that is not a
    valid checkpoint raises :class:`numbarnn.checkpoint.CheckpointError`; nothing in it runs."""
    from .checkpoint import load_checkpoint

    return load_checkpoint(path, batches)


__all__ = [
    "CellSpec", "RNN", "LSTM", "RecurrentModel", "SequenceModel", "Trainer", "make_model", "make_trainer",
    "hookimpl",
    "get_cell", "get_loss", "get_optimizer", "get_sampler", "get_registry",
    "list_cells", "list_losses", "list_optimizers", "list_samplers", "list_plugins",
    "DuplicateNameError", "UnknownNameError", "set_threads", "warmup", "load", "__version__",
]
