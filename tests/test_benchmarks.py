"""The benchmark scripts run (tiny sizes) and print their table; no timing is asserted."""
import subprocess
import sys
from pathlib import Path

import pytest

import checkout

ROOT = Path(__file__).resolve().parents[1]


def test_kernel_benchmark_smoke():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_kernels.py"), "--quick",
                             "--repeats", "2"], capture_output=True, text=True, timeout=300, env=checkout.env())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("rnn tiny f64") and "numbarnn" in line for line in lines)
    assert sum("numpy" in line and line.rstrip().endswith("x") for line in lines) == 2


# benchmarks/suite.py --quick (four minutes with a cold numba cache, mostly compiling), a
# BackgroundRuns: the root conftest.py starts it as soon as the session has collected
# test_suite_quick_smoke.
QUICK_SUITE = checkout.BackgroundRuns(lambda: [subprocess.Popen(
    [sys.executable, str(ROOT / "benchmarks" / "suite.py"), "--quick"], stdout=subprocess.PIPE,
    stderr=subprocess.PIPE, text=True, env=checkout.env())])


def test_suite_quick_smoke():
    """benchmarks/suite.py --quick runs every case and prints one table with a row for each."""
    (process,) = QUICK_SUITE.start()
    try:
        stdout, stderr = process.communicate(timeout=1500)  # it shares the cores with the other tests
    finally:
        QUICK_SUITE.stop()
    assert process.returncode == 0, stdout[-4000:] + stderr[-4000:]
    lines = stdout.splitlines()
    assert any(line.startswith("case") and "speed-up" in line and "target" in line for line in lines)
    for case in ("course", "mid", "large", "generate", "plugin", "owncells", "start-up", "memory", "scaling", "digits",
                 "bilstm", "embedding"):
        rows = [line for line in lines if line.split()[:1] == [case]]
        assert rows, f"no table row for case {case!r}"
        assert not any("ERROR" in row or "MISMATCH" in row for row in rows), rows


@pytest.mark.parametrize("cell, recurrent_weights", [("layernorm_lstm", True), ("indrnn", False)])
def test_breakdown_smoke(cell, recurrent_weights):
    """benchmarks/breakdown.py times every part of a step; at tiny sizes it runs and prints each
    row. The two plugin cells have parameters of their own, one with ``W_h`` and one without
    (whose step has no recurrent product to time)."""
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "breakdown.py"), "--cell", cell, "--hidden",
                             "4", "--batch", "2", "--T", "3", "--vocab", "5", "--repeats", "2"],
                            capture_output=True, text=True, timeout=300, env=checkout.env())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for part in ("compiled step", "forward time loop", "BPTT time loop", "train_step from Python"):
        assert any(part in line and line.rstrip().endswith("ms") for line in lines), part
    products = [line for line in lines if "recurrent products alone, 1 BLAS" in line or "recurrent weight gradient" in line]
    assert len(products) == (2 if recurrent_weights else 0), lines


def test_small_batch_products_smoke():
    """benchmarks/small_batch_products.py prints gemm against per-row gemv and the tiled product,
    and which one the loops take."""
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "small_batch_products.py"), "--dtype", "float64",
                             "--hidden", "4", "--batch", "1", "3", "40", "--T", "2", "--repeats", "2"],
                            capture_output=True, text=True, timeout=300, env=checkout.env())
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("float64")]
    # 40 float64 rows: past the tiled product's limit at either vector width (16 rows, 32 with AVX-512)
    assert [(row[2], row[-1]) for row in rows] == [("1", "gemm"), ("3", "tiled"), ("40", "gemm")]
    assert all(float(row[k]) > 0 for row in rows for k in (7, 8, 13, 14))   # the four ratios


def test_embedding_pair_smoke():
    """benchmarks/embedding_pair.py alternates the two models' steps and prints both medians and the ratio."""
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "embedding_pair.py"), "--steps", "2"],
                            capture_output=True, text=True, timeout=300, env=checkout.env())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[:2]] == ["embedding", "one-hot"]
    assert lines[-1].startswith("one-hot / embedding: ") and "(median of step pairs)" in lines[-1]
