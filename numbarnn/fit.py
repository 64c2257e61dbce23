"""``Trainer.fit``: the training loop over batches, and the callbacks that do everything else.

The loop (:func:`fit`) draws a batch, runs one training step, records the loss and calls
its callbacks' hooks; the progress bar, periodic samples, validation with early stopping,
checkpoints, the non-finite guard, the learning-rate schedule and the loss plot are callbacks
(:class:`ProgressBar`, :class:`Samples`, :class:`Validation`, :class:`Checkpoint`,
:class:`NonFiniteGuard`, :class:`LRSchedule`, :class:`LossPlot`), and users pass their own
(``fit(..., callbacks=[...])``).

It drives a trainer only through its public methods (``train_step``, ``validation_loss``,
``sample_texts``, ``snapshot_params``, ...), so it is the same on every device.
"""
from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import numpy as np

from .checkpoint_file import save_checkpoint
from .data import printable
from .errors import NonFiniteLossError

__all__ = ["fit", "Callback", "FitState", "CallbackError", "ProgressBar", "NonFiniteGuard", "Samples",
           "Validation", "Checkpoint", "LRSchedule", "LossPlot", "sample_lines", "plot_history", "base_lr"]

HOOKS = ("on_fit_start", "on_step_start", "on_step_end", "on_non_finite", "on_interrupt", "on_fit_end")


class Callback:
    """A base for ``fit``'s callbacks: every hook does nothing; override the ones you need.

    The hooks, in the order ``fit`` calls them (each on every callback, built-ins first,
    then the user's in the order given):

    * ``on_fit_start(state)``: once, before the first step.
    * ``on_step_start(state)``: before each step draws its batch.
    * ``on_step_end(state)``: after each step that trained: ``trainer.step``,
      ``trainer.history``, ``state.loss`` and ``state.smoothed_loss`` include it.
    * ``on_non_finite(state, error)``: instead of ``on_step_end`` when the step's loss or
      weights are not finite (``error``: :class:`numbarnn.errors.NonFiniteLossError`);
      :class:`NonFiniteGuard` puts the weights back and stops the run.
    * ``on_interrupt(state)``: on Ctrl-C, wherever it struck; ``state.summary`` already
      says ``"interrupted"`` and its reason is printed after these hooks. Also when printing
      met a closed stdout (``"output-closed"``; nothing more is printed).
    * ``on_fit_end(state)``: once, last, however ``fit`` ends (``state.error`` holds the
      exception when it ends with one), with ``state.summary`` complete.

    ``state`` is the :class:`FitState`. A callback stops the run with ``state.stop(reason)``.
    """

    def on_fit_start(self, state):
        pass

    def on_step_start(self, state):
        pass

    def on_step_end(self, state):
        pass

    def on_non_finite(self, state, error):
        pass

    def on_interrupt(self, state):
        pass

    def on_fit_end(self, state):
        pass


class CallbackError(RuntimeError):
    """A user's callback raised: ``fit`` stopped there, with the trainer whole (see :func:`fit`)."""


