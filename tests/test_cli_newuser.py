"""What a new user hit on the command line (issue 12, items 2, 3, 5, 6, 7, 8 and 9).

The commands run in-process through ``numbarnn.cli.main`` in a scratch directory, on tiny
models, so they test this checkout's code in seconds.
"""
from __future__ import annotations

import json
import types

import numpy as np
import pytest

from numbarnn import cli, runtime
from numbarnn import data as D
from numbarnn import fit as fit_module
from numbarnn import trainer as T
from numbarnn.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from numbarnn.data import Vocabulary
from numbarnn.trainer import make_trainer

TINY = ["--hidden", "8", "--batch", "4", "--sample-every", "0", "--no-progress", "--eval-every", "1000"]
MIXED_CASE = "McLeod\nŁódź Köln\nMcDonald\nDeLorean\nMacArthur\nvan Gogh\nO'Neil\nd'Artagnan\n" * 3


def run(capsys, *argv):
    """``(status, stdout, stderr)`` of ``numbarnn ARGV``."""
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def dinos(scratch):
    """A tiny untrained checkpoint on the shipped (lower-case) names."""
    trainer = make_trainer(vocab=Vocabulary.from_text("\n".join(D.dinosaur_names()) + "\n"), hidden_size=4, seed=0,
                           mode="names", sampler="top_p")
    return save_checkpoint(trainer, scratch / "dinos.ckpt")


@pytest.fixture
def mixed(scratch, capsys):
    """A checkpoint trained two steps on names with upper case inside them."""
    (scratch / "names.txt").write_text(MIXED_CASE, encoding="utf-8")
    assert cli.main(["train", "names.txt", "--mode", "names", "--steps", "2", *TINY, "--out", "mixed.ckpt"]) == 0
    return scratch / "mixed.ckpt", capsys.readouterr().out


# ---- item 2: the case of the user's text is printed as generated ---------------------------------------

def test_sample_prints_mixed_case_text_as_generated(capsys, mixed):
    checkpoint, _ = mixed
    for prime in ("McL", "Łódź K", "d'A"):
        status, out, err = run(capsys, "sample", str(checkpoint), "--n", "3", "--length", "4", "--prime", prime)
        assert status == 0, err
        lines = out.splitlines()
        assert len(lines) == 3 and all(line.startswith(prime) for line in lines), lines  # not "Mcl", "Łódź k", "D'a"


def test_train_prints_its_samples_of_mixed_case_data_as_generated(mixed):
    checkpoint, out = mixed
    printed = out.split("samples:\n", 1)[1].splitlines()
    expected = load_checkpoint(checkpoint).sample_texts(8, seed=0)  # what the Python API generates
    assert printed == ["  " + D.printable(text) for text in expected]
    assert any(c.isupper() for text in expected for c in text[1:])  # so .capitalize() would have changed them


def test_lower_case_data_is_shown_with_only_the_first_letter_capitalised(capsys, dinos):
    status, out, err = run(capsys, "sample", str(dinos), "--n", "4", "--seed", "2")
    assert status == 0, err
    generated = load_checkpoint(dinos).sample_texts(4, seed=2)
    assert out.splitlines() == [text[:1].upper() + text[1:] for text in generated]


# ---- item 3: a prime in upper case on a lower-case vocabulary -------------------------------------------

def test_an_upper_case_prime_is_lower_cased_for_a_lower_case_vocabulary(capsys, dinos):
    status, out, err = run(capsys, "sample", str(dinos), "--n", "2", "--length", "4", "--prime", "TYR")
    assert status == 0, err
    assert [line[:3] for line in out.splitlines()] == ["Tyr", "Tyr"]


def test_a_prime_outside_the_vocabulary_still_errors_clearly(capsys, dinos, mixed):
    status, _, err = run(capsys, "sample", str(dinos), "--prime", "T-Rex")
    assert status == 2 and err.splitlines()[-1].startswith(
        "numbarnn sample: error: the prime (lower-cased: the vocabulary has no upper-case letters) has 1 "
        "character(s) outside the vocabulary: '-'")
    # A vocabulary with upper case takes the prime as given.
    status, _, err = run(capsys, "sample", str(mixed[0]), "--prime", "MCL")
    assert status == 2 and "error: the prime has 1 character(s) outside the vocabulary: 'C'" in err


