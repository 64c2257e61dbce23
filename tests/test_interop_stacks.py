"""from_torch / to_torch for stacked and bidirectional modules and whole models (nn.Embedding +
recurrent module + nn.Linear): the same weights, and the same outputs, final states and
logits as PyTorch in float64 (<= 1e-10)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import numbarnn  # noqa: E402
from numbarnn.interop import TorchStack, from_torch, to_torch  # noqa: E402

MODULES = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
CELLS = [name for name in MODULES if name in numbarnn.list_cells()]
TOL = dict(rtol=1e-10, atol=1e-12)


def module(cell, X=3, H=4, layers=2, bidirectional=True, batch_first=False, seed=0):
    torch.manual_seed(seed)
    return MODULES[cell](X, H, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first,
                         dtype=torch.float64)


def t(array):
    return torch.from_numpy(np.ascontiguousarray(array))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_a_stacked_module_gives_torch_outputs_and_final_states(cell, bidirectional, batch_first):
    rnn = module(cell, layers=3, bidirectional=bidirectional, batch_first=batch_first)
    model = from_torch(rnn)
    assert type(model).__name__ == "SequenceModel" and len(model.stack) == 3 and model.bidirectional == bidirectional
    x = np.random.default_rng(1).normal(size=(5, 2, 3))  # (T, B, X): numbarnn is time-major
    outputs, state = model.forward(x)
    with torch.no_grad():
        t_out, t_state = rnn(t(np.swapaxes(x, 0, 1) if batch_first else x))
    t_out = t_out.numpy()
    np.testing.assert_allclose(outputs, np.swapaxes(t_out, 0, 1) if batch_first else t_out, **TOL)
    t_state = t_state if isinstance(t_state, tuple) else (t_state,)
    for ours, theirs in zip(model.stacked_state(state), t_state):
        np.testing.assert_allclose(ours, theirs.numpy(), **TOL)


@pytest.mark.parametrize("cell", CELLS)
def test_a_language_model_with_embedding_and_head_gives_torch_logits(cell):
    rnn = module(cell, X=5, layers=2, bidirectional=False)
    embedding, head = torch.nn.Embedding(7, 5, dtype=torch.float64), torch.nn.Linear(4, 7, dtype=torch.float64)
    model = from_torch(rnn, embedding=embedding, head=head)
    assert model.task == "lm" and list(model.params)[0] == "W_emb"
    x = np.random.default_rng(2).integers(0, 7, size=(6, 3))  # (T, B) indices
    logits, _ = model.forward(x)
    with torch.no_grad():
        t_logits = head(rnn(embedding(t(x)))[0]).numpy()
    np.testing.assert_allclose(logits, t_logits, **TOL)


@pytest.mark.parametrize("cell", CELLS)
def test_a_bidirectional_classifier_reads_h_n_as_torch(cell):
    rnn = module(cell, layers=2, bidirectional=True)
    head = torch.nn.Linear(8, 3, dtype=torch.float64)
    model = from_torch(rnn, head=head, task="classify")
    x = np.random.default_rng(3).normal(size=(4, 2, 3))
    logits, _ = model.forward(x)
    with torch.no_grad():
        _, h_n = rnn(t(x))
        h_n = h_n[0] if isinstance(h_n, tuple) else h_n
        t_logits = head(torch.cat([h_n[-2], h_n[-1]], dim=1)).numpy()  # the last layer's two directions
    np.testing.assert_allclose(logits, t_logits, **TOL)


@pytest.mark.parametrize("cell", CELLS)
def test_round_trip_keeps_every_weight(cell):
    model = numbarnn.make_model(cell, vocab_size=9, embedding=5, hidden_size=4, layers=2, task="classify",
                                num_classes=3, bidirectional=True, dtype="float64", seed=0)
    stack = to_torch(model)
    assert isinstance(stack, TorchStack) and stack.rnn.num_layers == 2 and stack.rnn.bidirectional
    back = from_torch(stack.rnn, embedding=stack.embedding, head=stack.head, task="classify")
    assert list(back.params) == list(model.params)
    for name, value in model.params.items():
        np.testing.assert_array_equal(back.params[name], value, err_msg=name)
    assert to_torch(numbarnn.make_model(cell, input_size=3, hidden_size=4, layers=2, dtype="float64",
                                        seed=0)).num_layers == 2  # no embedding, no head: the module alone


def test_mismatched_parts_are_clear_errors():
    rnn = module("lstm", X=5, layers=2, bidirectional=True)
    with pytest.raises(ValueError, match="embedding's width 4 is not the module's input_size 5"):
        from_torch(rnn, embedding=torch.nn.Embedding(7, 4))
    with pytest.raises(ValueError, match="head takes 4 features but the module gives 8"):
        from_torch(rnn, head=torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match="head must be a torch.nn.Linear"):
        from_torch(rnn, head=torch.nn.ReLU())
    with pytest.raises(ValueError, match="cannot be causal"):
        from_torch(rnn, task="lm")
