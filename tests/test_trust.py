"""What numbarnn reads from disk: its compiled-loop cache and Numba's cache (issue 11, item 1).

Each test plants what an attacker or a crash would leave and checks that nothing planted runs,
that nothing corrupt breaks a run, and that the directory numbarnn makes is private.
"""
import os
import pickle
import shutil
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import njit

import numbarnn
from numbarnn import trust
from numbarnn.kernels import loops

REPO = Path(__file__).resolve().parents[1]


def run_python(code, **env):
    """Run ``code`` in a fresh interpreter importing this checkout's numbarnn."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=600)
    assert result.returncode == 0, result.stderr
    return result


# The same small computation in every process; prints the output and the loops' cache use.
RUN_LOOPS = """
import numpy as np, numbarnn
from numbarnn.kernels import loops
assert numbarnn.__file__.startswith({repo!r}), numbarnn.__file__
model = numbarnn.make_model("rnn", vocab_size=5, hidden_size=3, dtype="float64", seed=0)
out, _ = model.forward(np.arange(6, dtype=np.int64).reshape(3, 2) % 5)
module = loops.loops_for(numbarnn.get_cell("rnn"))
stats = module.forward_indices.stats
print(repr(float(out.sum())), sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
"""


def run_loops(cache):
    result = run_python(RUN_LOOPS.format(repo=str(REPO)), NUMBARNN_CACHE_DIR=str(cache))
    total, hits, misses = result.stdout.split()
    return float(total), int(hits), int(misses), result.stderr


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    """A cache directory after one run, and that run's output."""
    cache = tmp_path_factory.mktemp("trusted") / "loops"
    total, hits, misses, _ = run_loops(cache)
    assert (hits, misses) == (0, 1)
    return cache, total


@pytest.fixture
def warm_copy(warm_cache, tmp_path):
    """A private copy of the warm cache for one test to damage."""
    source, expected = warm_cache
    cache = tmp_path / "loops"
    shutil.copytree(source, cache)
    return cache, expected


def rnn_files(cache, pattern):
    return sorted(cache.glob(f"numbarnn_loops_rnn_*{pattern}"))


# ---- the directory -----------------------------------------------------------------------------

def test_the_cache_directory_is_made_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        made = trust.private_directory(tmp_path / "a" / "loops", "loops")
    finally:
        os.umask(old)
    assert made == tmp_path / "a" / "loops"
    assert stat.S_IMODE(os.stat(made).st_mode) == 0o700


@pytest.mark.parametrize("problem", ["group-writable", "world-writable", "symlink", "foreign file", "foreign dir"])
def test_an_unsafe_cache_directory_is_refused_with_one_warning_naming_it(tmp_path, problem, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))  # where the private fallback goes
    target = tmp_path / "loops"
    target.mkdir(mode=0o700)
    if problem == "group-writable":
        os.chmod(target, 0o770)
    elif problem == "world-writable":
        os.chmod(target, 0o777)
    elif problem == "symlink":
        real, target = target, tmp_path / "link"
        target.symlink_to(real)
    else:
        if os.geteuid() != 0:
            pytest.skip("making a file owned by another user needs root")
        planted = target / "x.nbi" if problem == "foreign file" else target
        planted.touch()
        os.chown(planted, 65534, 65534)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        used = trust.private_directory(target, "loops")
    assert used == tmp_path / "home-cache" / "numbarnn-private" / "loops"
    assert trust.private_directory_problem(used) is None
    messages = [str(w.message) for w in caught if issubclass(w.category, trust.UnsafeCacheWarning)]
    assert len(messages) == 1 and str(target) in messages[0] and "\n" not in messages[0]
    with pytest.raises(trust.UnsafeCacheError, match=str(target)):
        trust.private_directory(target, "loops", strict=True)


