"""Checkpoints that are not what they claim: each malformed file is one clear CheckpointError,
refused before anything is allocated by its claims; and exact resume with early stopping.

The hypothesis fuzz over the same ground is tests/test_checkpoint_fuzz.py.
"""
import contextlib
import io
import json
import os
import pickle
import tracemalloc
import zipfile

import numpy as np
import pytest

import numbarnn
from numbarnn import data as D
from numbarnn.checkpoint import (CheckpointError, expected_param_shapes, load_checkpoint, read_checkpoint,
                                 save_checkpoint)
from numbarnn.cli import main

NAMES = D.dinosaur_names()[:60]
VOCAB = D.Vocabulary.from_text("\n".join(D.dinosaur_names()))


def small(cell="lstm", dtype="float32", n=60, seed=0):
    trainer = numbarnn.make_trainer(cell=cell, vocab=VOCAB, hidden_size=6, dtype=dtype, seed=seed, mode="names",
                                    lr=0.02)
    return trainer, D.NamesBatches(NAMES[:n], VOCAB, 8, seed=seed)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A checkpoint after two steps, with its data position: ``(path, meta, arrays)``."""
    trainer, batches = small()
    trainer.fit(batches, steps=2, progress=False, sample_every=0)
    path = save_checkpoint(trainer, tmp_path_factory.mktemp("ckpt") / "good.ckpt", batches)
    meta, arrays = read_checkpoint(path)
    return path, meta, arrays


def rewrite(path, meta, arrays, **npz_options):
    """Write ``meta`` and ``arrays`` as a checkpoint at ``path`` (np.savez: the format's own writer)."""
    members = dict(arrays, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    with open(path, "wb") as f:
        np.savez(f, **members, **npz_options)
    return path


def refused(path, match, batches=None):
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path, batches)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def test_missing_keys_and_wrong_json_types(saved, tmp_path):
    _, meta, arrays = saved
    cases = [
        (("components",), None, r"components should be an object; it is missing"),
        (("components",), 3, r"components should be an object; got 3"),
        (("components", "cell"), "lstm", r"components.cell should be an object; got 'lstm'"),
        (("config", "hidden_size"), "6", r"config.hidden_size should be an integer >= 1; got '6'"),
        (("config", "hidden_size"), True, r"config.hidden_size should be an integer >= 1; got True"),
        (("config", "layers"), 0, r"config.layers should be an integer >= 1; got 0"),
        (("config", "dropout"), float("nan"), r"config.dropout should be a number in \[0.0, 1.0\); got nan"),
        (("config", "dtype"), "float16", r"config.dtype should be 'float32' or 'float64'"),
        (("config",), [], r"config should be an object; got \[\]"),
        (("step",), -1, r"step should be an integer >= 0; got -1"),
        (("history",), [[1]], r"history\[0\] should be \[step, loss\]"),
        (("vocab",), "ba", r"vocab should be config.vocab_size .* distinct sorted characters"),
        (("rng",), {"bit_generator": "PCG64"}, r"random generator's state is corrupt"),
        (("optimizer", "step"), "many", r"optimizer state does not fit"),
        (("optimizer", "step"), 2**70, r"optimizer state does not fit: state entry 'step' must be an integer in "
                                       r"\[0, 2\*\*62\)"),
        (("config", "optimizer_options"), {"lr": -1.0}, r"settings are refused"),
        (("config", "clip_mode"), "sideways", r"config.clip_mode should be one of"),
        (("config", "cell"), "rnn", r"config.cell is 'rnn' but components.cell names 'lstm'"),
        (("data",), 7, r"data should be an object or null; got 7"),
    ]
    for keys, value, match in cases:
        broken = json.loads(json.dumps(meta))
        *parents, last = keys
        target = broken
        for key in parents:
            target = target[key]
        if value is None:
            del target[last]
        else:
            target[last] = value
        refused(rewrite(tmp_path / "bad.ckpt", broken, arrays), match)


def test_foreign_files_say_not_a_checkpoint_and_why(tmp_path):
    """A junk file never shows NumPy's pickle text; a pickle is never loaded, let alone run."""
    np.save(tmp_path / "plain.npy", np.ones(3))
    (tmp_path / "junk.ckpt").write_bytes(b"this is not a checkpoint at all\n" * 10)
    (tmp_path / "pickle-like.ckpt").write_bytes(b"\x80\x04 then junk")
    ran = tmp_path / "pickle-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(ran), "w"))

    (tmp_path / "evil.ckpt").write_bytes(pickle.dumps(Payload()))
    np.savez(tmp_path / "objects.npz", meta=np.array([{"a": 1}], dtype=object))
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with zipfile.ZipFile(tmp_path / "text.zip", "w") as archive:
        archive.writestr("readme.txt", "hello")
    cases = {"plain.npy": r"a single NumPy \.npy array, not numbarnn's \.npz archive",
             "junk.ckpt": r"corrupt or truncated file: it does not start like a zip archive",
             "pickle-like.ckpt": r"corrupt or truncated file: it does not start like a zip archive",
             "evil.ckpt": r"it looks like a Python pickle; numbarnn never loads pickles",
             "objects.npz": r"array 'meta' holds Python objects \(pickled data; numbarnn never loads pickles\)",
             "empty.ckpt": r"the file is empty",
             "text.zip": r"the archive holds 'readme.txt', which is not a \.npy array"}
    for name, why in cases.items():
        message = refused(tmp_path / name, rf"{tmp_path / name}: not a numbarnn checkpoint \({why}")
        assert "allow_pickle" not in message and "unsafely" not in message
    assert not ran.exists()
    refused(tmp_path, "a directory, not a checkpoint file")
    os.mkfifo(tmp_path / "pipe.ckpt")  # opening it would wait for a writer
    refused(tmp_path / "pipe.ckpt", r"not a regular file \(a device, pipe or socket\), not a checkpoint")


def test_unsupported_and_lying_zip_compression(saved, tmp_path):
    path, meta, arrays = saved
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp_path / "bz2.ckpt", "w", zipfile.ZIP_BZIP2) as out:
        for name in src.namelist():
            out.writestr(name, src.read(name))
    refused(tmp_path / "bz2.ckpt", r"uses zip compression method 12; numbarnn reads stored or deflated")
    # A compression method zipfile does not know (NotImplementedError before): patch the central directory.
    raw = bytearray(path.read_bytes())
    central = raw.rfind(b"PK\x01\x02")
    raw[central + 10:central + 12] = (99).to_bytes(2, "little")
    (tmp_path / "m99.ckpt").write_bytes(bytes(raw))
    refused(tmp_path / "m99.ckpt", r"uses zip compression method 99")
    # np.savez_compressed (deflate) is NumPy's other writer: it loads.
    members = dict(arrays, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    np.savez_compressed(tmp_path / "deflated.npz", **members)
    assert load_checkpoint(tmp_path / "deflated.npz").step == 2


def test_truncations_and_byte_flips_are_checkpoint_errors(saved, tmp_path):
    raw = saved[0].read_bytes()
    for n in (0, 1, 4, 30, len(raw) // 3, len(raw) // 2, len(raw) - 22, len(raw) - 1):
        (tmp_path / "cut.ckpt").write_bytes(raw[:n])
        refused(tmp_path / "cut.ckpt", "not a numbarnn checkpoint")
    rng = np.random.default_rng(0)
    for _ in range(60):
        flipped = bytearray(raw)
        for at in rng.integers(0, len(raw), 3):
            flipped[at] ^= 1 << int(rng.integers(8))
        (tmp_path / "flip.ckpt").write_bytes(bytes(flipped))
        with contextlib.suppress(CheckpointError):  # a flip in padding can leave a loadable file
            load_checkpoint(tmp_path / "flip.ckpt")


@pytest.mark.parametrize("claim", [{"hidden_size": 200_000}, {"hidden_size": 6000}, {"vocab_size": 10**9},
                                   {"layers": 10**6}, {"hidden_size": 2**62, "vocab_size": 2**62}])
def test_sizes_are_checked_against_the_arrays_before_allocating(saved, tmp_path, claim):
    """A 20 kB file claiming hidden_size 200000 tried to allocate 1.16 TiB; 6000 used 1.8 GB."""
    _, meta, arrays = saved
    broken = json.loads(json.dumps(meta))
    broken["config"].update(claim)
    path = rewrite(tmp_path / "huge.ckpt", broken, arrays)
    tracemalloc.start()
    try:
        message = refused(path, r"the metadata says a .* so weight '\w+' should be .*; the file holds|"
                                r"vocab should be config.vocab_size|but the file holds only 6 weights")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"{peak} bytes allocated while refusing {message}"


def test_an_array_header_claiming_more_than_the_file_holds(saved, tmp_path):
    """The .npy header inside the zip claims a huge shape: refused from the byte count, nothing allocated."""
    path = saved[0]
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp_path / "claim.ckpt", "w") as out:
        for name in src.namelist():
            data = src.read(name)
            if name == "param/W_h.npy":
                header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }"
                header = header.ljust(118) + "\n"
                data = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\0" * 64
            out.writestr(name, data)
    tracemalloc.start()
    try:
        refused(tmp_path / "claim.ckpt", r"array 'param/W_h' claims shape \(1000000, 1000000\) of float32 "
                                         r"\(4000000000000 bytes\) but holds 64 bytes")
        assert tracemalloc.get_traced_memory()[1] < 16 * 2**20
    finally:
        tracemalloc.stop()


