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
    proc = subprocess.run(
        [sys.executable, "-c", "import oneflow, libai, flowvision, libai_vit; print('ok')"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_an_active_environment_with_the_stack_is_used_as_is(tmp_path):
    env_dir = tmp_path / "myenv"
    (env_dir / "bin").mkdir(parents=True)
    python = env_dir / "bin" / "python"  # stands for someone's own env that has the whole stack
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    proc = subprocess.run(
        ["bash", os.path.join(ROOT, "tools", "setup.sh")],
        capture_output=True,
        text=True,
        env=dict(os.environ, VIRTUAL_ENV=str(env_dir)),
    )
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
    proc = subprocess.run(
        ["bash", str(repo / "tools" / "setup.sh")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 1
    assert "no Python 3.10 found" in proc.stderr and "pyenv install 3.10" in proc.stderr
    assert not (repo / ".venv").exists()


# ------------------------------------------------------------------ OneFlow's OpenBLAS core type
def _coretype_tool():
    import importlib.util

    path = os.path.join(ROOT, "tools", "openblas_coretype.py")
    spec = importlib.util.spec_from_file_location("openblas_coretype", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_only_core_types_whose_instructions_the_cpu_has_are_candidates():
    tool = _coretype_tool()
    avx_only = {"sse3", "pni", "ssse3", "sse4_1", "sse4_2", "avx"}
    assert "Sandybridge" in tool.runnable(avx_only)
    assert not {"Haswell", "Zen", "SkylakeX", "Piledriver"} & set(tool.runnable(avx_only))
    epyc = avx_only | {"avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512vl", "sse4a"}
    assert {"Haswell", "Zen", "SkylakeX"} <= set(tool.runnable(epyc))
    assert not {"Bulldozer", "Piledriver", "Steamroller", "Excavator"} & set(
        tool.runnable(epyc)
    )  # no FMA4/XOP


def test_setup_measures_the_core_type_once_and_every_python_applies_it(tmp_path):
    """Set-up measures (two candidates here, to stay fast) and caches; the .pth makes a plain
    python's `import oneflow` load that kernel; a user's OPENBLAS_CORETYPE wins; --export is what
    train.sh/test.sh eval."""
    tool = _coretype_tool()
    candidates = [c for c in ("Haswell", "Sandybridge") if c in tool.runnable(tool.cpu_flags())]
    if not candidates:
        pytest.skip("this CPU has no AVX: none of the two candidates tested here can run")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENBLAS_CORETYPE", "LIBAI_VIT_OPENBLAS_PTH")
    }
    env.update(
        XDG_CACHE_HOME=str(tmp_path / "cache"), LIBAI_VIT_OPENBLAS_CANDIDATES=" ".join(candidates)
    )
    env_dir = tmp_path / "myenv"
    (env_dir / "bin").mkdir(parents=True)
    (env_dir / "bin" / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (env_dir / "bin" / "python").chmod(0o755)
    proc = subprocess.run(
        ["bash", os.path.join(ROOT, "tools", "setup.sh")],
        capture_output=True,
        text=True,
        env=dict(env, VIRTUAL_ENV=str(env_dir)),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "[openblas] measuring the core types this CPU can run" in proc.stderr, proc.stderr
    chosen = proc.stderr.split("[openblas] chose ")[1].split()[0]
    assert chosen in candidates

    tool_py = os.path.join(ROOT, "tools", "openblas_coretype.py")
    export = subprocess.run(
        [sys.executable, tool_py, "--export"], capture_output=True, text=True, env=env
    )
    assert (
        export.stdout.strip() == f"export OPENBLAS_CORETYPE={chosen}"
    )  # cached: no second measurement
    assert "measuring" not in export.stderr and f"core type {chosen}" in export.stderr

    site_dir = tmp_path / "site"
    site_dir.mkdir()
    tool.install_pth(chosen, str(site_dir))
    read_core = (
        "import site, sys; site.addsitedir(sys.argv[1]); import oneflow; sys.path.insert(0, "
        "sys.argv[2]); from openblas_coretype import core_in_use; print(core_in_use())"
    )
    args = [sys.executable, "-c", read_core, str(site_dir), os.path.join(ROOT, "tools")]
    plain = subprocess.run(args, capture_output=True, text=True, env=env)
    assert plain.stdout.strip().splitlines()[-1] == chosen, plain.stderr[-2000:]
    other = next(c for c in ("Sandybridge", "Nehalem") if c != chosen)
    user = subprocess.run(
        args, capture_output=True, text=True, env=dict(env, OPENBLAS_CORETYPE=other)
    )
    assert user.stdout.strip().splitlines()[-1] == other, user.stderr[-2000:]