def test_sample_help_says_the_prime_is_lower_cased(capsys):
    status, out, _ = run(capsys, "sample", "--help")
    assert status == 0 and "lower-cased when the vocabulary has no upper-case letters" in " ".join(out.split())


# ---- item 5: resume saves back to its checkpoint, on the data it records ---------------------------------

def test_resume_saves_back_to_the_checkpoint_it_resumed(capsys, scratch):
    assert cli.main(["train", "--steps", "2", *TINY, "--out", "mine.ckpt"]) == 0
    status, out, err = run(capsys, "train", "--resume", "mine.ckpt", "--steps", "2", *TINY)
    assert status == 0, err
    assert "checkpoint saved to mine.ckpt" in out and not (scratch / "dinosaurs.ckpt").exists()
    assert load_checkpoint(scratch / "mine.ckpt").step == 4
    # --out still names another file.
    assert cli.main(["train", "--resume", "mine.ckpt", "--steps", "1", *TINY, "--out", "other.ckpt"]) == 0
    assert load_checkpoint(scratch / "other.ckpt").step == 5 and load_checkpoint(scratch / "mine.ckpt").step == 4


def test_resume_without_file_trains_on_pydoc_when_the_checkpoint_was_trained_on_it(capsys, scratch):
    stream = ["--steps", "1", "--hidden", "4", "--batch", "2", "--seq-length", "8", "--validation", "0",
              "--sample-every", "0", "--no-progress"]
    assert cli.main(["train", "pydoc", *stream]) == 0
    assert read_checkpoint(scratch / "pydoc.ckpt")[0]["config"]["data_source"] == "pydoc"
    status, out, err = run(capsys, "train", "--resume", "pydoc.ckpt", *stream)
    assert status == 0, err
    assert "on pydoc in stream mode" in out and load_checkpoint(scratch / "pydoc.ckpt").step == 2


def test_resume_finds_a_recorded_file_from_another_folder(capsys, scratch, monkeypatch):
    (scratch / "poem.txt").write_text("the quick brown fox jumps over the lazy dog. " * 40)
    assert cli.main(["train", "poem.txt", "--mode", "stream", "--steps", "2", "--seq-length", "12", *TINY]) == 0
    elsewhere = scratch / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    status, out, err = run(capsys, "train", "--resume", str(scratch / "poem.ckpt"), "--steps", "1", *TINY)
    assert status == 0, err
    assert load_checkpoint(scratch / "poem.ckpt").step == 3 and not list(elsewhere.iterdir())
    (scratch / "poem.txt").unlink()
    status, _, err = run(capsys, "train", "--resume", str(scratch / "poem.ckpt"), "--steps", "1", *TINY)
    assert status == 2 and "no such file" in err and "records it was trained on; name another copy as FILE" in err


def test_an_old_checkpoint_without_its_data_source_says_to_name_the_text(capsys, scratch):
    vocab = Vocabulary.from_text(D.pydoc_text())
    old = make_trainer(vocab=vocab, hidden_size=4, seed=0, mode="stream")  # saved as numbarnn did before
    save_checkpoint(old, scratch / "old.ckpt")
    status, _, err = run(capsys, "train", "--resume", "old.ckpt", "--steps", "1", "--no-progress")
    assert status == 2, err
    assert ("old.ckpt was trained on another vocabulary than dinosaurs; old.ckpt does not record what text it was "
            "trained on (an older checkpoint), so name it: numbarnn train FILE --resume old.ckpt") in err


# ---- item 6: `numbarnn list` lists every kind ------------------------------------------------------------

