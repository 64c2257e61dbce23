"""Character-level language modelling end to end: data, batching, fit, checkpoints, resume."""
import json
import math
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import checkout
import naive
import numbarnn
from numbarnn import data as D
from numbarnn.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint


def names_setup(dtype="float64", layers=1, dropout=0.0, cell="lstm", n=120, seed=0):
    names = D.dinosaur_names()[:n]
    vocab = D.Vocabulary.from_text("\n".join(D.dinosaur_names()))
    batches = D.NamesBatches(names, vocab, 8, seed=seed)
    trainer = numbarnn.make_trainer(cell=cell, vocab=vocab, hidden_size=12, layers=layers, dropout=dropout,
                                    dtype=dtype, seed=seed, mode="names", lr=0.01)
    return trainer, batches


def stream_setup(dtype="float64", layers=1, dropout=0.0, chars=6000, seed=1):
    text = D.pydoc_text()[:chars]
    vocab = D.Vocabulary.from_text(text)
    batches = D.StreamBatches(text, vocab, 3, 10)
    trainer = numbarnn.make_trainer(cell="gru" if "gru" in numbarnn.list_cells() else "rnn", vocab=vocab,
                                    hidden_size=12, layers=layers, dropout=dropout, dtype=dtype, seed=seed,
                                    mode="stream", lr=0.01)
    return trainer, batches


# ---- data ------------------------------------------------------------------------------------

def test_shipped_data():
    names = D.dinosaur_names()
    assert len(names) >= 1000 and len(set(names)) == len(names)
    assert all(n == n.lower() and n.isalpha() for n in names)
    assert "tyrannosaurus" in names and "skeleton" not in names
    text = D.pydoc_text()
    assert 300_000 < len(text) < 1_000_000


def test_user_text_files_and_their_errors(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("alpha\nbeta\r\n", encoding="utf-8")
    text, mode = D.load_corpus(str(good))
    assert text == "alpha\nbeta\n" and mode == "names"
    cases = {"empty.txt": b"  \n", "binary.bin": b"\x00\x01\x02abc", "latin1.txt": "café".encode("latin-1")}
    messages = {"empty.txt": "the file is empty", "binary.bin": "looks like a binary file",
                "latin1.txt": r"not UTF-8 text \(invalid byte at offset 3\)"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(D.DataError, match=messages[name]):
            D.load_corpus(str(tmp_path / name))
    with pytest.raises(D.DataError, match="no such file"):
        D.load_corpus(str(tmp_path / "missing.txt"))
    with pytest.raises(D.DataError, match="is a directory"):
        D.load_corpus(str(tmp_path))


def test_vocabulary_refuses_unknown_characters():
    vocab = D.Vocabulary.from_text("abc\n")
    assert vocab.decode(vocab.encode("cab")) == "cab"
    with pytest.raises(D.DataError, match=r"the prime has 2 character\(s\) outside the vocabulary: 'X', 'é'"):
        vocab.encode("aXé", what="the prime")


def test_names_are_padded_like_the_course():
    vocab = D.Vocabulary.from_text("ab\n")
    inputs, targets, mask = D.pad_names([vocab.encode("ab"), vocab.encode("b")], vocab.newline)
    np.testing.assert_array_equal(inputs, [[-1, 1, 2], [-1, 2, -1]])  # X = [start] + chars
    np.testing.assert_array_equal(targets, [[1, 2, 0], [2, 0, -1]])   # Y = chars + [newline]
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 1, 0]])


def test_names_batches_cover_an_epoch_and_streams_carry():
    names = D.dinosaur_names()[:50]
    vocab = D.Vocabulary.from_text("\n".join(names))
    batches = D.NamesBatches(names, vocab, 8, seed=0)
    seen = []
    for _ in range(batches.steps_per_epoch()):
        inputs, targets, mask, carry = batches.next_batch()
        assert not carry
        seen += ["".join(vocab.chars[i] for i in row[1:] if i >= 0) for row in inputs]
    assert sorted(seen) == sorted(names)
    stream = D.StreamBatches("abcdefghij" * 10, D.Vocabulary.from_text("abcdefghij"), 2, 5)
    x0, y0, _, c0 = stream.next_batch()
    x1, y1, _, c1 = stream.next_batch()
    assert not c0 and c1
    np.testing.assert_array_equal(x1[:, 0], y0[:, -1])  # the next chunk continues the stream