def test_wrong_dtypes_and_shapes(saved, tmp_path):
    _, meta, arrays = saved
    cases = [("param/W_h", arrays["param/W_h"].astype(np.float64), r"weight 'W_h' should be \(24, 6\) float32; "
                                                                  r"the file holds \(24, 6\) float64"),
             ("param/W_h", arrays["param/W_h"][:, :5], r"weight 'W_h' should be \(24, 6\) float32"),
             ("param/W_h", None, r"weights do not match it \(missing \['W_h'\]"),
             ("param/W_z", np.zeros(3, np.float32), r"unexpected \['W_z'\]"),
             ("param/b_x", np.zeros(24, "U2"), r"array 'param/b_x' holds dtype <U2"),
             ("param/b_x", np.zeros(24, np.complex64), r"array 'param/b_x' holds dtype complex64"),
             ("optim/exp_avg.W_h", np.zeros((2, 2), np.float32), r"optimizer state does not fit"),
             ("optim/exp_avg.W_h", None, r"optimizer state does not fit")]
    for key, value, match in cases:
        broken = dict(arrays)
        if value is None:
            del broken[key]
        else:
            broken[key] = value
        refused(rewrite(tmp_path / "bad.ckpt", meta, broken), match)
    members = dict(arrays, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8).astype(np.float64))
    np.savez(tmp_path / "meta.npz", **members)
    refused(tmp_path / "meta.npz", r"its metadata is a \(\d+,\) float64 array, not JSON bytes")


