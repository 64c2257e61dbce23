"""The time loops shared by every cell, forward and backward through time.

Only the recurrence is sequential. The input projection of all steps is one
matrix product (or a row gather for integer inputs) before the loop, and the
weight gradients are two whole-sequence products after BPTT, as in cuDNN/oneDNN.
"""
import hashlib
import importlib.util
import inspect
import os
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
from numba import njit


# ---- input projection: XZ = X @ W_x.T + b_x for all steps at once -------------------------

@njit(cache=True)
def project_dense(x2d, W_x, b_x, xz2d):
    """x2d (N, X) -> xz2d (N, G*H); N = T*B."""
    np.dot(x2d, W_x.T, xz2d)
    N, GH = xz2d.shape
    for n in range(N):
        for k in range(GH):
            xz2d[n, k] += b_x[k]


@njit(cache=True)
def project_indices(idx, W_x, b_x, xz2d):
    """idx (N,) integer inputs (one-hot, never materialised); -1 is an all-zero input."""
    N, GH = xz2d.shape
    # Gather rows of W_x.T: a column of W_x is strided by X, a row of its transpose is contiguous.
    W_xT = np.ascontiguousarray(W_x.T)
    for n in range(N):
        i = idx[n]
        if i < 0:
            for k in range(GH):
                xz2d[n, k] = b_x[k]
        else:
            for k in range(GH):
                xz2d[n, k] = W_xT[i, k] + b_x[k]


# ---- the recurrence ------------------------------------------------------------------------

# These two take a cell's kernels as arguments, for use from anyone's @njit code. They are
# not cached on disk: Numba keys such an entry on the kernel object of one process, so it
# never hits in the next, and a cached caller cannot take a kernel as a value either (a
# "dynamic global"). numbarnn itself runs the per-cell copies of ``loops_for(cell)``, which
# are cached: see cell_loops.py.
@njit
def sequence_forward(cell_forward, xz, W_h, b_h, states, cache, hz):
    """Run ``cell_forward`` over T steps.

    xz (T, B, G*H); states (S, T+1, B, H) with ``states[:, 0]`` set to the initial
    state; cache (T, B, C*H); hz (B, G*H) scratch for the recurrent projection.
    """
    T = xz.shape[0]
    B, GH = hz.shape
    for t in range(T):
        np.dot(states[0, t], W_h.T, hz)
        for b in range(B):
            for k in range(GH):
                hz[b, k] += b_h[k]
        cell_forward(xz[t], hz, states, t, cache[t])


@njit
def sequence_backward(cell_backward, W_h, states, cache, d_outputs, dstate, dstate_prev,
                      dxz, dhz, dh_recurrent):
    """Backpropagation through time.

    d_outputs (T, B, H): upstream gradient of every hidden state h_1..h_T.
    dstate (S, B, H): on entry the gradient w.r.t. the final state (zeros if none);
    on exit the gradient w.r.t. the initial state. dstate_prev (S, B, H) and
    dh_recurrent (B, H) are scratch. dxz, dhz (T, B, G*H) receive the gradients of
    the two projections (they may be the same array, see the cell protocol).
    """
    T = d_outputs.shape[0]
    S, B, H = dstate.shape
    for t in range(T - 1, -1, -1):
        for b in range(B):
            for j in range(H):
                dstate[0, b, j] += d_outputs[t, b, j]
        cell_backward(dstate, states, t, cache[t], dxz[t], dhz[t], dstate_prev)
        np.dot(dhz[t], W_h, dh_recurrent)
        for b in range(B):
            for j in range(H):
                dstate_prev[0, b, j] += dh_recurrent[b, j]
        for s in range(S):
            for b in range(B):
                for j in range(H):
                    dstate[s, b, j] = dstate_prev[s, b, j]


# ---- weight gradients, hoisted out of the loop ---------------------------------------------

@njit(cache=True)
def recurrent_weight_gradients(dhz2d, h_prev2d, dW_h, db_h):
    """dW_h = dHZ^T H_prev, db_h = sum dHZ over all steps; dhz2d (N, G*H), h_prev2d (N, H)."""
    np.dot(dhz2d.T, h_prev2d, dW_h)
    column_sums(dhz2d, db_h)


@njit(cache=True)
def input_weight_gradients_dense(dxz2d, x2d, W_x, dW_x, db_x, dx2d):
    """dW_x = dXZ^T X, db_x = sum dXZ, dX = dXZ W_x."""
    np.dot(dxz2d.T, x2d, dW_x)
    column_sums(dxz2d, db_x)
    np.dot(dxz2d, W_x, dx2d)


