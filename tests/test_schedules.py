"""Learning-rate schedules: the registry kind, PyTorch parity, fit's LRSchedule callback,
checkpoints (exact resume, hostile files) and ``numbarnn train --lr-schedule``."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import numbarnn
from numbarnn import cli
from numbarnn import data as D
from numbarnn.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from numbarnn.data import Vocabulary
from numbarnn.fit import Callback, LRSchedule
from numbarnn.optimizers import UnknownOptionError
from numbarnn.registry import UnknownNameError
from numbarnn.schedules import BUILTIN_SCHEDULES, Schedule, ScheduleSpec
from numbarnn.trainer import make_trainer

TINY = ["--hidden", "8", "--batch", "4", "--sample-every", "0", "--no-progress", "--eval-every", "1000"]


# ---- the registry kind ------------------------------------------------------------------------

def test_builtins_are_registered_as_the_fifth_kind():
    assert numbarnn.list_schedules() == ["constant", "cosine", "exponential", "reduce_on_plateau", "step"]
    assert numbarnn.list_schedules("re*") == ["reduce_on_plateau"]
    for spec in BUILTIN_SCHEDULES:
        assert numbarnn.get_schedule(spec.name) is spec and isinstance(spec, ScheduleSpec)
        assert numbarnn.get_registry().entry("schedule", spec.name).plugin == "numbarnn.schedules"
        with pytest.raises(Exception):
            spec.name = "other"  # frozen
    row = next(p for p in numbarnn.list_plugins() if p["name"] == "numbarnn.schedules")
    assert row["schedules"] == numbarnn.list_schedules() and row["source"] == "builtin"


def test_unknown_schedule_suggests_close_matches():
    with pytest.raises(UnknownNameError) as info:
        numbarnn.get_schedule("cosin")
    assert "Did you mean 'cosine'?" in str(info.value) and "Available schedules: constant, cosine" in str(info.value)


def test_a_plugin_registers_a_schedule():
    class Halving(Schedule):
        name = "halving_test"

        def lr(self, step, base_lr):
            return base_lr * 0.5 ** (step // 10)

    class Plugin:
        @numbarnn.hookimpl
        def register_schedules(self, register):
            register(ScheduleSpec(name="halving_test", description="halve every 10 steps", defaults={},
                                  factory=Halving))

    from numbarnn.plugins import register_plugin, unregister_plugin

    register_plugin(Plugin(), name="halving-plugin")
    try:
        assert numbarnn.get_schedule("halving_test").factory().lr(25, 1.0) == 0.25
        assert "halving_test" in numbarnn.list_schedules()
    finally:
        unregister_plugin("halving-plugin")
    assert "halving_test" not in numbarnn.list_schedules()


def test_numbarnn_list_schedules(capsys):
    assert cli.main(["list", "schedules"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("NAME") and "reduce_on_plateau" in out and "total_steps=None" in out


# ---- the values, against torch.optim.lr_scheduler ---------------------------------------------

def _torch_rates(torch, make_scheduler, steps, base, losses=None):
    """The learning rate each of ``steps`` optimizer updates uses under a PyTorch scheduler
    stepped once per update (with ``losses[k]`` after update k for ReduceLROnPlateau)."""
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=base)
    scheduler = make_scheduler(optimizer)
    rates = []
    for k in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step(losses[k]) if losses is not None else scheduler.step()
    return rates


@pytest.mark.torch
@pytest.mark.parametrize("name,options,torch_name,torch_options", [
    ("step", {"step_size": 7, "gamma": 0.5}, "StepLR", {"step_size": 7, "gamma": 0.5}),
    ("step", {"step_size": 1, "gamma": 0.9}, "StepLR", {"step_size": 1, "gamma": 0.9}),
    ("exponential", {"gamma": 0.97}, "ExponentialLR", {"gamma": 0.97}),
    ("cosine", {"total_steps": 40}, "CosineAnnealingLR", {"T_max": 40}),
    ("cosine", {"total_steps": 25, "min_lr": 0.01}, "CosineAnnealingLR", {"T_max": 25, "eta_min": 0.01}),
])
def test_matches_torch_schedulers(name, options, torch_name, torch_options):
    torch = pytest.importorskip("torch")
    steps = options.get("total_steps", 40) + 1  # the cosine's last value (min_lr) included
    expected = _torch_rates(torch, lambda opt: getattr(torch.optim.lr_scheduler, torch_name)(opt, **torch_options),
                            steps, 0.1)
    schedule = numbarnn.get_schedule(name).factory(**options)
    actual = [schedule.lr(step, 0.1) for step in range(steps)]
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-15)
    assert actual[0] == 0.1


@pytest.mark.torch
@pytest.mark.parametrize("options", [
    {"factor": 0.5, "patience": 2, "threshold": 1e-4},
    {"factor": 0.1, "patience": 0, "threshold": 0.05, "min_lr": 0.002, "cooldown": 2},
])
def test_reduce_on_plateau_matches_torch(options):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    # Improving, then a plateau with noise, a NaN, then improving again: reductions and resets.
    losses = [3.0, 2.5, 2.4] + list(2.4 + 0.05 * rng.random(12)) + [math.nan, 1.0, 0.9] + [0.9] * 8
    torch_options = {k: v for k, v in options.items() if k != "min_lr"}
    expected = _torch_rates(torch, lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, min_lr=options.get("min_lr", 0.0), **torch_options), len(losses), 0.1, losses)
    schedule = numbarnn.get_schedule("reduce_on_plateau").factory(**options)
    actual = []
    for k, loss in enumerate(losses):
        actual.append(schedule.lr(k, 0.1))
        schedule.observe(loss)
    np.testing.assert_allclose(actual, expected, rtol=1e-12)
    assert min(actual) < 0.1  # the losses did trigger reductions


def test_closed_forms_without_torch():
    assert [numbarnn.get_schedule("constant").factory().lr(s, 0.3) for s in (0, 99)] == [0.3, 0.3]
    cosine = numbarnn.get_schedule("cosine").factory(total_steps=10, min_lr=0.001, warmup=4)
    rates = [cosine.lr(s, 0.1) for s in range(12)]
    assert rates[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])  # linear warm-up to the base rate
    assert rates[4] == 0.1 and rates[10] == rates[11] == 0.001  # cosine from step 4, then min_lr held
    assert all(a > b for a, b in zip(rates[4:10], rates[5:11]))


@pytest.mark.parametrize("name,options,needle", [
    ("step", {"step_size": 0}, "'step_size' must be an integer >= 1, got 0"),
    ("step", {"gamma": 0.0}, "'gamma' must be in (0, 1], got 0.0"),
    ("exponential", {"gamma": 1.5}, "'gamma' must be in (0, 1], got 1.5"),
    ("cosine", {}, "'total_steps' is required"),
    ("cosine", {"total_steps": 10, "warmup": 10}, "'warmup' must be below total_steps (10), got 10"),
    ("cosine", {"total_steps": 10, "min_lr": math.inf}, "'min_lr' must be in [0, inf)"),
    ("reduce_on_plateau", {"factor": 1.0}, "'factor' must be in (0, 1), got 1.0"),
    ("reduce_on_plateau", {"patience": -1}, "'patience' must be an integer >= 0, got -1"),
])
def test_bad_options_are_clear_value_errors(name, options, needle):
    with pytest.raises(ValueError) as info:
        numbarnn.get_schedule(name).factory(**options)
    assert needle in str(info.value) and repr(name) in str(info.value)


def test_unknown_option_suggests_a_close_match():
    with pytest.raises(UnknownOptionError, match="did you mean 'step_size'"):
        numbarnn.get_schedule("step").factory(stepsize=3)


# ---- state ---------------------------------------------------------------------------------

def test_plateau_state_round_trips_through_json():
    schedule = numbarnn.get_schedule("reduce_on_plateau").factory(factor=0.5, patience=0)
    for loss in (2.0, 2.0, 1.0):
        schedule.lr(0, 0.1)
        schedule.observe(loss)
    state = json.loads(json.dumps(schedule.state_dict()))
    assert state == {"lr": 0.05, "best": 1.0, "num_bad": 0, "cooldown_counter": 0}
    fresh = numbarnn.get_schedule("reduce_on_plateau").factory(factor=0.5, patience=0)
    fresh.load_state_dict(state)
    assert fresh.lr(3, 0.1) == 0.05 and fresh.state_dict() == schedule.state_dict()
    assert numbarnn.get_schedule("reduce_on_plateau").factory().state_dict()["best"] is None  # inf, as JSON can


@pytest.mark.parametrize("change,needle", [
    ({"lr": -1.0}, "'lr' must be a positive finite number"),
    ({"lr": math.inf}, "'lr' must be a positive finite number"),
    ({"lr": "0.1"}, "'lr' must be a positive finite number"),
    ({"best": math.nan}, "'best' must be a number"),
    ({"num_bad": -1}, "'num_bad' must be an integer"),
    ({"cooldown_counter": 1.5}, "'cooldown_counter' must be an integer"),
    ({"extra": 1}, "must have the keys"),
])
def test_plateau_load_state_dict_refuses_hostile_values_and_changes_nothing(change, needle):
    schedule = numbarnn.get_schedule("reduce_on_plateau").factory()
    good = schedule.state_dict()
    with pytest.raises(ValueError, match=needle):
        schedule.load_state_dict({**good, **change})
    assert schedule.state_dict() == good


def test_stateless_schedules_refuse_state():
    with pytest.raises(ValueError, match="keeps no state"):
        numbarnn.get_schedule("step").factory().load_state_dict({"lr": 0.1})


# ---- fit: the LRSchedule callback -------------------------------------------------------------

def names_setup(seed=0, optimizer="adam"):
    names = D.dinosaur_names()[:48]
    vocab = Vocabulary.from_text("\n".join(D.dinosaur_names()) + "\n")
    trainer = make_trainer(vocab=vocab, hidden_size=4, seed=seed, mode="names", dtype="float64", lr=0.02,
                           optimizer=optimizer)
    validation = [D.pad_names([vocab.encode(n) for n in names[40:]], vocab.newline) + (False,)]
    return trainer, D.NamesBatches(names[:40], vocab, 8, seed=seed), validation


class Rates(Callback):
    """The optimizer's learning rate at each step (after the built-ins' on_step_start)."""

    def __init__(self):
        self.rates = []

    def on_step_start(self, state):
        self.rates.append(state.trainer.optimizer.lr)


def test_fit_applies_trainer_schedule_before_every_step():
    trainer, batches, _ = names_setup()
    trainer.schedule = numbarnn.get_schedule("step").factory(step_size=2, gamma=0.5)
    rates = Rates()
    trainer.fit(batches, steps=5, progress=False, sample_every=0, callbacks=[rates])
    assert rates.rates == [0.02, 0.02, 0.01, 0.01, 0.005]
    rates = Rates()  # a second fit continues the schedule from trainer.step
    trainer.fit(batches, steps=2, progress=False, sample_every=0, callbacks=[rates])
    assert rates.rates == [0.005, 0.0025]


def test_no_schedule_leaves_the_rate_alone():
    trainer, batches, _ = names_setup()
    rates = Rates()
    trainer.fit(batches, steps=3, progress=False, sample_every=0, callbacks=[rates])
    assert rates.rates == [0.02] * 3


def test_validation_losses_reach_reduce_on_plateau():
    trainer, batches, validation = names_setup()
    # threshold 0.9: no validation counts as an improvement after the first, so it reduces
    trainer.schedule = numbarnn.get_schedule("reduce_on_plateau").factory(factor=0.5, patience=0, threshold=0.9)
    rates = Rates()
    trainer.fit(batches, steps=6, progress=False, sample_every=0, validation=validation, eval_every=2,
                callbacks=[rates])
    # validations after steps 2 (the first: best), 4 (no improvement: halve), 6 (halve)
    assert rates.rates == [0.02, 0.02, 0.02, 0.02, 0.01, 0.01]
    assert trainer.schedule.state_dict()["lr"] == 0.005


def test_a_schedule_giving_a_zero_rate_is_refused_before_training():
    trainer, batches, _ = names_setup()
    trainer.schedule = numbarnn.get_schedule("cosine").factory(total_steps=4)  # min_lr 0 from step 4
    with pytest.raises(ValueError, match=r"schedule 'cosine' gives the learning rate 0\.0 at step 5"):
        trainer.fit(batches, steps=6, progress=False, sample_every=0)
    assert trainer.step == 0
    trainer.fit(batches, steps=4, progress=False, sample_every=0)  # covered by total_steps: fine
    assert trainer.step == 4


def test_lr_schedule_as_a_user_callback():
    trainer, batches, _ = names_setup()
    rates = Rates()
    trainer.fit(batches, steps=3, progress=False, sample_every=0,
                callbacks=[LRSchedule(numbarnn.get_schedule("exponential").factory(gamma=0.5), base_lr=1.0), rates])
    assert rates.rates == [1.0, 0.5, 0.25]


# ---- checkpoints: exact resume --------------------------------------------------------------

SCHEDULES = [("step", {"step_size": 3, "gamma": 0.5}), ("cosine", {"total_steps": 10, "min_lr": 1e-3, "warmup": 2}),
             ("reduce_on_plateau", {"factor": 0.5, "patience": 0, "threshold": 0.9})]


@pytest.mark.parametrize("name,options", SCHEDULES, ids=[s[0] for s in SCHEDULES])
def test_resume_is_exact(tmp_path, name, options):
    def run(trainer, batches, validation, steps):
        trainer.fit(batches, steps=steps, progress=False, sample_every=0, validation=validation, eval_every=2)

    straight, batches, validation = names_setup()
    straight.schedule = numbarnn.get_schedule(name).factory(**options)
    run(straight, batches, validation, 10)

    first, batches, validation = names_setup()
    first.schedule = numbarnn.get_schedule(name).factory(**options)
    run(first, batches, validation, 4)
    save_checkpoint(first, tmp_path / "run.ckpt", batches)
    _, batches, validation = names_setup()
    resumed = load_checkpoint(tmp_path / "run.ckpt", batches)
    assert type(resumed.schedule) is type(straight.schedule) and resumed.schedule.options == straight.schedule.options
    run(resumed, batches, validation, 6)

    assert resumed.step == straight.step == 10
    for key, value in straight.model.params.items():
        assert np.array_equal(resumed.model.params[key], value), key
    assert resumed.optimizer.lr == straight.optimizer.lr < 0.02  # the schedule did lower it
    assert resumed.schedule.state_dict() == straight.schedule.state_dict()


def test_a_checkpoint_without_schedule_loads_none(tmp_path):
    trainer, _, _ = names_setup()
    save_checkpoint(trainer, tmp_path / "plain.ckpt")
    assert read_checkpoint(tmp_path / "plain.ckpt")[0]["schedule"] is None
    assert load_checkpoint(tmp_path / "plain.ckpt").schedule is None


def _rewrite_meta(path, edit):
    """The checkpoint at ``path`` with its JSON metadata changed by ``edit(meta)``."""
    with np.load(path) as f:
        arrays = {key: f[key] for key in f.files}
    meta = json.loads(arrays["meta"].tobytes().decode())
    edit(meta)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(path, "wb") as out:
        np.savez(out, **arrays)


def _set(*keys, value):
    def edit(meta):
        node = meta
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return edit


@pytest.mark.parametrize("edit,needle", [
    (_set("schedule", value=[1, 2]), "schedule should be an object"),
    (_set("schedule", "name", value=7), "schedule.name should be a string"),
    (_set("schedule", "name", value="no_such_schedule"), "needs the schedule 'no_such_schedule'"),
    (_set("schedule", "options", value="factor=0.5"), "schedule.options should be an object"),
    (_set("schedule", "options", "factor", value=[0.5]), "schedule.options.factor should be a number"),
    (_set("schedule", "options", "factor", value=2.0), "'factor' must be in (0, 1), got 2.0"),
    (_set("schedule", "options", "bogus", value=1), "unknown option 'bogus'"),
    (_set("schedule", "state", "lr", value=-0.5), "'lr' must be a positive finite number"),
    (_set("schedule", "state", "num_bad", value=10**400), "schedule.state.num_bad should be a number"),
    (_set("schedule", "state", "num_bad", value="3"), "'num_bad' must be an integer"),
    (_set("schedule", "state", "best", value={"x": 1}), "schedule.state.best should be a number"),
])
def test_a_corrupt_schedule_record_is_a_checkpoint_error(tmp_path, edit, needle):
    trainer, _, _ = names_setup()
    trainer.schedule = numbarnn.get_schedule("reduce_on_plateau").factory(factor=0.5)
    path = save_checkpoint(trainer, tmp_path / "run.ckpt")
    load_checkpoint(path)  # the honest file loads
    _rewrite_meta(path, edit)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert needle in str(info.value) and str(path) in str(info.value)


# ---- the command line --------------------------------------------------------------------------

def test_cli_cosine_spans_the_run_and_resume_keeps_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--steps", "6", *TINY, "--lr-schedule", "cosine:min_lr=1e-4", "--out", "a.ckpt"]) == 0
    meta, _ = read_checkpoint("a.ckpt")
    assert meta["schedule"]["name"] == "cosine"
    assert meta["schedule"]["options"] == {"total_steps": 6, "min_lr": 1e-4, "warmup": 0}
    assert meta["optimizer"]["lr"] == pytest.approx(1e-4 + (0.005 - 1e-4) * (1 + math.cos(math.pi * 5 / 6)) / 2)
    # --resume takes the checkpoint's schedule; repeating it (or part of it) is no conflict
    assert cli.main(["train", "--resume", "a.ckpt", "--steps", "2", *TINY[2:], "--lr-schedule", "cosine:min_lr=1e-4"]) == 0
    meta, _ = read_checkpoint("a.ckpt")
    assert meta["step"] == 8 and meta["schedule"]["options"]["total_steps"] == 6
    assert meta["optimizer"]["lr"] == 1e-4  # past total_steps: min_lr held
    capsys.readouterr()


@pytest.mark.parametrize("argv,needle", [
    (["--lr-schedule", "cosin"], "unknown schedule 'cosin'. Did you mean 'cosine'?"),
    (["--lr-schedule", "step:gamma"], "write each option as KEY=VALUE"),
    (["--lr-schedule", ":gamma=0.5"], "name a schedule first"),
    (["--lr-schedule", "step:gamma=0.5,gamma=0.1"], "option 'gamma' is given twice"),
    (["--lr-schedule", "step:gamma=2"], "schedule 'step': option 'gamma' must be in (0, 1], got 2"),
    (["--lr-schedule", "step:gama=0.5"], "unknown option 'gama' (did you mean 'gamma'?)"),
    (["--lr-schedule", "cosine:total_steps=10,warmup=10"], "'warmup' must be below total_steps"),
])
def test_cli_bad_schedules_are_usage_errors(tmp_path, monkeypatch, capsys, argv, needle):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--steps", "2", *TINY, *argv]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("numbarnn train: error: ") and needle in err
    assert not list(tmp_path.iterdir())  # nothing trained, nothing written


@pytest.mark.parametrize("first,again", [
    (["--lr-schedule", "step:step_size=2"], ["--lr-schedule", "step:step_size=3"]),
    (["--lr-schedule", "step:step_size=2"], ["--lr-schedule", "exponential"]),
    ([], ["--lr-schedule", "constant"]),
])
def test_cli_resume_refuses_another_schedule(tmp_path, monkeypatch, capsys, first, again):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--steps", "2", *TINY, *first, "--out", "a.ckpt"]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--resume", "a.ckpt", "--steps", "2", *TINY[2:], *again]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert f"--lr-schedule {again[1]} contradicts the checkpoint a.ckpt" in err
    assert read_checkpoint("a.ckpt")[0]["step"] == 2


def test_cli_refuses_a_resume_past_a_cosine_that_ends_at_zero(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--steps", "2", *TINY, "--lr-schedule", "cosine", "--out", "a.ckpt"]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--resume", "a.ckpt", "--steps", "2", *TINY[2:]]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "schedule 'cosine' gives the learning rate 0.0 at step 2" in err
    assert read_checkpoint("a.ckpt")[0]["step"] == 2
