"""The command line refuses bad input up front (issue 11, items 2, 6 and 7).

Every refusal is exit status 2 with one error line naming the option, printed before any
training starts; the files the user did not name are never touched. The commands run
in-process through ``numbarnn.cli.main``, so they test this checkout's code.
"""
from __future__ import annotations

import os
import stat
import time
import zipfile

import numpy as np
import pytest

from numbarnn import cli
from numbarnn import data as D
from numbarnn.checkpoint import load_checkpoint, save_checkpoint
from numbarnn.data import Vocabulary, printable
from numbarnn.trainer import WORKSPACE_SHAPES, make_trainer

TINY = ["--steps", "2", "--hidden", "4", "--batch", "4", "--sample-every", "0", "--no-progress"]


def run(capsys, *argv):
    """``(status, stdout, stderr)`` of ``numbarnn ARGV``."""
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def refused(capsys, *argv, naming):
    """Run a command that must be refused before training; returns its error line."""
    status, out, err = run(capsys, *argv)
    assert status == 2, (out, err)
    assert "Traceback" not in err and "training a" not in out  # refused before anything was trained
    usage, _, error = err.rstrip("\n").rpartition("\n")
    assert usage.startswith("usage:") and "error" not in usage, err  # the usage, then one error line
    assert error.startswith(f"numbarnn {argv[0]}: error: ") and naming in error, error
    return error


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("ab\nba\nabba\nbaab\naab\n" * 4)
    return path


@pytest.fixture
def checkpoint(tmp_path):
    """A tiny checkpoint trained on the shipped names (hidden 4, lstm, seed 0)."""
    trainer = make_trainer(vocab=Vocabulary.from_text("\n".join(D.dinosaur_names()) + "\n"), hidden_size=4, seed=0,
                           mode="names", sampler="top_p", lr=0.005)
    return save_checkpoint(trainer, tmp_path / "tiny.ckpt")


# ---- item 2: output paths are checked before training -----------------------------------------------

def test_out_refuses_the_training_file(capsys, text_file):
    before = text_file.read_bytes()
    line = refused(capsys, "train", str(text_file), *TINY, "--out", str(text_file), naming="--out")
    assert "same file as FILE" in line
    assert text_file.read_bytes() == before


def test_out_refuses_the_training_file_reached_through_a_link(capsys, tmp_path, text_file):
    link = tmp_path / "link.txt"
    link.symlink_to(text_file)
    before = text_file.read_bytes()
    # The training file named through a link, --out naming the real file: the same file.
    line = refused(capsys, "train", str(link), *TINY, "--out", str(text_file), naming="--out")
    assert "same file as FILE" in line
    # --out naming a link (to anything) is refused: numbarnn does not write through links.
    assert "symbolic link" in refused(capsys, "train", str(text_file), *TINY, "--out", str(link), naming="--out")
    assert text_file.read_bytes() == before and link.is_symlink()


def test_out_refuses_directories_devices_and_pipes(capsys, tmp_path):
    assert "is a directory" in refused(capsys, "train", *TINY, "--out", str(tmp_path), naming="--out")
    assert "not a regular file" in refused(capsys, "train", *TINY, "--out", "/dev/null", naming="--out")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert "not a regular file" in refused(capsys, "train", *TINY, "--out", str(fifo), naming="--out")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_out_refuses_a_file_that_is_not_a_checkpoint(capsys, tmp_path):
    notes = tmp_path / "notes.ckpt"
    notes.write_text("my notes\n")
    assert "is not a file numbarnn wrote" in refused(capsys, "train", *TINY, "--out", str(notes), naming="--out")
    assert notes.read_text() == "my notes\n"
    archive = tmp_path / "other.zip"  # a zip, but not a checkpoint
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("data.txt", "keep me")
    refused(capsys, "train", *TINY, "--out", str(archive), naming="--out")


def test_out_refuses_a_folder_that_cannot_hold_it(capsys, tmp_path, text_file):
    line = refused(capsys, "train", *TINY, "--out", str(text_file / "model.ckpt"), naming="--out")
    assert "is not a directory" in line
    # /proc cannot be written, even by root (for whom permission bits are no test).
    assert "cannot write in /proc" in refused(capsys, "train", *TINY, "--out", "/proc/numbarnn-test/m.ckpt",
                                              naming="--out")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes in read-only folders")
