"""The command line when its reader goes away: ``numbarnn sample CKPT | head -n 2``.

Each test runs ``python -m numbarnn`` in a subprocess whose stdout is a pipe closed early,
as ``head`` closes it, and checks that it ends quietly with status 141 (128 + SIGPIPE).
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from numbarnn import cli
from numbarnn.checkpoint import save_checkpoint
from numbarnn.data import Vocabulary
from numbarnn.trainer import make_trainer


@pytest.fixture
def stream_checkpoint(tmp_path):
    trainer = make_trainer(vocab=Vocabulary.from_text("abcd efg"), hidden_size=4, seed=0, mode="stream")
    return save_checkpoint(trainer, tmp_path / "tiny.ckpt")


def start(tmp_path, *argv):
    """``numbarnn ARGV`` with stdout a pipe and stderr a file: ``(process, stderr path)``."""
    err = tmp_path / "stderr.txt"
    with open(err, "wb") as err_file:
        process = subprocess.Popen([sys.executable, "-m", "numbarnn", *argv], stdout=subprocess.PIPE,
                                   stderr=err_file, cwd=tmp_path)
    return process, err


def assert_ended_quietly(process, err):
    status = process.wait(timeout=300)
    stderr = err.read_text(errors="replace")
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr and "Exception ignored" not in stderr, stderr
    assert status == cli.EXIT_STDOUT_CLOSED == 141, stderr


def test_sample_piped_into_head_ends_without_a_traceback(tmp_path, stream_checkpoint):
    # 200 samples of 1000 characters: far more than the pipe and Python's buffer hold, so
    # the command is still printing when the reader goes away after two lines (head -n 2).
    process, err = start(tmp_path, "sample", str(stream_checkpoint), "--n", "200", "--length", "1000")
    lines = [process.stdout.readline(), process.stdout.readline()]
    process.stdout.close()
    assert lines[0] == b"-- sample 1 of 200 --\n" and lines[1].strip()
    assert_ended_quietly(process, err)


def test_output_that_fits_the_buffer_meets_the_closed_pipe_at_the_last_flush(tmp_path):
    # The reader is gone before the command starts printing (it takes a second to import), and
    # `list` prints less than Python's buffer: the closed pipe shows when stdout is flushed.
    process, err = start(tmp_path, "list")
    process.stdout.close()
    assert_ended_quietly(process, err)


def test_train_piped_into_head_saves_its_checkpoint_and_ends_quietly(tmp_path):
    # Samples every step (far more than the buffer holds): the pipe breaks in the middle of
    # training, which stops as Ctrl-C stops it, with the checkpoint saved, not lost.
    process, err = start(tmp_path, "train", "--hidden", "8", "--steps", "3000", "--sample-every", "1",
                         "--no-progress", "--out", "run.ckpt", "--seed", "0")
    first = process.stdout.readline()
    process.stdout.close()
    assert first.startswith(b"training a 1-layer lstm")
    assert_ended_quietly(process, err)
    from numbarnn.checkpoint import load_checkpoint

    trainer = load_checkpoint(tmp_path / "run.ckpt")
    assert 1 <= trainer.step < 3000  # it stopped early, where the pipe broke, and saved that step