def test_every_epoch_is_a_new_shuffle_and_streams_restart_each_epoch():
    names = D.dinosaur_names()[:50]
    vocab = D.Vocabulary.from_text("\n".join(names))
    batches = D.NamesBatches(names, vocab, 8, seed=0)
    epochs = []
    for _ in range(3):
        seen = []
        for _ in range(batches.steps_per_epoch()):
            seen += ["".join(vocab.chars[i] for i in row[1:] if i >= 0) for row in batches.next_batch()[0]]
        assert sorted(seen) == sorted(names)
        epochs.append(seen)
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]  # reshuffled at every epoch's start
    stream = D.StreamBatches("abcdefghij" * 10, D.Vocabulary.from_text("abcdefghij"), 2, 5)
    n = stream.steps_per_epoch()
    carries = [stream.next_batch()[3] for _ in range(2 * n)]
    assert carries == ([False] + [True] * (n - 1)) * 2  # no state carried from the text's end to its start


# ---- stacked layers --------------------------------------------------------------------------

@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_stacked_layers_gradients_match_finite_differences(dropout):
    model = numbarnn.make_model("lstm", vocab_size=4, hidden_size=3, layers=3, dropout=dropout, dtype="float64",
                                seed=0)
    x = np.random.default_rng(0).integers(-1, 4, size=(4, 2))
    d = np.random.default_rng(1).normal(size=(4, 2, 4))

    def loss():  # the same dropout masks every call
        return np.sum(model.forward(x, train=True, rng=np.random.default_rng(5))[0] * d)

    loss()
    grads = model.backward(d)
    assert {"dW_x_l1", "dW_h_l2", "dW_y"} <= set(grads)
    for key, value in model.params.items():
        np.testing.assert_allclose(grads["d" + key], naive.finite_difference_grad(loss, value), rtol=1e-6, atol=1e-8,
                                   err_msg=key)


