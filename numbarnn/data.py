"""Text data: the shipped corpora, vocabularies and batches for the two training modes.

* **names** mode: one sequence per line, the course's ``X = [start] + chars`` and
  ``Y = chars + [newline]`` (the start token is an all-zero input, index ``-1``), many
  names per batch, padded, with a mask so padding counts for nothing.
* **stream** mode: one long text cut into ``batch`` parallel streams (char-rnn style),
  consumed in ``seq_length`` chunks with the hidden state carried from chunk to chunk.

Both batchers keep their position and random state in a ``state_dict`` of plain numbers,
so a checkpoint resumes exactly where training stopped. :class:`ArrayBatches` does the same
for arrays held in memory (the classify and regress tasks).
"""
from __future__ import annotations

import os
import re
import stat
import unicodedata
from collections import Counter
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
    """Bad training data: missing, empty, binary or not UTF-8, or characters outside a vocabulary.

    >>> Vocabulary("ab").encode("abc")
    Traceback (most recent call last):
    ...
    numbarnn.data.DataError: text has 1 character(s) outside the vocabulary: 'c' (the vocabulary is '\\nab')
    """


# ---- loading -----------------------------------------------------------------------------------

MAX_TEXT_BYTES = 256 * 2**20
"""The largest text file :func:`read_text` reads (256 MiB): training holds several copies of
the text (characters, indices, batches), so a bigger file would exhaust memory first."""


def format_bytes(n: float) -> str:
    """A byte count for messages, in the largest binary unit that keeps it at least 1.

    >>> format_bytes(512), format_bytes(3 * 2**30), format_bytes(1.5 * 2**40)
    ('512 bytes', '3.0 GiB', '1.5 TiB')
    """
    for unit in ("PiB", "TiB", "GiB", "MiB", "KiB"):
        scale = 2 ** (10 * ("KMGTP".index(unit[0]) + 1))
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def read_text(path, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """A user's UTF-8 text file as one string (``\\r\\n`` becomes ``\\n``), with a clear
    :class:`DataError` for a missing, empty, binary or non-UTF-8 file, for anything that is
    not a regular file (a directory, ``/dev/zero``, a pipe) and for a file over ``max_bytes``.

    >>> read_text("no/such/file.txt")
    Traceback (most recent call last):
    ...
    numbarnn.data.DataError: no/such/file.txt: no such file
    >>> read_text("/dev/zero")
    Traceback (most recent call last):
    ...
    numbarnn.data.DataError: /dev/zero: not a regular file (a device, pipe or socket); give a text file
    """
    path = Path(path)
    try:
        info = path.stat()  # before opening: opening a pipe would wait for a writer
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise DataError(f"{path}: is a directory, not a text file")
    too_big = DataError(f"{path}: {format_bytes(max(info.st_size, max_bytes + 1))} is more than the "
                        f"{format_bytes(max_bytes)} numbarnn reads as training text; train on a part of it "
                        "(e.g. `head -c 100M`)")
    try:
        # O_NONBLOCK: should the path have become a pipe since the stat, the open does not wait.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise DataError(f"{path}: not a regular file (a device, pipe or socket); give a text file")
            if info.st_size > max_bytes:
                raise too_big
            raw = f.read(max_bytes + 1)  # the cap holds even if the file grows meanwhile
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror})") from None
    if len(raw) > max_bytes:
        raise too_big
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


# Characters shown as escapes when printed: they move the cursor, ring the bell, change the
# terminal's state (ESC sequences) or reorder the text (bidirectional overrides), and lone
# surrogates cannot be encoded at all.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str, keep: str = "\n\t") -> str:
    """``text`` safe to print on a terminal: control characters (except those in ``keep``),
    lone surrogates and bidirectional overrides are shown as Python escapes.

    >>> printable("ok\\x1b[2J\\x07 \\ud800\\n")
    'ok\\\\x1b[2J\\\\x07 \\\\ud800\\n'
    >>> print(printable("tab\\there\\nnew line", keep=""))
    tab\\there\\nnew line
    """
    if text.isprintable():
        return text
    return "".join(c if c in keep or not (unicodedata.category(c) in ("Cc", "Cs") or c in _BIDI_CONTROLS)
                   else repr(c)[1:-1] for c in text)