def test_the_data_position_is_checked_on_resume(saved, tmp_path):
    """Resuming on other names: IndexError deep in next_batch before; now a CheckpointError, batches untouched."""
    path, meta, arrays = saved
    _, fewer = small(n=20)
    before = fewer.state_dict()
    refused(path, r"the saved data position does not fit this data: the saved data position does not fit these "
                  r"20 names: its order should be a permutation of 0..19", fewer)
    assert fewer.state_dict() == before
    for data, match in (({"position": -3}, r"position should be an integer >= 0, got -3"),
                        ({"epoch": 1.5}, r"epoch should be an integer >= 0, got 1.5"),
                        ({"order": list(range(59)) + [59, 3]}, "its order should be a permutation"),
                        ({"position": 61}, "position 61 > 60"),
                        ({"rng": {"bit_generator": "MT19937"}}, "corrupt random state"),
                        ({"mode": "stream"}, "trained in stream mode, not names")):
        broken = json.loads(json.dumps(meta))
        broken["data"].update(data)
        refused(rewrite(tmp_path / "bad.ckpt", broken, arrays), match, small()[1])


def test_a_carried_state_that_does_not_fit(tmp_path):
    text = D.pydoc_text()[:3000]
    vocab = D.Vocabulary.from_text(text)
    trainer = numbarnn.make_trainer("gru", vocab=vocab, hidden_size=5, seed=0, mode="stream")
    batches = D.StreamBatches(text, vocab, 3, 10)
    trainer.fit(batches, steps=2, progress=False, sample_every=0)
    path = save_checkpoint(trainer, tmp_path / "s.ckpt", batches)
    refused(path, r"carries the state of 3 streams, but these batches have 4", D.StreamBatches(text, vocab, 4, 10))
    meta, arrays = read_checkpoint(path)
    refused(rewrite(tmp_path / "bad.ckpt", meta, dict(arrays, **{"state/0": np.zeros((3, 4))})),
            r"carried state 'state/0' should be \(batch, 5\) float32")
    del arrays["state/0"]
    refused(rewrite(tmp_path / "bad.ckpt", meta, arrays), r"the carried state should be 1 arrays state/0..0")


