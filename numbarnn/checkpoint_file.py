"""The checkpoint file: one ``.npz`` file of NumPy arrays plus JSON metadata, no pickle anywhere.

This module writes, reads and checks the file and imports no trainer;
:mod:`numbarnn.checkpoint` builds a trainer from what it reads (``load_checkpoint``).

What a checkpoint holds: the registry names of the cell, loss, optimizer and sampler with
the package (distribution) and version that registered each, the hyper-parameters, the
vocabulary and mode, every weight, the optimizer's state, the trainer's random state and
step, the data position (so a resumed run sees the same batches), ``fit``'s early-stopping
state (best validation loss, evaluations since, best weights), the learning-rate schedule
(``trainer.schedule``: its name, options and state) when there is one and, in stream mode,
the carried hidden state.

Reading never executes code from the file and never trusts a size it claims: the zip
archive and each array's ``.npy`` header are parsed without pickle (a pickle, a bare
``.npy`` or any other file is "not a numbarnn checkpoint", with the reason), each array's
claimed size is checked against the bytes actually present before it is copied, the JSON
metadata is checked field by field, and the model sizes it claims are checked against the
weights present before a trainer is built. Whatever is wrong with a file, loading it
raises :class:`CheckpointError` (one line naming the file and the fault).

Writes are atomic: the file is written next to the target under a temporary name,
flushed to disk and renamed over it, so a crash mid-save leaves the previous checkpoint
intact.
"""
from __future__ import annotations

import io
import json
import math
import os
import pickletools
import re
import stat
import struct
import tempfile
import time
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ._version import __version__
from .sequence_model import TASKS, direction_param_name

