"""Text data: the shipped corpora, vocabularies and batches for the two training modes.

* **names** mode: one sequence per line, the course's ``X = [start] + chars`` and
  ``Y = chars + [newline]`` (the start token is an all-zero input, index ``-1``), many
  names per batch, padded, with a mask so padding counts for nothing.
* **stream** mode: one long text cut into ``batch`` parallel streams (char-rnn style),
  consumed in ``seq_length`` chunks with the hidden state carried from chunk to chunk.

Both batchers keep their position and random state in a ``state_dict`` of plain numbers,
so a checkpoint resumes exactly where training stopped.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

NEWLINE = "\n"
START = -1  # the all-zero input that starts every name (the course's None)

SHIPPED = {
    "dinosaurs": "the shipped dinosaur genus names (names mode)",
    "pydoc": "the Python standard library's pydoc topics text, present on every CPython (stream mode)",
}


class DataError(ValueError):
    """Bad training data: missing, empty, binary or not UTF-8, or characters outside a vocabulary."""


# ---- loading -----------------------------------------------------------------------------------

def read_text(path) -> str:
    """A user's UTF-8 text file, with a clear error for a missing, empty, binary or non-UTF-8 file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a text file")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: the file is empty")
    if b"\x00" in raw:
        raise DataError(f"{path}: looks like a binary file (it contains NUL bytes), not UTF-8 text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text (invalid byte at offset {error.start}); convert it "
                        "with e.g. `iconv -t utf-8`") from None
    return text.replace("\r\n", "\n")


