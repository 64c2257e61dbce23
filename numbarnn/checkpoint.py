"""Checkpoints: one ``.npz`` file of NumPy arrays plus JSON metadata, no pickle anywhere.

What a checkpoint holds: the registry names of the cell, loss, optimizer and sampler with
the package (distribution) and version that registered each, the hyper-parameters, the
vocabulary and mode, every weight, the optimizer's state, the trainer's random state and
step, the data position (so a resumed run sees the same batches) and, in stream mode,
the carried hidden state. Loading uses ``np.load(..., allow_pickle=False)`` and plain JSON,
so it never executes code from the file.

Writes are atomic: the file is written next to the target under a temporary name,
flushed to disk and renamed over it, so a crash mid-save leaves the previous checkpoint
intact.
"""
from __future__ import annotations

import json
import os
import re
import stat
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from . import __version__

FORMAT = "numbarnn-checkpoint"
FORMAT_VERSION = 1
KINDS = ("cell", "loss", "optimizer", "sampler")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: missing, corrupt, truncated, foreign, or needing a plugin.

    >>> load_checkpoint("no-such.ckpt")
    Traceback (most recent call last):
    ...
    numbarnn.checkpoint.CheckpointError: no-such.ckpt: no such checkpoint
    """


def _component(kind, name):
    from .plugins import get_registry

    entry = get_registry().entry(kind, name)
    return {"name": name, "plugin": entry.plugin, "distribution": entry.distribution, "version": entry.version}


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_checkpoint(trainer, path, batches=None) -> Path:
    """Write ``trainer`` (and the data position of ``batches``) to ``path`` atomically; returns the path.

    ``batches`` is a :class:`~numbarnn.data.NamesBatches` or ``StreamBatches``; in stream
    mode the carried hidden state is saved too.

    >>> import tempfile, pathlib, numbarnn
    >>> trainer = numbarnn.make_trainer("rnn", vocab_size=5, hidden_size=4, seed=0)
    >>> loss = trainer.train_step([0, 1, 2], [1, 2, 3])
    >>> path = save_checkpoint(trainer, pathlib.Path(tempfile.mkdtemp()) / "tiny.ckpt")
    >>> load_checkpoint(path).step
    1
    """
    path = Path(path)
    arrays = {f"param/{k}": v for k, v in trainer.model.params.items()}
    optimizer_numbers = {}
    for key, value in trainer.optimizer.state_dict().items():
        if isinstance(value, np.ndarray):
            arrays[f"optim/{key}"] = value
        else:
            optimizer_numbers[key] = value
    carried = None
    if trainer.state is not None and batches is not None and getattr(batches, "mode", None) == "stream":
        carried = trainer.model.state_arrays(trainer.state)
        for i, value in enumerate(carried):
            arrays[f"state/{i}"] = value
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "numbarnn_version": __version__,
        "components": {kind: _component(kind, trainer.config[kind]) for kind in KINDS},
        "config": trainer.config,
        "vocab": None if trainer.vocab is None else "".join(trainer.vocab.chars),
        "optimizer": optimizer_numbers,
        "rng": trainer.rng.bit_generator.state,
        "step": trainer.step,
        "history": trainer.history,
        "data": None if batches is None else {"mode": batches.mode, **batches.state_dict()},
        "carried_state": carried is not None,
    }
    arrays["meta"] = np.frombuffer(json.dumps(_jsonable(meta)).encode("utf-8"), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


_PROCESS_STARTED = time.time()  # (as good as) this process's start: see _remove_stale_temps


def _remove_stale_temps(path: Path) -> None:
    """Delete the temporary files that interrupted saves of ``path`` left next to it.

    A save killed mid-write (``kill -9``, a power cut) leaves a full-size
    ``.NAME.XXXXXXXX.tmp`` (``tempfile.mkstemp``'s eight random characters). Only names of
    exactly that pattern are removed, only regular files of this user, and only those last
    written before this process started, so a save under way in another process is never
    touched.
    """
    pattern = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}\.tmp")
    try:
        entries = [entry for entry in os.scandir(path.parent) if pattern.fullmatch(entry.name)]
    except OSError:
        return  # the save itself will report an unreadable folder
    uid = os.getuid() if hasattr(os, "getuid") else None
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
            if (stat.S_ISREG(info.st_mode) and uid in (None, info.st_uid)
                    and info.st_mtime < _PROCESS_STARTED):
                os.unlink(entry.path)
        except OSError:
            pass  # removed meanwhile by someone else


def read_checkpoint(path):
    """``(meta, arrays)`` of a checkpoint file, with clear :class:`CheckpointError` s for anything else.

    ``meta`` is the JSON document (a dict: ``format``, ``components``, ``config``, ``vocab``,
    ``step``, ``history``, ...); ``arrays`` maps ``param/NAME``, ``optim/SLOT.NAME`` and
    ``state/I`` to NumPy arrays. Nothing in the file is executed.

    >>> import tempfile, pathlib, numbarnn
    >>> trainer = numbarnn.make_trainer("lstm", vocab_size=5, hidden_size=4, seed=0)
    >>> path = save_checkpoint(trainer, pathlib.Path(tempfile.mkdtemp()) / "tiny.ckpt")
    >>> meta, arrays = read_checkpoint(path)
    >>> meta["components"]["cell"]["name"], arrays["param/W_h"].shape
    ('lstm', (16, 4))
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as error:
        raise CheckpointError(f"{path}: not a readable numbarnn checkpoint (corrupt or truncated file: "
                              f"{error})") from None
    if "meta" not in arrays:
        raise CheckpointError(f"{path}: not a numbarnn checkpoint (an .npz without numbarnn's metadata)")
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a numbarnn checkpoint")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('format_version')} is not "
                              f"supported by numbarnn {__version__} (which reads version {FORMAT_VERSION})")
    return meta, arrays