def test_dropout_only_in_training():
    model = numbarnn.make_model("rnn", vocab_size=4, hidden_size=5, layers=2, dropout=0.5, seed=0)
    x = np.zeros((3, 1), dtype=int)
    a, _ = model.forward(x)
    b, _ = model.forward(x)
    c, _ = model.forward(x, train=True, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


# ---- fit -------------------------------------------------------------------------------------

def test_fit_learns_validates_and_samples_names(capsys):
    trainer, batches = names_setup(n=60)
    val = [D.pad_names([trainer.vocab.encode(n) for n in D.dinosaur_names()[60:80]], trainer.vocab.newline) + (False,)]
    summary = trainer.fit(batches, steps=80, validation=val, eval_every=40, sample_every=40, samples=3,
                          progress=False)
    out = capsys.readouterr().out
    assert summary["stopped"] == "done" and trainer.step == 80
    assert trainer.history[-1][1] < trainer.history[0][1]
    assert summary["val_perplexity"] == pytest.approx(math.exp(summary["val_loss"]))
    assert out.count("samples:") == 2 and "validation loss" in out
    names = trainer.sample_texts(4, seed=3)
    assert names == trainer.sample_texts(4, seed=3)  # reproducible, and
    assert all("\n" not in n for n in names)          # one name each, stopped at the newline


def reference_per_token_loss(model, batches):
    """Mean masked cross-entropy per token of ``(inputs, targets, mask, carry)`` batches, from
    ``model.forward`` and a log-softmax written out here (float64), padding not counted."""
    total, tokens = 0.0, 0.0
    for inputs, targets, mask, _ in batches:
        logits = model.forward(np.asarray(inputs).T)[0].astype(np.float64)  # (T, B, V), time-major
        log_p = logits - logits.max(axis=-1, keepdims=True)
        log_p -= np.log(np.exp(log_p).sum(axis=-1, keepdims=True))
        for b, t in zip(*np.nonzero(mask)):
            total -= mask[b, t] * log_p[t, b, targets[b, t]]
        tokens += mask.sum()
    return total / tokens


def test_validation_loss_is_the_masked_cross_entropy_per_token():
    trainer, batches = names_setup(n=60)
    vocab, names = trainer.vocab, D.dinosaur_names()
    val = [D.pad_names([vocab.encode(n) for n in names[60 + 7 * i:67 + 7 * i]], vocab.newline) + (False,)
           for i in range(3)]
    assert all((batch[2] == 0).any() for batch in val)  # every batch has padding
    summary = trainer.fit(batches, steps=10, validation=val, eval_every=10, progress=False, sample_every=0)
    expected = reference_per_token_loss(trainer.model, val)
    assert summary["val_loss"] == pytest.approx(expected, rel=1e-12)
    assert trainer.validation_loss(val) == pytest.approx(expected, rel=1e-12)
    assert summary["val_perplexity"] == pytest.approx(math.exp(expected), rel=1e-12)
    loss, tokens, _ = trainer.evaluate(*val[0][:3])
    assert tokens == val[0][2].sum() < val[0][2].size


def test_fit_carries_the_state_along_a_stream_and_resets_it_each_epoch():
    """fit on a stream equals train_step called by hand: each chunk starts from the state the
    previous chunk ended in, except the first chunk of every epoch, which starts from zeros."""
    fitted, batches = stream_setup(chars=121)  # 3 streams of 40 characters: 4 chunks an epoch
    by_hand, chunks = stream_setup(chars=121)
    assert batches.steps_per_epoch() == 4
    fitted.fit(batches, steps=7, progress=False, sample_every=0)
    losses = []
    for step in range(7):
        start = (step % 4) * 10
        state = by_hand.state if step % 4 else None
        losses.append(by_hand.train_step(chunks.inputs[:, start:start + 10], chunks.targets[:, start:start + 10],
                                         state=state))
    assert [loss for _, loss in fitted.history] == losses
    np.testing.assert_array_equal(fitted.model.flat_params, by_hand.model.flat_params)


def test_stream_validation_carries_the_state_from_chunk_to_chunk():
    """Validation chunks of one text (carry True after the first) score like the whole text at once."""
    trainer, _ = stream_setup()
    ids = np.array(trainer.vocab.encode(D.pydoc_text()[1000:1061]))  # inside the text the vocabulary is from
    chunks = [(ids[None, i:i + 10], ids[None, i + 1:i + 11], None, i > 0) for i in range(0, 60, 10)]
    whole, tokens, _ = trainer.evaluate(ids[None, :60], ids[None, 1:61])
    assert tokens == 60
    assert trainer.validation_loss(chunks) == pytest.approx(whole / 60, rel=1e-12)


def test_norm_clipping_in_a_step_scales_the_whole_gradient():
    """SGD with lr=1: the step moves the weights by exactly minus the clipped gradient. With
    clip_mode="norm" that is the raw gradient (from a twin trainer that does not clip)
    times clip / (norm + 1e-6), every element, small ones included."""
    inputs, targets, mask = D.pad_names([[1, 2, 3], [4, 5], [6]], 0)
    changes = {}
    for clip in (None, 0.3):
        trainer = numbarnn.make_trainer("lstm", optimizer="sgd", lr=1.0, clip=clip, clip_mode="norm",
                                        vocab_size=8, hidden_size=5, dtype="float64", seed=3)
        before = trainer.model.flat_params.copy()
        trainer.train_step(inputs, targets, mask)
        changes[clip] = before - trainer.model.flat_params
        norm = trainer.last_grad_norm
    raw = changes[None]
    assert norm == pytest.approx(np.linalg.norm(raw), rel=1e-12) and norm > 2 * 0.3
    clipped = raw * (0.3 / (norm + 1e-6))
    assert not np.allclose(np.clip(raw, -0.3, 0.3), clipped, rtol=0.1)  # clipping by value differs
    np.testing.assert_allclose(changes[0.3], clipped, rtol=1e-12, atol=1e-17)


def test_early_stopping_keeps_the_best_weights():
    trainer, batches = names_setup(n=40)
    val = [D.pad_names([trainer.vocab.encode(n) for n in D.dinosaur_names()[40:60]], trainer.vocab.newline) + (False,)]
    trainer.optimizer.lr = 0.2  # overfits fast
    summary = trainer.fit(batches, steps=400, validation=val, eval_every=10, patience=2, progress=False,
                          sample_every=0)
    assert summary["stopped"] == "early-stop"
    assert trainer.validation_loss(val) == pytest.approx(summary["val_loss"], rel=1e-12)


def test_non_finite_weights_before_fit_stop_it_at_once_without_an_update():
    """Weights already poisoned when fit starts: the first loss is NaN, so train_step refuses
    the step; fit stops with "non-finite" and changes nothing."""
    trainer, batches = names_setup()
    trainer.fit(batches, steps=3, progress=False, sample_every=0)
    trainer.model.params["W_h"][0, 0] = np.nan
    poisoned = trainer.model.flat_params.copy()
    optimizer_before = trainer.optimizer.state_dict()
    summary = trainer.fit(batches, steps=5, progress=False, sample_every=0)
    assert summary["stopped"] == "non-finite" and "the loss is nan" in summary["reason"]
    assert trainer.step == summary["steps"] == 3 and len(trainer.history) == 3
    np.testing.assert_array_equal(trainer.model.flat_params, poisoned)  # untouched, not updated
    assert trainer.optimizer.step_count == optimizer_before["step"] == 3
    with pytest.raises(numbarnn.trainer.NonFiniteLossError):
        trainer.train_step(*batches.next_batch()[:3])


def test_an_update_that_writes_inf_restores_the_weights_before_that_step(capsys):
    """The branch where the gradient is finite but the update makes a weight infinite: fit
    stops with "non-finite" and puts back exactly the weights from before that update."""
    trainer, batches = names_setup()
    real_step = trainer.optimizer.step_flat
    seen = {"calls": 0, "before": None}

    def step_that_overflows_on_the_fourth_call(flat_params, flat_grads):
        seen["calls"] += 1
        if seen["calls"] == 4:
            seen["before"] = flat_params.copy()
        real_step(flat_params, flat_grads)
        if seen["calls"] == 4:
            flat_params[7] = np.inf  # as an overflowing update would

    trainer.optimizer.step_flat = step_that_overflows_on_the_fourth_call
    summary = trainer.fit(batches, steps=10, progress=False, sample_every=0)
    assert seen["calls"] == 4 and seen["before"] is not None
    assert summary["stopped"] == "non-finite" and "weights stopped being finite at step 4" in summary["reason"]
    assert "restored the weights of the last good step" in capsys.readouterr().out
    assert trainer.params_finite()
    np.testing.assert_array_equal(trainer.model.flat_params, seen["before"])
    assert [s for s, _ in trainer.history] == [1, 2, 3]
    assert trainer.step == summary["steps"] == 3  # the undone step is not counted


def test_a_non_finite_gradient_mid_fit_stops_before_the_update(monkeypatch):
    """A NaN gradient in the fourth step: train_step refuses the update, so the weights are
    those after the third step, bit for bit."""
    import numbarnn.cpu_backend as T  # where the step clips

    trainer, batches = names_setup()
    real_clip, calls, after = T.clip_flat, {"n": 0}, {}

    def clip_with_a_nan_on_the_fourth_call(flat, clip, mode):
        calls["n"] += 1
        if calls["n"] == 4:
            after["third"] = trainer.model.flat_params.copy()
            flat[3] = np.nan
        return real_clip(flat, clip, mode)

    monkeypatch.setattr(T, "clip_flat", clip_with_a_nan_on_the_fourth_call)
    summary = trainer.fit(batches, steps=10, progress=False, sample_every=0)
    assert calls["n"] == 4 and summary["stopped"] == "non-finite" and "gradient norm nan" in summary["reason"]
    np.testing.assert_array_equal(trainer.model.flat_params, after["third"])
    assert trainer.step == 3 and trainer.optimizer.step_count == 3


def test_keyboard_interrupt_saves_a_checkpoint(tmp_path):
    trainer, batches = names_setup()
    calls = {"n": 0}
    real = batches.next_batch

    def interrupt_on_fourth():
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real()

    batches.next_batch = interrupt_on_fourth
    path = tmp_path / "ctrl-c.ckpt"
    summary = trainer.fit(batches, steps=10, checkpoint=str(path), progress=False, sample_every=0)
    assert summary["stopped"] == "interrupted" and str(path) in summary["reason"]
    assert load_checkpoint(path).step == 3


# ---- checkpoints -----------------------------------------------------------------------------

def names_resume_setup(dtype, seed=0):
    return names_setup(dtype=dtype, layers=2, dropout=0.2, n=120, seed=seed)  # 15 batches an epoch


def stream_resume_setup(dtype, seed=1):
    return stream_setup(dtype=dtype, layers=2, dropout=0.2, chars=451, seed=seed)  # 15 chunks an epoch


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("setup", [names_resume_setup, stream_resume_setup], ids=["names", "stream"])
def test_resume_is_bit_identical(tmp_path, dtype, setup):
    """Saved inside the second epoch, resumed across the third epoch's start (where names
    mode reshuffles from the batches' saved random state) into batches built from another
    seed: the weights, the history and the data position all match a straight run."""
    straight, straight_batches = setup(dtype)
    assert straight_batches.steps_per_epoch() == 15
    straight.fit(straight_batches, steps=40, progress=False, sample_every=0)
    first, batches = setup(dtype)
    first.fit(batches, steps=20, progress=False, sample_every=0)
    assert batches.epoch == 1
    save_checkpoint(first, tmp_path / "c.ckpt", batches)
    _, fresh_batches = setup(dtype, seed=99)  # its own order and random state must be replaced
    resumed = load_checkpoint(tmp_path / "c.ckpt", fresh_batches)
    resumed.fit(fresh_batches, steps=20, progress=False, sample_every=0)
    assert resumed.step == straight.step == 40 and fresh_batches.epoch == 2
    for key, value in straight.model.params.items():
        assert value.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(resumed.model.params[key], value, err_msg=key)
    assert resumed.history == straight.history
    assert fresh_batches.state_dict() == straight_batches.state_dict()
    assert resumed.rng.bit_generator.state == straight.rng.bit_generator.state


def test_checkpoint_holds_names_versions_and_no_pickle(tmp_path):
    trainer, batches = names_setup()
    trainer.fit(batches, steps=2, progress=False, sample_every=0)
    path = save_checkpoint(trainer, tmp_path / "m.ckpt", batches)
    meta, arrays = read_checkpoint(path)
    assert meta["components"]["cell"] == {"name": "lstm", "plugin": "numbarnn.cells", "distribution": "numbarnn",
                                          "version": numbarnn.__version__}
    assert meta["vocab"] == "".join(trainer.vocab.chars) and meta["step"] == 2
    assert all(a.dtype != object for a in arrays.values())
    with np.load(path, allow_pickle=False) as npz:  # a plain npz, readable without pickle
        assert "param/W_h" in npz.files


def test_bad_checkpoints_give_clear_errors(tmp_path):
    trainer, batches = names_setup()
    good = save_checkpoint(trainer, tmp_path / "good.ckpt", batches)
    raw = good.read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "garbage.ckpt").write_bytes(os.urandom(2000))
    np.savez(tmp_path / "foreign.npz", weights=np.ones(3))
    for name, message in (("truncated.ckpt", "corrupt or truncated"), ("garbage.ckpt", "corrupt or truncated"),
                          ("foreign.npz", "not a numbarnn checkpoint"), ("missing.ckpt", "no such checkpoint")):
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(tmp_path / name)
    # A checkpoint whose cell comes from a plugin that is not installed names the plugin.
    meta, arrays = read_checkpoint(good)
    meta["components"]["cell"] = {"name": "fancy_cell", "plugin": "fancy", "distribution": "numbarnn-fancy",
                                  "version": "1.2"}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(tmp_path / "plugin.ckpt", "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(CheckpointError, match=r"needs the cell 'fancy_cell' from the package 'numbarnn-fancy' 1.2, "
                                              r"which is not installed: pip install numbarnn-fancy"):
        load_checkpoint(tmp_path / "plugin.ckpt")


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    trainer, batches = names_setup()
    path = save_checkpoint(trainer, tmp_path / "m.ckpt", batches)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    trainer.fit(batches, steps=1, progress=False, sample_every=0)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(trainer, path, batches)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.ckpt"]  # no temporary file left behind


