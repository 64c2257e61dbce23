"""What numbarnn trusts on disk: private cache directories, and Numba cache files it can verify.

numbarnn compiles a module of time loops per cell and lets Numba cache the machine code on
disk. Numba's cache files are pickles, so whoever can write them can run code in the next
numbarnn process. The rule here: numbarnn reads a cache only from a directory that this user
owns and that no one else can write (nor rename, through an unsafe parent), and only files in
it that this user owns and no one else can write. A directory that fails the check is not
used: numbarnn warns once, naming it and why, and falls back to a private directory of its
own. See ``docs/trust.md``.

>>> import os, tempfile
>>> from pathlib import Path
>>> from numbarnn.trust import private_directory_problem
>>> root = Path(tempfile.mkdtemp())          # mkdtemp makes it 0700
>>> print(private_directory_problem(root))
None
>>> os.chmod(root, 0o777)
>>> private_directory_problem(root).endswith("is writable by group or others (mode 0777)")
True
>>> os.chmod(root, 0o700); os.rmdir(root)
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
import sys
import warnings
from pathlib import Path
from typing import Optional


class UnsafeCacheWarning(UserWarning):
    """A cache directory others could write was refused; numbarnn uses a private one instead."""


class UnsafeCacheError(OSError):
    """Neither the requested cache directory nor a private fallback could be made safe."""


def _owner_problem(path: Path, st: os.stat_result) -> Optional[str]:
    if st.st_uid != os.geteuid():
        return f"{path} is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _ancestor_problem(path: Path) -> Optional[str]:
    """A parent someone else can write lets them rename our directory away and put theirs in its
    place; only root, this user, or a sticky world-writable directory (like /tmp) are safe."""
    for parent in path.parents:
        try:
            st = os.stat(parent)
        except OSError as exc:
            return f"{parent}: {exc.strerror}"
        if st.st_uid not in (0, os.geteuid()):
            return f"{parent} (a parent of {path}) is owned by uid {st.st_uid}"
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            return f"{parent} (a parent of {path}) is writable by others and not sticky"
    return None


def private_directory_problem(path, *, scan: bool = True) -> Optional[str]:
    """Why ``path`` is not a private directory (None when it is): it must be a real directory
    (no symlink), owned by this user, not writable by group or others, under safe parents,
    and (``scan``) every entry in it owned by this user and not writable by others."""
    path = Path(os.path.abspath(path))
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory" + (" (a symbolic link)" if stat.S_ISLNK(st.st_mode) else "")
    problem = _owner_problem(path, st) or _ancestor_problem(path)
    if problem or not scan:
        return problem
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                try:
                    problem = _owner_problem(Path(entry.path), entry.stat(follow_symlinks=False))
                except OSError:
                    continue  # removed while we looked: nothing left to trust
                if problem:
                    return problem
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    return None


def _make_private(path: Path) -> None:
    """Create ``path`` and any missing parents as mode 0700, whatever the umask (directories
    that already exist are left as they are: the check that follows judges them)."""
    missing = [p for p in (path, *path.parents) if not os.path.lexists(p)]
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue  # made meanwhile by someone else: the check judges it
        os.chmod(directory, 0o700)  # mkdir's mode is masked by the umask; 0700 is what we promise


def _fallback_directory(purpose: str) -> Optional[Path]:
    """This user's own directory for ``purpose`` under the user cache directory, or None when
    that cannot be made private either. (Not a fresh temporary directory: every process would
    leave one behind, full of machine code nobody reuses.)"""
    home_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "numbarnn-private" / purpose
    with contextlib.suppress(OSError):
        _make_private(home_cache)
    return home_cache if private_directory_problem(home_cache) is None else None


_warned = set()


def private_directory(path, purpose: str, *, strict: bool = False) -> Path:
    """``path`` created as a private directory (0700), or, when it is not safe, a private
    fallback with a one-line :class:`UnsafeCacheWarning` naming the refused path and why.
    :class:`UnsafeCacheError` (an ``OSError``) when there is no private fallback either, or
    with ``strict``: the caller then compiles without a disk cache.

    >>> import os, tempfile, warnings
    >>> from pathlib import Path
    >>> from numbarnn.trust import private_directory
    >>> root = Path(tempfile.mkdtemp())
    >>> made = private_directory(root / "loops", "loops")
    >>> made == root / "loops", oct(os.stat(made).st_mode & 0o777)
    (True, '0o700')
    >>> os.chmod(made, 0o777)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     other = private_directory(made, "loops")
    >>> other != made, "writable by group or others" in str(caught[0].message)
    (True, True)
    """
    path = Path(os.path.abspath(os.path.expanduser(str(path))))
    with contextlib.suppress(OSError):
        _make_private(path)
    problem = private_directory_problem(path)
    if problem is None:
        return path
    fallback = None if strict else _fallback_directory(purpose)
    if fallback is None:
        raise UnsafeCacheError(f"refusing the {purpose} cache: {problem}")
    if (path, fallback) not in _warned:
        _warned.add((path, fallback))
        warnings.warn(f"numbarnn: not using the {purpose} cache {path}: {problem}; using {fallback} instead",
                      UnsafeCacheWarning, stacklevel=2)
    return fallback


def secure_numba_cache_dir() -> None:
    """Apply the same rule to ``NUMBA_CACHE_DIR`` before numbarnn's ``cache=True`` kernels are
    defined (Numba picks their cache directory at decoration time). Unset, Numba caches next to
    the installed package, as trusted as the package's own code."""
    from numba.core import config

    if config.CACHE_DIR:
        try:
            config.CACHE_DIR = str(private_directory(config.CACHE_DIR, "numba"))
        except UnsafeCacheError as error:
            # No private place for it: Numba's defaults (next to the package, or its user cache).
            warnings.warn(f"numbarnn: {error}; NUMBA_CACHE_DIR ignored", UnsafeCacheWarning, stacklevel=2)
            config.CACHE_DIR = ""