FORMAT = "numbarnn-checkpoint"
FORMAT_VERSION = 1
KINDS = ("cell", "loss", "optimizer", "sampler")
#: The model's options beyond the language model's, saved in ``config`` and passed back to
#: ``make_trainer`` (absent from older checkpoints, which are language models).
MODEL_FIELDS = ("task", "input_size", "embedding", "num_classes", "output_size", "bidirectional")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: missing, corrupt, truncated, foreign, or needing a plugin.

    >>> read_checkpoint("no-such.ckpt")
    Traceback (most recent call last):
    ...
    numbarnn.checkpoint_file.CheckpointError: no-such.ckpt: no such checkpoint
    """


def _component(kind, name):
    from .plugins import get_registry

    entry = get_registry().entry(kind, name)
    return {"name": name, "plugin": entry.plugin, "distribution": entry.distribution, "version": entry.version}


def _schedule_meta(schedule):
    """The checkpoint's record of ``trainer.schedule`` (None when there is none): its registry
    entry (so a missing plugin is named on load), options and ``state_dict()``."""
    if schedule is None:
        return None
    record = _component("schedule", schedule.name)  # an unregistered schedule could not be loaded back
    record.update(options=dict(schedule.options), state=dict(schedule.state_dict()))
    return record


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def vocab_record(vocab) -> dict:
    """The metadata's ``vocab`` (and ``tokens``) for a vocabulary: a character vocabulary as one
    string of its sorted characters (as always), a word vocabulary as its list of tokens in
    index order with ``tokens: "words"``.

    >>> from numbarnn.data import Vocabulary, WordVocabulary
    >>> vocab_record(Vocabulary("ba")), vocab_record(WordVocabulary.from_text("hi"))
    ({'vocab': '\\nab'}, {'vocab': ['<unk>', '\\n', 'hi'], 'tokens': 'words'})
    """
    if vocab is None:
        return {"vocab": None}
    if vocab.kind == "words":
        return {"vocab": list(vocab.tokens), "tokens": "words"}
    return {"vocab": "".join(vocab.chars)}


def save_checkpoint(trainer, path, batches=None) -> Path:
    """Write ``trainer`` (and the data position of ``batches``) to ``path`` atomically; returns the path.

    ``batches`` is a :class:`~numbarnn.data.NamesBatches` or ``StreamBatches``; in stream
    mode the carried hidden state is saved too.

    >>> import tempfile, pathlib, numbarnn
    >>> trainer = numbarnn.make_trainer("rnn", vocab_size=5, hidden_size=4, seed=0)
    >>> loss = trainer.train_step([0, 1, 2], [1, 2, 3])
    >>> path = save_checkpoint(trainer, pathlib.Path(tempfile.mkdtemp()) / "tiny.ckpt")
    >>> read_checkpoint(path)[0]["step"]
    1
    """
    path = Path(path)
    backend = trainer.backend
    arrays = {f"param/{k}": v for k, v in backend.params_to_host().items()}
    optimizer_numbers = {}
    for key, value in trainer.optimizer.state_dict().items():
        if isinstance(value, np.ndarray):
            arrays[f"optim/{key}"] = value
        else:
            optimizer_numbers[key] = value
    fit = trainer.fit_state
    best = fit["best_params"]
    if best is not None:  # early stopping's best weights (a device array on CUDA)
        arrays["fit/best_params"] = backend.snapshot_to_host(best)
    carried = None
    if trainer.state is not None and batches is not None and getattr(batches, "mode", None) == "stream":
        carried = backend.state_arrays(trainer.state)
        for i, value in enumerate(carried):
            arrays[f"state/{i}"] = value
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "numbarnn_version": __version__,
        "components": {kind: _component(kind, trainer.config[kind]) for kind in KINDS},
        "config": dict(trainer.config, device=trainer.device),
        **vocab_record(trainer.vocab),
        "optimizer": optimizer_numbers,
        "rng": trainer.rng.bit_generator.state,
        "step": trainer.step,
        "history": trainer.history,
        "data": None if batches is None else {"mode": batches.mode, **batches.state_dict()},
        "carried_state": carried is not None,
        "schedule": _schedule_meta(getattr(trainer, "schedule", None)),
        "fit": {"best_val_loss": None if math.isinf(fit["best_val_loss"]) else fit["best_val_loss"],
                "evals_since_best": fit["evals_since_best"], "val_loss": fit["val_loss"],
                "best_params": best is not None},
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


# ---- reading: every check runs on the file's own bytes before anything is allocated -------------

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first member, or an empty zip
_DEFLATE_MAX_RATIO = 1032  # deflate's own ceiling: no honest member expands more than this
_ARRAY_KINDS = "fiub"  # plain numbers only: no objects, strings, records or sub-arrays
# What a damaged zip or .npy header can raise from zipfile, zlib, struct and NumPy's header parser.
_DAMAGE = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, KeyError, IndexError, TypeError,
           NotImplementedError, RuntimeError, SyntaxError, RecursionError, OverflowError, struct.error, zlib.error,
           tokenize.TokenError)


def _not_a_checkpoint(path, why) -> CheckpointError:
    return CheckpointError(f"{path}: not a numbarnn checkpoint ({why})")


def _looks_like_pickle(start: bytes) -> bool:
    """Whether ``start`` (a file's first bytes) decodes as a pickle of protocol 2 or newer.
    pickletools only decodes the opcodes; nothing is loaded or run."""
    if len(start) < 2 or start[0] != 0x80 or not 2 <= start[1] <= 5:
        return False
    count = 0
    try:
        for opcode, _, _ in pickletools.genops(io.BytesIO(start)):
            count += 1
            if opcode.name == "STOP":
                return True
    except (ValueError, EOFError, OverflowError, struct.error):  # junk, or the sample ran out
        pass
    return count >= 8  # random bytes almost never decode this far


def _foreign_format(f) -> str:
    """Why the open file ``f``, which does not start like a zip archive, is not a checkpoint."""
    f.seek(0)
    start = f.read(65536)
    if not start:
        return "the file is empty"
    if start.startswith(b"\x93NUMPY"):
        return "a single NumPy .npy array, not numbarnn's .npz archive"
    if _looks_like_pickle(start):
        return "it looks like a Python pickle; numbarnn never loads pickles"
    return "corrupt or truncated file: it does not start like a zip archive"


def _read_member(path, archive, info) -> np.ndarray:
    """One ``.npy`` member: header checked against the bytes present, then copied out."""
    name = info.filename[:-4]
    data = archive.read(info)  # the size was bounded by the caller; zipfile checks the CRC
    stream = io.BytesIO(data)
    version = np.lib.format.read_magic(stream)
    if version not in ((1, 0), (2, 0)):
        raise _not_a_checkpoint(path, f"array {name!r} uses .npy format version {version}")
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(stream)
    if dtype.hasobject or dtype.kind not in _ARRAY_KINDS or dtype.fields or dtype.subdtype:
        why = "Python objects (pickled data; numbarnn never loads pickles)" if dtype.hasobject else f"dtype {dtype}"
        raise _not_a_checkpoint(path, f"array {name!r} holds {why}")
    claimed = math.prod(shape) * dtype.itemsize
    if any(d < 0 for d in shape) or claimed != len(data) - stream.tell():
        raise _not_a_checkpoint(path, f"array {name!r} claims shape {shape} of {dtype} ({claimed} bytes) but "
                                      f"holds {len(data) - stream.tell()} bytes")
    flat = np.frombuffer(data, dtype, count=math.prod(shape), offset=stream.tell())
    return flat.reshape(shape, order="F" if fortran else "C").copy()


def _read_arrays(path: Path) -> dict:
    """Every array in the ``.npz`` at ``path``; sizes are checked before any is allocated."""
    try:
        f = open(path, "rb")
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({error.strerror or error})") from None
    with f:
        try:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if not head.startswith(_ZIP_MAGIC):
                raise _not_a_checkpoint(path, _foreign_format(f))
            f.seek(0)
            with zipfile.ZipFile(f) as archive:
                infos = archive.infolist()
                for info in infos:  # every member's claims, before reading any
                    name = info.filename
                    if not name.endswith(".npy"):
                        raise _not_a_checkpoint(path, f"the archive holds {name!r}, which is not a .npy array")
                    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                        raise _not_a_checkpoint(path, f"{name!r} uses zip compression method {info.compress_type}; "
                                                      "numbarnn reads stored or deflated archives (np.savez, "
                                                      "np.savez_compressed)")
                    if info.flag_bits & 0x1:
                        raise _not_a_checkpoint(path, f"{name!r} is encrypted")
                    ratio = 1 if info.compress_type == zipfile.ZIP_STORED else _DEFLATE_MAX_RATIO
                    if info.header_offset + info.compress_size > size or info.file_size > ratio * info.compress_size + 64:
                        raise _not_a_checkpoint(path, f"corrupt or truncated file: {name!r} claims {info.file_size} "
                                                      f"bytes, more than the {size}-byte file can hold")
                return {info.filename[:-4]: _read_member(path, archive, info) for info in infos}
        except CheckpointError:
            raise
        except OSError as error:
            raise CheckpointError(f"{path}: cannot read the checkpoint ({error.strerror or error})") from None
        except _DAMAGE as error:
            raise _not_a_checkpoint(path, f"corrupt or truncated file: {type(error).__name__}: "
                                          f"{_short(str(error), 120)}") from None


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ---- the metadata's schema ------------------------------------------------------------------------

_MISSING = object()
_FLOAT_MAX = int(np.finfo(np.float64).max)
_KIND_WORDS = {"int": "an integer", "number": "a number", "str": "a string", "dict": "an object",
               "list": "a list", "bool": "true or false"}


def _is(value, kind) -> bool:
    if kind in ("int", "number") and isinstance(value, bool):
        return False
    if kind == "number" and isinstance(value, int) and abs(value) > _FLOAT_MAX:
        return False  # arithmetic with it would raise OverflowError
    return isinstance(value, {"int": int, "number": (int, float), "str": str, "dict": dict, "list": list,
                              "bool": bool}[kind])


def _field(path, doc: dict, key: str, kind: str, label: str, *, optional=False, low=None, below=None):
    """``doc[key]``, checked: of ``kind``, within ``[low, below)``; null or absent only if ``optional``."""
    value = doc.get(key, _MISSING)
    if optional and (value is None or value is _MISSING):
        return None
    ok = value is not _MISSING and _is(value, kind)
    if ok and kind == "number" and low is not None:
        ok = math.isfinite(value)  # a bounded number must be finite too
    if ok and low is not None:
        ok = value >= low and (below is None or value < below)
    if not ok:
        what = _KIND_WORDS[kind] + ("" if low is None else f" >= {low}" if below is None else f" in [{low}, {below})")
        got = "it is missing" if value is _MISSING else f"got {_short(repr(value))}"
        raise CheckpointError(f"{path}: corrupt checkpoint metadata: {label} should be "
                              f"{what}{' or null' if optional else ''}; {got}")
    return value


def _check_meta(path, meta) -> None:
    """The JSON document's structure: every field numbarnn reads, with its type and range."""
    for kind in KINDS:
        comp = _field(path, _field(path, meta, "components", "dict", "components"), kind, "dict",
                      f"components.{kind}")
        _field(path, comp, "name", "str", f"components.{kind}.name")
        for key in ("plugin", "distribution", "version"):
            _field(path, comp, key, "str", f"components.{kind}.{key}", optional=True)
    cfg = _field(path, meta, "config", "dict", "config")
    for kind in KINDS:
        _field(path, cfg, kind, "str", f"config.{kind}")
    _check_model_fields(path, cfg)
    for key in ("hidden_size", "layers"):
        _field(path, cfg, key, "int", f"config.{key}", low=1)
    _field(path, cfg, "dropout", "number", "config.dropout", low=0.0, below=1.0)
    _field(path, cfg, "clip", "number", "config.clip", optional=True)
    _field(path, cfg, "clip_mode", "str", "config.clip_mode")
    if _field(path, cfg, "dtype", "str", "config.dtype") not in ("float32", "float64"):
        raise CheckpointError(f"{path}: corrupt checkpoint metadata: config.dtype should be 'float32' or "
                              f"'float64'; got {_short(repr(cfg['dtype']))}")
    _field(path, cfg, "seed", "int", "config.seed", optional=True, low=0)
    if cfg.get("mode") not in (None, "names", "stream"):
        raise CheckpointError(f"{path}: corrupt checkpoint metadata: config.mode should be 'names', 'stream' "
                              f"or null; got {_short(repr(cfg['mode']))}")
    _field(path, cfg, "optimizer_options", "dict", "config.optimizer_options")
    _field(path, cfg, "sampler_options", "dict", "config.sampler_options")
    _field(path, cfg, "smoothed_loss", "number", "config.smoothed_loss", optional=True)
    for key in ("batch_size", "seq_length"):  # recorded by numbarnn train; absent from older checkpoints
        _field(path, cfg, key, "int", f"config.{key}", optional=True, low=1)
    if cfg.get("device", "cpu") not in ("cpu", "cuda"):  # absent from older checkpoints: the CPU
        raise CheckpointError(f"{path}: corrupt checkpoint metadata: config.device should be 'cpu' or 'cuda'; "
                              f"got {_short(repr(cfg['device']))}")
    _check_vocab(path, meta, cfg)
    _field(path, cfg, "max_vocab", "int", "config.max_vocab", optional=True, low=3)  # numbarnn train --max-vocab
    _field(path, meta, "optimizer", "dict", "optimizer")
    _field(path, meta, "rng", "dict", "rng")
    _field(path, meta, "step", "int", "step", low=0)
    for i, entry in enumerate(_field(path, meta, "history", "list", "history")):
        if not (isinstance(entry, list) and len(entry) == 2 and _is(entry[0], "int") and _is(entry[1], "number")):
            raise CheckpointError(f"{path}: corrupt checkpoint metadata: history[{i}] should be [step, loss]; "
                                  f"got {_short(repr(entry))}")
    data = _field(path, meta, "data", "dict", "data", optional=True)
    if data is not None:
        _field(path, data, "mode", "str", "data.mode")
    if not isinstance(meta.get("carried_state", False), bool):
        raise CheckpointError(f"{path}: corrupt checkpoint metadata: carried_state should be true or false; "
                              f"got {_short(repr(meta['carried_state']))}")
    schedule = _field(path, meta, "schedule", "dict", "schedule", optional=True)  # absent: no schedule
    if schedule is not None:
        _field(path, schedule, "name", "str", "schedule.name")
        for key in ("plugin", "distribution", "version"):
            _field(path, schedule, key, "str", f"schedule.{key}", optional=True)
        for key in ("options", "state"):  # each schedule checks its own values when it is rebuilt
            for name, value in _field(path, schedule, key, "dict", f"schedule.{key}").items():
                if not (value is None or isinstance(value, (bool, str)) or _is(value, "number")):
                    raise CheckpointError(f"{path}: corrupt checkpoint metadata: schedule.{key}.{name} should be "
                                          f"a number, a string, true, false or null; got {_short(repr(value))}")
    fit = _field(path, meta, "fit", "dict", "fit", optional=True)  # absent from older checkpoints
    if fit is not None:
        _field(path, fit, "best_val_loss", "number", "fit.best_val_loss", optional=True)
        _field(path, fit, "val_loss", "number", "fit.val_loss", optional=True)
        _field(path, fit, "evals_since_best", "int", "fit.evals_since_best", low=0)
        _field(path, fit, "best_params", "bool", "fit.best_params")


def _check_vocab(path, meta, cfg) -> None:
    """``vocab`` and ``tokens``: a string of sorted distinct characters (``tokens`` absent or
    "chars"), or for ``tokens: "words"`` a list of distinct tokens, its length checked against
    the cap before any entry is looked at."""
    from .data import MAX_WORD_VOCAB, DataError, check_word_tokens

    tokens = meta.get("tokens", "chars")
    if tokens not in ("chars", "words"):
        raise CheckpointError(f"{path}: corrupt checkpoint metadata: tokens should be 'chars' or 'words'; got "
                              f"{_short(repr(tokens))}")
    if tokens == "chars":
        vocab = _field(path, meta, "vocab", "str", "vocab", optional=True)
        if vocab is not None and (vocab != "".join(sorted(set(vocab) | {"\n"})) or len(vocab) != cfg["vocab_size"]):
            raise CheckpointError(f"{path}: corrupt checkpoint metadata: vocab should be config.vocab_size "
                                  f"({cfg['vocab_size']}) distinct sorted characters with the newline; got "
                                  f"{_short(repr(vocab))}")
        return
    vocab = _field(path, meta, "vocab", "list", "vocab (of a word model)")
    if len(vocab) > MAX_WORD_VOCAB or len(vocab) != cfg["vocab_size"]:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata: a word model's vocab should list "
                              f"config.vocab_size ({cfg['vocab_size']}) tokens, at most {MAX_WORD_VOCAB}; it lists "
                              f"{len(vocab)}")
    try:
        check_word_tokens(vocab, "vocab")
    except DataError as error:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata: {error}") from None


