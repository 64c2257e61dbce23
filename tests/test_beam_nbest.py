"""Beam search's n best distinct continuations (issue 12, item 7), against exhaustive enumeration."""
import itertools

import numpy as np
import pytest

import numbarnn
import numbarnn.data


def _log_prob(trainer, prime, seq):
    """Sum of log-softmax scores of ``seq`` after ``prime``, by running the model step by step."""
    model = trainer.model
    logits, state = model.forward(np.array(prime)[:, None])
    total = 0.0
    for idx in seq:
        last = logits[-1, 0].astype(np.float64)
        logp = last - last.max()
        logp -= np.log(np.exp(logp).sum())
        total += logp[idx]
        logits, state = model.forward(np.array([[idx]]), state)
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_n_best_equals_the_n_best_of_every_sequence(seed):
    V, L = 3, 3
    trainer = numbarnn.make_trainer("lstm", vocab_size=V, hidden_size=4, dtype="float64", seed=seed)
    scores = {seq: _log_prob(trainer, [0], seq) for seq in itertools.product(range(V), repeat=L)}
    expected = sorted(scores, key=lambda s: -scores[s])[:4]
    best = trainer.generate(prime=[0], length=L, beam_width=V ** L, n_best=4)  # a beam wide enough to be exact
    assert [tuple(s) for s in best] == expected
    assert len(set(map(tuple, best))) == 4


def test_n_best_with_text_and_its_errors():
    vocab = numbarnn.data.Vocabulary.from_text("ab\n")
    trainer = numbarnn.make_trainer("rnn", vocab=vocab, hidden_size=4, seed=0, mode="names")
    best = trainer.generate("a", length=4, beam_width=5, n_best=3)
    assert len(best) == 3 and len(set(best)) == 3 and all(isinstance(s, str) for s in best)
    with pytest.raises(ValueError, match="n_best needs beam search"):
        trainer.generate("a", length=4, n_best=2)
    with pytest.raises(ValueError, match=r"n_best must be an integer from 1 to beam_width \(2\), got 3"):
        trainer.generate("a", length=4, beam_width=2, n_best=3)
