"""The training runs of tests/test_distributed.py: one process, or every rank under ``mpiexec``.

    python tests/distributed_worker.py SCENARIO OUT.npz [--steps N] [--save CKPT [--save-at K]]
                                       [--resume CKPT] [--distributed]
                                       [--fail-rank R --fail-at STEP --fail-how raise|kill|interrupt]

Scenarios (float64, tiny):

* ``names``: two LSTM layers with dropout between them (the layer-by-layer path, dropout masks
  drawn per rank), clip by global norm, padded names with masks, a last batch of an epoch
  with fewer rows than three ranks (an empty share), validation every 10 steps with early
  stopping's state, a checkpoint every 10 steps;
* ``stream``: one LSTM layer (the fused compiled step), carried state between chunks, clip by
  value, a one-row carried validation, momentum SGD.

Rank 0 writes OUT.npz: the final weights, the loss of every step, the last validation loss,
and whether every rank ended with the same weights. Nothing runs on import (pytest imports
this file for its doctests).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import numbarnn
from numbarnn import data as D
from numbarnn.fit import Callback


def scenario(name):
    """``(make_trainer keyword arguments, batches, validation, fit keyword arguments)``."""
    names = D.dinosaur_names()[:27]
    if name == "names":
        vocab = D.Vocabulary.from_text("\n".join(names))
        train, val = names[:22], names[22:]
        batches = D.NamesBatches(train, vocab, batch_size=5, seed=3)  # 5, 5, 5, 5, 2 rows an epoch
        validation = [D.pad_names([vocab.encode(n) for n in val], vocab.newline) + (False,)]
        options = dict(cell="lstm", vocab=vocab, hidden_size=6, layers=2, dropout=0.25, clip=0.5, clip_mode="norm",
                       lr=0.02, mode="names")
        return options, batches, validation, dict(eval_every=10, patience=50)
    text = "\n".join(names) * 2
    vocab = D.Vocabulary.from_text(text)
    train, val = D.split_stream(text, 0.1)
    batches = D.StreamBatches(train, vocab, batch_size=7, seq_length=6)
    ids = np.array(vocab.encode(val), dtype=np.int64)
    validation = [(ids[None, i:i + 6], ids[None, i + 1:i + 7], None, i > 0) for i in range(0, 36, 6)]
    options = dict(cell="lstm", vocab=vocab, hidden_size=5, optimizer="momentum", lr=0.1, momentum=0.9, clip=0.05,
                   clip_mode="value", mode="stream")
    return options, batches, validation, dict(eval_every=10)


class Fail(Callback):
    """Makes rank ``rank`` raise (``how="raise"``), die by SIGKILL (``"kill"``) or stop as on
    Ctrl-C (``"interrupt"``; ``rank`` -1: every rank, as mpiexec passes Ctrl-C on) at step ``at``."""

    def __init__(self, rank, at, how):
        self.rank, self.at, self.how = rank, at, how

    def on_step_start(self, state):
        parallel = state.trainer.distributed
        if parallel is not None and self.rank in (parallel.rank, -1) and state.trainer.step == self.at:
            if self.how == "interrupt":
                raise KeyboardInterrupt
            if self.how == "kill":
                os.kill(os.getpid(), 9)
            raise RuntimeError(f"planted failure at step {self.at}")


def run(name, out, steps=40, save=None, save_at=None, resume=None, distributed=False, fail=None) -> dict:
    """Train scenario ``name`` for ``steps`` more steps (from ``resume``, a checkpoint, if given);
    with ``save``, save there after ``save_at`` steps (then go on training), or else every 10
    steps and at the end. Rank 0 writes ``out``."""
    options, batches, validation, fit_options = scenario(name)
    if resume:
        trainer = numbarnn.load(resume, batches)
        if distributed:
            from numbarnn.distributed import distribute
            trainer = distribute(trainer)
    else:
        trainer = numbarnn.make_trainer(**options, dtype="float64", seed=5, distributed="mpi" if distributed else None)
    callbacks = [Fail(*fail)] if fail else []
    for k, part in enumerate([save_at, steps - save_at] if save_at else [steps]):
        summary = trainer.fit(batches, steps=part, validation=validation, sample_every=0, progress=False,
                              checkpoint=None if save_at else save, checkpoint_every=10 if save and not save_at else None,
                              print_fn=lambda *a: None,
                              callbacks=callbacks, **fit_options)
        if save and k == 0:  # after save_at steps (then on to the end), else at the end
            trainer.save(save, batches)
    weights = trainer.model.flat_params.copy()
    parallel = trainer.distributed
    same = True
    if parallel is not None:
        same = all(np.array_equal(w, weights) for w in parallel.comm.allgather(weights))
    if parallel is None or parallel.is_root:
        np.savez(out, weights=weights, losses=np.array([loss for _, loss in trainer.history]),
                 val_loss=np.float64(summary["val_loss"]), same=same, step=trainer.step,
                 ranks=1 if parallel is None else parallel.size)
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=("names", "stream"))
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--save")
    parser.add_argument("--save-at", type=int)
    parser.add_argument("--resume")
    parser.add_argument("--distributed", action="store_true")
    parser.add_argument("--fail-rank", type=int)
    parser.add_argument("--fail-at", type=int)
    parser.add_argument("--fail-how", choices=("raise", "kill", "interrupt"), default="raise")
    args = parser.parse_args(argv)
    fail = (args.fail_rank, args.fail_at, args.fail_how) if args.fail_rank is not None else None
    run(args.scenario, args.out, args.steps, args.save, args.save_at, args.resume, args.distributed, fail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
