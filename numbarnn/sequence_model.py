"""The model: recurrent layers of one registered cell stacked under an optional dense head.

:class:`SequenceModel` holds the weights (one flat buffer, views per parameter) and runs
forward and backward through time on the CPU kernels. It knows nothing of losses,
optimizers or devices: a backend (:mod:`numbarnn.cpu_backend`, :mod:`numbarnn.cuda.backend`)
trains it, and :func:`numbarnn.make_model` builds it from registry names.
"""
from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np

from .kernels import embedding, heads
from .models import RecurrentModel, resolve_dtype
from .plugins import get_cell

#: The input index of a zero input (padding, the first step of generation without a prime).
START_INPUT = -1


def layer_param_name(name: str, layer: int) -> str:
    """``W_x`` for the first layer, ``W_x_l1`` for the second, as PyTorch's ``_l1``.

    >>> layer_param_name("W_h", 0), layer_param_name("W_h", 2)
    ('W_h', 'W_h_l2')
    """
    return name if layer == 0 else f"{name}_l{layer}"


def direction_param_name(name: str, layer: int, reverse: bool) -> str:
    """A parameter's name in layer ``layer``, with PyTorch's ``_reverse`` suffix for the
    reverse direction of a bidirectional layer.

    >>> direction_param_name("W_x", 0, True), direction_param_name("b_h", 1, True)
    ('W_x_reverse', 'b_h_l1_reverse')
    """
    return layer_param_name(name, layer) + ("_reverse" if reverse else "")


#: What a :class:`SequenceModel` is for: ``"lm"`` per-step logits (the next token),
#: ``"classify"`` one set of logits per sequence (many-to-one), ``"regress"`` per-step outputs.
TASKS = ("lm", "classify", "regress")


def _positive_int(label, value, optional=False):
    if optional and value is None:
        return None
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{label} must be a positive integer, got {value!r}")
    return int(value)


def reverse_order(T: int, B: int, lengths=None) -> np.ndarray:
    """``(T, B)`` time indices that reverse each sequence within its length: step ``t`` of
    sequence ``b`` reads step ``lengths[b] - 1 - t``; padding steps (``t >= lengths[b]``) stay
    where they are. The order is its own inverse, so one gather reverses and un-reverses.

    >>> reverse_order(4, 2, np.array([4, 2])).T.tolist()
    [[3, 2, 1, 0], [1, 0, 2, 3]]
    """
    t = np.arange(T)[:, None]
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    return np.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)


def checked_lengths(lengths, T: int, B: int, of: str = "the batch") -> np.ndarray:
    """``lengths`` as (B,) int64, each in ``[1, T]``; anything else is a ValueError naming it
    (``of`` names the sequences' source in the message).

    >>> checked_lengths([3, 1], 3, 2).tolist()
    [3, 1]
    >>> checked_lengths([4, 1], 3, 2)
    Traceback (most recent call last):
    ...
    ValueError: lengths[0] is 4, outside [1, 3] (the batch has 3 steps)
    """
    array = np.asarray(lengths)
    if array.shape != (B,) or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"lengths must be ({B},) integers (one per sequence of {of}), got "
                         f"{'shape ' + str(array.shape) if array.shape != (B,) else 'dtype ' + str(array.dtype)}")
    bad = (array < 1) | (array > T)
    if bad.any():
        b = int(np.argmax(bad))
        raise ValueError(f"lengths[{b}] is {array[b]}, outside [1, {T}] ({of} has {T} steps)")
    return array.astype(np.int64)


#: A direction's multiply-adds (``T*B*G*H*(H+X)``) from which its own thread pays: waking the worker
#: and waiting for it cost about 0.1 ms a layer, which made an H8 B4 T6 step 1.5x slower.
_CONCURRENT_WORK = 1 << 23

_BLAS = {}  # "libraries": threadpoolctl's controllers of the loaded BLAS libraries, found once
_BLAS_LOCK = threading.Lock()


def _blas_single_threaded() -> bool:
    """Whether there are two CPUs for two directions and every loaded BLAS library (numba's
    ``np.dot`` calls SciPy's) runs one thread per call; False when that cannot be told."""
    libraries = _blas_libraries()
    try:
        return bool(libraries) and all(library.get_num_threads() == 1 for library in libraries)
    except Exception:  # a library that cannot say: do not guess
        return False