def dinosaur_names() -> list:
    """The shipped dinosaur genus names, a list of lower-case strings (see the file's header
    for the source).

    >>> names = dinosaur_names()
    >>> len(names), names[0]
    (1523, 'aachenosaurus')
    """
    text = resources.files("numbarnn").joinpath("data/dinosaurs.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def pydoc_text() -> str:
    """The text of the standard library's ``pydoc_data.topics`` (about 465 kB), in key order.

    >>> text = pydoc_text()
    >>> len(text) > 100_000, text[:22]
    (True, 'The "assert" statement')
    """
    from pydoc_data.topics import topics

    return "\n".join(topics[key] for key in sorted(topics))


def load_corpus(source: Optional[str] = None, mode: Optional[str] = None):
    """``(text, mode)`` for a shipped corpus name (``dinosaurs``, ``pydoc``) or a file path.

    The mode defaults to ``names`` for the dinosaurs and for files whose lines are short
    (median under 40 characters), else ``stream``.

    >>> text, mode = load_corpus()
    >>> mode, text[:14]
    ('names', 'aachenosaurus\\n')
    >>> load_corpus("pydoc")[1]
    'stream'
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
        """The vocabulary of every character in ``text`` (plus the newline).

        >>> len(Vocabulary.from_text("hello"))
        5
        """
        return cls(set(text))

    def __len__(self):
        return len(self.chars)

    @property
    def newline(self) -> int:
        """The newline's index (0 unless a character sorts before it)."""
        return self.index[NEWLINE]

    def encode(self, text: str, what: str = "text") -> list:
        """Indices of ``text`` (a list of ints, one per character); a character outside the
        vocabulary is a :class:`DataError` naming it.

        >>> Vocabulary("abc").encode("cab")
        [3, 1, 2]
        """
        missing = sorted({c for c in text if c not in self.index})
        if missing:
            shown = ", ".join(repr(c) for c in missing[:10])
            raise DataError(f"{what} has {len(missing)} character(s) outside the vocabulary: {shown}"
                            f" (the vocabulary is {''.join(self.chars)!r})")
        return [self.index[c] for c in text]

    def decode(self, indices: Iterable[int]) -> str:
        """The text of a sequence of indices.

        >>> Vocabulary("abc").decode([3, 1, 2, 0])
        'cab\\n'
        """
        return "".join(self.chars[i] for i in indices)

    kind = "chars"
    """What a token is: ``"chars"`` here, ``"words"`` for :class:`WordVocabulary`."""

    @property
    def tokens(self) -> list:
        """The tokens in index order (here the characters), as :attr:`WordVocabulary.tokens`."""
        return self.chars

    def join(self, prime: str, text: str) -> str:
        """``text`` generated after ``prime``, written after it: characters simply follow.

        >>> Vocabulary("abc").join("ab", "ca")
        'abca'
        """
        return prime + text


# ---- word vocabulary -------------------------------------------------------------------------------

UNK = "<unk>"
"""The word that stands for every word outside a :class:`WordVocabulary`."""
MAX_WORD_VOCAB = 2**20
"""The most tokens a :class:`WordVocabulary` holds (and a checkpoint may claim)."""
MAX_WORD_CHARS = 100
"""The longest token a :class:`WordVocabulary` keeps; longer ones are always ``<unk>``."""

# One token each, tried in this order: <unk> itself, a newline, a number with inner
# separators (3.14, 1,000, 10:30), an abbreviation (U.S., e.g.), a word with inner
# apostrophes or hyphens (don't, well-known), a run of dots or hyphens (..., --), and any
# other character that is neither a word character nor white space (one token each).
_TOKEN = re.compile(r"<unk>|\n|\d+(?:[.,:]\d+)+|(?:[^\W\d_]\.){2,}|\w+(?:['\u2019-]\w+)*|\.{2,}|-{2,}|[^\w\s]")
_CLOSING = set(".,;:!?)]}%\u2026\u201d\u2019\u00bb")  # no space before these (nor before "..." and the like)
_OPENING = set("([{\u201c\u2018\u00ab\u00bf\u00a1$\u00a3\u20ac#@")  # no space after these
_QUOTES = ("\"", "'")  # straight quotes: opening and closing alternate within a line


def tokenize(text: str) -> list:
    """Words, punctuation and newlines of ``text`` as a list of strings (see :data:`_TOKEN`):
    white space other than the newline only separates tokens, and the text is put in NFC
    first (so an accent typed as a combining mark stays with its letter).

    >>> tokenize("\\"Don't,\\" she said -- it's 3.14 (U.S.)...\\nYes!")
    ['"', "Don't", ',', '"', 'she', 'said', '--', "it's", '3.14', '(', 'U.S.', ')', '...', '\\n', 'Yes', '!']
    """
    return list(_tokens(text))


def _tokens(text: str):
    """:func:`tokenize` one token at a time (a long text's tokens are never all held at once)."""
    return (match.group() for match in _TOKEN.finditer(unicodedata.normalize("NFC", text)))


def detokenize(tokens: Iterable[str]) -> str:
    """Tokens joined into text: a space between two tokens, except

    * around a newline (lines keep no leading or trailing space);
    * before closing punctuation (``. , ; : ! ? ) ] } %`` and ``…`` ``”`` ``’`` ``»``, and
      runs such as ``...``);
    * after an opening bracket, quote or sign (``( [ {`` ``“`` ``‘`` ``«`` ``¿`` ``¡`` ``$``
      ``£`` ``€`` ``#`` ``@``);
    * for straight quotes ``"`` and ``'``, which open and close in turn within a line: an
      opening one gets no space after it, a closing one none before it.

    So ``detokenize(tokenize(text)) == text`` for text written with single spaces in these
    conventions; other spacing (tabs, double spaces, indentation) comes back as single
    spaces, and a lone apostrophe after a word (the dogs' bones) is read as a quote.

    >>> detokenize(['"', 'Hi', ',', '"', 'she', 'said', '(', 'twice', ')', '.', '\\n', 'Cost', ':', '$', '5'])
    '"Hi," she said (twice).\\nCost: $5'
    """
    out, previous, open_quote = [], None, {}
    for token in tokens:
        if token == NEWLINE:
            out.append(NEWLINE)
            previous, open_quote = None, {}  # a new line: no space, quotes start over
            continue
        if token in _QUOTES:
            open_quote[token] = not open_quote.get(token, False)
            role = "open" if open_quote[token] else "close"
        else:
            role = "close" if token[0] in _CLOSING else "open" if token in _OPENING else "word"
        if previous is not None and role != "close" and previous != "open":
            out.append(" ")
        out.append(token)
        previous = role
    return "".join(out)


class WordVocabulary:
    """Words <-> indices for word-level models: the same interface as :class:`Vocabulary`
    (``encode``, ``decode``, ``len``, ``newline``, ``tokens``, ``join``), over the tokens of
    :func:`tokenize`. It always holds ``<unk>``, which stands for every word outside it, and
    the newline (stream mode keeps the text's lines). ``tokens`` is the list in index order.

    >>> vocab = WordVocabulary.from_text("The cat sat. The dog sat.\\n")
    >>> vocab.tokens
    ['<unk>', '\\n', '.', 'The', 'sat', 'cat', 'dog']
    >>> vocab.encode("The bird sat."), vocab.decode([3, 5, 4, 2, 1])
    ([3, 0, 4, 2], 'The cat sat.\\n')
    """

    kind = "words"

    def __init__(self, tokens: Iterable[str]):
        tokens = list(tokens)
        if len(tokens) > MAX_WORD_VOCAB:
            raise DataError(f"a word vocabulary holds at most {MAX_WORD_VOCAB} tokens, got {len(tokens)}")
        check_word_tokens(tokens)
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens)}
        self.unk = self.index[UNK]

    @classmethod
    def from_text(cls, text: str, max_vocab: Optional[int] = None) -> "WordVocabulary":
        """The vocabulary of ``text``: ``<unk>`` and the newline, then its other tokens from the
        most frequent down (ties in code-point order), ``max_vocab`` tokens in all (None: every
        token, up to :data:`MAX_WORD_VOCAB`). Tokens over :data:`MAX_WORD_CHARS` characters
        are left out (they are ``<unk>``).

        >>> WordVocabulary.from_text("b a b c a b", max_vocab=4).tokens
        ['<unk>', '\\n', 'b', 'a']
        """
        if max_vocab is not None and not (isinstance(max_vocab, (int, np.integer)) and not isinstance(max_vocab, bool)
                                          and 3 <= max_vocab <= MAX_WORD_VOCAB):
            raise DataError(f"max_vocab must be an integer from 3 (<unk>, the newline and a word) to "
                            f"{MAX_WORD_VOCAB}, got {max_vocab!r}")
        counts = Counter(t for t in _tokens(text) if len(t) <= MAX_WORD_CHARS)
        counts.pop(UNK, None)
        counts.pop(NEWLINE, None)
        ranked = sorted(counts, key=lambda t: (-counts[t], t))
        room = (max_vocab if max_vocab is not None else MAX_WORD_VOCAB) - 2
        if max_vocab is None and len(ranked) > room:
            raise DataError(f"the text has {len(ranked)} distinct words, more than the {MAX_WORD_VOCAB} a word "
                            "vocabulary holds; keep the most frequent with max_vocab (--max-vocab)")
        return cls([UNK, NEWLINE] + ranked[:room])

    def __len__(self):
        return len(self.tokens)

    @property
    def newline(self) -> int:
        """The newline's index."""
        return self.index[NEWLINE]

    def encode(self, text: str, what: str = "text") -> list:
        """Indices of the tokens of ``text``; a word outside the vocabulary is ``<unk>``'s
        index (``what`` names the text in messages, as :meth:`Vocabulary.encode`)."""
        return [self.index.get(t, self.unk) for t in _tokens(text)]

    def decode(self, indices: Iterable[int]) -> str:
        """The text of a sequence of indices, joined by :func:`detokenize`."""
        return detokenize(self.tokens[i] for i in indices)

    def join(self, prime: str, text: str) -> str:
        """``text`` generated after ``prime``, with a space between them where :func:`detokenize`
        would put one.

        >>> vocab = WordVocabulary.from_text("the cat sat .")
        >>> vocab.join("The cat", "sat."), vocab.join("The cat", ", it sat"), vocab.join("", "sat")
        ('The cat sat.', 'The cat, it sat', 'sat')
        """
        before, after = tokenize(prime), tokenize(text)
        if not before or not after:
            return prime + text
        joined = detokenize(before[-1:] + after[:1])  # the two tokens, as detokenize spaces them
        return prime + (" " if len(joined) > len(before[-1]) + len(after[0]) else "") + text


