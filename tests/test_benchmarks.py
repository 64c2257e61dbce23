"""The benchmark scripts run (tiny sizes) and print their table; no timing is asserted."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_kernel_benchmark_smoke():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_kernels.py"), "--quick",
                             "--repeats", "2"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("rnn tiny f64") and "numbarnn" in line for line in lines)
    assert sum("numpy" in line and line.rstrip().endswith("x") for line in lines) == 2
