"""``numbarnn train --resume CKPT --device cpu|cuda`` moves a run between devices exactly: the
resumed run ends where the run that never stopped ends (float64, to rounding), in names mode
and in stream mode (whose carried state moves too), and a checkpoint remembers its device."""
import numpy as np
import pytest

import numbarnn
from numbarnn import cli
from numbarnn.checkpoint import read_checkpoint

COMMON = ["--hidden", "4", "--batch", "3", "--sample-every", "0", "--no-progress", "--eval-every", "1000",
          "--dtype", "float64", "--seed", "3", "--cell", "lstm"]


def train(*argv):
    assert cli.main(["train", *COMMON, *argv]) == 0


@pytest.fixture
def stream_text(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("the quick brown fox jumps over the lazy dog\n" * 8)
    return path


@pytest.fixture
def no_samples(monkeypatch):
    """The closing samples are not what these tests check, and on the simulator they cost
    minutes (one launch per character)."""
    from numbarnn.trainer import Trainer

    monkeypatch.setattr(Trainer, "sample_texts", lambda self, n, **options: ["sample"] * n)


@pytest.mark.parametrize("mode", ["names", "stream"])
def test_resume_moves_a_run_cpu_to_cuda_to_cpu(tmp_path, mode, stream_text, capsys, no_samples):
    data = [str(stream_text), "--mode", "stream", "--seq-length", "5"] if mode == "stream" else []
    straight, moved = tmp_path / "straight.ckpt", tmp_path / "moved.ckpt"
    train(*data, "--steps", "6", "--out", str(straight))
    train(*data, "--steps", "2", "--out", str(moved))
    train("--steps", "2", "--resume", str(moved), "--device", "cuda")  # saves back to its checkpoint
    meta = read_checkpoint(moved)[0]
    assert meta["config"]["device"] == "cuda" and meta["step"] == 4
    assert meta["carried_state"] == (mode == "stream")
    on_gpu = numbarnn.load(moved)  # continues where it was saved: the device
    assert on_gpu.device == "cuda"
    train("--steps", "2", "--resume", str(moved), "--device", "cpu")
    capsys.readouterr()
    a, b = numbarnn.load(straight), numbarnn.load(moved)
    assert a.device == b.device == "cpu" and a.step == b.step == 6
    np.testing.assert_allclose(b.model.flat_params, a.model.flat_params, rtol=1e-10, atol=1e-13)
    for key, value in a.optimizer.state_dict().items():
        np.testing.assert_allclose(b.optimizer.state_dict()[key], value, rtol=1e-9, atol=1e-13, err_msg=key)
    assert [s for s, _ in b.history] == [s for s, _ in a.history]
    np.testing.assert_allclose([l for _, l in b.history], [l for _, l in a.history], rtol=1e-10)
    assert b.rng.random() == a.rng.random()  # the generator moved with the run


def test_a_move_keeps_the_learning_rate_schedule():
    trainer = numbarnn.make_trainer("rnn", vocab_size=4, hidden_size=2, dtype="float64", seed=0)
    trainer.schedule = numbarnn.get_schedule("step").factory(step_size=2, gamma=0.5)
    moved = trainer.to("cuda")
    assert moved.schedule is trainer.schedule and moved.to("cpu").schedule is trainer.schedule
