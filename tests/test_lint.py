"""The tree passes ruff under the project's rules (pyproject.toml [tool.ruff]: pycodestyle, pyflakes,
import order; ruff is installed by tools/setup.sh from requirements/stack.txt)."""
import subprocess
import sys

from conftest import ROOT


def test_ruff_passes_on_the_whole_tree():
    cmd = [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", ROOT]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