def test_list_without_a_kind_lists_every_kind(capsys):
    status, out, err = run(capsys, "list")
    assert status == 0, err
    for heading, name in (("cells:", "lstm"), ("losses:", "softmax_cross_entropy"), ("optimizers:", "adam"),
                          ("samplers:", "top_p"), ("schedules:", "cosine")):
        assert heading in out.splitlines() and name in out.split(heading, 1)[1]
    status, out, _ = run(capsys, "list", "--json")
    report = json.loads(out)
    assert status == 0 and list(report) == ["cells", "losses", "optimizers", "samplers", "schedules"]
    assert "adam" in [entry["name"] for entry in report["optimizers"]]


# ---- item 7: --n with beam search gives the n best distinct sequences ----------------------------------------

def test_beam_search_prints_the_n_best_distinct_sequences(capsys, dinos):
    status, out, err = run(capsys, "sample", str(dinos), "--n", "3", "--beam-width", "5", "--length", "6")
    assert status == 0, err
    best = load_checkpoint(dinos).generate("", 6, beam_width=5, n_best=3)
    lines = out.splitlines()
    assert lines == [text.rstrip("\n")[:1].upper() + text.rstrip("\n")[1:] for text in best]
    assert len(set(lines)) == 3
    status, out, err = run(capsys, "sample", str(dinos), "--n", "2", "--sampler", "beam", "--length", "6")
    assert status == 0 and len(set(out.splitlines())) == 2, err


def test_more_samples_than_the_beam_width_is_a_usage_error(capsys, dinos):
    status, out, err = run(capsys, "sample", str(dinos), "--n", "6", "--beam-width", "5")
    assert status == 2 and not out
    assert err.splitlines()[-1] == ("numbarnn sample: error: --n 6 is more than the beam width 5: beam search returns "
                                    "at most that many distinct sequences; raise --beam-width or lower --n")


# ---- item 8: say when kernels compile, and keep that time out of the rate and ETA ------------------------------

def names_trainer(seed=0):
    names = D.dinosaur_names()[:40]
    vocab = Vocabulary.from_text("\n".join(D.dinosaur_names()) + "\n")
    trainer = make_trainer(vocab=vocab, hidden_size=4, seed=seed, mode="names", sampler="top_p")
    return trainer, D.NamesBatches(names, vocab, 8, seed=seed)


