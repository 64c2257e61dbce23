"""A cell is checked against its kernels before any compiled loop runs them (numbarnn.cellcheck).

The hostile specs below crashed the process before the check existed (LSTM kernels with
gates=2: abort in free(); cache_width=0: segfault) or trained on uninitialised gradient
rows (gates=8). Here they must raise CellCheckError at model construction, in-process.
"""
import dataclasses

import numpy as np
import pytest
from numba import njit

import numbarnn
from numbarnn import cellcheck, plugins
from numbarnn.cellcheck import CellCheckError, check_cell
from numbarnn.cells import LSTM, RNN
from numbarnn.hookspecs import hookimpl
from numbarnn.kernels.cells import rnn_backward, rnn_forward
from numbarnn.registry import RegistryError
from numbarnn.trainer import NonFiniteLossError


@pytest.fixture(autouse=True)
def fresh_checks(monkeypatch):
    """Every test checks its cells for real (nothing remembered from earlier tests)."""
    monkeypatch.setattr(cellcheck, "_checked", set())


def variant(base, **changes):
    return dataclasses.replace(base, name=changes.pop("name", f"hostile_{base.name}"), **changes)


# ---- hostile kernels (module level, no disk cache) ---------------------------------------------

@njit
def forward_four_arguments(xz_t, hz_t, states, t):
    states[0, t + 1, 0, 0] = xz_t[0, 0]


@njit
def forward_typo(xz_t, hz_t, states, t, cache_t):
    states[0, t + 1, 0, 0] = xz_t.no_such_attribute


@njit
def forward_raises(xz_t, hz_t, states, t, cache_t):
    raise ValueError("kernel says no")


@njit
def forward_writes_its_input(xz_t, hz_t, states, t, cache_t):
    rnn_forward(xz_t, hz_t, states, t, cache_t)
    xz_t[0, 0] = 0.0


@njit
def forward_writes_the_previous_state(xz_t, hz_t, states, t, cache_t):
    rnn_forward(xz_t, hz_t, states, t, cache_t)
    states[0, t, 0, 0] = 0.0


@njit
def backward_forgets_dstate_prev(dstate, states, t, cache_t, dxz_t, dhz_t, dstate_prev):
    B, H = states.shape[2], states.shape[3]
    for b in range(B):
        for j in range(H):
            h = states[0, t + 1, b, j]
            dxz_t[b, j] = dstate[0, b, j] * (1.0 - h * h)
            dhz_t[b, j] = dxz_t[b, j]


@njit("void(float64[:, ::1], float64[:, ::1], float64[:, :, :, ::1], int64, float64[:, ::1])")
def forward_float64_only(xz_t, hz_t, states, t, cache_t):
    rnn_forward(xz_t, hz_t, states, t, cache_t)


def plain_python_forward(xz_t, hz_t, states, t, cache_t):
    states[:, t + 1] = np.tanh(xz_t + hz_t)


# ---- every registered cell passes ------------------------------------------------------------

@pytest.mark.parametrize("name", numbarnn.list_cells())
def test_every_registered_cell_passes_the_dry_run_in_both_dtypes(name):
    cell = numbarnn.get_cell(name)
    for dtype in cellcheck.DTYPES:
        assert cellcheck._dry_run(cell, dtype) is None
    check_cell(cell)


def test_a_cell_is_checked_once_per_process(monkeypatch):
    runs = []
    dry_run = cellcheck._dry_run
    monkeypatch.setattr(cellcheck, "_dry_run", lambda cell, dtype: runs.append(dtype) or dry_run(cell, dtype))
    for _ in range(3):
        check_cell(RNN)
        numbarnn.RecurrentModel(RNN, 2, 3)
    assert runs == list(cellcheck.DTYPES)


# ---- the specs that crashed the process --------------------------------------------------------

@pytest.mark.parametrize("changes, problem", [
    ({"gates": 2}, r"lstm_forward wrote NaN or inf into states\[:, t\+1\] from finite inputs: it reads outside"),
    ({"cache_width": 0}, r"lstm_forward wrote outside cache_t, its \(B, C\*H\) = \(2, 0\) array "
                         r"\(cache_width=0 may be less than the kernel uses\)"),
    ({"gates": 8}, r"lstm_backward left gate blocks 4-7 of dxz_t unwritten \(all 8 must be written"),
], ids=["gates=2", "cache_width=0", "gates=8"])
def test_lstm_kernels_with_a_contradicting_spec_are_refused_before_any_loop_runs(changes, problem):
    cell = variant(LSTM, **changes)
    with pytest.raises(CellCheckError, match=r"^cell 'hostile_lstm' \(not registered\) contradicts its kernels: "
                                             r"the .*" + problem) as caught:
        numbarnn.make_trainer(cell, vocab_size=7, hidden_size=16, seed=0, dtype="float64")
    error = caught.value
    assert "\n" not in str(error) and "float64 dry run" in str(error)
    assert (error.cell, error.plugin, error.distribution) == ("hostile_lstm", None, None)
    assert isinstance(error, RegistryError) and isinstance(error, ValueError)
    with pytest.raises(CellCheckError):  # the layer alone, too
        numbarnn.RecurrentModel(cell, 3, 4)