class FitState:
    """What ``fit``'s callbacks see and share.

    ``trainer``, ``batches``; ``steps``: the steps this ``fit`` call runs at most;
    ``batch``: the current step's ``(inputs, targets, mask, carry)``; ``loss``: its loss;
    ``smoothed_loss``: the running mean shown by the progress bar (it carries over from the
    previous ``fit``); ``summary``: the dict ``fit`` returns; ``step``: ``trainer.step``;
    ``stopping``: whether a stop was requested; ``error``: the exception ``fit`` ends with,
    in ``on_fit_end`` (else None). ``write(text)`` prints a result line (above the progress
    bar, when there is one); ``note(text)`` a remark about ``fit`` itself, on stderr.
    ``bar`` is the tqdm bar, or None. ``last_validation``: ``(step, loss)`` of the latest
    validation in this ``fit`` (set by :class:`Validation`), or None.
    """

    def __init__(self, trainer, batches, steps: int, print_fn=print):
        self.trainer, self.batches, self.steps = trainer, batches, steps
        self.batch, self.loss = None, None
        self.smoothed_loss = trainer.config.get("smoothed_loss")
        last_val = trainer.fit_state["val_loss"]
        self.summary = {"stopped": "done", "reason": f"ran {steps} steps", "val_loss": last_val,
                        "val_perplexity": perplexity(trainer, last_val)}
        self.stopping, self.error = False, None
        self.last_validation = None
        self.bar, self.write, self.note = None, print_fn, _note_writer(None)
        self.off_clock = 0.0  # seconds kept off the bar's clock (phases that loaded or compiled kernels)
        self._phases = set()  # the phases (step, validation, samples) run once already

    @property
    def step(self) -> int:
        return self.trainer.step

    def stop(self, reason: str, kind: str = "callback") -> None:
        """Stop ``fit`` once the current step's callbacks have run: ``summary["stopped"]``
        becomes ``kind`` and ``summary["reason"]`` ``reason``, which is printed now. The
        first request wins; later ones in the same step are ignored."""
        if not isinstance(reason, str) or not isinstance(kind, str) or not kind or kind == "done":
            raise ValueError(f"stop takes a reason and a kind (strings, the kind not 'done'), got {reason!r}, {kind!r}")
        if self.stopping:
            return
        self.stopping = True
        self.summary.update(stopped=kind, reason=reason)
        self.write(reason)

    @contextmanager
    def phase(self, name: str):
        """Run the ``with`` block as ``fit``'s phase ``name`` ("step", "validation" or
        "samples"): the first time, say on stderr when its kernels must compile first, and keep
        that wait (and the first step's, which loads the kernels) off the progress bar's clock."""
        mark = _first_time(self.trainer, name, self._phases, self.bar, self.note)
        yield
        self.off_clock += _off_the_clock(self.bar, mark)


