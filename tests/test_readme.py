"""Every Python block in README.md runs as written, against this checkout (issue 12, item 10)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def _first_line(block):
    return next(line for line in block.splitlines() if line.strip() and not line.startswith("import"))


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("block", BLOCKS, ids=[_first_line(b)[:40] for b in BLOCKS])
def test_readme_block_runs(block, tmp_path):
    if "import torch" in block:
        pytest.importorskip("torch", reason="this README block uses PyTorch, which is not installed")
    check = f"import numbarnn; assert numbarnn.__file__.startswith({str(ROOT)!r}), numbarnn.__file__\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", check + block], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    if "get_cell(\"lstn\")" in block:
        assert "Did you mean 'lstm'?" in result.stdout
    if "course.model(" in block:
        assert result.stdout.startswith("Iteration: 0, Loss: ")


def test_no_machine_paths_in_published_text():
    """A reader's checkout is not ours: no absolute path of this machine in READMEs or docs."""
    texts = [ROOT / "README.md", *ROOT.glob("plugins/*/README.md"), *ROOT.glob("docs/**/*.md")]
    offenders = [str(p.relative_to(ROOT)) for p in texts if "/work/main" in p.read_text(encoding="utf-8")]
    assert not offenders