def test_the_error_names_the_plugin_that_registered_the_cell():
    class HostileCells:
        @hookimpl
        def register_cells(self, register):
            register(variant(LSTM, name="lstm_two_gates", gates=2))

    plugins.register_plugin(HostileCells(), name="hostile-cells")
    try:
        with pytest.raises(CellCheckError, match=r"^cell 'lstm_two_gates' \(plugin 'hostile-cells'\) contradicts") as caught:
            numbarnn.make_trainer("lstm_two_gates", vocab_size=7, hidden_size=8, seed=0)
        assert caught.value.plugin == "hostile-cells"
    finally:
        plugins.unregister_plugin("hostile-cells")


def test_a_registered_plugin_cell_is_named_with_its_distribution():
    pytest.importorskip("numbarnn_gru")
    gru = numbarnn.get_cell("gru")
    entry = plugins.get_registry().entry("cell", gru)
    assert cellcheck._origin(gru) == (entry.plugin, " ".join(filter(None, (entry.distribution, entry.version))))


# ---- other mismatches, each in one line --------------------------------------------------------

@pytest.mark.parametrize("changes, problem", [
    ({"forward": forward_four_arguments},
     r"the forward kernel (tests\.)?test_cellcheck\.forward_four_arguments takes 4 arguments \(xz_t, hz_t, states, t\); "
     r"a forward kernel takes 5: \(xz_t, hz_t, states, t, cache_t\)$"),
    ({"forward": forward_typo},
     r"forward_typo does not compile for the loops' arguments: Unknown attribute 'no_such_attribute' of type "
     r"array\(float64, 2d, C\) \(test_cellcheck\.py, line \d+\) \[float64 dry run"),
    ({"forward": forward_raises}, r"forward_raises raised ValueError: kernel says no \[float64 dry run"),
    ({"forward": plain_python_forward}, r"plain_python_forward is not an @njit function \(got function\)"),
    ({"forward": forward_writes_its_input}, r"forward_writes_its_input wrote into xz_t, which it may only read"),
    ({"forward": forward_writes_the_previous_state},
     r"forward_writes_the_previous_state wrote into states\[:, s\] for s != t\+1, which it may only read"),
    ({"backward": backward_forgets_dstate_prev},
     r"backward_forgets_dstate_prev left state 0 of dstate_prev unwritten"),
    ({"forward": forward_float64_only},
     r"forward_float64_only does not accept the loops' arguments .*: No matching definition .*float32.* "
     r"\[float32 dry run"),
    ({"states": 2, "state_names": ("h", "c")},
     r"rnn_forward left states\[1, t\+1\] \('c'\) unwritten \(every one of the 2 states must be written"),
    ({"forward": LSTM.forward}, r"lstm_forward wrote outside states, its \(S, T\+1, B, H\) = \(1, 4, 2, 3\) array "
                                r"\(states=1 may be less than the kernel uses\)"),
], ids=["four-arguments", "typing-error", "raises", "not-njit", "writes-input", "writes-previous-state",
        "forgets-dstate_prev", "float64-only", "states=2", "lstm-forward-rnn-spec"])
def test_each_mismatch_is_one_clear_line(changes, problem):
    cell = variant(RNN, **changes)
    with pytest.raises(CellCheckError, match=r"^cell 'hostile_rnn' \(not registered\) contradicts its kernels: "
                                             r".*" + problem) as caught:
        numbarnn.RecurrentModel(cell, 3, 4)
    assert "\n" not in str(caught.value)


def test_a_spec_that_only_wastes_cache_is_accepted():
    check_cell(variant(LSTM, cache_width=6))  # the loops allocate a block the kernels never touch


# ---- the NaN guard names the cell ------------------------------------------------------------------

def test_the_nan_guard_names_the_cell():
    trainer = numbarnn.make_trainer("rnn", vocab_size=5, hidden_size=4, seed=0, dtype="float64")
    trainer.model.flat_params[0] = np.nan
    x = np.array([[0, 1, 2, 3]])
    with pytest.raises(NonFiniteLossError, match=r"the loss is nan .* at step 1 \(cell 'rnn'\)$"):
        trainer.train_step(x, x)


def test_fit_reports_weights_that_stopped_being_finite_with_the_cell(monkeypatch):
    from numbarnn.data import NamesBatches, Vocabulary

    trainer = numbarnn.make_trainer("lstm", vocab=Vocabulary.from_text("ab\n"), hidden_size=4, seed=0,
                                    mode="names", dtype="float64")
    # A finite step whose update leaves a weight infinite: the guard after the update speaks.
    monkeypatch.setattr(trainer, "params_finite", lambda: False)
    batches = NamesBatches(["ab", "ba"], trainer.vocab, batch_size=2, seed=0)
    summary = trainer.fit(batches, steps=1, progress=False, print_fn=lambda *a: None)
    assert summary["stopped"] == "non-finite"
    assert "the weights stopped being finite at step 1 (cell 'lstm')" in summary["reason"]


def test_the_command_line_prints_the_error_in_one_line_and_exits_2(tmp_path, monkeypatch, capsys):
    from numbarnn import cli

    class HostileCells:
        @hookimpl
        def register_cells(self, register):
            register(variant(LSTM, name="lstm_eight_gates", gates=8))

    monkeypatch.chdir(tmp_path)
    plugins.register_plugin(HostileCells(), name="hostile-cli-cells")
    try:
        status = cli.main(["train", "--cell", "lstm_eight_gates", "--steps", "1", "--no-progress"])
    finally:
        plugins.unregister_plugin("hostile-cli-cells")
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 2
    assert error.startswith("numbarnn train: error: cell 'lstm_eight_gates' (plugin 'hostile-cli-cells') "
                            "contradicts its kernels: the backward kernel")
    assert list(tmp_path.iterdir()) == []  # refused before anything was trained or saved
