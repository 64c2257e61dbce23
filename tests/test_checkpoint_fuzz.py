"""Fuzzing checkpoint loading: zero escapes.

Every damaged, truncated, mutated or foreign checkpoint must either load (and then train a
step) or raise ``CheckpointError``; any other exception fails the test, and so does a load
that allocates more than a small budget (sizes claimed by a file are checked against the
bytes present before anything is allocated by them).

The bases are two tiny checkpoints (names mode with the early-stopping state, stream mode
with a carried state), written once per module; each example loads from the same file path.
"""
import copy
import io
import json
import os
import struct
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import numbarnn
from numbarnn import data as D
from numbarnn.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint

# NUMBARNN_FUZZ_EXAMPLES=5000 for a deeper hunt than CI's few seconds.
FUZZ = settings(max_examples=int(os.environ.get("NUMBARNN_FUZZ_EXAMPLES", 80)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
PEAK_LIMIT = 64 * 2**20  # the bases hold a few kB; a load that allocates more obeyed a claim
NAMES = ["ab", "ba", "abba", "baab", "a", "bb", "aab"]
TEXT = "the quick brown fox jumps over the lazy dog\n" * 4


def make_batches(mode):
    if mode == "names":
        return D.NamesBatches(NAMES, D.Vocabulary.from_text("\n".join(NAMES)), 3, seed=0)
    return D.StreamBatches(TEXT, D.Vocabulary.from_text(TEXT), 2, 6)


class Bases(dict):
    def __repr__(self):  # hypothesis prints the fixture with each failing example
        return "<checkpoint fuzz bases>"


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """For each mode: the checkpoint's bytes, its metadata and arrays, and a scratch path to load from."""
    folder = tmp_path_factory.mktemp("fuzz")
    out = Bases()
    for mode, cell in (("names", "lstm"), ("stream", "rnn")):
        batches = make_batches(mode)
        vocab = D.Vocabulary.from_text("\n".join(NAMES) if mode == "names" else TEXT)
        trainer = numbarnn.make_trainer(cell, vocab=vocab, hidden_size=3, seed=0, mode=mode, lr=0.05)
        validation = [batches.next_batch()] if mode == "names" else None
        trainer.fit(batches, steps=4, validation=validation, eval_every=2, progress=False, sample_every=0)
        path = save_checkpoint(trainer, folder / f"{mode}.ckpt", batches)
        meta, arrays = read_checkpoint(path)
        out[mode] = {"raw": path.read_bytes(), "meta": meta, "arrays": arrays, "path": folder / "fuzzed.ckpt"}
    assert out["names"]["meta"]["fit"]["best_params"] and out["stream"]["meta"]["carried_state"]
    return out


def check(base, raw: bytes, mode: str) -> None:
    """Load ``raw``: a CheckpointError, or a trainer that trains; nothing else, no big allocation."""
    path = base["path"]
    path.write_bytes(raw)
    batches = make_batches(mode)
    tracemalloc.start()
    try:
        trainer = load_checkpoint(path, batches)
    except CheckpointError as error:
        assert "\n" not in str(error) and str(path) in str(error)
        return
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < PEAK_LIMIT, f"loading allocated {peak} bytes"
    trainer.fit(batches, steps=1, progress=False, sample_every=0)


def npz_bytes(meta, arrays) -> bytes:
    members = dict(arrays)
    if meta is not None:
        members["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **members)  # allow_pickle is on here: object arrays are written, to be refused
    return buffer.getvalue()


modes = st.sampled_from(["names", "stream"])


# ---- raw bytes ------------------------------------------------------------------------------

@FUZZ
@given(mode=modes, data=st.data())
def test_truncations(bases, mode, data):
    raw = bases[mode]["raw"]
    check(bases[mode], raw[:data.draw(st.integers(0, len(raw) - 1))], mode)


def structural_offsets(raw: bytes) -> list:
    """Byte offsets of the zip headers, the .npy headers and the central directory: where flips bite."""
    offsets = set(range(max(0, len(raw) - 600), len(raw)))  # central directory and its end record
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        for info in archive.infolist():
            offsets.update(range(info.header_offset, min(len(raw), info.header_offset + 30 + len(info.filename) + 140)))
    return sorted(offsets)


@FUZZ
@given(mode=modes, data=st.data())
def test_byte_flips(bases, mode, data):
    raw = bytearray(bases[mode]["raw"])
    positions = st.one_of(st.integers(0, len(raw) - 1), st.sampled_from(structural_offsets(bytes(raw))))
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(positions)
        raw[at] = data.draw(st.one_of(st.integers(1, 255).map(lambda x, b=raw[at]: b ^ x),
                                      st.sampled_from([0, 0xFF, 0x7F, 0x80])))
    check(bases[mode], bytes(raw), mode)


# Central directory entry fields (offset, struct format) a lying archive can set.
CENTRAL_FIELDS = {"method": (10, "<H"), "crc": (16, "<I"), "compressed size": (20, "<I"),
                  "file size": (24, "<I"), "name length": (28, "<H"), "extra length": (30, "<H"),
                  "flags": (8, "<H"), "local header offset": (42, "<I")}


@FUZZ
@given(mode=modes, data=st.data())
def test_lying_zip_directory_fields(bases, mode, data):
    """Sizes, offsets and compression methods in the central directory set to any value."""
    raw = bytearray(bases[mode]["raw"])
    entries = []
    at = raw.find(b"PK\x01\x02")
    while at >= 0:
        entries.append(at)
        at = raw.find(b"PK\x01\x02", at + 4)
    for _ in range(data.draw(st.integers(1, 3))):
        entry = data.draw(st.sampled_from(entries))
        offset, fmt = CENTRAL_FIELDS[data.draw(st.sampled_from(sorted(CENTRAL_FIELDS)))]
        bits = 8 * struct.calcsize(fmt)
        value = data.draw(st.one_of(st.integers(0, 2**bits - 1), st.sampled_from([0, 1, 8, 12, 14, 99, 2**bits - 1])))
        struct.pack_into(fmt, raw, entry + offset, value)
    check(bases[mode], bytes(raw), mode)


@FUZZ
@given(mode=modes, data=st.data())
def test_recompressed_members(bases, mode, data):
    """Members stored, deflated (both load) or bzip2/lzma-compressed (refused)."""
    methods = st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(bases[mode]["raw"])) as src, zipfile.ZipFile(buffer, "w") as out:
        for name in src.namelist():
            out.writestr(name, src.read(name), compress_type=data.draw(methods))
    check(bases[mode], buffer.getvalue(), mode)


# ---- .npy headers inside the archive ------------------------------------------------------------

descrs = st.one_of(st.sampled_from(["'<f4'", "'<f8'", "'>f4'", "'|O'", "'O'", "'<U3'", "'|V8'", "'|b1'", "'<c8'",
                                    "('<f4', (1000000,))", "('<f4',)", "[('a', '<f4')]", "[('a',)]", "[1]",
                                    "'<f4' + 1", "'x' * 99", "''", "()"]),
                   st.text(max_size=12).map(repr))
dims = st.one_of(st.integers(-3, 40), st.sampled_from([2**31, 2**40, 2**62, 10**30]))
shapes = st.one_of(st.lists(dims, max_size=3).map(lambda d: repr(tuple(d))),
                   st.sampled_from(["(3,", "[3]", "(3.0,)", "'3'", "()", "None"]))


@FUZZ
@given(mode=modes, data=st.data())
def test_npy_header_mutations(bases, mode, data):
    """One member's .npy header rewritten: any dtype text, shape, order, version, or junk."""
    base = bases[mode]
    names = sorted(base["arrays"]) + ["meta"]
    target = data.draw(st.sampled_from(names))
    if data.draw(st.booleans()):
        header = (f"{{'descr': {data.draw(descrs)}, 'fortran_order': {data.draw(st.sampled_from(['False', 'True', '1']))},"
                  f" 'shape': {data.draw(shapes)}, }}")
    else:
        header = data.draw(st.text(max_size=80))
    version = data.draw(st.sampled_from([b"\x01\x00", b"\x02\x00", b"\x03\x00", b"\x09\x09"]))
    encoded = header.encode("utf-8", "surrogatepass")
    length = len(encoded).to_bytes(2 if version == b"\x01\x00" else 4, "little")
    body = data.draw(st.sampled_from([b"", b"\0" * 12, b"\0" * 4096]))
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(base["raw"])) as src, zipfile.ZipFile(buffer, "w") as out:
        for name in src.namelist():
            member = src.read(name)
            if name == target + ".npy":
                member = b"\x93NUMPY" + version + length + encoded + body
            out.writestr(name, member)
    check(base, buffer.getvalue(), mode)


# ---- the JSON metadata -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats()
    | st.sampled_from([0, 1, -1, 2, 3, 6000, 200_000, 2**31, 2**63, 10**30, "", "lstm", "names", "stream",
                       "float64", "float16", "PCG64", "value"])
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=8)


