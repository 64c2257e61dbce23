"""fit's non-finite guard on the device: weights that overflow are put back together with the
optimizer's state (its moments and step count), as on the CPU (tests/test_fit_callbacks.py)."""
import numpy as np

import numbarnn
from numbarnn import data as D


def test_weights_that_overflow_put_back_the_optimizers_state_on_the_device(small_blocks):
    small_blocks.update(gemm_tile=(8, 8, 4, 2, 2), step_tile=(2, 4, 4, 1))  # fewer blocks: the simulator is slow
    vocab = D.Vocabulary.from_text("abc\nbca\ncab\n")
    trainer = numbarnn.make_trainer("rnn", optimizer="adam", vocab=vocab, hidden_size=3, dtype="float32", seed=0,
                                    mode="names", device="cuda")
    batches = D.NamesBatches(["abc", "bca", "cab", "acb"], vocab, 2, seed=0)
    trainer.fit(batches, steps=1, progress=False, sample_every=0)
    good_params, good_state = trainer.params_to_host(), trainer.optimizer.state_dict()
    assert good_state["step"] == 1 and np.any(good_state["exp_avg.W_h"])
    trainer.optimizer.lr = 1e39  # the next update overflows float32 weights; loss and gradient are finite
    good_state["lr"] = 1e39
    summary = trainer.fit(batches, steps=2, progress=False, sample_every=0)
    assert summary["stopped"] == "non-finite" and "weights stopped being finite at step 2" in summary["reason"]
    assert trainer.step == 1 and trainer.optimizer.step_count == 1 and trainer.params_finite()
    for name, value in trainer.params_to_host().items():
        np.testing.assert_array_equal(value, good_params[name])
    state = trainer.optimizer.state_dict()
    assert state.keys() == good_state.keys()
    for key in state:
        np.testing.assert_array_equal(state[key], good_state[key], err_msg=key)


def test_the_guards_snapshots_reuse_their_device_buffers(small_blocks):
    trainer = numbarnn.make_trainer("rnn", optimizer="adam", vocab_size=3, hidden_size=2, dtype="float64", seed=0,
                                    device="cuda")
    params, optimizer = trainer.snapshot_params(), trainer.snapshot_optimizer()
    trainer.train_step(np.array([[0, 1, 2]]), np.array([[1, 2, 0]]))
    assert trainer.snapshot_params(reuse=params) is params  # overwritten, not a new allocation
    np.testing.assert_array_equal(params.copy_to_host(), trainer.model.flat.copy_to_host())
    again = trainer.snapshot_optimizer(reuse=optimizer)
    assert again[0] == 1 and all(again[2][slot] is optimizer[2][slot] for slot in optimizer[2])
    np.testing.assert_array_equal(again[2]["exp_avg"].copy_to_host(), trainer.optimizer.state["exp_avg"].copy_to_host())