KILL_WRITER = """
import sys, numpy as np, numbarnn
from numbarnn.checkpoint import save_checkpoint
trainer = numbarnn.make_trainer(cell="lstm", vocab_size=60, hidden_size=600, dtype="float64", seed=0)
print("ready", flush=True)
while True:
    save_checkpoint(trainer, sys.argv[1])
"""


def test_killing_the_writer_mid_save_leaves_a_readable_checkpoint(tmp_path):
    """SIGKILL while a save is being written (its temporary file exists): the temporary file
    is left behind, which proves the save was cut short, and the previous checkpoint loads."""
    path = tmp_path / "big.ckpt"
    for attempt in range(5):  # a kill can land between two saves; then try again
        proc = subprocess.Popen([sys.executable, "-c", KILL_WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                                env=checkout.env())
        try:
            assert proc.stdout.readline().strip() == "ready"
            deadline = time.time() + 60
            while not path.exists() and time.time() < deadline:  # one save completed
                time.sleep(0.005)
            while not list(tmp_path.glob(".big.ckpt.*.tmp")) and time.time() < deadline:  # the next under way
                time.sleep(0.001)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        interrupted = list(tmp_path.glob(".big.ckpt.*.tmp"))
        if interrupted:
            break
    assert interrupted, "no kill landed while a save was being written"
    trainer = load_checkpoint(path)
    assert trainer.model.hidden_size == 600


# ---- the command line ----------------------------------------------------------------------------

def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "numbarnn", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=checkout.env())