def fit(trainer, batches, *, steps: Optional[int] = None, epochs: Optional[float] = None,
        validation=None, eval_every: int = 200, sample_every: int = 500, samples: int = 5,
        patience: Optional[int] = None, progress: bool = True, checkpoint: Optional[str] = None,
        checkpoint_every: Optional[int] = None, print_fn=print, callbacks=()) -> dict:
    """Train ``trainer`` on ``batches`` (:class:`numbarnn.data.NamesBatches` or ``StreamBatches``).

    Runs ``steps`` more steps (or ``epochs`` more passes). Shows a progress bar (step,
    smoothed loss, tokens/s), prints ``samples`` generated texts every ``sample_every``
    steps, evaluates the ``validation`` batches every ``eval_every`` steps (loss per
    token and perplexity) and stops early after ``patience`` evaluations without
    improvement, keeping the best weights. The early-stopping state (best loss, evaluations
    without improvement, best weights: ``fit_state``) continues from the previous ``fit``
    call or the loaded checkpoint; after an early stop a further ``fit`` gets ``patience``
    evaluations again. A non-finite loss stops training and restores
    the last good weights; ``checkpoint`` (if given) is saved every ``checkpoint_every``
    steps (if given) and on Ctrl-C, before returning.
    Returns a summary dict: ``stopped`` ("done", "early-stop", "non-finite",
    "interrupted", "output-closed" (printing met a closed stdout: handled as Ctrl-C, silently),
    or the kind a callback stopped with), ``reason``, ``steps``, ``loss``
    (smoothed), ``val_loss``, ``val_perplexity``.

    Each of those jobs is a callback (:class:`Callback`); ``callbacks`` adds the user's,
    called after the built-ins. An exception in a user's callback stops ``fit`` with a
    :class:`CallbackError` naming the callback, the hook and the step; the trainer is left
    whole at that point (no half-recorded step, nothing saved), ready to save or fit again.
    """
    if steps is None:
        steps = max(1, int(round((epochs or 1.0) * batches.steps_per_epoch())))
    if checkpoint_every is not None:
        if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, (int, np.integer)) \
                or checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be a positive integer (steps), got {checkpoint_every!r}")
        if not checkpoint:
            raise ValueError("checkpoint_every needs checkpoint, the path to save to")
    users = _user_callbacks(callbacks)
    distributed = getattr(trainer, "distributed", None)
    if distributed is not None and not distributed.is_root:  # data-parallel: rank 0 alone prints and samples
        progress, sample_every, print_fn = False, 0, _quiet
    built_in = [ProgressBar() if progress else None, NonFiniteGuard(),
                Samples(sample_every, samples) if sample_every else None,
                Validation(validation, eval_every, patience) if validation is not None and eval_every else None,
                # after Validation (it observes the new loss), before Checkpoint (which saves its state)
                LRSchedule() if getattr(trainer, "schedule", None) is not None else None,
                Checkpoint(checkpoint, every=checkpoint_every) if checkpoint else None]
    run = _Hooks([c for c in built_in if c is not None], users)
    state = FitState(trainer, batches, steps, print_fn)
    if print_fn is _quiet:
        state.note = _quiet
    try:
        try:
            run("on_fit_start", state)
            for _ in range(steps):
                # The first step loads (or compiles) the kernels: its time is not a step's.
                with state.phase("step"):
                    run("on_step_start", state)
                    inputs, targets, mask, carry = state.batch = batches.next_batch()
                    try:
                        loss = trainer.train_step(inputs, targets, mask, state=trainer.state if carry else None)
                        if not trainer.params_finite():
                            raise NonFiniteLossError(f"the weights stopped being finite at step {trainer.step} "
                                                     f"(cell {trainer.model.cell.name!r})")
                    except NonFiniteLossError as error:
                        run("on_non_finite", state, error)
                        if not state.stopping:  # no callback dealt with it
                            raise
                        break
                trainer.history.append((trainer.step, loss))
                state.loss = loss
                state.smoothed_loss = loss if state.smoothed_loss is None else 0.98 * state.smoothed_loss + 0.02 * loss
                trainer.config["smoothed_loss"] = state.smoothed_loss
                run("on_step_end", state)
                if state.stopping:
                    break
        except KeyboardInterrupt:
            state.summary.update(stopped="interrupted", reason=f"interrupted at step {trainer.step}")
            run("on_interrupt", state)
            state.write(state.summary["reason"])
        except BrokenPipeError:
            # The reader of the printed lines went away (`numbarnn train | head`): stop as on
            # Ctrl-C (the checkpoint is saved), printing nothing more.
            state.write = lambda *args, **kwargs: None
            state.summary.update(stopped="output-closed", reason=f"output closed at step {trainer.step}")
            run("on_interrupt", state)
        state.summary.update(steps=trainer.step, loss=state.smoothed_loss)
    except BaseException as error:
        state.error = error
        raise
    finally:
        run("on_fit_end", state)
    if distributed is not None and state.summary["stopped"] in ("interrupted", "output-closed"):
        # The ranks stopped in different places: no collective can follow, so end the whole job.
        distributed.end_interrupted(130 if state.summary["stopped"] == "interrupted" else 141)
    return state.summary


def _quiet(*args, **kwargs) -> None:
    """print_fn of the ranks other than 0 in data-parallel training: they print nothing."""


def _user_callbacks(callbacks) -> list:
    """``callbacks`` (None: none) as a list, each checked to have at least one of fit's hooks."""
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback) or not hasattr(callbacks, "__iter__") or isinstance(callbacks, (str, bytes)):
        raise TypeError(f"callbacks must be a list of callbacks, got {type(callbacks).__name__}")
    callbacks = list(callbacks)
    for k, callback in enumerate(callbacks):
        if not any(callable(getattr(callback, hook, None)) for hook in HOOKS):
            raise TypeError(f"callbacks[{k}] ({type(callback).__name__}) has none of fit's hooks "
                            f"({', '.join(HOOKS)}); subclass numbarnn.fit.Callback")
    return callbacks


