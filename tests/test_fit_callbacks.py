"""``fit`` as a loop with callbacks (issue 14): the hooks, their order, stopping, the non-finite
guard as a callback, a failing user callback, and ``numbarnn train --checkpoint-every``.

Tiny models on the shipped names, in-process, so each test takes a second or two.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import numbarnn
from numbarnn import cli
from numbarnn import data as D
from numbarnn import trainer as T
from numbarnn.checkpoint import read_checkpoint
from numbarnn.data import Vocabulary
from numbarnn.fit import Callback, CallbackError, LossPlot
from numbarnn.trainer import make_trainer

TINY = ["--hidden", "8", "--batch", "4", "--sample-every", "0", "--no-progress", "--eval-every", "1000"]


def names_trainer(seed=0, dtype="float64"):
    names = D.dinosaur_names()[:40]
    vocab = Vocabulary.from_text("\n".join(D.dinosaur_names()) + "\n")
    trainer = make_trainer(vocab=vocab, hidden_size=4, seed=seed, mode="names", sampler="top_p", dtype=dtype)
    return trainer, D.NamesBatches(names, vocab, 8, seed=seed)


def params(trainer):
    return {name: np.array(value) for name, value in trainer.model.params.items()}


def assert_bit_equal(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name


class Log(Callback):
    """Records each hook as (name, hook, step), in one list shared by several callbacks."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def on_fit_start(self, state):
        self.log.append((self.name, "on_fit_start", state.step))

    def on_step_start(self, state):
        self.log.append((self.name, "on_step_start", state.step))

    def on_step_end(self, state):
        self.log.append((self.name, "on_step_end", state.step))

    def on_non_finite(self, state, error):
        self.log.append((self.name, "on_non_finite", state.step))

    def on_interrupt(self, state):
        self.log.append((self.name, "on_interrupt", state.step))

    def on_fit_end(self, state):
        self.log.append((self.name, "on_fit_end", state.step))


def test_a_user_callback_sees_every_step_in_order_and_can_stop_the_run():
    trainer, batches = names_trainer()
    seen = []

    class StopAtThree(Callback):
        def on_step_end(self, state):
            seen.append((state.step, state.loss, state.smoothed_loss, trainer.history[-1]))
            if state.step == 3:
                state.stop("stopped at step 3 by the test", "test-stop")

    lines = []
    summary = trainer.fit(batches, steps=10, progress=False, sample_every=0, callbacks=[StopAtThree()],
                          print_fn=lines.append)
    assert [s[0] for s in seen] == [1, 2, 3]
    assert all(history == (step, loss) for step, loss, _, history in seen)
    assert seen[-1][2] == summary["loss"] == trainer.config["smoothed_loss"]
    assert summary["stopped"] == "test-stop" and summary["reason"] == "stopped at step 3 by the test"
    assert summary["steps"] == trainer.step == len(trainer.history) == 3
    assert lines == ["stopped at step 3 by the test"]  # a stop says why, once


def test_hooks_run_built_ins_first_then_users_in_the_order_given():
    trainer, batches = names_trainer()
    log, printed = [], []

    class SeesTheSamples(Log):
        def on_step_end(self, state):
            super().on_step_end(state)
            # the built-in Samples ran before: its lines are printed already
            self.log.append(("printed", len(printed)))

    trainer.fit(batches, steps=2, progress=False, sample_every=2, samples=1, print_fn=printed.append,
                callbacks=[SeesTheSamples("a", log), Log("b", log)])
    assert log == [("a", "on_fit_start", 0), ("b", "on_fit_start", 0),
                   ("a", "on_step_start", 0), ("b", "on_step_start", 0),
                   ("a", "on_step_end", 1), ("printed", 0), ("b", "on_step_end", 1),
                   ("a", "on_step_start", 1), ("b", "on_step_start", 1),
                   ("a", "on_step_end", 2), ("printed", 2), ("b", "on_step_end", 2),
                   ("a", "on_fit_end", 2), ("b", "on_fit_end", 2)]


def test_ctrl_c_in_a_callback_is_an_interruption_and_on_fit_end_still_runs():
    trainer, batches = names_trainer()
    log = []

    class CtrlC(Callback):
        def on_step_end(self, state):
            if state.step == 2:
                raise KeyboardInterrupt

    summary = trainer.fit(batches, steps=5, progress=False, sample_every=0, print_fn=lambda text: None,
                          callbacks=[CtrlC(), Log("log", log)])
    assert summary["stopped"] == "interrupted" and summary["steps"] == 2
    assert log[-2:] == [("log", "on_interrupt", 2), ("log", "on_fit_end", 2)]