def test_out_refuses_a_read_only_folder(capsys, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert "cannot write in" in refused(capsys, "train", *TINY, "--out", str(folder / "m.ckpt"), naming="--out")
    finally:
        folder.chmod(0o700)


def test_out_may_replace_a_checkpoint_and_create_folders(capsys, tmp_path, checkpoint):
    status, out, err = run(capsys, "train", *TINY, "--out", str(checkpoint))
    assert status == 0, err
    assert load_checkpoint(checkpoint).step == 2
    nested = tmp_path / "a" / "b" / "m.ckpt"
    status, out, err = run(capsys, "train", *TINY, "--out", str(nested))
    assert status == 0 and nested.exists(), err


def test_plot_refuses_inputs_the_checkpoint_and_other_files(capsys, tmp_path, text_file, checkpoint):
    pytest.importorskip("matplotlib")
    refused(capsys, "train", str(text_file), *TINY, "--out", str(tmp_path / "m.ckpt"), "--plot", str(text_file),
            naming="--plot")
    line = refused(capsys, "train", *TINY, "--out", str(tmp_path / "m.ckpt"), "--plot", str(tmp_path / "m.ckpt"),
                   naming="--plot")
    assert "same file as --out" in line
    refused(capsys, "train", *TINY, "--resume", str(checkpoint), "--out", str(tmp_path / "m.ckpt"),
            "--plot", str(checkpoint), naming="--plot")
    refused(capsys, "train", *TINY, "--plot", str(tmp_path), naming="--plot")


def test_a_save_removes_the_temporary_files_a_killed_save_left(tmp_path):
    trainer = make_trainer("rnn", vocab_size=5, hidden_size=4, seed=0)
    target = tmp_path / "m.ckpt"
    stale = tmp_path / ".m.ckpt.k3x_9abc.tmp"  # tempfile.mkstemp's pattern for this target
    fresh = tmp_path / ".m.ckpt.zz00aa11.tmp"  # a save of another process, under way
    kept = [tmp_path / ".m.ckpt.notes.tmp", tmp_path / ".other.ckpt.k3x_9abc.tmp", tmp_path / "m.ckpt.k3x_9abc.tmp"]
    for path in [stale, fresh, *kept]:
        path.write_bytes(b"x" * 1000)
    old = time.time() - 3600
    for path in [stale, *kept]:
        os.utime(path, (old, old))
    os.utime(fresh, (time.time() + 60, time.time() + 60))
    save_checkpoint(trainer, target)
    assert not stale.exists()
    assert fresh.exists() and all(path.exists() for path in kept)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in [target, fresh, *kept])


# ---- item 6: every value checked up front ---------------------------------------------------------

