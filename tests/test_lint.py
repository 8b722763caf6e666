"""The tree passes ruff under the project's rules (pyproject.toml [tool.ruff]: pycodestyle,
pyflakes, import order) and is laid out by `ruff format` (Black's style at LiBai's line length 100);
ruff is installed by tools/setup.sh from requirements/stack.txt."""

import subprocess
import sys

from conftest import ROOT


def _ruff(*args):
    cmd = [sys.executable, "-m", "ruff", *args, "--no-cache", ROOT]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_ruff_passes_on_the_whole_tree():
    proc = _ruff("check", "--output-format", "concise")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]


def test_the_tree_is_ruff_formatted():
    proc = _ruff("format", "--check")
    assert proc.returncode == 0, (
        "run `.venv/bin/ruff format .`:\n" + (proc.stdout + proc.stderr)[-5000:]
    )