def test_with_no_private_place_at_all_the_loops_compile_in_memory(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # the cache directory asked for, and the user cache dir, both unsafe
    code = ("import warnings; warnings.simplefilter('always')\n" + RUN_LOOPS.format(repo=str(REPO)) +
            "print(module.__name__)")
    before = set(Path("/tmp").glob("numbarnn-loops-*"))
    result = run_python(code, NUMBARNN_CACHE_DIR=str(shared / "loops"), XDG_CACHE_HOME=str(shared))
    total, hits, misses, name = result.stdout.split()
    assert name.endswith("_in_memory") and (hits, misses) == ("0", "1")
    assert "compiling the rnn loops in memory" in result.stderr and str(shared / "loops") in result.stderr
    assert set(Path("/tmp").glob("numbarnn-loops-*")) == before  # no directory left behind per process
    assert not [p for p in shared.rglob("*") if not p.is_dir()]  # nothing cached in the unsafe place


def test_a_directory_under_an_unsafe_parent_is_refused(tmp_path):
    parent = tmp_path / "shared"
    parent.mkdir()
    os.chmod(parent, 0o777)  # others could rename our directory away and put theirs in its place
    (parent / "loops").mkdir(mode=0o700)
    assert "writable by others and not sticky" in trust.private_directory_problem(parent / "loops")
    os.chmod(parent, 0o1777)  # sticky, like /tmp: only the owner may rename
    assert trust.private_directory_problem(parent / "loops") is None
    assert "No such file" in trust.private_directory_problem(parent / "missing")


def test_an_unsafe_numba_cache_dir_is_replaced_before_numbarnn_defines_its_kernels(tmp_path):
    shared = tmp_path / "numba-shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    code = ("import warnings; warnings.simplefilter('always')\n"
            "import numbarnn; from numba.core import config; print(config.CACHE_DIR)")
    result = run_python(code, NUMBA_CACHE_DIR=str(shared), NUMBARNN_CACHE_DIR=str(tmp_path / "loops"))
    assert result.stdout.strip() != str(shared)
    assert f"not using the numba cache {shared}" in result.stderr


# ---- nothing planted runs ---------------------------------------------------------------------