@pytest.mark.parametrize("cell", numbarnn.list_cells())
@pytest.mark.parametrize("layers", [1, 2])
def test_expected_param_shapes_match_the_models_every_cell_builds(cell, layers):
    model = numbarnn.make_model(cell, vocab_size=5, hidden_size=3, layers=layers)
    expected = expected_param_shapes(model.cell, 5, 3, layers)  # the cell: its own parameters count
    assert expected == {key: value.shape for key, value in model.params.items()}
    assert list(expected) == list(model.params)


@pytest.mark.parametrize("command", [["sample", "{path}"], ["train", "--resume", "{path}", "--steps", "1",
                                                             "--no-progress"]])
def test_the_command_line_says_one_line_and_exits_2(tmp_path, command, capsys):
    path = tmp_path / "junk.ckpt"
    path.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))  # np.load: "contains pickled (object) data"
    assert main([part.format(path=path) for part in command]) == 2
    err = capsys.readouterr().err
    assert f"error: {path}: not a numbarnn checkpoint (it looks like a Python pickle; numbarnn never loads " \
           "pickles)" in err
    assert "Traceback" not in err and "allow_pickle" not in err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1


# ---- exact resume with early stopping ---------------------------------------------------------

def early_stopping_run():
    trainer, batches = small(cell="rnn", dtype="float64", n=40)
    trainer.optimizer.load_state_dict({**trainer.optimizer.state_dict(), "lr": 0.3})  # overfits fast
    val = [D.pad_names([VOCAB.encode(n) for n in D.dinosaur_names()[200:232]], VOCAB.newline) + (False,)]
    return trainer, batches, dict(validation=val, eval_every=3, patience=3, progress=False, sample_every=0)


def test_early_stopping_state_is_saved_and_resume_stops_at_the_same_step(tmp_path):
    straight, batches, options = early_stopping_run()
    expected = straight.fit(batches, steps=300, **options)
    assert expected["stopped"] == "early-stop", "the setup should stop early"
    stop = straight.step
    # Interrupt (a steps= limit) every other step, before and after evaluations, and resume from a checkpoint.
    patience_part_used = 0
    for at in range(2, stop, 2):
        first, batches, options = early_stopping_run()
        first.fit(batches, steps=at, **options)
        patience_part_used += first.fit_state["evals_since_best"] > 0
        save_checkpoint(first, tmp_path / "c.ckpt", batches)
        fresh = early_stopping_run()[1]
        resumed = load_checkpoint(tmp_path / "c.ckpt", fresh)
        assert resumed.fit_state["evals_since_best"] == first.fit_state["evals_since_best"]
        summary = resumed.fit(fresh, steps=300 - at, **options)
        assert (resumed.step, summary) == (stop, expected), f"interrupted at step {at}"
        assert resumed.history == straight.history
        for key, value in straight.model.params.items():
            np.testing.assert_array_equal(resumed.model.params[key], value, err_msg=f"{key}, interrupted at {at}")
    assert patience_part_used, "some interruption should fall where patience is part used"


