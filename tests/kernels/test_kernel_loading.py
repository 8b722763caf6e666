"""Loading the kernels: the log line names the active families and the instruction set,
LIBAI_VIT_KERNELS picks them (0: OneFlow's own kernels), a wrong name is one clear error."""

import os
import subprocess
import sys

import pytest

import libai_vit

from conftest import ROOT

SHOW = (
    "import logging; logging.basicConfig(level=logging.INFO); import libai_vit; "
    "print('ACTIVE=' + ','.join(libai_vit.kernels.active()))"
)


def _run(setting):
    env = dict(os.environ, GLOG_minloglevel="2", PYTHONPATH=ROOT)
    env.pop("LIBAI_VIT_KERNELS", None)
    if setting is not None:
        env["LIBAI_VIT_KERNELS"] = setting
    return subprocess.run(
        [sys.executable, "-c", SHOW], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.skipif(not libai_vit.kernels.active(), reason="the kernels are not built here")
def test_the_log_line_names_the_active_kernels_and_the_switch_turns_them_off():
    on, off, some = _run(None), _run("0"), _run("softmax")
    isa = libai_vit.kernels.isa()
    assert f"libai_vit kernels: gelu, softmax, layer_norm ({isa})" in on.stderr, on.stderr
    assert "ACTIVE=gelu,softmax,layer_norm" in on.stdout
    assert "libai_vit kernels: off (LIBAI_VIT_KERNELS=0)" in off.stderr
    assert "ACTIVE=\n" in off.stdout
    assert f"libai_vit kernels: softmax ({isa})" in some.stderr and "ACTIVE=softmax" in some.stdout


def test_an_unknown_family_is_one_clear_error():
    proc = _run("gelu,flash")
    assert proc.returncode != 0
    assert "LIBAI_VIT_KERNELS='gelu,flash': unknown kernel families ['flash']" in proc.stderr
