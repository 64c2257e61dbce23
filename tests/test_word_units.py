"""Messages about a vocabulary's size and a sample's length speak its unit: characters for a
character model, words (tokens) for a word model (``--tokens words``)."""
from __future__ import annotations

import pytest

from numbarnn import cli
from numbarnn.checkpoint import save_checkpoint
from numbarnn.data import Vocabulary, WordVocabulary
from numbarnn.trainer import make_trainer

TEXT = "The cat sat on the mat. The dog sat on the cat.\n" * 3


def test_a_vocab_size_that_contradicts_a_word_vocabulary_counts_tokens():
    words = WordVocabulary.from_text(TEXT)
    with pytest.raises(ValueError, match=rf"^vocab_size=3 but the vocabulary has {len(words)} tokens$"):
        make_trainer(vocab=words, vocab_size=3)
    chars = Vocabulary.from_text(TEXT)
    with pytest.raises(ValueError, match=rf"^vocab_size=3 but the vocabulary has {len(chars)} characters$"):
        make_trainer(vocab=chars, vocab_size=3)


def refused_sample(capsys, path, *argv):
    status = cli.main(["sample", str(path), *argv])
    out, err = capsys.readouterr()
    assert status == 2 and not out and "Traceback" not in err, err
    return err.splitlines()[-1]


@pytest.mark.parametrize("vocab, unit", [(WordVocabulary.from_text(TEXT), "words"),
                                         (Vocabulary.from_text(TEXT), "characters")])
def test_sampling_too_long_for_memory_names_the_length_in_the_models_unit(capsys, monkeypatch, tmp_path, vocab, unit):
    path = save_checkpoint(make_trainer(vocab=vocab, hidden_size=4, seed=0, mode="stream"), tmp_path / "m.ckpt")
    monkeypatch.setattr(cli, "_available_memory", lambda: 2 * 2**30)
    line = refused_sample(capsys, path, "--length", "1000000000", "--n", "3")
    assert f"--n 3 samples of --length 1000000000 {unit} need about" in line, line
    assert "2.0 GiB of memory available; lower --length" in line, line


def test_a_word_models_estimate_counts_the_characters_of_its_words(capsys, monkeypatch, tmp_path):
    needed = {}
    for vocab in (Vocabulary.from_text(TEXT), WordVocabulary.from_text(TEXT)):
        path = save_checkpoint(make_trainer(vocab=vocab, hidden_size=4, seed=0, mode="stream"),
                               tmp_path / f"{vocab.kind}.ckpt")
        monkeypatch.setattr(cli, "_memory_problem", lambda what, n, kind=vocab.kind: needed.update({kind: n}) or "no")
        refused_sample(capsys, path, "--length", "1000", "--n", "3")
    # 24 bytes a token for the draw, and the text of the beam and 3 samples at 4 bytes a
    # character: one a token for characters, 3.7 for these words (2.7 on average, and a space).
    assert needed["chars"] == 1000 * (24 + 4 * 4)
    assert needed["words"] == int(1000 * (24 + 4 * 3.7 * 4)), needed