class _Hooks:
    """Calls a hook on the built-in callbacks, then on the user's. A user's callback that
    raises (anything but Ctrl-C) becomes a :class:`CallbackError` naming it; the built-ins'
    own errors (a disk that is full, ...) pass through as they are."""

    def __init__(self, built_in, users):
        self.built_in, self.users = built_in, users

    def __call__(self, hook, state, *args):
        for callback in self.built_in:
            getattr(callback, hook)(state, *args)
        for callback in self.users:
            method = getattr(callback, hook, None)
            if method is None:
                continue
            try:
                method(state, *args)
            except Exception as error:
                raise CallbackError(
                    f"callback {type(callback).__name__}.{hook} raised {type(error).__name__}: {error} "
                    f"(at step {state.step}); fit stopped there, the trainer whole at step {state.step}") from error


class ProgressBar(Callback):
    """The tqdm bar on stderr: step, smoothed loss, tokens/s. Phases that load or compile
    kernels are kept off its clock (:meth:`FitState.phase`), so its rate and ETA are training's;
    tokens/s counts all steps but the first."""

    def on_fit_start(self, state):
        self.bar = state.bar = _progress_bar(state.steps, True)
        state.write, state.note = self.bar.write, _note_writer(self.bar)
        self.tokens, self.started, self.first = 0, time.perf_counter(), True

    def on_step_end(self, state):
        if not self.first:
            self.tokens += state.batches.tokens(state.batch[2])
        self.first = False
        postfix = f"loss {state.smoothed_loss:.3f}"
        if self.tokens:
            rate = self.tokens / max(time.perf_counter() - self.started - state.off_clock, 1e-9)
            postfix += f", {rate:,.0f} tok/s"
        self.bar.set_postfix_str(postfix, refresh=False)
        self.bar.update(1)

    def on_fit_end(self, state):
        self.bar.close()


class NonFiniteGuard(Callback):
    """Keeps the weights and the optimizer's state of the last good step (a snapshot before
    each step); when a step's loss or weights are not finite, puts them back, undoes the step
    counter (the undone update is not a step: history, checkpoints) and stops with
    ``"non-finite"``.

    Weights that overflow come from an update that did happen: it also moved the optimizer's
    moments and step count, which would no longer match the weights put back (a checkpoint, or
    a further ``fit`` with a lower rate, would carry the bad step in them). A loss or gradient
    that is not finite stops ``train_step`` before any update, and restoring changes nothing."""

    def on_step_start(self, state):
        trainer = state.trainer
        # copies on the device, into last step's buffers: a small part of a step
        self.snapshot = trainer.snapshot_params(reuse=getattr(self, "snapshot", None))
        self.optimizer_state = trainer.snapshot_optimizer(reuse=getattr(self, "optimizer_state", None))
        self.good_step = trainer.step

    def on_non_finite(self, state, error):
        state.trainer.restore_params(self.snapshot)
        state.trainer.restore_optimizer(self.optimizer_state)
        state.trainer.step = self.good_step
        state.stop(f"stopped: {error}; restored the weights of the last good step "
                   "(try a lower --lr or a smaller --clip)", "non-finite")


class Samples(Callback):
    """Prints ``n`` generated texts every ``every`` steps (when the trainer has a vocabulary)."""

    def __init__(self, every: int = 500, n: int = 5):
        self.every, self.n = every, n

    def on_step_end(self, state):
        trainer = state.trainer
        if trainer.step % self.every or trainer.vocab is None:
            return
        with state.phase("samples"):
            texts = trainer.sample_texts(self.n, seed=trainer.step)
        state.write(f"-- step {trainer.step}, loss {state.smoothed_loss:.3f}, samples:")
        for line in sample_lines(texts, names=trainer.config.get("mode") == "names", indent="   "):
            state.write(line)