# ---- splitting -----------------------------------------------------------------------------------

def split_names(names: list, validation: float, seed: int):
    """Shuffled ``(train, validation)`` lists from a list of names; ``validation`` is the
    held-out fraction (0 allowed; otherwise each side keeps at least one name).

    >>> train, val = split_names(["a", "b", "c", "d"], 0.25, seed=0)
    >>> len(train), len(val), sorted(train + val)
    (3, 1, ['a', 'b', 'c', 'd'])
    """
    order = np.random.default_rng(seed).permutation(len(names))
    n_val = int(round(len(names) * validation))
    if validation > 0 and len(names) > 1:
        n_val = min(max(n_val, 1), len(names) - 1)
    val = [names[i] for i in order[:n_val]]
    train = [names[i] for i in order[n_val:]]
    return train, val


def split_stream(text: str, validation: float):
    """``(train, validation)`` strings: the last ``validation`` fraction of a text is held out.

    >>> split_stream("abcdefghij", 0.2)
    ('abcdefgh', 'ij')
    """
    n_val = int(len(text) * validation)
    return (text[:len(text) - n_val], text[len(text) - n_val:]) if n_val else (text, "")


# ---- batches ------------------------------------------------------------------------------------

def pad_names(encoded: list, newline: int):
    """Padded ``(inputs, targets, mask)`` ``(B, T)`` for encoded names; T = longest + 1.

    inputs = [START] + name, targets = name + [newline]; padding has input -1, target -1
    and mask 0. inputs and targets are int64, the mask float64.

    >>> inputs, targets, mask = pad_names([[1, 2], [3]], newline=0)
    >>> inputs.tolist(), targets.tolist(), mask.tolist()
    ([[-1, 1, 2], [-1, 3, -1]], [[1, 2, 0], [3, 0, -1]], [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
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


def _is_count(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0


def _saved_count(state: dict, key: str) -> int:
    """``state[key]`` of a saved data position, which must be an integer >= 0."""
    value = state.get(key)
    if not _is_count(value):
        raise DataError(f"the saved data position's {key} should be an integer >= 0, got {value!r:.60}")
    return int(value)


def check_word_tokens(tokens: list, label: str = "tokens") -> None:
    """A word vocabulary's tokens in index order, as :class:`WordVocabulary` and a checkpoint's
    ``vocab`` must hold them: each one token as :func:`tokenize` makes it (1 to
    :data:`MAX_WORD_CHARS` characters), each once, ``<unk>`` and the newline among them. The
    first problem is a :class:`DataError` (``label`` names the list in it).

    >>> check_word_tokens([UNK, "\\n", "cat", "two words"])
    Traceback (most recent call last):
    ...
    numbarnn.data.DataError: tokens[3] should be one token (a string of 1 to 100 characters that tokenize() gives back as itself); got 'two words'
    """
    seen = set()
    for i, token in enumerate(tokens):
        if not (isinstance(token, str) and 0 < len(token) <= MAX_WORD_CHARS and tokenize(token) == [token]):
            raise DataError(f"{label}[{i}] should be one token (a string of 1 to {MAX_WORD_CHARS} characters that "
                            f"tokenize() gives back as itself); got {repr(token)[:60]}")
        if token in seen:
            raise DataError(f"a word vocabulary lists a token twice: {token!r}")
        seen.add(token)
    if UNK not in seen or NEWLINE not in seen:
        raise DataError(f"a word vocabulary should hold {UNK!r} and the newline")


def _load_shuffled_position(batches, state: dict, n: int, what: str) -> None:
    """Set ``batches``' epoch, position, order and generator from ``state`` (a ``state_dict``
    of a source of ``n`` shuffled items, ``what`` naming them); everything is checked first,
    so a state that does not fit is a :class:`DataError` and changes nothing."""
    epoch, position, order = _saved_count(state, "epoch"), _saved_count(state, "position"), state.get("order")
    if not (isinstance(order, list) and all(_is_count(i) for i in order) and sorted(order) == list(range(n))):
        shown = repr(order) if len(repr(order)) <= 60 else repr(order)[:57] + "..."
        raise DataError(f"the saved data position does not fit these {n} {what}: its order should be a "
                        f"permutation of 0..{n - 1}, got {shown}")
    if position > n:
        raise DataError(f"the saved data position does not fit these {n} {what}: position {position} > {n}")
    rng = np.random.default_rng()
    try:  # on a scratch generator first, so a bad state changes nothing
        rng.bit_generator.state = state.get("rng")
    except (ValueError, TypeError, KeyError, OverflowError) as error:
        raise DataError(f"the saved data position has a corrupt random state ({error})") from None
    batches.epoch, batches.position = epoch, position
    batches.order = np.array(order, dtype=np.int64)
    batches.rng.bit_generator.state = rng.bit_generator.state


class NamesBatches:
    """Shuffled batches of padded names; an epoch is one pass over all names.

    ``next_batch()`` returns ``(inputs, targets, mask, carry_state=False)``, each array
    ``(B, T)`` as :func:`pad_names` makes them (B = ``batch_size``, fewer at an epoch's end).

    >>> vocab = Vocabulary.from_text("ab\\nba\\nabba\\n")
    >>> batches = NamesBatches(["ab", "ba", "abba"], vocab, batch_size=2, seed=0)
    >>> inputs, targets, mask, carry = batches.next_batch()
    >>> inputs.shape[0], carry, batches.steps_per_epoch()
    (2, False, 2)
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
        """The next ``(inputs, targets, mask, False)``; reshuffles at the start of each epoch."""
        if self.position >= len(self.order):
            self.epoch += 1
            self.position = 0
            self.order = self.rng.permutation(len(self.encoded))
        chosen = self.order[self.position:self.position + self.batch_size]
        self.position += len(chosen)
        inputs, targets, mask = pad_names([self.encoded[i] for i in chosen], self.newline)
        return inputs, targets, mask, False

    def steps_per_epoch(self) -> int:
        """Batches per pass over the names."""
        return -(-len(self.encoded) // self.batch_size)

    def tokens(self, mask) -> int:
        """Characters a batch trains on (its mask's sum), for tokens per second."""
        return int(mask.sum())

    def state_dict(self) -> dict:
        """Epoch, position, order and random state as plain data, for checkpoints."""
        return {"epoch": self.epoch, "position": self.position, "order": self.order.tolist(),
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict):
        """Continue exactly where :meth:`state_dict` was taken. A state that does not fit these
        names (taken on other data, or damaged) is a :class:`DataError` and changes nothing.

        >>> batches = NamesBatches(["ab", "ba", "abba"], Vocabulary("ab"), batch_size=2, seed=0)
        >>> batches.load_state_dict({**batches.state_dict(), "order": [0, 1, 5]})
        Traceback (most recent call last):
        ...
        numbarnn.data.DataError: the saved data position does not fit these 3 names: its order should be a permutation of 0..2, got [0, 1, 5]
        """
        _load_shuffled_position(self, state, len(self.encoded), "names")


class StreamBatches:
    """``batch`` parallel streams over one text, ``seq_length`` characters a chunk.

    ``next_batch()`` returns ``(inputs, targets, None, carry_state)``: inputs and targets
    ``(batch_size, seq_length)`` int64, the targets shifted one character on; carry_state is
    False at the start of each epoch (the hidden state is reset) and True otherwise.

    >>> text = "the quick brown fox jumps over the lazy dog\\n" * 4
    >>> batches = StreamBatches(text, Vocabulary.from_text(text), batch_size=4, seq_length=8)
    >>> inputs, targets, mask, carry = batches.next_batch()
    >>> inputs.shape, mask, carry, batches.next_batch()[3]
    ((4, 8), None, False, True)
    """

    mode = "stream"

    def __init__(self, text: str, vocab: Vocabulary, batch_size: int, seq_length: int):
        data = np.array(vocab.encode(text, what="the training text"), dtype=np.int64)
        per_stream = (len(data) - 1) // batch_size
        if per_stream < 2:
            raise DataError(f"the text ({len(data)} {'words' if vocab.kind == 'words' else 'characters'}) is too "
                            f"short for {batch_size} streams")
        self.seq_length = max(1, min(seq_length, per_stream - 1))
        self.inputs = data[:per_stream * batch_size].reshape(batch_size, per_stream)
        self.targets = data[1:per_stream * batch_size + 1].reshape(batch_size, per_stream)
        self.epoch, self.position = 0, 0

    def next_batch(self):
        """The next chunk of every stream; wraps to the start (a new epoch) at the end."""
        if self.position + self.seq_length > self.inputs.shape[1]:
            self.epoch += 1
            self.position = 0
        start = self.position
        self.position += self.seq_length
        end = self.position
        return self.inputs[:, start:end], self.targets[:, start:end], None, start > 0

    def steps_per_epoch(self) -> int:
        """Chunks per pass over the text."""
        return self.inputs.shape[1] // self.seq_length

    def tokens(self, mask) -> int:
        """Characters a batch trains on: streams times chunk length."""
        return self.inputs.shape[0] * self.seq_length

    def state_dict(self) -> dict:
        """Epoch and position as plain data, for checkpoints."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict):
        """Continue exactly where :meth:`state_dict` was taken (a damaged state is a :class:`DataError`)."""
        self.epoch, self.position = _saved_count(state, "epoch"), _saved_count(state, "position")


class ArrayBatches:
    """Shuffled minibatches of arrays held in memory, for the classify and regress tasks
    (and any other): ``X`` ``(N, T)`` integers or ``(N, T, X)`` floats, ``y`` its targets
    (``(N,)`` classes, or ``(N, T, O)`` per step), ``lengths`` ``(N,)`` the real steps of
    each sequence (the rest padding; None: every step is real).

    ``next_batch()`` returns ``(inputs, targets, mask, False)`` as ``fit`` takes them:
    ``batch_size`` rows (fewer at an epoch's end), drawn in a new order every epoch, and the
    mask ``(B, T)``, ones over each sequence's real steps (None without ``lengths``), which
    ``train_step`` reads as the lengths. Iterating gives one pass in order, so an
    ``ArrayBatches`` is also ``fit``'s ``validation``. ``state_dict`` holds the position for
    checkpoints, as :class:`NamesBatches`.

    >>> X, y = np.zeros((5, 4, 2)), np.array([0, 1, 1, 0, 1])
    >>> batches = ArrayBatches(X, y, batch_size=2, lengths=[4, 2, 3, 4, 1], seed=0)
    >>> inputs, targets, mask, carry = batches.next_batch()
    >>> inputs.shape, targets.shape, mask.shape, carry, batches.steps_per_epoch(), len(list(batches))
    ((2, 4, 2), (2,), (2, 4), False, 3, 3)
    """

    mode = "arrays"

    def __init__(self, X, y, batch_size: int, lengths=None, seed: Optional[int] = 0):
        self.X, self.y = np.asarray(X), np.asarray(y)
        if self.X.ndim not in (2, 3) or self.X.shape[0] == 0 or self.X.shape[1] == 0:
            raise DataError(f"X must be (N, T) integers or (N, T, X) floats with N, T >= 1, got shape {self.X.shape}")
        N, T = self.X.shape[:2]
        if self.y.ndim == 0 or len(self.y) != N:
            raise DataError(f"y must have one row per sequence of X ({N}), got shape {self.y.shape}")
        if not _is_count(batch_size) or batch_size < 1:
            raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.mask = None
        if lengths is not None:
            from .sequence_model import checked_lengths  # the rules train_step applies to a batch's lengths
            try:
                lengths = checked_lengths(lengths, T, N, of="X")
            except ValueError as error:
                raise DataError(str(error)) from None
            self.mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float64)
        self.batch_size = min(int(batch_size), N)
        self.epoch, self.position = 0, 0
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(N)
        self.last_batch_rows = self.batch_size  # rows of the last next_batch()

    def _rows(self, chosen):
        return self.X[chosen], self.y[chosen], None if self.mask is None else self.mask[chosen], False

    def next_batch(self):
        """The next ``(inputs, targets, mask, False)``; reshuffles at the start of each epoch."""
        if self.position >= len(self.order):
            self.epoch += 1
            self.position = 0
            self.order = self.rng.permutation(len(self.X))
        chosen = self.order[self.position:self.position + self.batch_size]
        self.position += len(chosen)
        self.last_batch_rows = len(chosen)
        return self._rows(chosen)

    def __iter__(self):
        """One pass over every row in order, ``batch_size`` at a time (the shuffled position is untouched)."""
        for start in range(0, len(self.X), self.batch_size):
            yield self._rows(np.arange(start, min(start + self.batch_size, len(self.X))))

    def steps_per_epoch(self) -> int:
        """Batches per pass over the rows."""
        return -(-len(self.X) // self.batch_size)

    def tokens(self, mask) -> int:
        """Steps the last batch of :meth:`next_batch` trains on (its real steps), for tokens per
        second: its mask's sum, or its rows times T without lengths (an epoch's last batch
        may be short).

        >>> import numpy as np
        >>> batches = ArrayBatches(np.zeros((5, 3, 1)), np.zeros(5, np.int64), batch_size=2)
        >>> [batches.tokens(batches.next_batch()[2]) for _ in range(3)]
        [6, 6, 3]
        """
        return int(mask.sum()) if mask is not None else self.last_batch_rows * self.X.shape[1]

    def state_dict(self) -> dict:
        """Epoch, position, order and random state as plain data, for checkpoints."""
        return {"epoch": self.epoch, "position": self.position, "order": self.order.tolist(),
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict):
        """Continue exactly where :meth:`state_dict` was taken; a state that does not fit these
        rows is a :class:`DataError` and changes nothing."""
        _load_shuffled_position(self, state, len(self.X), "rows")
