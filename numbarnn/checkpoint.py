"""Checkpoints: saving a trainer and loading one back, on the device of your choice.

The file format (writing, reading, every check on a hostile file) is
:mod:`numbarnn.checkpoint_file`; this module adds :func:`load_checkpoint`, which builds a
trainer from what it reads. ``save_checkpoint``, ``read_checkpoint``, ``CheckpointError``
and ``expected_param_shapes`` are re-exported from there.
"""
from __future__ import annotations

import math

from .backends import require_device
from .checkpoint_file import (KINDS, MODEL_FIELDS, CheckpointError, _check_sizes, _short, expected_param_shapes,
                              read_checkpoint, save_checkpoint)
from .data import Vocabulary, WordVocabulary
from .optimizers import CLIP_MODES
from .plugins import get_registry
from .registry import UnknownNameError
from .trainer import make_trainer

__all__ = ["CheckpointError", "expected_param_shapes", "load_checkpoint", "read_checkpoint", "save_checkpoint"]


def load_checkpoint(path, batches=None, device=None):
    """The :class:`~numbarnn.trainer.Trainer` saved at ``path``, ready to continue.

    If ``batches`` is given, its data position is restored too (resume is exact).
    ``device`` ("cpu" or "cuda") is where the trainer runs; None means the device it was
    saved from (a checkpoint from a GPU run on a machine without one is a clear error that
    names ``device="cpu"`` as the way out, raised as soon as the file is read, before a trainer
    is built). A run moves between devices exactly: weights,
    optimizer state, random state, carried state, early stopping and the learning-rate
    schedule (``trainer.schedule``, None when the run had none) as saved.

    >>> import tempfile, pathlib, numbarnn
    >>> trainer = numbarnn.make_trainer("rnn", vocab_size=5, hidden_size=4, seed=0)
    >>> path = save_checkpoint(trainer, pathlib.Path(tempfile.mkdtemp()) / "tiny.ckpt")
    >>> restored = load_checkpoint(path)
    >>> restored.generate(prime=[0], length=5, seed=1) == trainer.generate(prime=[0], length=5, seed=1)
    True
    """
    meta, arrays = read_checkpoint(path)
    # Where it will run, checked before anything is built (read_checkpoint checked config.device).
    saved_on = meta["config"].get("device", "cpu")
    target = saved_on if device is None else device
    if target != "cpu":
        why = (f"{path} was saved from a {saved_on.upper()} run; load it with device='cpu' (numbarnn.load(path, "
               "device='cpu'), or --device cpu) to continue on the CPU. ") if device is None else ""
        require_device(target, why=why)
    registry = get_registry()
    specs = {}
    for kind in KINDS:
        comp = meta["components"][kind]
        try:
            specs[kind] = registry.get(kind, comp["name"])
        except UnknownNameError:
            where = (f"from the package {comp['distribution']!r}" + (f" {comp['version']}" if comp.get("version") else "")
                     if comp.get("distribution") else f"from the plugin {comp.get('plugin')!r}")
            hint = f": pip install {comp['distribution']}" if comp.get("distribution") not in (None, "numbarnn") else ""
            raise CheckpointError(f"{path}: the checkpoint needs the {kind} {comp['name']!r} {where}, which "
                                  f"is not installed{hint}") from None
        if meta["config"][kind] != comp["name"]:
            raise CheckpointError(f"{path}: corrupt checkpoint metadata: config.{kind} is "
                                  f"{_short(repr(meta['config'][kind]))} but components.{kind} names {comp['name']!r}")
    _check_sizes(path, meta, arrays, specs["cell"])  # before make_trainer allocates by the metadata's sizes
    cfg = meta["config"]
    if cfg["clip"] is not None and not cfg["clip"] > 0:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata: config.clip should be positive or null; "
                              f"got {cfg['clip']!r}")
    if cfg["clip_mode"] not in CLIP_MODES:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata: config.clip_mode should be one of "
                              f"{CLIP_MODES}; got {_short(repr(cfg['clip_mode']))}")
    # The vocabulary's fields were checked by read_checkpoint; a word model's is a list of tokens.
    kind = WordVocabulary if meta.get("tokens") == "words" else Vocabulary
    vocab = kind(meta["vocab"]) if meta.get("vocab") is not None else None
    try:
        trainer = make_trainer(cell=cfg["cell"], loss=cfg["loss"], optimizer=cfg["optimizer"], sampler=cfg["sampler"],
                               vocab_size=None if vocab is not None else cfg["vocab_size"], vocab=vocab,
                               hidden_size=cfg["hidden_size"], layers=cfg["layers"], dropout=cfg["dropout"],
                               **{key: cfg[key] for key in MODEL_FIELDS if key in cfg},  # absent from older files
                               clip=cfg["clip"], clip_mode=cfg["clip_mode"], dtype=cfg["dtype"], seed=cfg["seed"],
                               mode=cfg.get("mode"), optimizer_options=cfg["optimizer_options"],
                               sampler_options=cfg["sampler_options"])
    except (ValueError, TypeError, LookupError, ArithmeticError) as error:  # options a component refuses
        raise CheckpointError(f"{path}: the checkpoint's settings are refused: {error}") from None
    trainer.config.update(cfg)
    trainer.config.pop("device", None)  # a property of the backend, not a setting
    for key, value in trainer.model.params.items():
        value[...] = arrays[f"param/{key}"]  # shapes and dtypes checked by _check_sizes
    state = dict(meta["optimizer"])
    state.update({key[len("optim/"):]: value for key, value in arrays.items() if key.startswith("optim/")})
    try:
        trainer.optimizer.load_state_dict(state)
    except (ValueError, TypeError, KeyError, OverflowError) as error:
        raise CheckpointError(f"{path}: optimizer state does not fit: {_short(str(error), 200)}") from None
    try:
        trainer.rng.bit_generator.state = meta["rng"]
    except (ValueError, TypeError, KeyError, OverflowError) as error:
        raise CheckpointError(f"{path}: the random generator's state is corrupt ({_short(str(error), 120)})") from None
    trainer.step = meta["step"]
    trainer.history = [tuple(h) for h in meta["history"]]
    if meta.get("carried_state"):
        n = len([k for k in arrays if k.startswith("state/")])
        trainer.state = trainer.model.state_from_arrays([arrays[f"state/{i}"] for i in range(n)])
    fit = meta.get("fit")
    if fit is not None:  # early stopping continues where it was (exact resume)
        trainer.fit_state.update(
            best_val_loss=math.inf if fit.get("best_val_loss") is None else float(fit["best_val_loss"]),
            evals_since_best=fit["evals_since_best"], val_loss=fit.get("val_loss"),
            best_params=arrays["fit/best_params"] if fit["best_params"] else None)
    if batches is not None and meta.get("data") is not None:
        data = dict(meta["data"])
        if data.pop("mode") != batches.mode:
            raise CheckpointError(f"{path}: the checkpoint was trained in {_short(str(meta['data']['mode']))} mode, "
                                  f"not {batches.mode}")
        if trainer.state is not None and arrays["state/0"].shape[0] != batches.inputs.shape[0]:
            raise CheckpointError(f"{path}: the checkpoint carries the state of {arrays['state/0'].shape[0]} "
                                  f"streams, but these batches have {batches.inputs.shape[0]}")
        try:
            batches.load_state_dict(data)
        except (ValueError, TypeError, KeyError, OverflowError) as error:
            raise CheckpointError(f"{path}: the saved data position does not fit this data: {error}") from None
    trainer.checkpoint_meta = meta
    schedule = _load_schedule(path, meta.get("schedule"), registry)
    if target != "cpu":
        trainer = trainer.to(target)
    trainer.schedule = schedule  # set last: a trainer moved to another device is a new object
    return trainer


def _load_schedule(path, record, registry):
    """The schedule a checkpoint records (None when it has none), rebuilt from its registered
    spec with its options and state; anything refused is a :class:`CheckpointError`."""
    if record is None:
        return None
    try:
        spec = registry.get("schedule", record["name"])
    except UnknownNameError:
        dist = record.get("distribution")
        where = f"from the package {dist!r}" if dist else f"from the plugin {record.get('plugin')!r}"
        hint = f": pip install {dist}" if dist not in (None, "numbarnn") else ""
        raise CheckpointError(f"{path}: the checkpoint needs the schedule {record['name']!r} {where}, which "
                              f"is not installed{hint}") from None
    try:
        schedule = spec.factory(**record["options"])
        schedule.load_state_dict(record["state"])
    except (ValueError, TypeError, KeyError, LookupError, ArithmeticError) as error:
        raise CheckpointError(f"{path}: the learning-rate schedule's settings are refused: "
                              f"{_short(str(error), 200)}") from None
    return schedule
