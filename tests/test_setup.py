"""The set-up script: oneflow imports with no environment variables, an active working environment
is used as it is, and a machine without Python 3.10 gets a clear message."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT


def test_oneflow_imports_in_a_bare_environment():
    """No LD_LIBRARY_PATH: the wheel's RPATH finds the nvidia libraries beside it in the venv."""
    proc = subprocess.run([sys.executable, "-c", "import oneflow, libai, flowvision, libai_vit; print('ok')"],
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ROOT}, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_an_active_environment_with_the_stack_is_used_as_is(tmp_path):
    env_dir = tmp_path / "myenv"
    (env_dir / "bin").mkdir(parents=True)
    python = env_dir / "bin" / "python"  # stands for someone's own env that has the whole stack
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    proc = subprocess.run(["bash", os.path.join(ROOT, "tools", "setup.sh")], capture_output=True, text=True,
                          env=dict(os.environ, VIRTUAL_ENV=str(env_dir)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(env_dir / "bin" / "python")
    assert "using the active environment" in proc.stderr


def test_no_python310_gives_a_clear_error(tmp_path):
    if any(os.path.exists(p) for p in ("/usr/bin/python3.10", "/usr/local/bin/python3.10")):
        pytest.skip("this machine has a system Python 3.10, so set-up cannot fail here")
    repo = tmp_path / "repo"
    for rel in ("tools/setup.sh", "requirements/stack.txt", "pyproject.toml"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.join(ROOT, rel), repo / rel)
    proc = subprocess.run(["bash", str(repo / "tools" / "setup.sh")], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 1
    assert "no Python 3.10 found" in proc.stderr and "pyenv install 3.10" in proc.stderr
    assert not (repo / ".venv").exists()