# ---- Numba cache files numbarnn can verify -------------------------------------------------

def _numba_cache_classes():
    """Built on first use: numba.core.caching is Numba's internal API, kept to this one place."""
    from numba.core import caching

    class _CorruptCacheFile(Exception):
        pass

    class VerifiedCacheFile(caching.IndexDataCacheFile):
        """Numba's index and data files with a SHA-256 of their bytes in front: a file that was
        truncated or flipped is found before it is unpickled, and is rebuilt."""

        def _read_verified(self, path):
            with open(path, "rb") as f:
                blob = f.read()
            digest, body = blob[:32], blob[32:]
            if len(blob) < 32 or hashlib.sha256(body).digest() != digest:
                raise _CorruptCacheFile(path)
            return body

        def _write_verified(self, path, body):
            with self._open_for_write(path) as f:
                f.write(hashlib.sha256(body).digest() + body)

        def _load_index(self):
            try:
                body = self._read_verified(self._index_path)
            except FileNotFoundError:
                return {}
            stream = io.BytesIO(body)
            if caching.pickle.load(stream) != self._version:
                return {}  # another Numba's entry: do not unpickle the rest
            stamp, overloads = caching.pickle.loads(stream.read())
            return overloads if stamp == self._source_stamp else {}

        def _save_index(self, overloads):
            body = caching.pickle.dumps(self._version, protocol=-1) + self._dump((self._source_stamp, overloads))
            self._write_verified(self._index_path, body)

        def _load_data(self, name):
            return caching.pickle.loads(self._read_verified(self._data_path(name)))

        def _save_data(self, name, data):
            self._write_verified(self._data_path(name), self._dump(data))

    class DirectoryLocator(caching._CacheLocator):
        """Every function of a generated module cached in one private directory, keyed by the
        generated source itself (the module is never read back from disk)."""

        def __init__(self, directory, stamp, lineno):
            self._directory, self._stamp, self._lineno = str(directory), stamp, lineno

        def ensure_cache_path(self):
            problem = private_directory_problem(self._directory, scan=False)
            if problem:
                raise OSError(problem)

        def get_cache_path(self):
            return self._directory

        def get_source_stamp(self):
            return self._stamp

        def get_disambiguator(self):
            return str(self._lineno)

    class VerifiedFunctionCache(caching.FunctionCache):
        """Numba's function cache in ``directory``, verified on load; anything unreadable is
        removed and recompiled, never raised (a cache is only ever a shortcut)."""

        def __init__(self, py_func, directory, stamp):
            self._name = repr(py_func)
            self._py_func = py_func
            impl = caching.CompileResultCacheImpl.__new__(caching.CompileResultCacheImpl)
            impl._lineno = py_func.__code__.co_firstlineno
            impl._locator = DirectoryLocator(directory, stamp, impl._lineno)
            modname = py_func.__module__
            impl._filename_base = impl.get_filename_base(f"{modname}.{py_func.__qualname__}",
                                                         getattr(sys, "abiflags", ""))
            self._impl = impl
            self._cache_path = str(directory)
            self._cache_file = VerifiedCacheFile(cache_path=self._cache_path, filename_base=impl.filename_base,
                                                 source_stamp=stamp)
            self.enable()

        def _forget(self):
            with contextlib.suppress(OSError):
                os.unlink(self._cache_file._index_path)

        def load_overload(self, sig, target_context):
            try:
                return super().load_overload(sig, target_context)
            except Exception:  # corrupt, truncated or from another build: compile afresh
                self._forget()
                return None

        def save_overload(self, sig, data):
            for _ in range(2):
                try:
                    return super().save_overload(sig, data)
                except Exception:  # an unreadable index in the way: drop it and save once more
                    self._forget()

    return VerifiedFunctionCache


_VERIFIED_CACHE = None


def enable_verified_cache(dispatcher, directory, stamp) -> None:
    """Cache ``dispatcher`` (an ``@njit`` function without ``cache=True``) in ``directory``,
    its entries keyed by ``stamp`` (a hash of the source that defines it)."""
    global _VERIFIED_CACHE
    if _VERIFIED_CACHE is None:
        _VERIFIED_CACHE = _numba_cache_classes()
    dispatcher._cache = _VERIFIED_CACHE(dispatcher.py_func, directory, stamp)