def perplexity(trainer, loss):
    """exp(loss per token) for a language model (None without a loss, and for the classify
    and regress tasks, whose loss per sequence or per step has no perplexity)."""
    if loss is None or getattr(trainer.model, "task", "lm") != "lm":
        return None
    return math.exp(min(loss, 700))


class Validation(Callback):
    """Every ``every`` steps, the loss per token and perplexity on ``batches`` (per sequence
    for ``task="classify"``, per step for ``"regress"``, without a perplexity; a list of
    ``(inputs, targets, mask, carry)``), printed and put in the summary; with ``patience``,
    early stopping: after ``patience`` evaluations without improvement it puts back the best
    weights and stops with ``"early-stop"``. Its state is ``trainer.fit_state`` (best loss,
    evaluations since, best weights, latest loss), so it carries over from one ``fit`` to the
    next and through checkpoints: resume is exact."""

    def __init__(self, batches, every: int = 200, patience: Optional[int] = None):
        self.batches, self.every, self.patience = batches, every, patience

    def on_step_end(self, state):
        trainer, summary = state.trainer, state.summary
        if trainer.step % self.every:
            return
        with state.phase("validation"):
            val = trainer.validation_loss(self.batches)
        summary.update(val_loss=val, val_perplexity=perplexity(trainer, val))
        state.last_validation = (trainer.step, val)
        unit = {"lm": "token", "classify": "sequence"}.get(getattr(trainer.model, "task", "lm"), "step")
        state.write(f"-- step {trainer.step}: validation loss {val:.4f} per {unit}"
                    + ("" if summary["val_perplexity"] is None else f", perplexity {summary['val_perplexity']:.2f}"))
        early = trainer.fit_state
        early["val_loss"] = val
        if val < early["best_val_loss"] - 1e-6:
            early.update(best_val_loss=val, evals_since_best=0, best_params=trainer.snapshot_params())
            return
        early["evals_since_best"] += 1
        if self.patience is not None and early["evals_since_best"] >= self.patience:
            best = early["best_val_loss"]
            if early["best_params"] is not None:  # None only if no evaluation was finite
                trainer.restore_params(early["best_params"])
            # The weights are the best ones again; a later fit starts a new patience window.
            early.update(val_loss=best, evals_since_best=0)
            summary.update(val_loss=best, val_perplexity=perplexity(trainer, best))
            state.stop(f"early stop at step {trainer.step}: no validation improvement in {self.patience} "
                       f"evaluations; kept the best weights (validation loss {best:.4f})", "early-stop")


class Checkpoint(Callback):
    """Saves the trainer to ``path`` every ``every`` steps (None: never on a schedule; not on
    a step that stops the run, which its caller saves) and on Ctrl-C, saying so once in the
    interruption's reason."""

    def __init__(self, path, every: Optional[int] = None):
        self.path, self.every = path, every

    def on_step_end(self, state):
        if self.every and not state.stopping and state.step % self.every == 0:
            state.trainer.save(self.path, state.batches)  # distributed: every rank joins, rank 0 writes

    def on_interrupt(self, state):
        distributed = getattr(state.trainer, "distributed", None)
        if distributed is not None:  # no collective after Ctrl-C: rank 0 saves what it holds, if it can
            state.summary["reason"] += distributed.save_on_interrupt(state.trainer, self.path, state.batches) or ""
            return
        save_checkpoint(state.trainer, self.path, state.batches)
        state.summary["reason"] += f"; checkpoint saved to {self.path}"


