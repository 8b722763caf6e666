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
    # no FMA4/XOP
    assert not {"Bulldozer", "Piledriver", "Steamroller", "Excavator"} & set(tool.runnable(epyc))


# a python that does not apply the venv's own libai_vit_openblas.pth: with -S no site dir's .pth
# runs, whatever core type set-up chose for the venv on this machine; the venv's packages come from
# PYTHONPATH (.pth files are not read there); the site dirs named before "--" are then added the
# normal way (their .pth run, in order) and the script after it runs as __main__
_WITHOUT_VENV_PTH = (
    "import runpy, site, sys; cut = sys.argv.index('--'); "
    "[site.addsitedir(d) for d in sys.argv[1:cut]]; sys.argv = sys.argv[cut + 1 :]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)
_READ_CORE = (
    "import os; import oneflow; "
    "from tools.openblas_coretype import core_in_use; "
    "print(core_in_use(), os.environ.get('LIBAI_VIT_OPENBLAS_PTH'))\n"
)


def _python_without_venv_pth(env, site_dirs, script, *args):
    import sysconfig

    venv_packages = sysconfig.get_paths()["purelib"]
    cmd = [sys.executable, "-S", "-c", _WITHOUT_VENV_PTH, *map(str, site_dirs), "--", script, *args]
    env = dict(env, PYTHONPATH=os.pathsep.join([venv_packages, ROOT]))
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def test_setup_measures_the_core_type_once_and_every_python_applies_it(tmp_path):
    """Set-up measures (two candidates here, to stay fast) and caches (in a fresh XDG_CACHE_HOME,
    never ~/.cache); the .pth makes a plain python's `import oneflow` load that kernel; a venv whose
    .pth holds another machine's choice does not change what --export (train.sh/test.sh) gives; a
    user's OPENBLAS_CORETYPE wins. The pythons that read the core run without the venv's own .pth
    (its choice differs by machine) and with the .pth files this test writes."""
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

    # core types OneFlow's OpenBLAS has that every AVX CPU runs, neither of them a candidate:
    # another machine's choice written into the venv, and a user's own OPENBLAS_CORETYPE
    elsewhere, users = "Nehalem", "Core2"
    venv_site, our_site = tmp_path / "venv_site", tmp_path / "site"
    for site_dir, core in ((venv_site, elsewhere), (our_site, chosen)):
        site_dir.mkdir()
        tool.install_pth(core, str(site_dir))

    tool_py = os.path.join(ROOT, "tools", "openblas_coretype.py")
    for site_dirs in ([], [venv_site]):
        export = _python_without_venv_pth(env, site_dirs, tool_py, "--export")
        # cached: no second measurement; the venv's .pth value is not taken for the user's
        assert export.stdout.strip() == f"export OPENBLAS_CORETYPE={chosen}", (
            site_dirs,
            export.stderr[-2000:],
        )
        assert "measuring" not in export.stderr and f"core type {chosen}" in export.stderr

    read_core = tmp_path / "read_core.py"
    read_core.write_text(_READ_CORE)
    cases = [  # (site dirs whose .pth run, OPENBLAS_CORETYPE set before, core, the .pth's mark)
        ([], None, None, "None"),  # the venv's own .pth is not applied
        ([venv_site], None, elsewhere, elsewhere),  # the simulated venv's is
        ([our_site], None, chosen, chosen),  # a plain python of a venv set-up wrote it into
        ([venv_site], chosen, chosen, "None"),  # a rank under train.sh, whatever the venv's says
        ([our_site], users, users, "None"),  # the user's own choice wins over the .pth
    ]
    for site_dirs, coretype, core, mark in cases:
        run_env = env if coretype is None else dict(env, OPENBLAS_CORETYPE=coretype)
        proc = _python_without_venv_pth(run_env, site_dirs, str(read_core))
        assert proc.returncode == 0, proc.stderr[-2000:]
        seen_core, seen_mark = proc.stdout.strip().splitlines()[-1].split()
        assert seen_mark == mark and core in (None, seen_core), (site_dirs, coretype, proc.stdout)


def test_an_unknown_argument_is_refused_in_one_line():
    proc = subprocess.run(
        ["bash", os.path.join(ROOT, "tools", "setup.sh"), "--onxx"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "[setup] error: unknown argument --onxx (the only one is --onnx)\n"