def test_the_non_finite_guard_as_a_callback_puts_back_the_last_good_weights(monkeypatch):
    trainer, batches = names_trainer()
    real_step, calls, good = trainer.train_step, {"n": 0}, {}

    def third_step_spoils_the_weights(*args, **kwargs):
        calls["n"] += 1
        loss = real_step(*args, **kwargs)
        if calls["n"] == 3:
            trainer.model.params["W_h"][0, 0] = np.nan
        return loss

    class KeepsStepTwo(Log):
        def on_step_end(self, state):
            super().on_step_end(state)
            if state.step == 2:
                good.update(params(trainer))

    monkeypatch.setattr(trainer, "train_step", third_step_spoils_the_weights)
    log, lines = [], []
    summary = trainer.fit(batches, steps=6, progress=False, sample_every=0, print_fn=lines.append,
                          callbacks=[KeepsStepTwo("log", log)])
    assert summary["stopped"] == "non-finite" and "weights stopped being finite at step 3" in summary["reason"]
    assert lines == [summary["reason"]] and "restored the weights of the last good step" in lines[0]
    assert trainer.step == summary["steps"] == len(trainer.history) == 2  # the undone update is not a step
    assert_bit_equal(params(trainer), good)
    assert ("log", "on_non_finite", 2) in log and ("log", "on_step_end", 3) not in log


def test_a_failing_user_callback_stops_fit_with_a_clear_error_and_leaves_the_trainer_whole(tmp_path):
    straight, straight_batches = names_trainer()
    straight.fit(straight_batches, steps=5, progress=False, sample_every=0)

    trainer, batches = names_trainer()

    class Broken(Callback):
        def on_step_end(self, state):
            if state.step == 3:
                raise ValueError("the test's callback is broken")

    path = tmp_path / "run.ckpt"
    with pytest.raises(CallbackError) as caught:
        trainer.fit(batches, steps=5, progress=False, sample_every=0, checkpoint=str(path),
                    callbacks=[Broken()])
    message = str(caught.value)
    assert message.startswith("callback Broken.on_step_end raised ValueError: the test's callback is broken "
                              "(at step 3)"), message
    assert isinstance(caught.value.__cause__, ValueError)
    assert not path.exists()  # an error is not Ctrl-C: nothing is saved behind the user's back
    # Whole at step 3: two more steps give the weights of five straight ones, bit for bit.
    assert trainer.step == len(trainer.history) == 3
    trainer.fit(batches, steps=2, progress=False, sample_every=0)
    assert_bit_equal(params(trainer), params(straight))
    assert trainer.history == straight.history


def test_callbacks_and_stop_are_checked_at_the_boundary():
    trainer, batches = names_trainer()
    with pytest.raises(TypeError, match=r"callbacks\[0\] \(function\) has none of fit's hooks"):
        trainer.fit(batches, steps=1, progress=False, callbacks=[lambda state: None])
    with pytest.raises(TypeError, match="callbacks must be a list of callbacks, got Callback"):
        trainer.fit(batches, steps=1, progress=False, callbacks=Callback())
    with pytest.raises(TypeError, match="callbacks must be a list of callbacks, got int"):
        trainer.fit(batches, steps=1, progress=False, callbacks=3)
    with pytest.raises(ValueError, match="checkpoint_every must be a positive integer"):
        trainer.fit(batches, steps=1, progress=False, checkpoint="x.ckpt", checkpoint_every=0)
    with pytest.raises(ValueError, match="checkpoint_every needs checkpoint"):
        trainer.fit(batches, steps=1, progress=False, checkpoint_every=2)
    assert trainer.step == 0  # every check above came before any training

    class StopsAsDone(Callback):
        def on_step_end(self, state):
            state.stop("no", "done")

    with pytest.raises(CallbackError, match="stop takes a reason and a kind"):
        trainer.fit(batches, steps=1, progress=False, sample_every=0, callbacks=[StopsAsDone()])


def test_loss_plot_callback_writes_the_picture(tmp_path):
    pytest.importorskip("matplotlib")
    trainer, batches = names_trainer()
    path = tmp_path / "pictures" / "loss.png"
    trainer.fit(batches, steps=3, progress=False, sample_every=0, callbacks=[LossPlot(path)])
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


# ---- numbarnn train --checkpoint-every ---------------------------------------------------------------------

