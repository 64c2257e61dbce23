"""``Trainer.fit``: the training loop over batches, with its progress bar, periodic samples,
validation, early stopping, checkpoints and the non-finite guard.

It drives a trainer only through its public methods (``train_step``, ``validation_loss``,
``sample_texts``, ``snapshot_params``, ...), so it is the same on every device.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Optional

from .checkpoint_file import save_checkpoint
from .data import printable
from .errors import NonFiniteLossError


def fit(trainer, batches, *, steps: Optional[int] = None, epochs: Optional[float] = None,
        validation=None, eval_every: int = 200, sample_every: int = 500, samples: int = 5,
        patience: Optional[int] = None, progress: bool = True, checkpoint: Optional[str] = None,
        checkpoint_every: Optional[int] = None, print_fn=print) -> dict:
    """Train ``trainer`` on ``batches`` (:class:`numbarnn.data.NamesBatches` or ``StreamBatches``).

    Runs ``steps`` more steps (or ``epochs`` more passes). Shows a progress bar (step,
    smoothed loss, tokens/s), prints ``samples`` generated texts every ``sample_every``
    steps, evaluates the ``validation`` batches every ``eval_every`` steps (loss per
    token and perplexity) and stops early after ``patience`` evaluations without
    improvement, keeping the best weights. The early-stopping state (best loss, evaluations
    without improvement, best weights: ``fit_state``) continues from the previous ``fit``
    call or the loaded checkpoint; after an early stop a further ``fit`` gets ``patience``
    evaluations again. A non-finite loss stops training and restores
    the last good weights; Ctrl-C saves ``checkpoint`` (if given) before returning.
    Returns a summary dict: ``stopped`` ("done", "early-stop", "non-finite",
    "interrupted"), ``reason``, ``steps``, ``loss`` (smoothed), ``val_loss``, ``val_perplexity``.
    """
    if steps is None:
        steps = max(1, int(round((epochs or 1.0) * batches.steps_per_epoch())))
    early = trainer.fit_state  # continues across fit calls and checkpoints: resume is exact
    last_val = early["val_loss"]
    summary = {"stopped": "done", "reason": f"ran {steps} steps", "val_loss": last_val,
               "val_perplexity": None if last_val is None else math.exp(min(last_val, 700))}
    bar = _progress_bar(steps, progress)
    smooth = trainer.config.get("smoothed_loss")
    # tokens/s over the steps on the clock: all but the first, without the phases that compiled
    rate_tokens, started, off_clock = 0, time.perf_counter(), 0.0
    write = bar.write if bar is not None else print_fn
    note = _note_writer(bar)
    phases = set()  # the phases (step, validation, samples) run once already
    try:
        for _ in range(steps):
            # The first step loads (or compiles) the kernels: its time is not a step's.
            clock = _first_time(trainer, "step", phases, bar, note)
            inputs, targets, mask, carry = batches.next_batch()
            state = trainer.state if carry else None
            snapshot, good_step = trainer.snapshot_params(), trainer.step
            try:
                loss = trainer.train_step(inputs, targets, mask, state=state)
                if not trainer.params_finite():
                    raise NonFiniteLossError(f"the weights stopped being finite at step {trainer.step} "
                                             f"(cell {trainer.model.cell.name!r})")
            except NonFiniteLossError as error:
                trainer.restore_params(snapshot)
                trainer.step = good_step  # the undone update is not a step (history, checkpoints)
                summary.update(stopped="non-finite",
                               reason=f"stopped: {error}; restored the weights of the last good step "
                                      "(try a lower --lr or a smaller --clip)")
                write(summary["reason"])
                break
            trainer.history.append((trainer.step, loss))
            smooth = loss if smooth is None else 0.98 * smooth + 0.02 * loss
            trainer.config["smoothed_loss"] = smooth
            if bar is not None:
                if clock is None:
                    rate_tokens += batches.tokens(mask)
                off_clock += _off_the_clock(bar, clock)
                postfix = f"loss {smooth:.3f}"
                if rate_tokens:
                    rate = rate_tokens / max(time.perf_counter() - started - off_clock, 1e-9)
                    postfix += f", {rate:,.0f} tok/s"
                bar.set_postfix_str(postfix, refresh=False)
                bar.update(1)
            if sample_every and trainer.step % sample_every == 0 and trainer.vocab is not None:
                clock = _first_time(trainer, "samples", phases, bar, note)
                texts = trainer.sample_texts(samples, seed=trainer.step)
                off_clock += _off_the_clock(bar, clock)
                write(f"-- step {trainer.step}, loss {smooth:.3f}, samples:")
                for line in sample_lines(texts, names=trainer.config.get("mode") == "names", indent="   "):
                    write(line)
            if validation is not None and eval_every and trainer.step % eval_every == 0:
                clock = _first_time(trainer, "validation", phases, bar, note)
                val = trainer.validation_loss(validation)
                off_clock += _off_the_clock(bar, clock)
                summary.update(val_loss=val, val_perplexity=math.exp(min(val, 700)))
                write(f"-- step {trainer.step}: validation loss {val:.4f} per token, perplexity "
                      f"{summary['val_perplexity']:.2f}")
                early["val_loss"] = val
                if val < early["best_val_loss"] - 1e-6:
                    early.update(best_val_loss=val, evals_since_best=0, best_params=trainer.snapshot_params())
                else:
                    early["evals_since_best"] += 1
                    if patience is not None and early["evals_since_best"] >= patience:
                        best = early["best_val_loss"]
                        if early["best_params"] is not None:  # None only if no evaluation was finite
                            trainer.restore_params(early["best_params"])
                        # The weights are the best ones again; a later fit starts a new patience window.
                        early.update(val_loss=best, evals_since_best=0)
                        summary.update(stopped="early-stop", val_loss=best,
                                       val_perplexity=math.exp(min(best, 700)),
                                       reason=f"early stop at step {trainer.step}: no validation improvement "
                                              f"in {patience} evaluations; kept the best weights "
                                              f"(validation loss {best:.4f})")
                        write(summary["reason"])
                        break
            if checkpoint and checkpoint_every and trainer.step % checkpoint_every == 0:
                save_checkpoint(trainer, checkpoint, batches)
    except KeyboardInterrupt:
        summary.update(stopped="interrupted", reason=f"interrupted at step {trainer.step}")
        if checkpoint:
            save_checkpoint(trainer, checkpoint, batches)
            summary["reason"] += f"; checkpoint saved to {checkpoint}"
        write(summary["reason"])
    finally:
        if bar is not None:
            bar.close()
    summary.update(steps=trainer.step, loss=smooth)
    return summary


def _progress_bar(total, enabled):
    """fit's tqdm bar on stderr (None when disabled). Phases that compile kernels are kept off
    its clock (:func:`_first_time`, :func:`_off_the_clock`), so its rate and ETA are training's."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", dynamic_ncols=True, mininterval=0.5)