_ONE_THREAD_LOCK = threading.Lock()  # one_blas_thread's holder


@contextlib.contextmanager
def one_blas_thread():
    """Run the block with every BLAS library at one thread per call, then put back the counts.

    For work that already runs on several threads of its own (the halves of a compiled
    training step): two threads each calling a 2-thread OpenBLAS on 2 cores took longer than
    one thread alone. The count is process-wide, so one block holds it at a time (a second
    thread waits: its work would want the same cores), and the thread that lowered it puts
    it back. Yields whether every library now runs one thread: False when the libraries
    cannot be told apart (see :func:`_find_blas`), or when one ignored the call (OpenBLAS
    0.3.30 ignores it from any thread but the first that made it)."""
    libraries = _blas_libraries()
    if not libraries:
        yield False
        return
    with _ONE_THREAD_LOCK:
        try:
            before = [library.get_num_threads() for library in libraries]
            for library in libraries:
                library.set_num_threads(1)
            single = all(library.get_num_threads() == 1 for library in libraries)
        except Exception:  # a library that cannot say: do not guess
            before, single = None, False
        try:
            yield single
        finally:
            if before is not None:
                for library, count in zip(libraries, before):
                    library.set_num_threads(count)


def _blas_libraries() -> list:
    """threadpoolctl's controllers of the loaded BLAS libraries, found once ([] when unknown)."""
    libraries = _BLAS.get("libraries")
    if libraries is None:
        with _BLAS_LOCK:
            if "libraries" not in _BLAS:
                _BLAS["libraries"] = _find_blas()
        libraries = _BLAS["libraries"]
    return libraries


def _find_blas() -> list:
    """The BLAS controllers, or [] (one CPU, or no threadpoolctl answer): then directions run in turn."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cpus < 2:
        return []
    try:
        import scipy.linalg.cython_blas  # noqa: F401 -- the library numba's np.dot calls, loaded first
        from threadpoolctl import ThreadpoolController
        return ThreadpoolController().select(user_api="blas").lib_controllers
    except Exception:
        return []


def _reorder(array, order):
    """``array`` (T, B, ...) with each column's steps taken in ``order`` (T, B)."""
    return np.ascontiguousarray(array[order, np.arange(order.shape[1])])