def test_checkpoint_every_saves_at_step_n_and_resumes_exactly(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--steps", "8", *TINY, "--out", "straight.ckpt"]) == 0
    real_step, calls = T.Trainer.train_step, {"n": 0}

    def power_cut_at_step_six(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise RuntimeError("power cut")
        return real_step(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(T.Trainer, "train_step", power_cut_at_step_six)
        with pytest.raises(RuntimeError, match="power cut"):
            cli.main(["train", "--steps", "8", *TINY, "--out", "run.ckpt", "--checkpoint-every", "4"])
    meta, _ = read_checkpoint("run.ckpt")
    assert meta["step"] == 4  # the save of step 4 survived the crash at step 6
    assert cli.main(["train", "--resume", "run.ckpt", "--steps", "4", "--batch", "4", "--sample-every", "0",
                     "--no-progress", "--eval-every", "1000"]) == 0
    capsys.readouterr()
    (resumed_meta, resumed), (straight_meta, straight) = read_checkpoint("run.ckpt"), read_checkpoint("straight.ckpt")
    assert resumed_meta["step"] == straight_meta["step"] == 8
    assert resumed_meta["history"] == straight_meta["history"]
    assert resumed.keys() == straight.keys()
    for name in straight:
        assert np.array_equal(resumed[name], straight[name]), name


@pytest.mark.parametrize("value", ["0", "-3"])
def test_checkpoint_every_must_be_a_positive_count(tmp_path, monkeypatch, capsys, value):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", *TINY, "--checkpoint-every", value]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (f"numbarnn train: error: --checkpoint-every must be at "
                                                        f"least 1, got {value}")
    assert not list(tmp_path.iterdir())


def test_the_training_page_runs(tmp_path, monkeypatch):
    """docs/training.md's python blocks (the callbacks example), run as tests/test_docs.py runs
    the tutorials: in page order, in a scratch folder."""
    docs = Path(__file__).resolve().parents[1] / "docs"
    spec = importlib.util.spec_from_file_location("numbarnn_docs_run_tutorials_fit", docs / "run_tutorials.py")
    runner = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, runner)  # dataclasses look their module up
    spec.loader.exec_module(runner)
    assert [b.kind for b in runner.blocks(docs / "training.md")].count("run") >= 1
    namespace = runner.run(docs / "training.md", tmp_path, quick=True)
    assert namespace["summary"]["stopped"] == "target"


def test_validation_speaks_of_sequences_for_a_classifier_and_gives_no_perplexity(capsys):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(24, 5, 3)), rng.integers(0, 2, size=24)
    trainer = numbarnn.make_trainer("rnn", task="classify", input_size=3, num_classes=2, hidden_size=4, seed=0)
    batches = numbarnn.data.ArrayBatches(X[:16], y[:16], 8, seed=0)
    summary = trainer.fit(batches, steps=2, validation=numbarnn.data.ArrayBatches(X[16:], y[16:], 8),
                          eval_every=2, sample_every=0, progress=False)
    out = capsys.readouterr().out
    assert "-- step 2: validation loss" in out and "per sequence" in out and "perplexity" not in out
    assert summary["val_loss"] is not None and summary["val_perplexity"] is None


def optimizer_state(trainer):
    """The optimizer's state dict (its step count, options and slots as host arrays)."""
    return trainer.optimizer.state_dict()


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_weights_that_overflow_put_back_the_optimizers_state_with_them():
    """The update that overflows the weights also moved Adam's moments and step count; the guard
    puts those back with the weights, so the trainer is whole at its last good step: its
    checkpoint, or a further fit with a lower rate, carries nothing of the undone update."""
    trainer, batches = names_trainer(dtype="float32")
    trainer.fit(batches, steps=3, progress=False, sample_every=0)
    good_params, good_state = params(trainer), optimizer_state(trainer)
    assert good_state["step"] == 3 and np.any(good_state["exp_avg.W_h"])
    trainer.optimizer.lr = 1e39  # the next update overflows float32 weights; loss and gradient are finite
    good_state["lr"] = 1e39
    summary = trainer.fit(batches, steps=3, progress=False, sample_every=0)
    assert summary["stopped"] == "non-finite" and "weights stopped being finite at step 4" in summary["reason"]
    assert trainer.step == 3 and trainer.optimizer.step_count == 3
    assert_bit_equal(params(trainer), good_params)
    assert_same_state(optimizer_state(trainer), good_state)


def test_a_non_finite_loss_stops_the_step_before_the_optimizer_moves():
    """A loss (or gradient) that is not finite raises in train_step before any update: the
    optimizer's state is untouched, so there the guard has nothing to undo."""
    trainer, batches = names_trainer()
    trainer.fit(batches, steps=2, progress=False, sample_every=0)
    before = optimizer_state(trainer)
    trainer.model.params["W_y"][0, 0] = np.inf  # the next loss is not finite
    inputs, targets, mask, _ = batches.next_batch()
    with pytest.raises(T.NonFiniteLossError, match="the loss is (nan|inf)"):
        trainer.train_step(inputs, targets, mask)
    assert trainer.step == 2
    assert_same_state(optimizer_state(trainer), before)


def test_a_snapshot_can_be_taken_into_an_earlier_one():
    # The non-finite guard snapshots before every step: into last step's buffer, not a new one.
    trainer = numbarnn.make_trainer("rnn", vocab_size=3, hidden_size=2, dtype="float64", seed=0)
    first = trainer.snapshot_params()
    trainer.train_step(np.array([[0, 1, 2]]), np.array([[1, 2, 0]]))
    again = trainer.snapshot_params(reuse=first)
    assert again is first and np.array_equal(first, trainer.model.flat_params)
    assert not np.shares_memory(first, trainer.model.flat_params)
    other = numbarnn.make_trainer("rnn", vocab_size=4, hidden_size=2, dtype="float64", seed=0)
    fresh = other.snapshot_params(reuse=first)  # another model's snapshot: not reused
    assert fresh is not first and fresh.shape == other.model.flat_params.shape