@pytest.mark.parametrize("argv, flag", [
    (["--seed", "-1"], "--seed"),
    (["--validation", "nan"], "--validation"),
    (["--validation", "1"], "--validation"),
    (["--epochs", "nan"], "--epochs"),
    (["--epochs", "inf"], "--epochs"),
    (["--epochs", "0"], "--epochs"),
    (["--clip", "-1"], "--clip"),
    (["--clip", "nan"], "--clip"),
    (["--lr", "0"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--eval-every", "0"], "--eval-every"),
    (["--patience", "-1"], "--patience"),
    (["--sample-every", "-1"], "--sample-every"),
    (["--dropout", "1"], "--dropout"),
    (["--hidden", "0"], "--hidden"),
])
def test_train_values_are_checked_up_front(capsys, tmp_path, argv, flag):
    out = tmp_path / "m.ckpt"
    args = [a for a in TINY if a not in ("--steps", "2")] if flag == "--epochs" else TINY
    refused(capsys, "train", *args, *argv, "--out", str(out), naming=flag)
    assert not out.exists()


def test_a_loss_that_cannot_train_a_language_model_is_refused(capsys, tmp_path):
    line = refused(capsys, "train", *TINY, "--loss", "mse", "--out", str(tmp_path / "m.ckpt"), naming="--loss mse")
    assert "softmax_cross_entropy" in line


def test_a_model_too_big_for_memory_is_refused_with_the_estimate(capsys, tmp_path):
    line = refused(capsys, "train", *TINY[:2], "--hidden", "1000000", "--out", str(tmp_path / "m.ckpt"),
                   naming="--hidden 1000000")
    assert "TiB" in line and "available" in line


def test_sampling_too_long_for_memory_is_refused_with_the_estimate(capsys, monkeypatch, checkpoint):
    monkeypatch.setattr(cli, "_available_memory", lambda: 2 * 2**30)
    line = refused(capsys, "sample", str(checkpoint), "--length", "1000000000", naming="--length 1000000000")
    assert "GiB" in line and "2.0 GiB of memory available" in line


@pytest.mark.parametrize("argv, flag", [
    (["--seed", "-1"], "--seed"), (["--n", "0"], "--n"), (["--length", "0"], "--length"),
    (["--temperature", "0"], "--temperature"), (["--temperature", "nan"], "--temperature"),
    (["--top-k", "0"], "--top-k"), (["--top-p", "0"], "--top-p"), (["--top-p", "1.5"], "--top-p"),
    (["--beam-width", "0"], "--beam-width"),
])
def test_sample_values_are_checked_up_front(capsys, checkpoint, argv, flag):
    refused(capsys, "sample", str(checkpoint), *argv, naming=flag)


def test_a_non_finite_first_step_ends_with_a_message_not_a_traceback(capsys, tmp_path):
    # float32 Adam with this learning rate overflows the weights in the first step.
    status, out, err = run(capsys, "train", *TINY, "--lr", "1e39", "--out", str(tmp_path / "m.ckpt"))
    assert status == 1, err
    assert "stopped:" in out and "no training step finished" in out and "Traceback" not in err


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_the_text_must_be_a_regular_file(capsys, tmp_path, special):
    if special == "fifo":
        special = str(tmp_path / "fifo")
        os.mkfifo(special)  # opening it would wait for a writer forever
    line = refused(capsys, "train", special, *TINY, "--out", str(tmp_path / "m.ckpt"), naming=special)
    assert "not a regular file" in line


def test_the_text_is_read_with_a_size_cap(capsys, tmp_path, monkeypatch):
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as f:
        f.truncate(D.MAX_TEXT_BYTES + 1)  # sparse: no disk space used
    line = refused(capsys, "train", str(huge), *TINY, "--out", str(tmp_path / "m.ckpt"), naming=str(huge))
    assert "256.0 MiB numbarnn reads" in line
    small = tmp_path / "small.txt"
    small.write_text("abc\n" * 100)
    monkeypatch.setattr(D, "MAX_TEXT_BYTES", 100)
    with pytest.raises(D.DataError, match="more than the 100 bytes"):
        D.read_text(small, max_bytes=100)
    assert D.read_text(small, max_bytes=400) == "abc\n" * 100


def test_model_options_that_contradict_a_resumed_checkpoint_are_refused(capsys, tmp_path, checkpoint):
    out = tmp_path / "m.ckpt"
    line = refused(capsys, "train", *TINY[2:], "--steps", "1", "--resume", str(checkpoint), "--cell", "rnn",
                   "--hidden", "64", "--out", str(out), naming="--cell rnn, --hidden 64 contradict")
    assert str(checkpoint) in line and not out.exists()
    # The same values as the checkpoint's are no contradiction.
    status, _, err = run(capsys, "train", *TINY, "--resume", str(checkpoint), "--cell", "lstm", "--lr", "0.005",
                         "--out", str(out))
    assert status == 0, err


def test_resume_keeps_the_seed_of_the_checkpoint(capsys, tmp_path):
    # The seed picks the validation split: a resumed run must split (and so train) as the first one did.
    common = ["--hidden", "4", "--batch", "4", "--sample-every", "0", "--no-progress", "--eval-every", "1000"]
    assert cli.main(["train", *common, "--seed", "3", "--steps", "4", "--out", str(tmp_path / "whole.ckpt")]) == 0
    assert cli.main(["train", *common, "--seed", "3", "--steps", "2", "--out", str(tmp_path / "half.ckpt")]) == 0
    assert cli.main(["train", *common, "--steps", "2", "--resume", str(tmp_path / "half.ckpt"),
                     "--out", str(tmp_path / "resumed.ckpt")]) == 0
    capsys.readouterr()
    whole, resumed = load_checkpoint(tmp_path / "whole.ckpt"), load_checkpoint(tmp_path / "resumed.ckpt")
    assert resumed.step == whole.step == 4
    assert np.array_equal(whole.model.flat_params, resumed.model.flat_params)


def test_resume_on_cuda_continues_on_the_device(capsys, monkeypatch, tmp_path, checkpoint):
    import numbarnn.checkpoint
    from numbarnn.trainer import Trainer

    moved = []
    monkeypatch.setattr(numbarnn.checkpoint, "require_device", lambda device, why="": None)  # no GPU here
    monkeypatch.setattr(Trainer, "to", lambda trainer, device: moved.append(device) or trainer)
    status, _, err = run(capsys, "train", *TINY, "--resume", str(checkpoint), "--device", "cuda",
                         "--out", str(tmp_path / "m.ckpt"))
    assert status == 0 and len(moved) == 1, err  # it used to train on the CPU without a word


# ---- item 7: bounded memory and a clean terminal ------------------------------------------------------

@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_41_sequence_lengths_keep_the_step_buffers_bounded(cell):
    trainer = make_trainer(cell, vocab_size=7, hidden_size=5, seed=0, dtype="float64")
    fresh = make_trainer(cell, vocab_size=7, hidden_size=5, seed=0, dtype="float64")
    rng = np.random.default_rng(1)
    for T in [*range(1, 42), 3, 41, 5]:
        x, y = rng.integers(0, 7, (3, T)), rng.integers(0, 7, (3, T))
        fresh.backend._workspaces[0].shapes.clear()
        fresh.backend._workspaces[0].buffer = None
        assert trainer.train_step(x, y) == fresh.train_step(x, y)  # shared buffers change nothing
        assert len(trainer.backend._workspaces[0].shapes) <= WORKSPACE_SHAPES
    assert np.array_equal(trainer.model.flat_params, fresh.model.flat_params)
    # One backing buffer, sized for the largest batch: every cached view lives in it.
    workspace = trainer.backend._workspaces[0]
    assert all(np.shares_memory(view, workspace.buffer) for work in workspace.shapes.values() for view in work
               if view.size)


def test_printable_escapes_terminal_controls():
    assert printable("a\x1b[31mb\x07c\x9bd\u202ee\ud800f\n\tg") == "a\\x1b[31mb\\x07c\\x9bd\\u202ee\\ud800f\n\tg"
    assert printable("plain text, déjà vu 🦕") == "plain text, déjà vu 🦕"


def test_sampled_control_characters_and_surrogates_are_escaped(capsys, tmp_path):
    # A vocabulary of nothing but troublemakers; an untrained model samples all of them.
    vocab = Vocabulary("\x1b\x07\ud800\u202e")
    trainer = make_trainer(vocab=vocab, hidden_size=4, seed=0, mode="stream")
    path = save_checkpoint(trainer, tmp_path / "odd.ckpt")
    assert load_checkpoint(path).vocab.chars == vocab.chars  # a lone surrogate round-trips
    status, out, err = run(capsys, "sample", str(path), "--n", "2", "--length", "300")
    assert status == 0, err
    assert not any(c in out for c in "\x1b\x07\ud800\u202e")
    assert all(escape in out for escape in ("\\x1b", "\\x07", "\\ud800", "\\u202e"))


def test_fit_prints_samples_escaped(tmp_path):
    text = "\x1bab\x07\n" * 20
    vocab = Vocabulary.from_text(text)
    trainer = make_trainer(vocab=vocab, hidden_size=4, seed=0, mode="stream")
    lines = []
    trainer.fit(D.StreamBatches(text, vocab, 2, 8), steps=1, sample_every=1, samples=3, progress=False,
                print_fn=lines.append)
    assert len(lines) == 4 and not any("\x1b" in line or "\x07" in line for line in lines)


def test_paths_with_control_characters_are_printed_escaped(capsys, tmp_path):
    out = tmp_path / "evil\x1b]0;title\x07.ckpt"
    status, stdout, err = run(capsys, "train", *TINY, "--out", str(out))
    assert status == 0 and out.exists(), err
    assert "\x1b" not in stdout and "evil\\x1b]0;title\\x07.ckpt" in stdout


@pytest.mark.parametrize("mode", ["names", "stream"])
def test_resume_without_batch_flags_cuts_the_saved_batches(capsys, tmp_path, mode):
    """A checkpoint records --batch (and --seq-length in stream mode), so a resume that leaves
    them out continues on the same batches: exactly where the uninterrupted run goes."""
    text = tmp_path / "text.txt"
    text.write_text("a stream of words to cut into chunks\n" * 6)
    data = [str(text), "--mode", "stream", "--seq-length", "7"] if mode == "stream" else []
    common = ["--hidden", "4", "--sample-every", "0", "--no-progress", "--eval-every", "1000", "--seed", "3"]
    assert cli.main(["train", *data, *common, "--batch", "5", "--steps", "4", "--out", str(tmp_path / "whole.ckpt")]) == 0
    assert cli.main(["train", *data, *common, "--batch", "5", "--steps", "2", "--out", str(tmp_path / "half.ckpt")]) == 0
    assert cli.main(["train", "--steps", "2", "--no-progress", "--sample-every", "0",
                     "--resume", str(tmp_path / "half.ckpt")]) == 0
    capsys.readouterr()
    whole, resumed = load_checkpoint(tmp_path / "whole.ckpt"), load_checkpoint(tmp_path / "half.ckpt")
    assert resumed.config["batch_size"] == 5 and resumed.config["seq_length"] == (7 if mode == "stream" else None)
    assert resumed.step == whole.step == 4
    np.testing.assert_array_equal(resumed.model.flat_params, whole.model.flat_params)
