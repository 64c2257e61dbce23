"""Data-parallel training over MPI (``pip install "numbarnn[mpi]"``): the global batch split
across processes, one ``Allreduce`` of the flat gradient buffer per step.

Every process (rank) holds the whole model and optimizer, draws the same global batch and
trains on its own rows of it. Between the backward pass and clipping, the ranks add up
their gradients (each scaled by its share of the batch) and their losses in one
``Allreduce``, so every rank clips the global batch's gradient and takes the same optimizer
step, and the weights equal a single process's up to the order of the additions. From the
command line there is nothing to say::

    mpiexec -n 4 numbarnn train pydoc --batch 64       # or srun, mpirun; see docs/scaling.md

From Python, every rank runs the same script on the same data (give the batches a seed)::

    trainer = numbarnn.make_trainer("lstm", vocab=vocab, seed=0, distributed="mpi")
    trainer.fit(batches, validation=validation, checkpoint="run.ckpt")   # rank 0 prints and writes

or ``numbarnn.distributed.distribute(trainer)`` for a trainer you have, e.g. one
``numbarnn.load`` read. What is where:

* Rank 0 alone prints (progress, validation lines, samples) and writes checkpoints; a
  checkpoint holds the global state (a stream's carried state is gathered from the ranks),
  so it resumes under any number of ranks, or in one process.
* Validation is sharded: each rank evaluates its rows of every validation batch and the
  sums are added up (one small ``Allreduce``), so every rank takes the same early-stopping
  decision. A one-row batch (stream mode's) runs on one rank.
* Dropout masks are drawn for the whole global batch from the trainer's generator on every
  rank, each rank keeping its rows: the masks, and so the result, do not depend on the rank
  count. Samples draw from their own seeded generators, as in one process.
* A rank that raises ends the whole job (``MPI_Abort``) after printing which rank failed and
  why: an MPI job whose other ranks wait in a collective would otherwise hang. Ctrl-C: rank 0
  saves the checkpoint when it holds the whole run (names mode; in stream mode the carried
  state is spread over the ranks, so the last periodic checkpoint is kept) and ends the job.
* With one process nothing changes: :func:`distribute` returns the trainer as it is, and
  ``numbarnn train`` imports no MPI unless a launcher started several processes
  (:func:`launched_ranks`).

>>> launched_ranks({"PMI_SIZE": "4"}), launched_ranks({})
(4, 1)
>>> split_rows(10, 3, 0), split_rows(10, 3, 1), split_rows(10, 3, 2), split_rows(2, 3, 2)
((0, 3), (3, 6), (6, 10), (1, 2))
"""
from __future__ import annotations

import os
import shutil
import sys
import time
import traceback
from typing import Optional

import numpy as np

__all__ = ["DataParallel", "MPIUnavailableError", "distribute", "init", "launched_ranks", "split_rows",
           "LAUNCHER_SIZE_VARIABLES"]

#: Environment variables in which MPI launchers announce the number of processes: MPICH's and
#: Intel MPI's Hydra (``mpiexec``) and Slurm's ``srun --mpi=pmi2`` (PMI_SIZE), Open MPI's
#: ``mpirun`` (OMPI_COMM_WORLD_SIZE), MVAPICH's (MV2_COMM_WORLD_SIZE).
LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")

#: Seconds a rank other than 0 waits, after Ctrl-C, for rank 0 to save and end the job before it
#: ends the job itself (rank 0 may be stuck in a collective that this rank left).
INTERRUPT_GRACE = 30.0

#: Seconds a failing rank waits between printing why and ending the job, for the launcher to
#: pass the message on (it drops output in flight when the job ends).
ABORT_PAUSE = 1.0


class MPIUnavailableError(ImportError):
    """Distributed training was asked for, but mpi4py (or the MPI library it needs) is missing."""


def launched_ranks(environ=None) -> int:
    """How many processes an MPI launcher started, from its environment
    (:data:`LAUNCHER_SIZE_VARIABLES`; 1 when none says). Imports nothing."""
    environ = os.environ if environ is None else environ
    for name in LAUNCHER_SIZE_VARIABLES:
        value = environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def mpiexec_path() -> Optional[str]:
    """The ``mpiexec`` to launch ranks with: the one next to this Python (a virtual
    environment's, from the ``mpich`` wheel of the ``mpi`` extra), else the one on PATH;
    None when there is neither. Imports nothing.

    >>> path = mpiexec_path()
    >>> path is None or os.path.basename(path) == "mpiexec"
    True
    """
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.path.exists(beside) else shutil.which("mpiexec")