def test_compile_time_is_kept_out_of_the_bar_and_said_before(capsys, monkeypatch):
    """A fake clock: the first step 'compiles' for 100 s and the first sampling for 50 s; every
    other step takes 1 s. The bar must count 4 s for steps 2 to 5, at 1 step/s."""
    import tqdm.std

    now = [1000.0]
    monkeypatch.setattr(tqdm.std, "time", lambda: now[0])  # the bar's clock
    monkeypatch.setattr(fit_module, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))  # fit's
    trainer, batches = names_trainer()
    real_step, real_samples = trainer.train_step, trainer.sample_texts
    calls = {"step": 0, "samples": 0}

    def step(*args, **kwargs):
        calls["step"] += 1
        now[0] += 100.0 if calls["step"] == 1 else 1.0
        return real_step(*args, **kwargs)

    def samples(*args, **kwargs):
        calls["samples"] += 1
        now[0] += 50.0 if calls["samples"] == 1 else 0.0
        return real_samples(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", step)
    monkeypatch.setattr(trainer, "sample_texts", samples)
    monkeypatch.setattr(trainer.backend, "kernels_to_compile", lambda phase, sampler: "cached")
    bars = []
    real_bar = fit_module._progress_bar
    monkeypatch.setattr(fit_module, "_progress_bar", lambda total, enabled: bars.append(real_bar(total, enabled)) or bars[-1])
    trainer.fit(batches, steps=5, sample_every=3, samples=2, progress=True)
    bar = bars[0]
    assert bar.n == 5 and bar.format_dict["elapsed"] == pytest.approx(4.0)
    assert bar.format_dict["rate"] is None or bar.format_dict["rate"] == pytest.approx(1.0)
    err = capsys.readouterr().err
    assert "compiling kernels (first run only, cached afterwards)" in err
    assert "compiling the sampling kernels (first run only, cached afterwards)" in err
    assert err.index("compiling kernels") < err.index("compiling the sampling kernels")


def test_kernels_to_compile_looks_at_this_process_and_the_disk_cache(tmp_path, monkeypatch):
    from numba import njit

    from numbarnn.cells import RNN, CellSpec
    from numbarnn.kernels import loops

    trainer = make_trainer("rnn", vocab_size=3, hidden_size=2, seed=0)
    trainer.train_step(np.array([[0, 1]]), np.array([[1, 2]]))
    assert runtime.kernels_to_compile(trainer, "step") is None
    # An empty cache directory: nothing is compiled for a fresh loops module (nothing runs here).
    monkeypatch.setenv("NUMBARNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(loops, "_CELL_LOOPS", {})
    assert runtime.kernels_to_compile(trainer, "step") == "cached"
    assert runtime.kernels_to_compile(trainer, "samples") == "cached"
    # Kernels that are not importable compile in memory, in every process.
    local = CellSpec(name="local_rnn", description="d", gates=1, states=1, cache_width=0,
                     forward=njit(RNN.forward.py_func), backward=njit(RNN.backward.py_func))
    assert runtime.kernels_to_compile(make_trainer(local, vocab_size=3, hidden_size=2, seed=0), "step") == "uncached"
    with pytest.raises(ValueError, match="phase must be"):
        runtime.kernels_to_compile(trainer, "warmup")


def test_a_second_run_in_the_same_process_says_nothing_about_compiling(capsys, scratch):
    assert cli.main(["train", "--steps", "2", *TINY]) == 0
    status, _, err = run(capsys, "train", "--steps", "2", *TINY, "--out", "again.ckpt", "--sample-every", "1")
    assert status == 0 and "compiling" not in err, err


# ---- item 9: stream samples while training; Ctrl-C says "saved" once ---------------------------------------

def test_stream_samples_are_stripped_and_numbered(monkeypatch):
    text = "the quick brown fox jumps over the lazy dog. " * 20
    vocab = Vocabulary.from_text(text)
    trainer = make_trainer(vocab=vocab, hidden_size=4, seed=0, mode="stream")
    monkeypatch.setattr(trainer, "sample_texts", lambda n, seed=None: ["abc" + " " * 150, "de   \n  \nf\t  \n"][:n])
    lines = []
    trainer.fit(D.StreamBatches(text, vocab, 2, 8), steps=1, sample_every=1, samples=2, progress=False,
                print_fn=lines.append)
    assert lines == ["-- step 1, loss %.3f, samples:" % trainer.config["smoothed_loss"], "   [1] abc",
                     "   [2] de /  / f"]


def test_train_and_sample_print_stream_text_stripped_and_separated(capsys, scratch):
    (scratch / "poem.txt").write_text("the quick brown fox     \njumps over the lazy dog.     \n" * 30)
    status, out, err = run(capsys, "train", "poem.txt", "--mode", "stream", "--steps", "2", "--seq-length", "12",
                           *TINY)
    assert status == 0, err
    printed = out.split("samples:\n", 1)[1].splitlines()
    assert [line[:6] for line in printed] == ["  [1] ", "  [2] "] and all(line == line.rstrip() for line in printed)
    status, out, err = run(capsys, "sample", "poem.ckpt", "--n", "2", "--length", "40")
    assert status == 0, err
    assert out.startswith("-- sample 1 of 2 --\n") and "\n-- sample 2 of 2 --\n" in out
    assert all(not text.endswith((" ", "\t")) for text in out.split("\n-- sample 2 of 2 --\n"))


def test_ctrl_c_says_the_checkpoint_was_saved_once(capsys, scratch, monkeypatch):
    real_step, calls = T.Trainer.train_step, {"n": 0}

    def interrupted_third_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(T.Trainer, "train_step", interrupted_third_step)
    status, out, err = run(capsys, "train", "--steps", "10", *TINY, "--out", "ctrl-c.ckpt")
    assert status == 130, err
    assert (out + err).count("checkpoint saved to ctrl-c.ckpt") == 1, out
    assert load_checkpoint(scratch / "ctrl-c.ckpt").step == 2