class LRSchedule(Callback):
    """Sets the optimizer's learning rate from a schedule before each step, and feeds it each
    validation loss (its ``observe``, for ``reduce_on_plateau``).

    ``schedule``: a :class:`numbarnn.schedules.Schedule`; None (the default) means
    ``trainer.schedule``, which ``fit`` adds this callback for (set it to apply a schedule;
    checkpoints then save it). ``base_lr``: the rate the schedule scales; None means the one
    the trainer was made with (:func:`base_lr`). The rates of the first and the last step of
    the run are checked before it starts: a schedule that would give a rate that is not a
    positive finite number (``cosine`` with ``min_lr=0`` past its ``total_steps``) is a
    ValueError naming it, the step and the rate.
    """

    def __init__(self, schedule=None, base_lr: Optional[float] = None):
        self.schedule, self.base_lr = schedule, base_lr

    def on_fit_start(self, state):
        self.check(state.trainer, state.steps)
        self.observed = state.last_validation

    def check(self, trainer, steps: int) -> None:
        """Take the schedule and base rate from ``trainer`` where not given, and check the rates
        of the first and the last of the next ``steps`` steps (a ValueError naming the schedule)."""
        if self.schedule is None:
            self.schedule = getattr(trainer, "schedule", None)
        if self.schedule is None:
            raise ValueError("LRSchedule needs a schedule: pass one, or set trainer.schedule")
        if self.base_lr is None:
            self.base_lr = base_lr(trainer)
        for step in (trainer.step, trainer.step + steps - 1):  # fail now, not mid-run
            self._lr(step)

    def _lr(self, step: int) -> float:
        lr = self.schedule.lr(step, self.base_lr)
        if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating)) or not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"schedule {getattr(self.schedule, 'name', type(self.schedule).__name__)!r} gives the "
                             f"learning rate {lr!r} at step {step} (base {self.base_lr!r}); it must be a positive "
                             "finite number (cosine: a min_lr above 0, or total_steps covering the run)")
        return float(lr)

    def _observe(self, state):
        # A validation not fed yet: ours run before this callback, a user's Validation after
        # it (then it is fed before the next step).
        if state.last_validation is not None and state.last_validation is not self.observed:
            self.observed = state.last_validation
            observe = getattr(self.schedule, "observe", None)
            if observe is not None:
                observe(state.last_validation[1])

    def on_step_start(self, state):
        self._observe(state)
        state.trainer.optimizer.lr = self._lr(state.trainer.step)

    def on_step_end(self, state):
        self._observe(state)  # before Checkpoint saves the schedule's state


def base_lr(trainer) -> float:
    """The learning rate ``trainer`` was made with (``make_trainer(lr=...)``, ``--lr``), else its
    optimizer's default: what a schedule scales. A checkpoint records it, so a resumed run
    scales the same one.

    >>> import numbarnn
    >>> base_lr(numbarnn.make_trainer("rnn", vocab_size=3, hidden_size=2, lr=0.05)), base_lr(numbarnn.make_trainer("rnn", vocab_size=3, hidden_size=2))
    (0.05, 0.001)
    """
    options = trainer.config.get("optimizer_options") or {}
    if "lr" in options:
        return float(options["lr"])
    spec = getattr(trainer, "optimizer_spec", None)
    if spec is not None and "lr" in spec.defaults:
        return float(spec.defaults["lr"])
    return float(trainer.optimizer.lr)


class LossPlot(Callback):
    """Writes the loss curve of ``trainer.history`` to ``path`` when ``fit`` ends (not when it
    ends with an exception): :func:`plot_history`, which needs matplotlib."""

    def __init__(self, path):
        self.path = path

    def on_fit_end(self, state):
        if state.error is None:
            plot_history(state.trainer.history, self.path)


def plot_history(history, path) -> None:
    """A picture of ``history`` (``(step, loss)`` pairs) at ``path``: the loss per step and,
    from 20 steps on, its running mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([h[0] for h in history])
    losses = np.array([h[1] for h in history])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, alpha=0.3, label="loss per step")
    if len(losses) >= 20:
        k = max(len(losses) // 50, 5)
        ax.plot(steps[k - 1:], np.convolve(losses, np.ones(k) / k, mode="valid"), label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss per sequence")
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