class _Marker:
    """Unpickling this creates a file: the proof that a planted pickle ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_planted_bytecode_source_and_numba_pickles_never_run(warm_copy, tmp_path):
    cache, expected = warm_copy
    marker = tmp_path / "pwned"
    evil = f"open({str(marker)!r}, 'w').close()\n"
    for path in rnn_files(cache, ".py"):
        path.write_text(evil)  # the generated source, rewritten by someone else
        pycache = cache / "__pycache__"
        pycache.mkdir(exist_ok=True)
        import py_compile
        py_compile.compile(str(path), cfile=str(pycache / f"{path.stem}.cpython-{sys.version_info[0]}"
                                                f"{sys.version_info[1]}.pyc"))
    for index in rnn_files(cache, ".nbi"):
        # Numba's own format (a version pickle, then the rest): unpickled as is, it would run.
        index.write_bytes(pickle.dumps(numbarnn.__version__) + pickle.dumps(_Marker(marker)))
    total, hits, misses, _ = run_loops(cache)
    assert not marker.exists()
    assert total == expected and (hits, misses) == (0, 1)  # the bad index was dropped and rebuilt
    assert run_loops(cache)[1:3] == (1, 0)


@pytest.mark.parametrize("damage", ["non-utf8 source", "truncated pyc", "junk index", "truncated data",
                                    "flipped data", "empty index"])
def test_corrupt_cache_files_are_rebuilt_not_raised(warm_copy, damage):
    cache, expected = warm_copy
    if damage == "non-utf8 source":
        for path in rnn_files(cache, ".py"):
            path.write_bytes(b"\xff\xfe\x00garbage")
    elif damage == "truncated pyc":
        (cache / "__pycache__").mkdir()
        for path in rnn_files(cache, ".py"):
            (cache / "__pycache__" / f"{path.stem}.cpython-311.pyc").write_bytes(b"\x00\x01")
    elif damage in ("junk index", "empty index"):
        for path in rnn_files(cache, ".nbi"):
            path.write_bytes(b"" if damage == "empty index" else os.urandom(300))
    else:
        for path in rnn_files(cache, ".nbc"):
            data = bytearray(path.read_bytes())
            if damage == "truncated data":
                del data[len(data) // 2:]
            else:
                data[len(data) // 2] ^= 0x40
            path.write_bytes(bytes(data))
    total, hits, misses, stderr = run_loops(cache)
    # The source and bytecode files are never read: the machine code stays valid. A damaged
    # Numba file is found, dropped and compiled afresh.
    assert total == expected and (hits, misses) == ((1, 0) if damage.endswith(("source", "pyc")) else (0, 1)), stderr
    assert run_loops(cache)[1:3] == (1, 0)  # rebuilt: the next process hits again


def test_the_module_runs_the_source_numbarnn_generated_not_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBARNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(loops, "_CELL_LOOPS", {})
    module = loops.loops_for(numbarnn.get_cell("rnn"))
    path = Path(module.__file__)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    expected = path.read_text()
    path.write_text("raise SystemExit('planted')\n")
    import inspect
    assert inspect.getsource(module) == expected  # tracebacks and getsource show what ran


# ---- verified Numba cache files, fuzzed -------------------------------------------------------

@njit
def _square_sum(x):
    total = 0.0
    for v in x:
        total += v * v
    return total


@pytest.fixture(scope="module")
def saved_entry(tmp_path_factory):
    directory = trust.private_directory(tmp_path_factory.mktemp("fuzz") / "c", "fuzz")
    dispatcher = njit(_square_sum.py_func)
    trust.enable_verified_cache(dispatcher, directory, "stamp")
    assert dispatcher(np.arange(3.0)) == 5.0
    files = {p.name: p.read_bytes() for p in directory.iterdir()}
    assert any(n.endswith(".nbi") for n in files) and any(n.endswith(".nbc") for n in files)
    return directory, dispatcher, files


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_cache_files_load_or_are_dropped_never_raise(saved_entry, data):
    directory, dispatcher, files = saved_entry
    name = data.draw(st.sampled_from(sorted(files)))
    blob = bytearray(files[name])
    how = data.draw(st.sampled_from(["truncate", "flip", "replace", "append"]))
    if how == "truncate":
        del blob[data.draw(st.integers(0, len(blob) - 1)):]
    elif how == "flip":
        at = data.draw(st.integers(0, len(blob) - 1))
        blob[at] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "replace":
        blob = bytearray(data.draw(st.binary(max_size=200)))
    else:
        blob += data.draw(st.binary(min_size=1, max_size=20))
    for other, original in files.items():
        (directory / other).write_bytes(original)
    (directory / name).write_bytes(bytes(blob))
    fresh = njit(_square_sum.py_func)
    trust.enable_verified_cache(fresh, directory, "stamp")
    loaded = fresh._cache.load_overload(dispatcher.signatures[0], fresh.targetctx)
    assert (loaded is None) == (bytes(blob) != files[name])  # every change is caught before unpickling
    assert fresh(np.arange(3.0)) == 5.0  # and a dropped entry is compiled and saved again


# ---- fingerprints and pruning ----------------------------------------------------------------

def test_the_fingerprint_covers_every_module_the_kernels_reach(tmp_path, monkeypatch):
    package = tmp_path / "leakycell"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text("from numba import njit\n\n@njit\ndef scale(v):\n    return 0.5 * v\n")
    (package / "kernels.py").write_text("from numba import njit\nfrom leakycell.helpers import scale\n\n"
                                        "@njit\ndef forward(v):\n    return scale(v)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import leakycell.kernels
    files = loops._kernel_files([leakycell.kernels.forward])
    assert str(package / "helpers.py") in files and str(package / "kernels.py") in files
    assert not any("numpy" in f or "numba" in f for f in files)
    before = loops._fingerprint("src", files)
    (package / "helpers.py").write_text("from numba import njit\n\n@njit\ndef scale(v):\n    return 0.25 * v\n")
    assert loops._fingerprint("src", files) != before


def test_old_builds_are_pruned_to_a_few(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBARNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(loops, "_CELL_LOOPS", {})
    os.chmod(tmp_path, 0o700)
    for age, fingerprint in enumerate(["a" * 16, "b" * 16, "c" * 16, "d" * 16, "e" * 16]):
        for suffix in (".py", ".forward_indices-112.py311.nbi", ".forward_indices-112.py311.1.nbc"):
            path = tmp_path / f"numbarnn_loops_rnn_{fingerprint}{suffix}"
            path.write_text("old")
            os.utime(path, (1e9 + age, 1e9 + age))
    (tmp_path / "numbarnn_loops_lstm_aaaaaaaaaaaaaaaa.py").write_text("another cell's")
    module = loops.loops_for(numbarnn.get_cell("rnn"))
    kept = {p.name.split("_")[3].partition(".")[0] for p in tmp_path.glob("numbarnn_loops_rnn_*")}
    current = module.__name__.rpartition("_")[2]
    assert kept == {current, "c" * 16, "d" * 16, "e" * 16}  # the three newest others stay
    assert (tmp_path / "numbarnn_loops_lstm_aaaaaaaaaaaaaaaa.py").exists()