def split_rows(B: int, size: int, rank: int) -> tuple:
    """``(lo, hi)``: the rows of a ``B``-row batch that ``rank`` of ``size`` trains on, as even
    as can be; empty (``lo == hi``) when the batch has fewer rows than there are ranks."""
    return B * rank // size, B * (rank + 1) // size


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise MPIUnavailableError(f'distributed training needs mpi4py and an MPI library: pip install '
                                  f'"numbarnn[mpi]" ({error})') from None
    return MPI


def init(comm=None) -> "DataParallel":
    """Start MPI (importing mpi4py) and return the :class:`DataParallel` of ``comm``
    (default ``MPI.COMM_WORLD``). From then on an uncaught exception on any rank prints which
    rank failed and ends the whole job (``MPI_Abort``) instead of leaving the others waiting."""
    return DataParallel(comm)


def distribute(trainer, comm=None):
    """Make ``trainer`` this process's rank of a data-parallel run over ``comm`` (a
    :class:`DataParallel`, an mpi4py communicator, or None for ``MPI.COMM_WORLD``); returns
    it. Every rank must call it, with the same model (it checks): rank 0's weights, optimizer
    state and random state are then copied to all. With one process it returns ``trainer``
    unchanged. CPU trainers only."""
    parallel = comm if isinstance(comm, DataParallel) else DataParallel(comm)
    if parallel.size == 1:
        return trainer
    if trainer.device != "cpu":
        raise ValueError(f"distributed training runs on the CPU; this trainer is on {trainer.device!r}")
    if getattr(trainer, "distributed", None) is not None:
        raise ValueError("this trainer is distributed already")
    parallel.synchronise(trainer)
    trainer.distributed = parallel
    trainer.backend.reduce_gradients = parallel.reduce_gradients
    return trainer


class _RowsRng:
    """The trainer's generator as a rank's model sees it: ``random(shape)`` of this rank's
    ``(T, rows, ...)`` draws the global ``(T, B, ...)`` array (what one process would draw) and
    returns this rank's rows, so dropout masks do not depend on the rank count."""

    def __init__(self, rng, B, lo, hi):
        self.rng, self.B, self.lo, self.hi = rng, B, lo, hi

    def random(self, size):
        shape = tuple(size)
        drawn = self.rng.random((shape[0], self.B) + shape[2:])
        if self.hi == self.lo:  # an empty share runs one row with no weight: any mask will do
            return np.zeros(shape)
        return drawn[:, self.lo:self.hi]

    def __getattr__(self, name):
        raise AttributeError(f"a distributed model may draw only random(shape) with its batch on axis 1 "
                             f"(dropout masks); it asked for {name!r}")