def mutate(doc, data) -> None:
    """Replace, delete, or add one entry somewhere in ``doc`` (walking down at random)."""
    node = doc
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = data.draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, (dict, list)) and child and data.draw(st.booleans()):
            node = child
            continue
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            node[key] = data.draw(json_values)
        elif action == "delete":
            del node[key]
        elif isinstance(node, dict):
            node[data.draw(st.text(max_size=6))] = data.draw(json_values)
        else:
            node.append(data.draw(json_values))
        return
    if isinstance(node, dict):
        node[data.draw(st.text(max_size=6))] = data.draw(json_values)


@FUZZ
@given(mode=modes, data=st.data())
def test_json_mutations(bases, mode, data):
    base = bases[mode]
    meta = copy.deepcopy(base["meta"])
    for _ in range(data.draw(st.integers(1, 3))):
        mutate(meta, data)
    check(base, npz_bytes(meta, base["arrays"]), mode)


def number_paths(doc, path=()):
    """The path of every number in ``doc``."""
    if isinstance(doc, dict):
        return [p for key, value in doc.items() for p in number_paths(value, path + (key,))]
    if isinstance(doc, list):
        return [p for i, value in enumerate(doc) for p in number_paths(value, path + (i,))]
    return [path] if isinstance(doc, (int, float)) and not isinstance(doc, bool) else []