def _check_model_fields(path, cfg) -> None:
    """``config``'s inputs, task and head sizes (:data:`MODEL_FIELDS` and ``vocab_size``):
    types, ranges and the combinations ``make_trainer`` accepts."""
    task = cfg.get("task", "lm")
    if task not in TASKS:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata: config.task should be one of {TASKS}; "
                              f"got {_short(repr(task))}")
    sizes = {key: _field(path, cfg, key, "int", f"config.{key}", optional=True, low=1)
             for key in ("vocab_size", "input_size", "embedding", "num_classes", "output_size")}
    _field(path, cfg, "bidirectional", "bool", "config.bidirectional", optional=True)
    needed = [("exactly one of config.vocab_size and config.input_size",
               (sizes["vocab_size"] is None) == (sizes["input_size"] is None)),
              ("config.vocab_size for task 'lm'", task == "lm" and sizes["vocab_size"] is None),
              ("config.num_classes for task 'classify', and only there",
               (task == "classify") != (sizes["num_classes"] is not None)),
              ("config.output_size for task 'regress'", task == "regress" and sizes["output_size"] is None),
              ("config.vocab_size with config.embedding", sizes["embedding"] is not None and sizes["vocab_size"] is None),
              ("config.bidirectional false (a language model is causal)", task == "lm" and bool(cfg.get("bidirectional")))]
    for what, missing in needed:
        if missing:
            raise CheckpointError(f"{path}: corrupt checkpoint metadata: a {task!r} model needs {what}; got "
                                  f"{_short(str({key: value for key, value in sizes.items() if value is not None}), 120)}")


