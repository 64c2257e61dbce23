"""Shortcuts to the GPU, kept for code written before the backends: a trainer on the GPU is
the same :class:`~numbarnn.trainer.Trainer` with a :class:`~numbarnn.cuda.backend.CudaBackend`
(``make_trainer(..., device="cuda")`` or ``trainer.to("cuda")``).

The classes live in :mod:`numbarnn.cuda.model` (the model, its states and parameters) and
:mod:`numbarnn.cuda.backend` (the optimizer and the training step) and are re-exported here.
"""
from __future__ import annotations

from ..trainer import Trainer, make_model, make_trainer
from .backend import CudaBackend, CudaOptimizer
from .model import CudaSequenceModel, DeviceParams, DeviceState

__all__ = ["CudaBackend", "CudaOptimizer", "CudaSequenceModel", "DeviceState", "DeviceParams", "cuda_trainer_from",
           "make_cuda_model", "make_cuda_trainer"]


def cuda_trainer_from(trainer: Trainer, loop=None) -> Trainer:
    """``trainer.to("cuda")``, with the launch scheme ``loop`` of the recurrent loops.

    Copies its weights and optimizer state to the device and takes over its components,
    configuration, vocabulary, random generator, step count, history and carried state;
    the initial weights are the CPU path's for the same seed.

    >>> import numpy as np
    >>> import numbarnn
    >>> from numbarnn.cuda.trainer import cuda_trainer_from
    >>> cpu = numbarnn.make_trainer("lstm", "softmax_cross_entropy", "adam", "greedy", vocab_size=3, hidden_size=2,
    ...                             dtype="float64", seed=0)
    >>> gpu = cuda_trainer_from(cpu)
    >>> gpu.device, all(np.array_equal(gpu.params_to_host()[k], v) for k, v in cpu.model.params.items())
    ('cuda', True)
    >>> gpu.rng is cpu.rng, gpu.optimizer.name
    (True, 'adam')
    """
    moved = trainer.to("cuda")
    moved.backend.loop = loop
    return moved


def make_cuda_model(cell="lstm", *, input_size=None, vocab_size=None, hidden_size=128, output_size=None,
                    layers=1, dropout=0.0, dtype="float32", seed=None) -> CudaSequenceModel:
    """:func:`numbarnn.make_model` on the GPU (same arguments, same initial weights).

    Returns a :class:`CudaSequenceModel`; see there for the shapes.

    >>> import numpy as np
    >>> import numbarnn
    >>> from numbarnn.cuda.trainer import make_cuda_model
    >>> gpu = make_cuda_model("rnn", vocab_size=3, hidden_size=2, dtype="float64", seed=0)
    >>> cpu = numbarnn.make_model("rnn", vocab_size=3, hidden_size=2, dtype="float64", seed=0)
    >>> all(np.array_equal(gpu.params_to_host()[k], v) for k, v in cpu.params.items())
    True
    >>> x = np.array([[0, 1], [2, -1]])  # (T, B) indices
    >>> np.allclose(gpu.forward(x)[0], cpu.forward(x)[0])
    True
    """
    return make_model(cell, input_size=input_size, vocab_size=vocab_size, hidden_size=hidden_size,
                      output_size=output_size, layers=layers, dropout=dropout, dtype=dtype, seed=seed,
                      device="cuda")


def make_cuda_trainer(cell_spec, loss_spec, optimizer_spec, sampler_spec, vocab_size=None, hidden_size=128, lr=None,
                      clip=5.0, clip_mode="value", dtype="float32", seed=None, optimizer_options=None,
                      sampler_options=None, loop=None, **make_trainer_options) -> Trainer:
    """The trainer :func:`numbarnn.make_trainer` builds, on the GPU.

    Takes specs or names (and any further ``make_trainer`` keyword, such as ``vocab`` or
    ``mode``); builds the CPU trainer (so the same checks, options and initial weights)
    and moves it with :func:`cuda_trainer_from`. Raises
    :class:`~numbarnn.cuda.CudaUnavailableError` when the GPU cannot be used and
    :class:`~numbarnn.cuda.UnsupportedOnCuda` for a component without CUDA kernels.

    >>> import math
    >>> import numpy as np
    >>> import numbarnn
    >>> from numbarnn.cuda.trainer import make_cuda_trainer
    >>> options = dict(vocab_size=3, hidden_size=2, lr=0.1, clip=1.0, clip_mode="norm", dtype="float64", seed=0)
    >>> gpu = make_cuda_trainer("lstm", "softmax_cross_entropy", "momentum", "greedy", **options)
    >>> cpu = numbarnn.make_trainer("lstm", "softmax_cross_entropy", "momentum", "greedy", **options)
    >>> x, y = np.array([[0, 1], [2, 0]]), np.array([[1, 2], [0, 1]])  # (B, T)
    >>> math.isclose(gpu.train_step(x, y), cpu.train_step(x, y), rel_tol=1e-9)
    True
    >>> math.isclose(gpu.last_grad_norm, cpu.last_grad_norm, rel_tol=1e-9)
    True
    """
    cpu = make_trainer(cell_spec, loss_spec, optimizer_spec, sampler_spec, vocab_size=vocab_size,
                       hidden_size=hidden_size, lr=lr, clip=clip, clip_mode=clip_mode, dtype=dtype, seed=seed,
                       optimizer_options=optimizer_options, sampler_options=sampler_options, **make_trainer_options)
    return cuda_trainer_from(cpu, loop=loop)  # built on the CPU first: the CPU path's checks and weights