class SequenceModel:
    """Stacked recurrent layers plus an optional dense head ``logits = h @ W_y.T + b_y``.

    ``params`` is one flat dict holding the layers' own arrays, which optimizers update in
    place, in PyTorch's order: ``W_emb`` with an embedding, then each layer's ``W_x, W_h,
    b_x, b_h`` and the cell's own parameters, if any (``W_x_l1, ...`` for deeper layers, ``W_x_reverse, ..., W_x_l1_reverse`` for
    the reverse direction of bidirectional layers), then the head's ``W_y, b_y``.

    Inputs are time-major: ``(T, B)`` indices (``index_input``; a one-hot gather, or a row of
    the ``(V, E)`` table ``W_emb`` with ``embedding=E``) or ``(T, B, X)`` floats. A
    bidirectional layer runs a forward and a reverse direction over its input and
    concatenates their outputs ``(T, B, 2H)``, which the next layer takes. ``task`` "lm" and
    "regress" give per-step outputs ``(T, B, V)`` (the top layer's hidden states without a
    head); "classify" gives ``(B, C)`` logits from each sequence's state at its last real
    step (with bidirectional layers: the forward direction's last state and the reverse
    direction's state at step 0 concatenated, PyTorch's ``h_n``). ``lengths`` (B,) in
    ``forward`` gives each sequence's real steps (the rest is padding): the reverse direction
    starts at step ``lengths[b] - 1``, as on PyTorch's packed sequences, and the final state
    is the one at the last real step. Without ``lengths`` every step is real (the reverse
    direction starts at step ``T - 1``, as PyTorch on an unpacked tensor).

    A state holds one cell state (an array, or a tuple such as ``(h, c)``) per layer and
    direction, in PyTorch's ``(layers * directions)`` order: the state itself for one layer
    and direction, else a list. Dropout (inverted, between layers) applies only when
    ``forward`` gets ``train=True`` and a generator.

    >>> import numpy as np
    >>> model = SequenceModel("lstm", 5, 8, 5, layers=2, dtype="float64", seed=0)
    >>> logits, state = model.forward(np.zeros((3, 2), dtype=int))   # (T, B) indices
    >>> logits.shape, len(state), model.flat_params.size == sum(v.size for v in model.params.values())
    ((3, 2, 5), 2, True)
    >>> sorted(model.backward(np.ones_like(logits)))[:3]
    ['dW_h', 'dW_h_l1', 'dW_x']
    >>> model = SequenceModel("gru", 7, 4, 3, embedding=6, bidirectional=True, task="classify", seed=0)
    >>> logits, state = model.forward(np.zeros((5, 2), dtype=int), lengths=np.array([5, 2]))
    >>> logits.shape, len(state), list(model.params)[:2], model.params["W_y"].shape
    ((2, 3), 2, ['W_emb', 'W_x'], (3, 8))
    """

    #: Run a bidirectional layer's two directions at the same time when BLAS runs one thread per
    #: call (``numbarnn.set_threads(1)``), the reverse one in a worker thread the model owns
    #: (False: always one after the other, in the calling thread).
    concurrent_directions = True

    def __init__(self, cell, input_size: int, hidden_size: int, output_size: Optional[int], *,
                 layers: int = 1, dropout: float = 0.0, dtype="float32", seed: Optional[int] = None,
                 index_input: bool = True, embedding: Optional[int] = None, bidirectional: bool = False,
                 task: str = "lm"):
        self.cell = get_cell(cell)
        self.dtype = resolve_dtype(dtype)
        if not isinstance(layers, (int, np.integer)) or isinstance(layers, bool) or layers < 1:
            raise ValueError(f"layers must be a positive integer, got {layers!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if not isinstance(bidirectional, (bool, np.bool_)):
            raise ValueError(f"bidirectional must be True or False, got {bidirectional!r}")
        if bidirectional and task == "lm":
            raise ValueError("bidirectional=True cannot be used with task='lm': a language model predicts the "
                             "next token, which the reverse direction would already see (it cannot be causal); "
                             "use task='classify' or task='regress'")
        if task == "classify" and output_size is None:
            raise ValueError("task='classify' needs num_classes (the head's output size)")
        embedding = _positive_int("embedding", embedding, optional=True)
        if embedding is not None and not index_input:
            raise ValueError("embedding needs integer inputs (vocab_size), not dense ones (input_size)")
        self.task = task
        self.bidirectional = bool(bidirectional)
        self.directions = 2 if bidirectional else 1
        self.embedding_size = embedding
        self.vocab_rows = _positive_int("input_size", input_size) if embedding is not None else None
        self.dropout = float(dropout)
        self.index_input = index_input
        first = embedding if embedding is not None else input_size
        D = self.directions

        def layer(i, reverse):
            if seed is None:
                layer_seed = None
            elif reverse:
                layer_seed = [seed, 1, i]  # a stream of its own; the forward layers keep their seeds
            else:
                layer_seed = seed + (i + 1 if i else 0)
            return RecurrentModel(self.cell, first if i == 0 else D * hidden_size, hidden_size, dtype=self.dtype,
                                  seed=layer_seed)

        #: stack[i] is layer i's directions: [forward] or [forward, reverse]
        self.stack = [[layer(i, reverse) for reverse in (False, True)[:D]] for i in range(layers)]
        self.layers = [directions[0] for directions in self.stack]
        self.params = {}
        if embedding is not None:
            rng = np.random.default_rng(None if seed is None else [seed, 2])
            self.params["W_emb"] = rng.standard_normal((input_size, embedding)).astype(self.dtype)  # as nn.Embedding
        for i, directions in enumerate(self.stack):
            for d, recurrent in enumerate(directions):
                for name in self.cell.param_names:
                    self.params[direction_param_name(name, i, d == 1)] = recurrent.params[name]
        self.output_size = output_size
        if output_size is not None:
            if not isinstance(output_size, (int, np.integer)) or output_size < 1:
                raise ValueError(f"output_size must be a positive integer, got {output_size!r}")
            rng = np.random.default_rng(None if seed is None else seed + 1)
            k = 1.0 / np.sqrt(D * hidden_size)  # PyTorch's nn.Linear initialisation
            self.params["W_y"] = rng.uniform(-k, k, size=(output_size, D * hidden_size)).astype(self.dtype)
            self.params["b_y"] = np.zeros(output_size, self.dtype)
        self._flatten()
        self._hidden = None
        self._dropout_masks = []
        self._pool = None

    def _flatten(self):
        """Move every parameter into one contiguous buffer and keep views of it.

        ``flat_params`` (P,) holds all weights in ``params`` order and ``flat_grads`` all
        gradients: the optimizer updates and the clip work on the whole buffer in one kernel
        call each, instead of one call per array.
        """
        total = sum(v.size for v in self.params.values())
        self.flat_params = np.empty(total, self.dtype)
        self.flat_grads = np.zeros(total, self.dtype)
        for key, view in self._views(self.flat_params).items():
            view[...] = self.params[key]
            self.params[key] = view
        self._grad_views = self._views(self.flat_grads)
        for i, directions in enumerate(self.stack):
            for d, recurrent in enumerate(directions):
                for name in self.cell.param_names:
                    recurrent.params[name] = self.params[direction_param_name(name, i, d == 1)]

    def _views(self, flat) -> dict:
        """Views of ``flat`` (laid out as ``flat_params``: every parameter in ``params`` order),
        keyed and shaped like ``params``."""
        views, offset = {}, 0
        for key, value in self.params.items():
            views[key] = flat[offset:offset + value.size].reshape(value.shape)
            offset += value.size
        return views

    @property
    def layer(self) -> RecurrentModel:
        """The first recurrent layer (its forward direction)."""
        return self.layers[0]

    @property
    def input_size(self):
        """X: the vocabulary size for integer inputs (embedded or not), the width of dense ones."""
        return self.vocab_rows if self.embedding_size is not None else self.layers[0].input_size

    @property
    def hidden_size(self):
        """H: hidden units of every layer and direction."""
        return self.layers[0].hidden_size

    @property
    def _slots(self) -> list:
        """Every (layer, direction) recurrent model, in PyTorch's ``layers * directions`` order."""
        return [recurrent for directions in self.stack for recurrent in directions]

    def zero_state(self, batch_size: int):
        """The all-zero state for ``batch_size`` sequences (a list of layer states when stacked)."""
        states = [recurrent.zero_state(batch_size) for recurrent in self._slots]
        return states[0] if len(states) == 1 else states

    def _per_layer(self, state):
        n = len(self._slots)
        if state is None:
            return [None] * n
        if n == 1:
            return [state]
        if not isinstance(state, list) or len(state) != n:
            what = (f"{len(self.layers)}-layer model is a list of {n} layer states" if self.directions == 1 else
                    f"{len(self.layers)}-layer bidirectional model is a list of {n} states (layers * directions)")
            raise ValueError(f"the state of a {what}")
        return state

    def state_arrays(self, state) -> list:
        """The state as a flat list of ``(B, H)`` arrays (for checkpoints)."""
        out = []
        for layer_state in self._per_layer(state):
            out.extend([layer_state] if self.cell.states == 1 else list(layer_state))
        return out

    def state_from_arrays(self, arrays: list):
        """Inverse of :meth:`state_arrays`."""
        S = self.cell.states
        per_layer = [arrays[i * S] if S == 1 else tuple(arrays[i * S:(i + 1) * S])
                     for i in range(len(self._slots))]
        return per_layer[0] if len(per_layer) == 1 else per_layer

    def stacked_state(self, state) -> tuple:
        """The state as PyTorch returns it: one ``(layers * directions, B, H)`` array per
        cell state (``(h_n,)``, or ``(h_n, c_n)`` for the LSTM)."""
        per_slot = [[s] if self.cell.states == 1 else list(s) for s in self._per_layer(state)]
        return tuple(np.stack([slot[k] for slot in per_slot]) for k in range(self.cell.states))

    def checked_embedding_input(self, inputs) -> np.ndarray:
        """``inputs`` as (T, B) int64 indices in [-1, V) for the embedding table, or a
        ValueError naming what is wrong (the kernels index unchecked)."""
        idx = np.asarray(inputs)
        if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"a model with an embedding takes (T, B) integer indices, got "
                             f"{'dtype ' + str(idx.dtype) if idx.ndim == 2 else 'shape ' + str(idx.shape)}")
        V = self.vocab_rows
        if idx.size and (idx.min() < -1 or idx.max() >= V):
            bad = idx[(idx < -1) | (idx >= V)].ravel()[0]
            raise ValueError(f"input index {bad} is outside the vocabulary [0, {V}) (-1 means an all-zero input)")
        return np.ascontiguousarray(idx, dtype=np.int64)

    def _embed(self, inputs):
        idx = self.checked_embedding_input(inputs)
        T, B = idx.shape
        out = np.empty((T, B, self.embedding_size), self.dtype)
        embedding.embedding_forward(idx.reshape(T * B), self.params["W_emb"], out.reshape(T * B, -1))
        return idx, out

    def forward(self, inputs, state=None, *, train: bool = False, rng=None, lengths=None):
        """-> (outputs, final state): outputs ``(T, B, V or H)``, or ``(B, C)`` for classify."""
        finals, self._dropout_masks = [], []
        h = inputs
        self._indices = None
        if self.embedding_size is not None:
            self._indices, h = self._embed(inputs)
        if np.ndim(h) < 2:
            raise ValueError(f"inputs must be time-major: (T, B) indices or (T, B, X) floats, got shape {np.shape(h)}")
        T, B = np.shape(h)[:2]
        if lengths is not None:
            lengths = checked_lengths(lengths, T, B)
        self._lengths = lengths
        self._order = reverse_order(T, B, lengths) if self.bidirectional else None
        drop = train and self.dropout > 0.0 and rng is not None
        slot_states = self._per_layer(state)
        columns = np.arange(B)
        for i, directions in enumerate(self.stack):
            def run(d):  # called before the loop moves on: h and i are this layer's
                recurrent = directions[d]
                if d == 0:
                    out, final = recurrent.forward(h, slot_states[i * self.directions])
                else:  # the reverse direction runs over each sequence reversed within its length
                    out, final = recurrent.forward(_reorder(np.asarray(h), self._order),
                                                   slot_states[i * self.directions + 1])
                    out = _reorder(out, self._order)
                if lengths is not None:  # the state at the last real step, as PyTorch's packed h_n
                    states = recurrent.context[2]
                    final = recurrent._pack_state([states[s, lengths, columns] for s in range(self.cell.states)])
                return out, final

            results = self._each_direction(run, self._work(T, B, directions[0].input_size))
            outputs = [out for out, _ in results]
            finals.extend(final for _, final in results)
            h = outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=2)
            mask = None
            if drop and i < len(self.stack) - 1:
                keep = 1.0 - self.dropout
                mask = (rng.random(h.shape) < keep).astype(self.dtype) / self.dtype.type(keep)
                h = h * mask
            self._dropout_masks.append(mask)
        self._hidden = h
        final = finals[0] if len(finals) == 1 else finals
        if self.output_size is None:
            return h, final
        if self.task == "classify":
            H = self.hidden_size
            last = np.full(B, T) if lengths is None else lengths
            features = h[last - 1, columns]  # the forward direction's last real step
            if self.bidirectional:
                features[:, H:] = h[0, :, H:]  # the reverse direction ends at step 0
            self._features = np.ascontiguousarray(features)
            logits = np.empty((B, self.output_size), self.dtype)
            heads.linear_forward(self._features, self.params["W_y"], self.params["b_y"], logits)
            return logits, final
        T, B, H = h.shape
        logits = np.empty((T, B, self.output_size), self.dtype)
        heads.linear_forward(h.reshape(T * B, H), self.params["W_y"], self.params["b_y"],
                             logits.reshape(T * B, self.output_size))
        return logits, final

    def _each_direction(self, run, work: int = 0) -> list:
        """``[run(0)]``, or ``[run(0), run(1)]`` for a bidirectional layer: when BLAS runs one thread
        per call, the reverse direction in the model's worker thread while this thread runs the
        forward one. The two are independent (each its own weights, gradients, states and
        outputs) and their time loops release the GIL, so they run on two cores; the results are
        the same bits as one after the other. With a multi-threaded BLAS they run in turn: two
        directions each calling a 2-thread OpenBLAS on 2 cores were slower than one after the
        other, and OpenBLAS's thread count is process-wide (and changes its results' last bits),
        so it is not changed here; ``numbarnn.set_threads(1)`` does it for the whole process.
        ``work`` is a direction's multiply-adds; below ``_CONCURRENT_WORK`` waking the worker
        costs more than it saves."""
        if self.directions == 1:
            return [run(0)]
        worthwhile = work >= _CONCURRENT_WORK and _blas_single_threaded()
        pool = self._direction_pool() if worthwhile else None
        try:
            reverse = pool.submit(run, 1) if pool is not None else None
        except RuntimeError:  # no thread could be started (or the interpreter is exiting)
            reverse = None
        if reverse is None:
            return [run(0), run(1)]
        try:
            forward = run(0)
        except BaseException:
            reverse.exception()  # let the worker finish writing into this model before raising
            raise
        return [forward, reverse.result()]

    def _work(self, T: int, B: int, width: int) -> int:
        """Multiply-adds of one direction of a layer over ``width``-wide inputs (``T*B*G*H*(H+X)``)."""
        G, H = self.cell.gates, self.hidden_size
        return T * B * G * H * (H + width)

    def __getstate__(self):
        # copy.deepcopy and pickle: a copy makes its own worker when it needs one (a thread pool cannot be copied)
        state = self.__dict__.copy()
        state["_pool"] = None
        return state

    def _direction_pool(self):
        """The one-thread pool that runs reverse directions, made on first use; None when
        ``concurrent_directions`` is off or threads cannot be made."""
        if not self.concurrent_directions:
            return None
        if self._pool is None:
            try:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="numbarnn-reverse")
            except RuntimeError:
                self.concurrent_directions = False
                return None
        return self._pool

    def backward(self, d_outputs, d_final_state=None) -> dict:
        """Gradients of every parameter (new arrays): ``grads["d" + name]`` belongs to
        ``params[name]``, the naming of :meth:`RecurrentModel.backward` and of the course."""
        return {"d" + key: value.copy()
                for key, value in self.backward_into_buffer(d_outputs, d_final_state).items()}

    def backward_into_buffer(self, d_outputs, d_final_state=None) -> dict:
        """Like :meth:`backward`, but the gradients are views of ``flat_grads`` keyed like
        ``params`` (as optimizers take them), overwritten by the next call (what the trainer
        uses: no copies)."""
        if self._hidden is None:
            raise RuntimeError("backward() needs a forward() first")
        if d_final_state is not None and self._lengths is not None:
            raise ValueError("d_final_state is not supported after a forward with lengths")
        grads = self._grad_views
        T, B, DH = self._hidden.shape
        H, D = self.hidden_size, self.directions
        if self.output_size is None:
            d_hidden = d_outputs
        elif self.task == "classify":
            d_features = np.empty((B, DH), self.dtype)
            heads.linear_backward(np.ascontiguousarray(d_outputs, self.dtype), self._features, self.params["W_y"],
                                  grads["W_y"], grads["b_y"], d_features)
            d_hidden = np.zeros((T, B, DH), self.dtype)
            last = np.full(B, T) if self._lengths is None else self._lengths
            d_hidden[last - 1, np.arange(B), :H] = d_features[:, :H]
            if self.bidirectional:
                d_hidden[0, :, H:] = d_features[:, H:]
        else:
            V = self.output_size
            d_hidden = np.empty((T, B, DH), self.dtype)
            heads.linear_backward(np.ascontiguousarray(d_outputs, self.dtype).reshape(T * B, V),
                                  self._hidden.reshape(T * B, DH), self.params["W_y"],
                                  grads["W_y"], grads["b_y"], d_hidden.reshape(T * B, DH))
        d_finals = self._per_layer(d_final_state)
        for i in range(len(self.stack) - 1, -1, -1):
            def run(d):
                recurrent = self.stack[i][d]
                d_out = d_hidden if D == 1 else d_hidden[:, :, d * H:(d + 1) * H]
                if d == 1:
                    d_out = _reorder(d_out, self._order)
                x, is_index, states, cache = recurrent.context
                out = {name: grads[direction_param_name(name, i, d == 1)] for name in self.cell.param_names}
                dx = recurrent.bptt(x, is_index, states, cache, d_out, d_finals[i * D + d], out=out)["dx"]
                if dx is not None and d == 1:
                    dx = _reorder(dx, self._order)
                return dx

            d_input = None  # the forward direction's dx plus the reverse one's, in that order as always
            for dx in self._each_direction(run, self._work(T, B, self.stack[i][0].input_size)):
                if dx is not None:
                    d_input = dx if d_input is None else d_input + dx
            if i > 0:
                d_hidden = d_input
                if self._dropout_masks[i - 1] is not None:
                    d_hidden = d_hidden * self._dropout_masks[i - 1]
            elif self.embedding_size is not None:
                embedding.embedding_backward(self._indices.reshape(T * B), d_input.reshape(T * B, -1),
                                             grads["W_emb"])
        return grads