boundary_numbers = st.sampled_from([0, -1, 1, 2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64, -2**63 - 1, 2**70,
                                    10**400, 0.5, -0.0, 1e-320, 1e308, float("nan"), float("inf"), float("-inf")])


@FUZZ
@given(mode=modes, data=st.data())
def test_boundary_numbers(bases, mode, data):
    """Any number in the metadata (sizes, steps, positions, options, random states) at a boundary."""
    base = bases[mode]
    meta = copy.deepcopy(base["meta"])
    for _ in range(data.draw(st.integers(1, 2))):
        *parents, last = data.draw(st.sampled_from(number_paths(meta)))
        node = meta
        for key in parents:
            node = node[key]
        node[last] = data.draw(boundary_numbers)
    check(base, npz_bytes(meta, base["arrays"]), mode)


size_claims = st.fixed_dictionaries({}, optional={
    "hidden_size": st.sampled_from([1, 2, 4, 6000, 200_000, 2**40]),
    "vocab_size": st.sampled_from([1, 2, 26, 200_000, 2**40]),
    "layers": st.sampled_from([1, 2, 3, 10**6, 10**12])})


@FUZZ
@given(mode=modes, claims=size_claims)
def test_size_claims(bases, mode, claims):
    """Sizes in the metadata that the arrays do not back: refused before anything is allocated."""
    base = bases[mode]
    meta = copy.deepcopy(base["meta"])
    meta["config"].update(claims)
    check(base, npz_bytes(meta, base["arrays"]), mode)


# ---- the arrays ------------------------------------------------------------------------------------

dtypes = st.sampled_from([np.float16, np.float32, np.float64, np.int8, np.int64, np.uint8, np.bool_, np.complex64,
                          ">f4", ">f8", "<U2", "S3", object, [("a", "<f4"), ("b", "<i2")], ("<f4", (2,))])
small_shapes = st.lists(st.integers(0, 5), max_size=3).map(tuple)


@FUZZ
@given(mode=modes, data=st.data())
def test_wrong_dtypes_and_shapes(bases, mode, data):
    base = bases[mode]
    arrays = dict(base["arrays"])
    arrays["meta"] = np.frombuffer(json.dumps(base["meta"]).encode(), np.uint8)
    for _ in range(data.draw(st.integers(1, 2))):
        key = data.draw(st.sampled_from(sorted(arrays) + ["param/W_z", "state/1", "state/7", "fit/best_params",
                                                          "optim/exp_avg.W_z"]))
        value = arrays.get(key, np.zeros(3, np.float32))
        action = data.draw(st.sampled_from(["dtype", "shape", "both", "delete", "transpose"]))
        if action == "delete":
            arrays.pop(key, None)
            continue
        shape = data.draw(small_shapes) if action in ("shape", "both") else value.shape
        dtype = data.draw(dtypes) if action in ("dtype", "both") else value.dtype
        if action == "transpose":
            arrays[key] = np.asfortranarray(value.T)  # written in Fortran order
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # complex to real, NaN to integer: wrong values are the point
                arrays[key] = np.resize(value, shape).astype(dtype)
        except (TypeError, ValueError):
            arrays[key] = np.zeros(shape, dtype)
    check(base, npz_bytes(None, arrays), mode)