def test_the_command_line_tests_run_this_checkout(tmp_path):
    """run_cli starts Python in a scratch directory; it must still import this checkout's
    numbarnn (and GRU plugin), not an installed copy."""
    code = "import numbarnn.cli, numbarnn_gru; print(numbarnn.cli.__file__); print(numbarnn_gru.__file__)"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env=checkout.env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(checkout.ROOT / "numbarnn" / "cli.py"),
                                          str(checkout.ROOT / "plugins" / "numbarnn-gru" / "numbarnn_gru" / "__init__.py")]


def test_train_then_sample_through_the_command_line(tmp_path):
    result = run_cli("train", "--steps", "30", "--hidden", "16", "--no-progress", "--sample-every", "0",
                     "--eval-every", "10", "--out", "dinos.ckpt", "--plot", "loss.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "checkpoint saved to dinos.ckpt" in result.stdout and (tmp_path / "dinos.ckpt").exists()
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    samples = run_cli("sample", "dinos.ckpt", "--n", "4", "--seed", "3", cwd=tmp_path)
    assert samples.returncode == 0, samples.stderr
    lines = samples.stdout.splitlines()
    assert len(lines) == 4 and all(line[0].isupper() and line[1:].islower() for line in lines)
    assert run_cli("sample", "dinos.ckpt", "--n", "4", "--seed", "3", cwd=tmp_path).stdout == samples.stdout
    primed = run_cli("sample", "dinos.ckpt", "--n", "2", "--prime", "tyr", "--top-k", "3", cwd=tmp_path)
    assert primed.returncode == 0 and all(line.startswith("Tyr") for line in primed.stdout.splitlines())


def test_stream_mode_on_a_user_file_and_resume(tmp_path):
    (tmp_path / "poem.txt").write_text("the quick brown fox jumps over the lazy dog. " * 80)
    first = run_cli("train", "poem.txt", "--mode", "stream", "--steps", "10", "--hidden", "8", "--batch", "4",
                    "--seq-length", "12", "--no-progress", "--sample-every", "0", "--dtype", "float64", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    resumed = run_cli("train", "poem.txt", "--mode", "stream", "--steps", "5", "--resume", "poem.ckpt",
                      "--out", "poem2.ckpt", "--no-progress", "--sample-every", "0", "--batch", "4",
                      "--seq-length", "12", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(tmp_path / "poem2.ckpt").step == 15


@pytest.mark.parametrize("args, message", [
    (["train", "--steps", "0"], "--steps must be at least 1"),
    (["train", "nowhere.txt"], "nowhere.txt: no such file"),
    (["train", "--cell", "lstn"], "unknown cell 'lstn'. Did you mean 'lstm'?"),
    (["train", "--mode", "words"], "invalid choice: 'words'"),
    (["train", "--steps", "5", "--epochs", "1"], "not allowed with argument"),
    (["sample", "nowhere.ckpt"], "no such checkpoint"),
    (["sample"], "the following arguments are required: CKPT"),
    (["fly"], "invalid choice: 'fly'"),
])
def test_wrong_arguments_are_usage_errors(tmp_path, args, message):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "usage:" in result.stderr and message in result.stderr


def test_sampling_outside_the_vocabulary_is_a_usage_error(tmp_path):
    trainer, batches = names_setup()
    save_checkpoint(trainer, tmp_path / "m.ckpt", batches)
    result = run_cli("sample", "m.ckpt", "--prime", "T-Rex", cwd=tmp_path)
    # The vocabulary is lower-case, so the prime is lower-cased first (issue 12, item 3): only '-' is outside.
    assert result.returncode == 2 and ("the prime (lower-cased: the vocabulary has no upper-case letters) has 1 "
                                       "character(s) outside the vocabulary: '-' (") in result.stderr


def test_help_on_every_command(tmp_path):
    for command in ("train", "sample", "list", "plugins", "demo"):
        result = run_cli(command, "--help", cwd=tmp_path)
        assert result.returncode == 0 and result.stdout.startswith("usage: numbarnn " + command)


def test_plot_without_matplotlib_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    from numbarnn.cli import main

    assert main(["train", "--plot", str(tmp_path / "x.png"), "--steps", "1"]) == 2
    assert "pip install 'numbarnn[plot]'" in capsys.readouterr().err
