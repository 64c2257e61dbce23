"""``numbarnn demo``: the course's own character model, run by :mod:`numbarnn.course`.

It checks the LSTM kernels' gradients against central finite differences, then trains the
course's character model (:func:`numbarnn.course.model`) on the shipped dinosaur genus
names and prints what it samples.
"""
from __future__ import annotations

import time

import numpy as np

from . import course
from .data import dinosaur_names
from .cells import LSTM
from .models import RecurrentModel


def gradient_check(seed: int = 0) -> float:
    """Relative error ||BPTT - finite differences|| / ||finite differences|| of the LSTM's dW_h (float64).

    A 4-unit LSTM layer over a random (T=6, B=2, X=3) input; central differences with eps 1e-6.

    >>> gradient_check(seed=0) < 1e-7
    True
    """
    rng = np.random.default_rng(seed)
    model = RecurrentModel(LSTM, 3, 4, seed=seed)
    x, d_out = rng.normal(size=(6, 2, 3)), rng.normal(size=(6, 2, 4))
    model.forward(x)
    analytic = model.backward(d_out)["dW_h"]
    W, eps, numeric = model.params["W_h"], 1e-6, np.empty_like(model.params["W_h"])
    for idx in np.ndindex(W.shape):
        saved = W[idx]
        W[idx] = saved + eps
        plus = np.sum(model.forward(x)[0] * d_out)
        W[idx] = saved - eps
        minus = np.sum(model.forward(x)[0] * d_out)
        W[idx] = saved
        numeric[idx] = (plus - minus) / (2 * eps)
    return float(np.linalg.norm(analytic - numeric) / np.linalg.norm(numeric))


def loss_per_character(parameters, names, char_to_ix) -> float:
    """Mean cross-entropy per character (the newline that ends each name included) of the
    course's model over ``names``, each name from a zero state as the course trains it.

    >>> names, char_to_ix = ["ab", "ba"], {"\\n": 0, "a": 1, "b": 2}
    >>> parameters = course.initialize_parameters(n_a=4, n_x=3, n_y=3)
    >>> round(loss_per_character(parameters, names, char_to_ix), 3)   # tiny weights: ln 3 = 1.099
    1.099
    """
    n_a = parameters["Waa"].shape[0]
    total, count = 0.0, 0
    for name in names:
        indices = [char_to_ix[c] for c in name]
        X, Y = [None] + indices, indices + [char_to_ix["\n"]]
        loss, _ = course.char_rnn_forward(X, Y, np.zeros((n_a, 1)), parameters)
        total, count = total + loss, count + len(Y)
    return total / count


def run_demo(iterations: int = 6001) -> int:
    """``numbarnn demo``: print the gradient check, train :func:`numbarnn.course.model` for
    ``iterations`` on the shipped dinosaur names, printing its samples; returns 0.

    >>> import contextlib, io
    >>> with contextlib.redirect_stdout(io.StringIO()) as printed:
    ...     status = run_demo(iterations=1)
    >>> status, printed.getvalue().splitlines()[0].startswith("LSTM BPTT vs central finite differences")
    (0, True)
    """
    print(f"LSTM BPTT vs central finite differences: relative error {gradient_check():.1e}")
    names = dinosaur_names()
    chars = sorted(set("\n".join(names)) | {"\n"})
    char_to_ix = {c: i for i, c in enumerate(chars)}
    ix_to_char = dict(enumerate(chars))
    dino_names, uniform = 5, float(np.log(len(chars)))
    mean_length = sum(len(n) + 1 for n in names) / len(names)
    print(f"Training the course's character model on {len(names)} dinosaur names "
          f"({len(chars)} characters), {iterations} iterations.")
    # The course's printed loss rises before it falls; say why, or a newcomer reads it as a bug.
    print(f"The loss printed is the course's: a running average of the loss summed over one name's\n"
          f"characters. It starts from the course's guess, {dino_names} x ln {len(chars)} = "
          f"{dino_names * uniform:.1f}, while an untrained model\nreally scores about "
          f"{mean_length:.1f} characters x {uniform:.2f} = {mean_length * uniform:.1f} per name, "
          f"so it climbs at first, then falls as\nthe model learns. The loss per character, "
          f"printed at the end, starts at ln {len(chars)} = {uniform:.2f}.\n")
    start = time.perf_counter()
    parameters, _ = course.model(names, ix_to_char, char_to_ix, num_iterations=iterations,
                                 vocab_size=len(chars), dino_names=dino_names)
    seconds = time.perf_counter() - start
    print(f"done in {seconds:.1f} s; loss per character over all names: "
          f"{loss_per_character(parameters, names, char_to_ix):.2f} (uniform guessing: {uniform:.2f})")
    return 0
