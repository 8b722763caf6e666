"""Shared helpers: launching real multi-process OneFlow runs through tools/train.sh."""
import json
import os
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(script_args, nproc, timeout=900, check=True):
    """`bash tools/train.sh <script_args[0]> <script_args[1]> NPROC <rest>`; returns the CompletedProcess."""
    env = dict(os.environ, PORT=str(free_port()))
    cmd = ["bash", os.path.join(ROOT, "tools", "train.sh"), script_args[0], script_args[1], str(nproc),
           *script_args[2:]]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        sys.stderr.write(proc.stdout[-6000:] + proc.stderr[-6000:])
        raise AssertionError(f"{' '.join(cmd)} exited with {proc.returncode}")
    return proc


def train_losses(output_dir, config, nproc, overrides):
    """Train with tools/train_net.py and return each iteration's raw total_loss from metrics.json."""
    launch([os.path.join(ROOT, "tools", "train_net.py"), os.path.join(ROOT, config),
            f"train.output_dir={output_dir}", *overrides], nproc)
    with open(os.path.join(output_dir, "metrics.json")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r["total_loss"] for r in rows if "total_loss" in r]


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory):
    """The demo's ImageFolder, written once per test session."""
    from libai_vit.data.digits import write_digits_imagefolder

    return write_digits_imagefolder(str(tmp_path_factory.mktemp("data") / "digits"))


def launch_script(script, nproc, args=(), timeout=600):
    """Run a python script under OneFlow's launcher with `nproc` processes (this interpreter)."""
    cmd = [sys.executable, "-m", "oneflow.distributed.launch", "--nproc_per_node", str(nproc),
           "--master_port", str(free_port()), script, *map(str, args)]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-6000:] + proc.stderr[-6000:])
        raise AssertionError(f"{' '.join(cmd)} exited with {proc.returncode}")
    return proc