def read_checkpoint(path):
    """``(meta, arrays)`` of a checkpoint file, with clear :class:`CheckpointError` s for anything else.

    ``meta`` is the JSON document (a dict: ``format``, ``components``, ``config``, ``vocab``,
    ``step``, ``history``, ``fit``, ...); ``arrays`` maps ``param/NAME``, ``optim/SLOT.NAME``,
    ``state/I`` and ``fit/best_params`` to NumPy arrays. Nothing in the file is executed: the zip
    archive and each array's header are parsed without pickle, each array's claimed size is
    checked against the bytes present before it is read, and the metadata's structure (every
    field numbarnn reads, its type and range) is checked here.

    >>> import tempfile, pathlib, numbarnn
    >>> trainer = numbarnn.make_trainer("lstm", vocab_size=5, hidden_size=4, seed=0)
    >>> path = save_checkpoint(trainer, pathlib.Path(tempfile.mkdtemp()) / "tiny.ckpt")
    >>> meta, arrays = read_checkpoint(path)
    >>> meta["components"]["cell"]["name"], arrays["param/W_h"].shape
    ('lstm', (16, 4))
    >>> _ = path.write_bytes(b"junk")
    >>> read_checkpoint(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    numbarnn.checkpoint_file.CheckpointError: ...tiny.ckpt: not a numbarnn checkpoint (corrupt or truncated file: it does not start like a zip archive)
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({error.strerror or error})") from None
    if stat.S_ISDIR(mode):
        raise CheckpointError(f"{path}: a directory, not a checkpoint file")
    if not stat.S_ISREG(mode):  # reading a pipe would wait for a writer
        raise CheckpointError(f"{path}: not a regular file (a device, pipe or socket), not a checkpoint")
    arrays = _read_arrays(path)
    raw = arrays.pop("meta", None)
    if raw is None:
        raise _not_a_checkpoint(path, "an .npz without numbarnn's metadata")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise _not_a_checkpoint(path, f"its metadata is a {raw.shape} {raw.dtype} array, not JSON bytes")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({_short(str(error), 120)})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _not_a_checkpoint(path, f"its metadata does not say format {FORMAT!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {_short(repr(meta.get('format_version')))} is not "
                              f"supported by numbarnn {__version__} (which reads version {FORMAT_VERSION})")
    _check_meta(path, meta)
    return meta, arrays


def expected_param_shapes(cell, vocab_size, hidden_size: int, layers: int, *, task: str = "lm",
                          input_size=None, embedding=None, num_classes=None, output_size=None,
                          bidirectional: bool = False) -> dict:
    """The weights ``make_trainer`` builds for these sizes, ``{name: shape}`` in ``params``
    order, computed without allocating (``vocab_size`` is None for dense inputs). ``cell`` is
    a cell (a :class:`~numbarnn.cells.CellSpec` or its registered name; its own parameters
    count) or a gate count (a cell with the four fused weights only).

    >>> expected_param_shapes(4, 5, 3, 2)["W_x_l1"], expected_param_shapes(1, 5, 3, 1)["W_y"]
    ((12, 3), (5, 3))
    >>> shapes = expected_param_shapes(4, 5, 3, 2, embedding=2, bidirectional=True, task="classify", num_classes=7)
    >>> shapes["W_emb"], shapes["W_x_reverse"], shapes["W_x_l1_reverse"], shapes["W_y"]
    ((5, 2), (12, 2), (12, 6), (7, 6))
    """
    if isinstance(cell, (int, np.integer)) and not isinstance(cell, bool):
        from .cells import fused_param_shapes

        def layer_shapes(X):
            return fused_param_shapes(int(cell), X, hidden_size)
    else:
        from .plugins import get_cell

        spec = get_cell(cell)

        def layer_shapes(X):
            return spec.param_shapes(X, hidden_size)
    H, D = hidden_size, 2 if bidirectional else 1
    shapes = {}
    if embedding is not None:
        shapes["W_emb"] = (vocab_size, embedding)
    first = embedding if embedding is not None else vocab_size if vocab_size is not None else input_size
    for layer in range(layers):
        X = first if layer == 0 else D * H
        for reverse in (False, True)[:D]:
            for name, shape in layer_shapes(X).items():
                shapes[direction_param_name(name, layer, reverse)] = shape
    head = {"classify": num_classes, "regress": output_size}.get(task, output_size or vocab_size)
    if head is not None:
        shapes.update(W_y=(head, D * H), b_y=(head,))
    return shapes


def _check_sizes(path, meta, arrays, cell) -> None:
    """The metadata's sizes against the arrays present, before ``make_trainer`` allocates by them:
    a small file claiming a huge model is refused here, not by a failed allocation."""
    cfg = meta["config"]
    dtype = np.dtype(cfg["dtype"])
    model = {key: cfg[key] for key in MODEL_FIELDS if cfg.get(key) not in (None, False, "lm")}
    claim = (f"the metadata says a {cfg['layers']}-layer {cell.name} with hidden_size {cfg['hidden_size']}"
             + (f" and vocab_size {cfg['vocab_size']}" if cfg.get("vocab_size") is not None else "")
             + (f" ({_short(str(model), 120)})" if model else "") + f" in {dtype}")
    present = {key[len("param/"):]: value for key, value in arrays.items() if key.startswith("param/")}
    if cfg["layers"] > len(present):  # never build a table as long as a claim the file cannot back
        raise CheckpointError(f"{path}: {claim}, but the file holds only {len(present)} weights")
    expected = expected_param_shapes(cell, cfg.get("vocab_size"), cfg["hidden_size"], cfg["layers"],
                                     **{key: cfg[key] for key in MODEL_FIELDS if cfg.get(key) is not None})
    if set(present) != set(expected):
        missing, extra = sorted(set(expected) - set(present)), sorted(set(present) - set(expected))
        raise CheckpointError(f"{path}: {claim}, but the file's weights do not match it (missing {missing}, "
                              f"unexpected {extra})")
    for key, shape in expected.items():
        if present[key].shape != shape or present[key].dtype != dtype:
            raise CheckpointError(f"{path}: {claim}, so weight {key!r} should be {shape} {dtype}; the file holds "
                                  f"{present[key].shape} {present[key].dtype}")
    total = sum(math.prod(shape) for shape in expected.values())
    best = arrays.get("fit/best_params")
    if (meta.get("fit") or {}).get("best_params") and (best is None or best.shape != (total,) or best.dtype != dtype):
        raise CheckpointError(f"{path}: the early-stopping best weights should be ({total},) {dtype}; the file holds "
                              f"{'none' if best is None else f'{best.shape} {best.dtype}'}")
    states = sorted(key for key in arrays if key.startswith("state/"))
    if meta.get("carried_state"):
        n = cfg["layers"] * (2 if cfg.get("bidirectional") else 1) * cell.states
        if states != sorted(f"state/{i}" for i in range(n)):
            raise CheckpointError(f"{path}: the carried state should be {n} arrays state/0..{n - 1}; the file holds "
                                  f"{_short(str(states))}")
        first = arrays["state/0"]
        for key in states:
            value = arrays[key]
            if value.ndim != 2 or value.shape != first.shape or value.shape[1] != cfg["hidden_size"] \
                    or value.shape[0] < 1 or value.dtype != dtype:
                raise CheckpointError(f"{path}: carried state {key!r} should be (batch, {cfg['hidden_size']}) "
                                      f"{dtype} like the others; the file holds {value.shape} {value.dtype}")
