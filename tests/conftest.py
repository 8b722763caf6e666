"""Shared helpers: the one way tests launch multi-process OneFlow runs (tools/train.sh or
libai_vit/launch.py), which can never hang the suite; the small ViT tests build."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(ROOT, "libai_vit", "launch.py")
# the small ViT of the in-process tests: 32 px in 8 px patches, 2 blocks 32 wide, 4 heads
TINY_VIT = dict(img_size=32, patch_size=8, num_classes=10, embed_dim=32, depth=2, num_heads=4)


def tiny_vit(**kwargs):
    """libai_vit.VisionTransformer of TINY_VIT's shape, `kwargs` changing it."""
    import libai_vit

    return libai_vit.VisionTransformer(**{**TINY_VIT, **kwargs})


# every process of a test's run inherits TAG=<its id>: found and ended by it
TAG = "LIBAI_VIT_TEST_RUN"


def run_processes(tag):
    """Pids of the live processes carrying the run's tag (zombies have no environment)."""
    needle = f"{TAG}={tag}".encode()
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        pids.append(int(pid))
            except OSError:
                pass
    return pids


def end_run(tag):
    """SIGKILL every process of the run, whatever session or parent it has by now."""
    for _ in range(50):
        pids = run_processes(tag)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


class Run:
    """One started run: `cmd` in its own session with a fresh tag; `finish` waits with a timeout."""

    def __init__(self, cmd, env=None, cwd=ROOT, new_session=True, **popen):
        self.tag, self.cmd = uuid.uuid4().hex, cmd
        env = dict(os.environ if env is None else env, **{TAG: self.tag})
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env.setdefault("GLOG_minloglevel", "2")
        for stream in ("stdin", "stdout", "stderr"):
            popen.setdefault(stream, subprocess.DEVNULL if stream == "stdin" else subprocess.PIPE)
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, text=True, start_new_session=new_session, **popen
        )

    def processes(self):
        return run_processes(self.tag)

    def finish(self, timeout, term_grace=15):
        """Wait for the run; on timeout SIGTERM its top process, SIGKILL all its processes
        `term_grace` s later, and fail showing the last output. Also fails if the run left a process
        behind."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)  # the launcher stops its ranks itself...
            try:
                self.proc.wait(term_grace)
            except subprocess.TimeoutExpired:
                pass
            end_run(self.tag)  # ...or this ends everything
            out, err = self.proc.communicate()
            raise AssertionError(
                f"{' '.join(self.cmd)} timed out after {timeout} s; its last output:\n"
                f"{(out or '')[-3000:]}\n{(err or '')[-3000:]}"
            )
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        left = []
        for _ in range(50):  # a rank's exit can lag its launcher's by a moment
            left = self.processes()
            if not left:
                break
            time.sleep(0.1)
        if left:
            end_run(self.tag)
            raise AssertionError(f"{' '.join(self.cmd)} left processes {left} behind")
        return subprocess.CompletedProcess(self.cmd, self.proc.returncode, out, err)


def run(cmd, timeout, check=True, env=None):
    proc = Run(cmd, env=env).finish(timeout)
    if check and proc.returncode != 0:
        sys.stderr.write(proc.stdout[-6000:] + proc.stderr[-6000:])
        raise AssertionError(f"{' '.join(cmd)} exited with {proc.returncode}")
    return proc


def train_sh(script_args, nproc):
    """`bash tools/train.sh <script_args[0]> <script_args[1]> NPROC <rest>` as a command."""
    return [
        "bash",
        os.path.join(ROOT, "tools", "train.sh"),
        script_args[0],
        script_args[1],
        str(nproc),
        *map(str, script_args[2:]),
    ]


def launch(script_args, nproc, timeout=900, check=True, env=None):
    """Run tools/train.sh; returns the CompletedProcess."""
    return run(train_sh(script_args, nproc), timeout, check, env)


def train(script_args, nproc, timeout=900, check=True, env=None):
    """What `launch` runs after train.sh's set-up and pre-launch check: `script_args[0]` with
    `--config-file script_args[1]` and the rest, in `nproc` ranks of libai_vit/launch.py. For the
    runs that test training (the ranks validate the config themselves); train.sh's own behaviour is
    tested through `launch`."""
    script, config, *rest = script_args
    return launch_script(script, nproc, ["--config-file", config, *rest], timeout, check, env)


def launcher(script, nproc, args=()):
    """The command running `script` in `nproc` processes (this python) with libai_vit/launch.py."""
    return [sys.executable, LAUNCHER, "--nproc_per_node", str(nproc), str(script), *map(str, args)]


def launch_script(script, nproc, args=(), timeout=600, check=True, env=None):
    """Run a python script in `nproc` processes under libai_vit/launch.py."""
    return run(launcher(script, nproc, args), timeout, check, env)


def train_losses(output_dir, config, nproc, overrides):
    """Train with tools/train_net.py; each iteration's raw total_loss from metrics.json."""
    train(
        [
            os.path.join(ROOT, "tools", "train_net.py"),
            os.path.join(ROOT, config),
            f"train.output_dir={output_dir}",
            *overrides,
        ],
        nproc,
    )
    with open(os.path.join(output_dir, "metrics.json")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r["total_loss"] for r in rows if "total_loss" in r]


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory):
    """The demo's ImageFolder, written once per test session."""
    from libai_vit.data.digits import write_digits_imagefolder

    return write_digits_imagefolder(str(tmp_path_factory.mktemp("data") / "digits"))