@njit(cache=True)
def input_weight_gradients_indices(dxz2d, idx, dW_x, db_x):
    """Scatter-add version of dW_x = dXZ^T onehot(idx); inputs -1 contribute nothing."""
    N, GH = dxz2d.shape
    # Accumulate into rows of dW_x.T (contiguous), then transpose once: the same sums in the
    # same order as adding into the strided columns of dW_x, several times faster.
    dW_xT = np.zeros((dW_x.shape[1], GH), dW_x.dtype)
    for n in range(N):
        i = idx[n]
        if i >= 0:
            for k in range(GH):
                dW_xT[i, k] += dxz2d[n, k]
    dW_x[:, :] = dW_xT.T
    column_sums(dxz2d, db_x)


@njit(cache=True)
def column_sums(a2d, out):
    """out (K,) = a2d (N, K) summed over its rows."""
    N, K = a2d.shape
    out[:] = 0.0
    for n in range(N):
        for k in range(K):
            out[k] += a2d[n, k]



# ---- per-cell loops, compiled and cached on disk -----------------------------------------------

_CELL_LOOPS = {}
_TEMPLATE = Path(__file__).with_name("cell_loops.py")
_MARK = "# CELL KERNELS"


def _importable(fn):
    """(module, name) when ``fn`` is a module-level attribute of an importable module, else None."""
    py = getattr(fn, "py_func", fn)
    module = sys.modules.get(getattr(py, "__module__", None) or "")
    name = getattr(py, "__name__", None)
    if module is None or name is None or getattr(module, name, None) is not fn or module.__name__ == "__main__":
        return None
    return module.__name__, name


def cache_dir() -> Path:
    """Where the per-cell loop modules go: ``$NUMBARNN_CACHE_DIR``, else ``$NUMBA_CACHE_DIR/numbarnn``,
    else the user cache directory (``~/.cache/numbarnn``)."""
    if os.environ.get("NUMBARNN_CACHE_DIR"):
        return Path(os.environ["NUMBARNN_CACHE_DIR"])
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"]) / "numbarnn"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "numbarnn"


def _cell_source(cell, forward, backward):
    """The template's text importing this cell's kernels."""
    lines = []
    for line in _TEMPLATE.read_text().splitlines():
        if line.endswith(_MARK):
            module, name = forward if "cell_forward" in line else backward
            alias = "cell_forward" if "cell_forward" in line else "cell_backward"
            line = f"from {module} import {name} as {alias}  {_MARK}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _fingerprint(source, modules) -> str:
    """Changes whenever anything compiled into the loops changes: the template, the cell's
    module, numbarnn's kernels, Numba or Python (Numba's own cache only checks the one file)."""
    digest = hashlib.sha256(source.encode())
    for path in sorted(set(Path(__file__).parent.glob("*.py")) | {Path(m) for m in modules}):
        digest.update(str(path).encode())
        digest.update(Path(path).read_bytes())
    import numba

    digest.update(f"{numba.__version__} {sys.version}".encode())
    return digest.hexdigest()[:16]


def _load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def loops_for(cell):
    """The compiled loops of ``cell`` (a module with ``forward_indices``, ``forward_dense``,
    ``backward_indices``, ``backward_dense``, ``generate``, ``language_model_step``,
    ``sequence_forward`` and ``sequence_backward``), built once per pair of kernels.

    Kernels defined at module level in an importable module get a generated module in
    :func:`cache_dir`, cached on disk by Numba like any ``cache=True`` code. Others (a
    notebook's, a closure's) get the same code in memory, compiled once per process.
    """
    key = (cell.forward, cell.backward)
    if key in _CELL_LOOPS:
        module = _CELL_LOOPS[key]
        # Numba imports a function's module by name when it compiles a new specialisation:
        # keep it importable even if someone pruned sys.modules.
        sys.modules.setdefault(module.__name__, module)
        return module
    forward, backward = _importable(cell.forward), _importable(cell.backward)
    module = None
    if forward and backward:
        source = _cell_source(cell, forward, backward)
        files = [inspect.getsourcefile(sys.modules[m]) for m, _ in (forward, backward)]
        try:
            name = f"numbarnn_loops_{cell.name.replace('-', '_').replace('.', '_')}_{_fingerprint(source, files)}"
            directory = cache_dir()
            path = directory / f"{name}.py"
            if not path.exists() or path.read_text() != source:
                directory.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
                with os.fdopen(fd, "w") as f:
                    f.write(source)
                os.replace(tmp, path)  # atomic: concurrent processes write the same text
            module = _load_module(path, name)
        except OSError:
            module = None  # no writable cache directory: compile in memory below
    if module is None:
        module = types.ModuleType(f"numbarnn_loops_{cell.name}_in_memory")
        source = _TEMPLATE.read_text().replace("@njit(cache=True)", "@njit")
        namespace = module.__dict__
        exec(compile(source, str(_TEMPLATE), "exec"), namespace)
        namespace["cell_forward"], namespace["cell_backward"] = cell.forward, cell.backward
    _CELL_LOOPS[key] = module
    return module