def sample_lines(texts, *, names: bool, indent: str = "   ") -> list:
    """Samples as printed while training, one line each, escaped (no raw ESC, BEL, ...):
    names as they are; text with its newlines shown as `` / ``, trailing spaces dropped and
    each sample numbered, so one long sample is not mistaken for two.

    >>> sample_lines(["ab", "ba"], names=True)
    ['   ab', '   ba']
    >>> sample_lines(["one  \\ntwo   ", "three\\n\\n"], names=False, indent="  ")
    ['  [1] one / two', '  [2] three']
    """
    if names:
        return [indent + printable(text.rstrip().replace("\n", " / ")) for text in texts]
    return [f"{indent}[{k}] " + printable(" / ".join(line.rstrip() for line in text.rstrip().split("\n")))
            for k, text in enumerate(texts, 1)]


_COMPILING = {"step": "compiling kernels", "validation": "compiling the validation kernels",
              "samples": "compiling the sampling kernels"}


def _note_writer(bar):
    """Where fit's notes about itself go: stderr, with the progress bar (not among the results)."""
    if bar is not None:
        return lambda text: bar.write(text, file=sys.stderr)
    return lambda text: print(text, file=sys.stderr, flush=True)


def _first_time(trainer, phase, seen: set, bar, note):
    """Before ``phase`` of fit ("step", "validation" or "samples") runs for the first time, say
    so when its kernels must compile first (seconds of silence otherwise). Returns the time
    (``time.perf_counter()``) when the phase is to be kept off the bar's clock (see
    :func:`_off_the_clock`): the first step always (it loads the kernels), a phase that
    compiles; else None."""
    if phase in seen:
        return None
    seen.add(phase)
    pending = trainer.backend.kernels_to_compile(phase, trainer.sampler)
    if pending == "cached":
        note(f"{_COMPILING[phase]} (first run only, cached afterwards)")
    elif pending == "uncached":
        note(f"{_COMPILING[phase]} (in every process: this cell's kernels are not importable, so not cached)")
    if bar is None or not (pending or phase == "step"):
        return None
    return time.perf_counter()


def _off_the_clock(bar, mark) -> float:
    """Keep the seconds since ``mark`` (a ``time.perf_counter()``) out of ``bar``'s elapsed
    time, rate and ETA, as tqdm's ``unpause`` does for a pause; returns them (0.0 when
    ``mark`` is None: nothing to do)."""
    if bar is None or mark is None:
        return 0.0
    spent = time.perf_counter() - mark
    bar.start_t += spent
    bar.last_print_t += spent
    return spent