class DataParallel:
    """One rank's side of a data-parallel run (see the module docstring); made by :func:`init`.

    ``rank``, ``size``, ``comm`` (the mpi4py communicator), ``is_root`` (rank 0).
    ``allreduce_seconds`` and ``allreduce_calls`` count the time in the gradient
    ``Allreduce`` (waiting for the slowest rank included), for benchmarks."""

    def __init__(self, comm=None):
        MPI = _mpi()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.allreduce_seconds, self.allreduce_calls = 0.0, 0
        self._buffer = None
        self._share = None  # (global rows, this rank's rows) of the step being taken
        self._local_state = None  # the final state of this rank's rows after its last step
        if self.size > 1:
            _abort_on_uncaught_exceptions(self)

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def rows(self, B: int) -> tuple:
        """This rank's ``(lo, hi)`` of a ``B``-row batch (:func:`split_rows`)."""
        return split_rows(B, self.size, self.rank)

    def default_threads(self) -> int:
        """The cores of this process's machine (its CPU affinity) divided among the ranks on it."""
        local = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED)
        try:
            ranks_here = local.Get_size()
        finally:
            local.Free()
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, cores // ranks_here)

    # -- setting up ----------------------------------------------------------------------------------
    def synchronise(self, trainer) -> None:
        """Check every rank holds the same model, then copy rank 0's weights, optimizer state,
        random state and step to all (a trainer made without a seed differs between ranks)."""
        model = trainer.model
        mine = (f"{trainer.config.get('cell')} {trainer.config.get('optimizer')} {model.dtype} "
                + " ".join(f"{name}{value.shape}" for name, value in model.params.items()))
        everyone = self.comm.allgather(mine)
        for rank, theirs in enumerate(everyone):
            if theirs != everyone[0]:
                raise ValueError(f"the ranks hold different models: rank 0 has {everyone[0][:200]}, rank {rank} has "
                                 f"{theirs[:200]}; build the same trainer on every rank")
        self.comm.Bcast(model.flat_params, root=0)
        shared = self.comm.bcast((trainer.optimizer.state_dict(), trainer.rng.bit_generator.state, trainer.step)
                                 if self.is_root else None, root=0)
        if not self.is_root:
            optimizer_state, rng_state, trainer.step = shared
            trainer.optimizer.load_state_dict(optimizer_state)
            trainer.rng.bit_generator.state = rng_state

    # -- a training step -------------------------------------------------------------------------------
    def gradients(self, trainer, x, y, weights, state, lengths):
        """``Trainer.train_step``'s backend call on this rank's rows of the checked time-major
        global batch; the backend's :meth:`reduce_gradients` hook makes the gradient, the loss
        and the batch size the global batch's. Returns ``(loss, norm, final state, B)``."""
        T, B = x.shape[:2]
        lo, hi = self.rows(B)
        self._share = (B, hi - lo)
        # An empty share (a batch with fewer rows than ranks) runs row 0 with weight 0: its
        # gradient and loss are 0, and this rank still joins the step's Allreduce.
        take = slice(lo, hi) if hi > lo else slice(0, 1)
        n = take.stop - take.start
        x = np.ascontiguousarray(x[:, take])
        if trainer.task == "classify":  # one target and weight per sequence
            y, weights = y[take], np.ascontiguousarray(weights[take])
        else:  # time-major rows t * B + b
            y = np.ascontiguousarray(y.reshape((T, B) + y.shape[1:])[:, take]).reshape((T * n,) + y.shape[1:])
            weights = np.ascontiguousarray(weights.reshape(T, B)[:, take]).reshape(T * n)
        if hi == lo:
            weights = np.zeros_like(weights)
        if lengths is not None:
            lengths = np.ascontiguousarray(lengths[take])
        state = self._state_rows(trainer.model, state, B, take, hi - lo)
        rng = _RowsRng(trainer.rng, B, lo, hi)
        loss, norm, final, B = trainer.backend.gradients(x, y, weights, state, rng, lengths=lengths)
        if hi == lo:
            final = trainer.model.state_from_arrays([a[:0] for a in trainer.model.state_arrays(final)])
        self._local_state = final
        return loss, norm, final, B

    def _state_rows(self, model, state, B, take, rows):
        """This rank's rows of ``state``: the state it kept from its last step as it is, or its
        rows of a global state (one a checkpoint held, or the caller's)."""
        if state is None:
            return None
        arrays = model.state_arrays(state)
        if state is self._local_state:
            if arrays[0].shape[0] != rows:
                raise ValueError(f"the carried state holds this rank's {arrays[0].shape[0]} rows of the last batch, "
                                 f"but its share of this {B}-row batch is {rows}: keep the batch size when carrying state")
            return state if rows else None
        if arrays[0].shape[0] != B:
            raise ValueError(f"the state holds {arrays[0].shape[0]} rows, the batch {B}")
        return model.state_from_arrays([np.ascontiguousarray(a[take]) for a in arrays])

    def reduce_gradients(self, flat_grads, loss, B):
        """The backend's hook between backward and clipping: ``flat_grads`` (this rank's mean
        over its ``B`` rows) becomes the global batch's mean gradient, on every rank, in one
        ``Allreduce``; returns ``(the global batch's summed loss, its rows)``."""
        B_global, rows = self._share
        n = flat_grads.size
        if self._buffer is None or self._buffer.size != n + 1 or self._buffer.dtype != flat_grads.dtype:
            self._buffer = np.empty(n + 1, flat_grads.dtype)
        buffer = self._buffer
        # Each rank's share of the global mean: its mean times rows / B_global (0 for an empty share).
        np.multiply(flat_grads, rows / B_global, out=buffer[:n])
        buffer[n] = loss if rows else 0.0  # the loss rides along: one collective a step
        start = time.perf_counter()
        self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)
        self.allreduce_seconds += time.perf_counter() - start
        self.allreduce_calls += 1
        flat_grads[...] = buffer[:n]
        return float(buffer[n]), B_global

    # -- validation and checkpoints ----------------------------------------------------------------------
    def validation_loss(self, trainer, validation) -> float:
        """``Trainer.validation_loss`` sharded: each rank evaluates its rows of every batch
        (carrying its rows' state where a batch says so), then the summed losses and counts
        are added up across ranks."""
        total, count, state = 0.0, 0.0, None
        for inputs, targets, mask, carry in validation:
            inputs, targets, mask = _batch_first(trainer, inputs, targets, mask)
            lo, hi = self.rows(len(inputs))
            if hi == lo:
                state = None
                continue
            loss, n, state = trainer.evaluate(inputs[lo:hi], targets[lo:hi], None if mask is None else mask[lo:hi],
                                              state=state if carry else None)
            total, count = total + loss, count + n
        sums = np.array([total, count], dtype=np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, sums, op=self.MPI.SUM)
        return float(sums[0]) / max(float(sums[1]), 1.0)

    def global_state(self, trainer):
        """The carried state of the whole batch, gathered on rank 0 (None elsewhere); every rank
        must call it. A state no distributed step made (one loaded, say) is global already."""
        state = trainer.state
        if state is None or state is not self._local_state:
            return state
        gathered = self.comm.gather(trainer.model.state_arrays(state), root=0)
        if not self.is_root:
            return None
        return trainer.model.state_from_arrays([np.concatenate([arrays[i] for arrays in gathered])
                                                for i in range(len(gathered[0]))])

    def save(self, trainer, path, batches=None):
        """``Trainer.save`` for every rank to call: the carried state is gathered (in stream
        mode) and rank 0 writes the checkpoint. Returns the path."""
        from .checkpoint_file import save_checkpoint

        carried = trainer.state is not None and getattr(batches, "mode", None) == "stream"
        state = self.global_state(trainer) if carried else trainer.state
        if self.is_root:
            local, trainer.state = trainer.state, state
            try:
                save_checkpoint(trainer, path, batches)
            finally:
                trainer.state = local
        return path

    def save_on_interrupt(self, trainer, path, batches) -> Optional[str]:
        """After Ctrl-C no collective is safe (ranks stop in different places): rank 0 writes the
        checkpoint from what it holds when that is the whole run, i.e. unless a stream's carried
        state is spread over the ranks. Returns what to add to the interruption's reason (None
        on ranks other than 0)."""
        from .checkpoint_file import save_checkpoint

        if not self.is_root:
            return None
        spread = (trainer.state is not None and trainer.state is self._local_state
                  and getattr(batches, "mode", None) == "stream")
        if spread:
            return (f"; checkpoint not saved: the carried stream state is spread over the {self.size} ranks "
                    f"(the last one written to {path}, if any, is kept)")
        save_checkpoint(trainer, path, batches)
        return f"; checkpoint saved to {path}"

    # -- ending ----------------------------------------------------------------------------------------
    def end_interrupted(self, status: int = 130) -> None:
        """End the whole job after Ctrl-C (never returns): at once on rank 0, which saved
        already; after :data:`INTERRUPT_GRACE` seconds on the others, which rank 0's abort
        normally ends first."""
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(ABORT_PAUSE if self.is_root else INTERRUPT_GRACE)  # rank 0: for its last lines to get out
        self._abort(status)

    def _abort(self, status: int) -> None:
        """MPI_Abort, then leave at once: MPICH's returns (the launcher then kills the job), and
        nothing more of this rank may run (the rest of a training command, say)."""
        try:
            self.comm.Abort(status)
        finally:
            os._exit(status)

    def abort(self, message: str, status: int = 1, details: str = "") -> None:
        """Print ``numbarnn: rank R of N: message`` (then ``details``) on stderr and end the whole
        job with ``status``."""
        try:
            sys.stdout.flush()
            print(f"numbarnn: rank {self.rank} of {self.size}: {message}; ending the job (MPI_Abort)",
                  file=sys.stderr, flush=True)
            if details:
                print(details, file=sys.stderr, end="", flush=True)
            # The launcher forwards output through a pipe and drops what is in flight when the job
            # ends: a moment for it to pass the message on.
            time.sleep(ABORT_PAUSE)
        finally:
            self._abort(status)

    def fail(self, error: BaseException) -> None:
        """Report ``error`` (which rank failed and why, then the traceback) and end the whole job."""
        status = 130 if isinstance(error, KeyboardInterrupt) else 1
        try:
            details = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        except Exception:  # noqa: BLE001 (the job must end all the same)
            details = ""
        self.abort(f"failed with {type(error).__name__}: {error}", status, details)


def _abort_on_uncaught_exceptions(parallel: DataParallel) -> None:
    """An uncaught exception on one rank ends the job (the others would wait for it forever)."""
    def hook(kind, value, tb):
        parallel.fail(value if value is not None else kind())

    sys.excepthook = hook


def _batch_first(trainer, inputs, targets, mask):
    """A validation batch as arrays with the batch on axis 0 (a lone sequence gets one row)."""
    inputs = np.asarray(inputs)
    if inputs.ndim == (1 if getattr(trainer.model, "index_input", True) else 2):
        inputs = inputs[None]
    targets = np.asarray(targets)
    task = trainer.task
    if task == "classify":
        targets = np.atleast_1d(targets)
    elif targets.ndim == (1 if task == "lm" else 2):
        targets = targets[None]
    if mask is not None:
        mask = np.asarray(mask)
        mask = mask[None] if mask.ndim == 1 else mask
    return inputs, targets, mask