def load_checkpoint(path, batches=None):
    """The :class:`~numbarnn.trainer.Trainer` saved at ``path``, ready to continue.

    If ``batches`` is given, its data position is restored too (resume is exact).

    >>> import tempfile, pathlib, numbarnn
    >>> trainer = numbarnn.make_trainer("rnn", vocab_size=5, hidden_size=4, seed=0)
    >>> path = save_checkpoint(trainer, pathlib.Path(tempfile.mkdtemp()) / "tiny.ckpt")
    >>> restored = load_checkpoint(path)
    >>> restored.generate(prime=[0], length=5, seed=1) == trainer.generate(prime=[0], length=5, seed=1)
    True
    """
    from .data import Vocabulary
    from .plugins import get_registry
    from .registry import UnknownNameError
    from .trainer import make_trainer

    meta, arrays = read_checkpoint(path)
    registry = get_registry()
    for kind in KINDS:
        comp = meta["components"][kind]
        try:
            registry.get(kind, comp["name"])
        except UnknownNameError:
            where = (f"from the package {comp['distribution']!r}" + (f" {comp['version']}" if comp.get("version") else "")
                     if comp.get("distribution") else f"from the plugin {comp['plugin']!r}")
            hint = f": pip install {comp['distribution']}" if comp.get("distribution") not in (None, "numbarnn") else ""
            raise CheckpointError(f"{path}: the checkpoint needs the {kind} {comp['name']!r} {where}, which "
                                  f"is not installed{hint}") from None
    cfg = meta["config"]
    vocab = Vocabulary(meta["vocab"]) if meta.get("vocab") is not None else None
    trainer = make_trainer(cell=cfg["cell"], loss=cfg["loss"], optimizer=cfg["optimizer"], sampler=cfg["sampler"],
                           vocab_size=None if vocab is not None else cfg["vocab_size"], vocab=vocab,
                           hidden_size=cfg["hidden_size"], layers=cfg["layers"], dropout=cfg["dropout"],
                           clip=cfg["clip"], clip_mode=cfg["clip_mode"], dtype=cfg["dtype"], seed=cfg["seed"],
                           mode=cfg.get("mode"), optimizer_options=cfg["optimizer_options"],
                           sampler_options=cfg["sampler_options"])
    trainer.config.update(cfg)
    params = trainer.model.params
    for key in params:
        saved = arrays.get(f"param/{key}")
        if saved is None or saved.shape != params[key].shape or saved.dtype != params[key].dtype:
            raise CheckpointError(f"{path}: weight {key!r} is missing or has the wrong shape/dtype")
        params[key][...] = saved
    state = dict(meta["optimizer"])
    state.update({key[len("optim/"):]: value for key, value in arrays.items() if key.startswith("optim/")})
    try:
        trainer.optimizer.load_state_dict(state)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: optimizer state does not fit: {error}") from None
    trainer.rng.bit_generator.state = meta["rng"]
    trainer.step = int(meta["step"])
    trainer.history = [tuple(h) for h in meta.get("history", [])]
    if meta.get("carried_state"):
        n = len([k for k in arrays if k.startswith("state/")])
        trainer.state = trainer.model.state_from_arrays([arrays[f"state/{i}"] for i in range(n)])
    if batches is not None and meta.get("data") is not None:
        data = dict(meta["data"])
        if data.pop("mode") != batches.mode:
            raise CheckpointError(f"{path}: the checkpoint was trained in {meta['data']['mode']} mode, "
                                  f"not {batches.mode}")
        batches.load_state_dict(data)
    trainer.checkpoint_meta = meta
    return trainer
