"""The code passes the project's ruff rules (pyproject.toml [tool.ruff]): unused names, shadowed
imports, mutable defaults, unsorted imports and the like fail the test suite, not only a reviewer."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is missing: install the test tools with scripts/bootstrap --test"
    out = subprocess.run([ruff, "check", "--no-cache", "src", "tests", "benchmarks"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
