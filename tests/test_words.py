"""Word-level text (issue 15): the tokenizer and its inverse, the word vocabulary (max_vocab,
<unk>), ``numbarnn train FILE --tokens words`` and ``numbarnn sample`` end to end, exact
resume of a word model, and hostile word vocabularies in a checkpoint.

The commands run in-process through ``numbarnn.cli.main``, so they test this checkout's code.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from numbarnn import cli
from numbarnn.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from numbarnn.cli import train_memory
from numbarnn.cells import LSTM
from numbarnn.data import (MAX_WORD_VOCAB, UNK, DataError, StreamBatches, Vocabulary, WordVocabulary, detokenize,
                           tokenize)
from numbarnn.trainer import make_trainer

ENGLISH = [
    '"Well," said Alice, "I don\'t know (really) what 3.14 means -- or U.S. law." It\'s 50% of $20... isn\'t it?',
    "The quick brown fox jumps over the lazy dog. She sells sea-shells; he doesn't [at all]!\n\nA new paragraph: yes.",
    "He said 'hi' to me at 10:30, and paid 1,000 dollars for e.g. a well-known book.",
    "‘Hello,’ she said. “Fine.” Café, naïve and Zürich — 東京 too? ¡Sí! 🙂",
]


# ---- tokenizer and detokenizer ----------------------------------------------------------------------

@pytest.mark.parametrize("text", ENGLISH)
def test_ordinary_english_round_trips(text):
    assert detokenize(tokenize(text)) == text


def test_punctuation_apostrophes_and_numbers_are_tokens_of_their_own():
    assert tokenize("Don't stop, it's 3.14 -- or 1,000 (U.S.)...\nOK!") == [
        "Don't", "stop", ",", "it's", "3.14", "--", "or", "1,000", "(", "U.S.", ")", "...", "\n", "OK", "!"]


def test_detokenize_spaces_quotes_brackets_and_newlines():
    assert detokenize(["He", "said", '"', "no", '"', "(", "twice", ")", ".", "\n", '"', "Yes", ",", '"']) \
        == 'He said "no" (twice).\n"Yes,"'
    # Quotes start over on each line, so an unbalanced one cannot spoil the lines after it.
    assert detokenize(['"', "open", "\n", '"', "again", '"']) == '"open\n"again"'


def test_edge_cases_empty_text_white_space_and_unicode_forms():
    assert tokenize("") == [] and detokenize([]) == ""
    assert tokenize(" \t  ") == []
    assert detokenize(tokenize("a \t b  c")) == "a b c"  # other spacing comes back single
    assert tokenize("e\u0301te\u0301") == ["\u00e9t\u00e9"]  # NFC: the accent stays with its letter
    assert tokenize("a <unk> b") == ["a", UNK, "b"]


# ---- the word vocabulary ---------------------------------------------------------------------------

def test_max_vocab_keeps_the_most_frequent_words_ties_in_code_point_order():
    text = "b a b c a b d\n"
    vocab = WordVocabulary.from_text(text, max_vocab=5)
    assert vocab.tokens == [UNK, "\n", "b", "a", "c"]  # c and d are tied at 1: c first
    assert len(vocab) == 5 and vocab.newline == 1
    assert vocab.encode("b d z\n") == [2, 0, 0, 1]  # d was cut, z never seen: both <unk>
    assert vocab.decode(vocab.encode("a b c\n")) == "a b c\n"
    assert vocab.decode([3, 0]) == "a <unk>"
    assert WordVocabulary.from_text(text).tokens == [UNK, "\n", "b", "a", "c", "d"]


def test_word_vocabulary_refuses_bad_tokens_and_sizes():
    for tokens, match in (([UNK, "\n", "a", "a"], "twice"), ([UNK, "a"], "newline"),
                          ([UNK, "\n", "two words"], "tokenize"), ([UNK, "\n", 7], "tokenize")):
        with pytest.raises(DataError, match=match):
            WordVocabulary(tokens)
    for bad in (2, 0, True, MAX_WORD_VOCAB + 1, 3.0):
        with pytest.raises(DataError, match="max_vocab"):
            WordVocabulary.from_text("a b", max_vocab=bad)


def test_join_spaces_a_continuation_after_its_prime():
    vocab = WordVocabulary.from_text("the cat sat .")
    assert vocab.join("The cat", "sat.") == "The cat sat."
    assert vocab.join("The cat", ", it sat") == "The cat, it sat"
    assert vocab.join("The cat", "\nsat") == "The cat\nsat"
    assert Vocabulary("abc").join("ab", "c") == "abc"


def test_stream_batches_cut_words():
    text = "the cat sat on the mat .\n" * 10
    vocab = WordVocabulary.from_text(text)
    batches = StreamBatches(text, vocab, batch_size=2, seq_length=5)
    inputs, targets, _, _ = batches.next_batch()
    assert inputs.shape == (2, 5)
    assert vocab.decode(inputs[0]) == "the cat sat on the"
    assert np.array_equal(inputs[0, 1:], targets[0, :-1])


def test_train_memory_counts_the_embedding_and_the_vocabulary():
    one_hot = train_memory(LSTM, 50_000, 64, 1, 8, 16, 4)
    assert train_memory(LSTM, 50_000, 64, 1, 8, 16, 4, embedding=1000) > one_hot  # a 50000 x 1000 table
    assert train_memory(LSTM, 50_000, 64, 1, 8, 16, 4, embedding=8) < one_hot  # the first layer reads 8 columns
    assert train_memory(LSTM, 100_000, 64, 1, 8, 16, 4) > one_hot


# ---- numbarnn train --tokens words / numbarnn sample ----------------------------------------------

STORY = ("The cat sat on the mat. The dog sat on the rug, and the cat ran!\n"
         "\"Where is the dog?\" asked the cat. The dog didn't answer.\n") * 30
COMMON = ["--tokens", "words", "--embedding", "8", "--hidden", "8", "--batch", "2", "--seq-length", "8",
          "--sample-every", "0", "--no-progress", "--eval-every", "1000"]


def run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def story(tmp_path):
    path = tmp_path / "story.txt"
    path.write_text(STORY)
    return path


def test_train_words_and_sample_prints_words(capsys, tmp_path, story):
    ckpt = tmp_path / "words.ckpt"
    status, out, err = run(capsys, "train", story, *COMMON, "--max-vocab", "12", "--steps", "5", "--out", ckpt)
    assert status == 0, err
    assert "12 words" in out.splitlines()[0]
    meta, arrays = read_checkpoint(ckpt)
    assert meta["tokens"] == "words" and meta["config"]["max_vocab"] == 12 and meta["config"]["embedding"] == 8
    assert meta["vocab"][:4] == [UNK, "\n", "the", "."] and len(meta["vocab"]) == 12
    assert arrays["param/W_emb"].shape == (12, 8)
    trainer = load_checkpoint(ckpt)
    assert isinstance(trainer.vocab, WordVocabulary) and trainer.vocab.tokens == meta["vocab"]
    status, out, err = run(capsys, "sample", ckpt, "--n", "1", "--length", "30", "--prime", "The cat", "--seed", "1")
    assert status == 0, err
    text = out.strip()
    assert text.startswith("The cat ") or text.startswith("The cat\n")  # the prime, then words after a space
    words = re.findall(r"<unk>|[\w']+", text)  # punctuation aside (a generated ". ." prints as "..")
    assert len(words) >= 10 and set(words) <= set(meta["vocab"])  # whole words of the vocabulary, not characters
    # It is what the trainer generates, detokenised.
    again = trainer.sample_texts(1, seed=1, length=30, prime="The cat")[0]
    assert again.rstrip() == text


def test_words_refuse_names_mode_and_max_vocab_needs_words(capsys, story):
    status, _, err = run(capsys, "train", story, *COMMON, "--mode", "names", "--steps", "1")
    assert status == 2 and "--tokens words trains in stream mode" in err
    status, _, err = run(capsys, "train", story, "--max-vocab", "10", "--steps", "1")
    assert status == 2 and "--max-vocab is for word models" in err
    for flag, value in (("--max-vocab", "2"), ("--embedding", "0")):
        status, _, err = run(capsys, "train", story, *COMMON, flag, value, "--steps", "1")
        assert status == 2 and f"{flag} must be" in err


def test_embedding_trains_a_character_model_too(capsys, tmp_path, story):
    ckpt = tmp_path / "chars.ckpt"
    status, out, err = run(capsys, "train", story, "--embedding", "4", "--hidden", "8", "--steps", "2",
                           "--sample-every", "0", "--no-progress", "--out", ckpt)
    assert status == 0, err
    meta, arrays = read_checkpoint(ckpt)
    assert "tokens" not in meta and isinstance(meta["vocab"], str)
    assert arrays["param/W_emb"].shape == (len(meta["vocab"]), 4)


def test_resume_of_a_word_model_is_exact_and_conflicts_are_refused(capsys, tmp_path, story):
    whole, half = tmp_path / "whole.ckpt", tmp_path / "half.ckpt"
    # --max-vocab 12: the resumed run must rebuild the same cut vocabulary from what the checkpoint records.
    assert run(capsys, "train", story, *COMMON, "--max-vocab", "12", "--steps", "6", "--out", whole)[0] == 0
    assert run(capsys, "train", story, *COMMON, "--max-vocab", "12", "--steps", "3", "--out", half)[0] == 0
    status, _, err = run(capsys, "train", "--steps", "3", "--resume", half, "--sample-every", "0", "--no-progress")
    assert status == 0, err
    a, b = load_checkpoint(whole), load_checkpoint(half)
    assert a.step == b.step == 6 and b.vocab.tokens == a.vocab.tokens
    assert np.array_equal(a.model.flat_params, b.model.flat_params)
    for flag, value in (("--tokens", "chars"), ("--max-vocab", "5"), ("--embedding", "16")):
        status, _, err = run(capsys, "train", "--steps", "1", "--resume", half, flag, value)
        assert status == 2 and f"{flag} {value} contradicts the checkpoint" in err, err
    # A text whose word vocabulary differs is not the one the model was trained on.
    other = tmp_path / "other.txt"
    other.write_text(STORY.replace("cat", "bird"))
    status, _, err = run(capsys, "train", other, "--steps", "1", "--resume", half)
    assert status == 2 and "another vocabulary" in err


# ---- hostile checkpoints -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def word_checkpoint(tmp_path_factory):
    vocab = WordVocabulary.from_text("the cat sat on the mat .\n")
    trainer = make_trainer(vocab=vocab, embedding=3, hidden_size=4, seed=0, mode="stream")
    path = save_checkpoint(trainer, tmp_path_factory.mktemp("words") / "w.ckpt")
    return read_checkpoint(path)


def rewrite(path, meta, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    return path


@pytest.mark.parametrize("change, match", [
    (dict(tokens="sentences"), "tokens should be 'chars' or 'words'"),
    (dict(tokens=7), "tokens should be"),
    (dict(vocab="the cat"), "vocab .of a word model. should be a list"),
    (dict(vocab=None), "should be a list"),
    (dict(vocab={"a": 1}), "should be a list"),
    (dict(vocab=[UNK, "\n", "the", "cat", "sat", "on", "mat", 5]), r"vocab\[7\] should be one token"),
    (dict(vocab=[UNK, "\n", "the", "cat", "sat", "on", "mat", ""]), r"vocab\[7\] should be one token"),
    (dict(vocab=[UNK, "\n", "the", "cat", "sat", "on", "mat", "two words"]), r"vocab\[7\]"),
    (dict(vocab=[UNK, "\n", "the", "cat", "sat", "on", "mat", "x" * 101]), r"vocab\[7\]"),
    (dict(vocab=[UNK, "\n", "the", "cat", "sat", "on", "the", "."]), "lists a token twice"),
    (dict(vocab=["a", "\n", "the", "cat", "sat", "on", "mat", "."]), "should hold '<unk>'"),
    (dict(vocab=[UNK, "\n", "the"]), r"config.vocab_size \(8\) tokens"),
    (dict(vocab=["w"] * (MAX_WORD_VOCAB + 1)), "at most 1048576"),
])
def test_hostile_word_vocabularies_are_checkpoint_errors(word_checkpoint, tmp_path, change, match):
    meta, arrays = word_checkpoint
    assert meta["tokens"] == "words" and len(meta["vocab"]) == 8  # the fixture the cases edit
    path = rewrite(tmp_path / "bad.ckpt", {**meta, **change}, {f"{k}": v for k, v in arrays.items()})
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_a_word_checkpoint_loads_back_and_a_max_vocab_field_is_checked(word_checkpoint, tmp_path):
    meta, arrays = word_checkpoint
    trainer = load_checkpoint(rewrite(tmp_path / "good.ckpt", meta, dict(arrays)))
    assert trainer.vocab.tokens == meta["vocab"] and trainer.generate("the cat", 4, seed=0).count(" ") >= 2
    bad = dict(meta, config=dict(meta["config"], max_vocab="lots"))
    with pytest.raises(CheckpointError, match="config.max_vocab should be an integer"):
        load_checkpoint(rewrite(tmp_path / "bad.ckpt", bad, dict(arrays)))
