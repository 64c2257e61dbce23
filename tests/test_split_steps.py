"""The compiled training step split into two halves of the batch that run at once
(``CpuBackend.split_steps``), and the BLAS thread count it holds at one meanwhile."""
import contextlib
import os
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import numbarnn
from numbarnn import cpu_backend
from numbarnn.cpu_backend import SPLIT_MIN_ROWS
from numbarnn.kernels import loops
from numbarnn.sequence_model import one_blas_thread


@pytest.fixture
def two_threads(monkeypatch):
    """Split steps whatever this machine has: on one CPU (no BLAS count to hold, see
    ``one_blas_thread``) the halves take turns, with the same results."""
    monkeypatch.setattr(cpu_backend, "_two_threads", lambda: True)

    @contextlib.contextmanager
    def held():
        with one_blas_thread():
            yield True
    monkeypatch.setattr(cpu_backend, "one_blas_thread", held)


def blas_threads():
    return [library["num_threads"] for library in threadpool_info() if library["user_api"] == "blas"]


def pair(cell, dtype="float64", **options):
    """Two trainers from the same start, the first splitting its steps, the second not."""
    split, whole = (numbarnn.make_trainer(cell, vocab_size=7, hidden_size=5, optimizer="adam", lr=0.05, dtype=dtype,
                                          seed=3, **options) for _ in range(2))
    assert split.backend.compiled_step and whole.backend.compiled_step
    whole.backend.split_steps = False
    return split, whole


def batch(B, T=6, seed=0):
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, 7, size=(B, T)), rng.integers(0, 7, size=(B, T))
    y[0, -2:] = -1  # padding: weight 0, in the first half
    y[-1, :3] = -1  # and in the second
    x[y < 0] = -1
    return x, y, (y >= 0).astype(float)


@pytest.mark.parametrize("cell,B", [("lstm", 31), ("gru", SPLIT_MIN_ROWS), ("layernorm_lstm", 20), ("indrnn", 17)])
def test_a_split_step_equals_the_whole_step_to_rounding(two_threads, cell, B):
    """Losses, weights (all gradients summed over the halves, the cell's own parameters
    included) and the carried state (the halves' final states in batch order) against one
    call over the whole batch, over steps that carry the state on."""
    split, whole = pair(cell)
    x, y, mask = batch(B)
    for trainer in (split, whole):
        state = trainer.model.zero_state(B)
        trainer.losses = []
        for step in range(3):
            trainer.losses.append(trainer.train_step(x, y, mask=mask, state=state))
            state = trainer.state
    assert split.backend._second_half is not None and whole.backend._second_half is None  # it did split
    np.testing.assert_allclose(split.losses, whole.losses, rtol=1e-12)
    np.testing.assert_allclose(split.model.flat_params, whole.model.flat_params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(split.state), np.asarray(whole.state), rtol=1e-10, atol=1e-12)


def test_a_split_step_with_an_embedding_sums_the_folded_input_gradients(two_threads):
    split, whole = pair("lstm", embedding=3)
    x, y, mask = batch(SPLIT_MIN_ROWS + 1, seed=1)
    for _ in range(3):
        assert split.train_step(x, y, mask=mask) == pytest.approx(whole.train_step(x, y, mask=mask), rel=1e-12)
    for name in ("W_emb", "W_x", "W_h"):
        np.testing.assert_allclose(split.model.params[name], whole.model.params[name], rtol=1e-10, atol=1e-12)


def test_a_split_float32_step_trains_as_the_whole_one(two_threads):
    split, whole = pair("lstm", dtype="float32")
    x, y, mask = batch(32, T=12, seed=2)
    for _ in range(5):
        assert split.train_step(x, y, mask=mask) == pytest.approx(whole.train_step(x, y, mask=mask), rel=1e-5)
    np.testing.assert_allclose(split.model.flat_params, whole.model.flat_params, rtol=1e-4, atol=1e-5)