def test_early_stopping_continues_across_fit_calls_on_one_trainer():
    straight, batches, options = early_stopping_run()
    expected = straight.fit(batches, steps=300, **options)
    split, batches, options = early_stopping_run()
    split.fit(batches, steps=straight.step // 2, **options)
    assert split.fit(batches, steps=300 - straight.step // 2, **options) == expected
    np.testing.assert_array_equal(split.model.flat_params, straight.model.flat_params)
    # After an early stop, a further fit gets patience again (and still keeps the best weights).
    assert split.fit_state["evals_since_best"] == 0 and split.fit_state["best_params"] is not None
    split.reset_early_stopping()
    assert split.fit_state == {"best_val_loss": float("inf"), "evals_since_best": 0, "best_params": None,
                               "val_loss": None}


def test_checkpoints_without_a_fit_state_still_load(saved, tmp_path):
    """Checkpoints written before the early-stopping state was saved have no "fit" entry."""
    _, meta, arrays = saved
    old = {key: value for key, value in meta.items() if key != "fit"}
    trainer = load_checkpoint(rewrite(tmp_path / "old.ckpt", old, arrays))
    assert trainer.fit_state["best_params"] is None and trainer.step == 2


def test_a_gpu_checkpoint_without_a_gpu_is_a_clear_error_and_device_cpu_loads_it(tmp_path, monkeypatch):
    """numbarnn.load(path) continues on the device the run was saved from; where that device is
    missing it says so and names device='cpu', which then loads the same trainer exactly."""
    from numbarnn.cuda import CudaUnavailableError
    from numbarnn.trainer import Trainer

    trainer = numbarnn.make_trainer("lstm", vocab_size=5, hidden_size=3, dtype="float64", seed=0)
    trainer.train_step([[0, 1, 2]], [[1, 2, 3]])
    with monkeypatch.context() as patch:  # as a CUDA trainer records itself
        patch.setattr(Trainer, "device", property(lambda self: "cuda"))
        path = trainer.save(tmp_path / "gpu.ckpt")
    assert read_checkpoint(path)[0]["config"]["device"] == "cuda"
    monkeypatch.setattr("numbarnn.cuda.unavailable_reason", lambda: ("gpu", "device='cuda': no GPU here"))
    with pytest.raises(CudaUnavailableError) as error:
        numbarnn.load(path)
    assert "saved from a CUDA run" in str(error.value) and "device='cpu'" in str(error.value)
    assert "no GPU here" in str(error.value) and error.value.missing == "gpu"
    with pytest.raises(CudaUnavailableError, match="no GPU here"):
        numbarnn.load(path, device="cuda")
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        numbarnn.load(path, device="gpu")
    loaded = numbarnn.load(path, device="cpu")
    assert loaded.device == "cpu" and loaded.step == 1 and "device" not in loaded.config
    np.testing.assert_array_equal(loaded.model.flat_params, trainer.model.flat_params)
    assert read_checkpoint(loaded.save(tmp_path / "cpu.ckpt"))[0]["config"]["device"] == "cpu"


def test_a_missing_device_is_refused_before_the_trainer_is_built(tmp_path, monkeypatch, saved):
    """load_checkpoint checks the device right after reading the file: asking for CUDA where
    there is none fails fast, with the same error as before, and builds no trainer."""
    from numbarnn.cuda import CudaUnavailableError
    from numbarnn.trainer import Trainer

    path = saved[0]
    trainer = numbarnn.make_trainer("lstm", vocab_size=5, hidden_size=3, seed=0)
    with monkeypatch.context() as patch:  # as a CUDA trainer records itself
        patch.setattr(Trainer, "device", property(lambda self: "cuda"))
        gpu_path = trainer.save(tmp_path / "gpu.ckpt")
    monkeypatch.setattr("numbarnn.cuda.unavailable_reason", lambda: ("gpu", "device='cuda': no GPU here"))

    def not_now(*args, **kwargs):
        raise AssertionError("the trainer was built before the device was checked")

    monkeypatch.setattr("numbarnn.checkpoint.make_trainer", not_now)
    with pytest.raises(CudaUnavailableError, match="no GPU here") as error:
        load_checkpoint(path, device="cuda")
    assert error.value.missing == "gpu"
    with pytest.raises(CudaUnavailableError, match="saved from a CUDA run.*device='cpu'.*no GPU here"):
        load_checkpoint(gpu_path)
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', got 'gpu'"):
        load_checkpoint(path, device="gpu")