def dinosaur_names() -> list:
    """The shipped dinosaur genus names (lower-case; see the file's header for the source)."""
    text = resources.files("numbarnn").joinpath("data/dinosaurs.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def pydoc_text() -> str:
    """The text of the standard library's ``pydoc_data.topics`` (about 465 kB), in key order."""
    from pydoc_data.topics import topics

    return "\n".join(topics[key] for key in sorted(topics))


def load_corpus(source: Optional[str] = None, mode: Optional[str] = None):
    """``(text, mode)`` for a shipped corpus name (``dinosaurs``, ``pydoc``) or a file path.

    The mode defaults to ``names`` for the dinosaurs and for files whose lines are short
    (median under 40 characters), else ``stream``.
    """
    if source in (None, "dinosaurs"):
        text = "\n".join(dinosaur_names()) + "\n"
        default_mode = "names"
    elif source == "pydoc":
        text, default_mode = pydoc_text(), "stream"
    else:
        text = read_text(source)
        lines = [len(line) for line in text.splitlines() if line.strip()]
        default_mode = "names" if lines and np.median(lines) < 40 else "stream"
    mode = mode or default_mode
    if mode not in ("names", "stream"):
        raise DataError(f"mode must be 'names' or 'stream', got {mode!r}")
    return text, mode


# ---- vocabulary --------------------------------------------------------------------------------

class Vocabulary:
    """Characters <-> indices, sorted, the newline always included (it ends every name).

    >>> vocab = Vocabulary.from_text("ab\\nba\\n")
    >>> vocab.chars, vocab.encode("ab"), vocab.decode([1, 0])
    (['\\n', 'a', 'b'], [1, 2], 'a\\n')
    """

    def __init__(self, chars: Iterable[str]):
        chars = sorted(set(chars) | {NEWLINE})
        if any(len(c) != 1 for c in chars):
            raise DataError("a vocabulary holds single characters")
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "Vocabulary":
        return cls(set(text))

    def __len__(self):
        return len(self.chars)

    @property
    def newline(self) -> int:
        return self.index[NEWLINE]

    def encode(self, text: str, what: str = "text") -> list:
        """Indices of ``text``; a character outside the vocabulary is an error naming it."""
        missing = sorted({c for c in text if c not in self.index})
        if missing:
            shown = ", ".join(repr(c) for c in missing[:10])
            raise DataError(f"{what} has {len(missing)} character(s) outside the vocabulary: {shown}"
                            f" (the vocabulary is {''.join(self.chars)!r})")
        return [self.index[c] for c in text]

    def decode(self, indices: Iterable[int]) -> str:
        return "".join(self.chars[i] for i in indices)


# ---- splitting -----------------------------------------------------------------------------------

def split_names(names: list, validation: float, seed: int):
    """Shuffled train/validation split of a list of names (validation may be 0)."""
    order = np.random.default_rng(seed).permutation(len(names))
    n_val = int(round(len(names) * validation))
    if validation > 0 and len(names) > 1:
        n_val = min(max(n_val, 1), len(names) - 1)
    val = [names[i] for i in order[:n_val]]
    train = [names[i] for i in order[n_val:]]
    return train, val


def split_stream(text: str, validation: float):
    """The last ``validation`` fraction of a text is held out."""
    n_val = int(len(text) * validation)
    return (text[:len(text) - n_val], text[len(text) - n_val:]) if n_val else (text, "")


# ---- batches ------------------------------------------------------------------------------------

def pad_names(encoded: list, newline: int):
    """Padded ``(inputs, targets, mask)`` ``(B, T)`` for encoded names; T = longest + 1.

    inputs = [START] + name, targets = name + [newline]; padding has input -1, target -1
    and mask 0.
    """
    T = max(len(e) for e in encoded) + 1
    B = len(encoded)
    inputs = np.full((B, T), START, dtype=np.int64)
    targets = np.full((B, T), -1, dtype=np.int64)
    mask = np.zeros((B, T))
    for b, e in enumerate(encoded):
        n = len(e)
        inputs[b, 1:n + 1] = e
        targets[b, :n] = e
        targets[b, n] = newline
        mask[b, :n + 1] = 1.0
    return inputs, targets, mask


class NamesBatches:
    """Shuffled batches of padded names; an epoch is one pass over all names.

    ``next_batch()`` returns ``(inputs, targets, mask, carry_state=False)``.
    """

    mode = "names"

    def __init__(self, names: list, vocab: Vocabulary, batch_size: int, seed: int):
        if not names:
            raise DataError("no names to train on")
        self.encoded = [vocab.encode(n, what=f"name {n!r}") for n in names]
        self.newline = vocab.newline
        self.batch_size = max(1, min(batch_size, len(names)))
        self.epoch, self.position = 0, 0
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(self.encoded))

    def next_batch(self):
        if self.position >= len(self.order):
            self.epoch += 1
            self.position = 0
            self.order = self.rng.permutation(len(self.encoded))
        chosen = self.order[self.position:self.position + self.batch_size]
        self.position += len(chosen)
        inputs, targets, mask = pad_names([self.encoded[i] for i in chosen], self.newline)
        return inputs, targets, mask, False

    def steps_per_epoch(self) -> int:
        return -(-len(self.encoded) // self.batch_size)

    def tokens(self, mask) -> int:
        return int(mask.sum())

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "order": self.order.tolist(),
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict):
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.order = np.array(state["order"], dtype=np.int64)
        self.rng.bit_generator.state = state["rng"]


class StreamBatches:
    """``batch`` parallel streams over one text, ``seq_length`` characters a chunk.

    ``next_batch()`` returns ``(inputs, targets, None, carry_state)``: carry_state is False
    at the start of each epoch (the hidden state is reset) and True otherwise.
    """

    mode = "stream"

    def __init__(self, text: str, vocab: Vocabulary, batch_size: int, seq_length: int):
        data = np.array(vocab.encode(text, what="the training text"), dtype=np.int64)
        per_stream = (len(data) - 1) // batch_size
        if per_stream < 2:
            raise DataError(f"the text ({len(data)} characters) is too short for {batch_size} streams")
        self.seq_length = max(1, min(seq_length, per_stream - 1))
        self.inputs = data[:per_stream * batch_size].reshape(batch_size, per_stream)
        self.targets = data[1:per_stream * batch_size + 1].reshape(batch_size, per_stream)
        self.epoch, self.position = 0, 0

    def next_batch(self):
        if self.position + self.seq_length > self.inputs.shape[1]:
            self.epoch += 1
            self.position = 0
        start = self.position
        self.position += self.seq_length
        end = self.position
        return self.inputs[:, start:end], self.targets[:, start:end], None, start > 0

    def steps_per_epoch(self) -> int:
        return self.inputs.shape[1] // self.seq_length

    def tokens(self, mask) -> int:
        return self.inputs.shape[0] * self.seq_length

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict):
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