def test_small_batches_and_the_switch_keep_the_step_whole(two_threads):
    trainer = numbarnn.make_trainer("lstm", vocab_size=7, hidden_size=5, seed=0)
    assert trainer.backend._split_pool(SPLIT_MIN_ROWS - 1) is None
    assert trainer.backend._split_pool(SPLIT_MIN_ROWS) is not None
    trainer.backend.split_steps = False
    assert trainer.backend._split_pool(64) is None


def test_one_numba_thread_keeps_the_step_whole(monkeypatch):
    monkeypatch.setattr(cpu_backend.numba, "get_num_threads", lambda: 1)  # what numbarnn.set_threads(1) leaves
    assert not cpu_backend._two_threads()
    assert numbarnn.make_trainer("lstm", vocab_size=7, hidden_size=5, seed=0).backend._split_pool(64) is None


def test_a_failing_half_raises_after_both_halves_ended_and_puts_blas_back(two_threads, monkeypatch):
    trainer = numbarnn.make_trainer("rnn", vocab_size=7, hidden_size=5, seed=0)
    before = blas_threads()
    first_done = threading.Event()
    rows_step = trainer.backend._rows_step

    def failing(half, *args):
        run = rows_step(half, *args)

        def checked():
            if half == 1:
                raise RuntimeError("second half failed")
            result = run()
            first_done.set()
            return result
        return checked

    monkeypatch.setattr(trainer.backend, "_rows_step", failing)
    x, y, mask = batch(SPLIT_MIN_ROWS)
    with pytest.raises(RuntimeError, match="second half failed"):
        trainer.train_step(x, y, mask=mask)
    assert first_done.is_set() and blas_threads() == before


def test_one_blas_thread_holds_one_block_at_a_time_and_puts_the_counts_back():
    """Inside a block that says so every library runs one thread; a second thread's block
    waits for the first to end; after each block the counts are what they were."""
    before = blas_threads()
    entered, seen = threading.Event(), []

    def other_holder():
        with one_blas_thread() as single:
            seen.append((single, blas_threads()))
            entered.set()

    with one_blas_thread() as single:
        if single:
            assert set(blas_threads()) == {1}
        else:  # one CPU, no threadpoolctl answer, or a library that ignored the call
            assert blas_threads() == before
        worker = threading.Thread(target=other_holder)
        worker.start()
        assert not entered.wait(0.3)  # it waits for this block to end
    assert entered.wait(10)
    worker.join(10)
    assert blas_threads() == before
    other_single, inside = seen[0]
    assert set(inside) == {1} if other_single else inside == before
    if len(os.sched_getaffinity(0)) >= 2 and before:
        assert single  # from this (the main) thread the call takes effect


def test_only_halves_whose_products_take_the_tiled_product_split(two_threads):
    """Where a half's per-step products would go to BLAS (W_h beyond 4 MiB, or more rows
    than the tiled product takes), two halves each packing W_h on one thread lost to one
    2-thread call: the step stays whole. A cell without W_h has no products to lose."""
    def pool(cell, H, B, dtype="float32"):
        return numbarnn.make_trainer(cell, vocab_size=7, hidden_size=H, dtype=dtype, seed=0).backend._split_pool(B)
    rows = loops.TILED_MAX_ROW_BYTES // 4  # float32 rows the tiled product takes: 32, with AVX-512 64
    assert pool("lstm", 128, 2 * rows) is not None        # halves of 32 (64) rows, W_h 256 KiB
    assert pool("lstm", 128, 2 * rows + 2) is None        # halves of 33 (65) rows
    assert pool("lstm", 512, 32) is not None      # W_h 4 MiB
    assert pool("lstm", 520, 32) is None          # W_h 4.1 MiB
    assert pool("lstm", 64, rows, "float64") is not None          # halves of 16 (32) float64 rows
    assert pool("lstm", 64, rows + 2, "float64") is None
    assert pool("indrnn", 512, 200) is not None
