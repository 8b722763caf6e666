"""tools/train.sh and libai_vit/launch.py: refusals in one line before any rank starts, and a run
that ends whole (non-zero status, one line naming the rank and its reason, no process left) within
a bounded time when a rank dies, from every kind of parent."""

import os
import shlex
import signal
import socket
import time

import pytest

from conftest import ROOT, Run, launch, launcher, train_sh

PROBE = os.path.join(ROOT, "tests", "launch_probe.py")
CONFIG = os.path.join(ROOT, "configs", "demo_digits_3d.py")
DP2 = [
    "train.dist.data_parallel_size=2",
    "train.dist.tensor_parallel_size=1",
    "train.dist.pipeline_parallel_size=1",
]
ENDS_WITHIN = 30  # s from a rank's death to the end of the whole run (the launcher needs < 10)


def test_nproc_not_matching_the_layout_is_refused():
    proc = launch(["tools/train_net.py", "configs/demo_digits_3d.py"], 2, check=False)
    assert proc.returncode != 0
    assert (
        "error: the layout DP x TP x PP = 2 x 2 x 2 = 8 processes, but 2 were launched"
        in proc.stderr
    )
    assert "Traceback" not in proc.stderr


def test_train_sh_usage_errors():
    proc = launch(["tools/train_net.py", "configs/missing.py"], 1, check=False)
    assert proc.returncode == 2 and "error: config configs/missing.py does not exist" in proc.stderr
    proc = launch(["tools/train_net.py", "configs"], 1, check=False)
    assert proc.returncode == 2 and "error: config configs is a folder: give a config file" in (
        proc.stderr
    )
    proc = launch(["tools", "configs/demo_digits_3d.py"], 1, check=False)
    assert proc.returncode == 2 and "error: tools is a folder: give the script to run" in (
        proc.stderr
    )


def _parent(parent, cmd):
    """`cmd` started the way `parent` starts things."""
    if parent == "subprocess":  # a Python subprocess in the caller's process group
        return cmd, False
    if parent == "ci":  # an orchestrator / CI runner: own session, no terminal
        return cmd, True
    if parent == "bash -c":
        return ["bash", "-c", f"{shlex.join(cmd)}; exit $?"], False
    if parent == "nohup":
        return ["nohup", *cmd], False
    # an interactive shell on a terminal (job control: the run leads its group)
    if parent == "terminal":
        return [
            "script",
            "-qec",
            f"bash --norc --noprofile -i -c {shlex.quote(shlex.join(cmd) + '; exit $?')}",
            "/dev/null",
        ], True
    raise ValueError(parent)


def _start(tmp_path, parent="ci", env=(), stdin=None, via_train_sh=False):
    """The probe in 2 ranks from `parent`: through tools/train.sh, or straight through the launcher
    it execs (the same top process, without train.sh's seconds of set-up and config check)."""
    cmd, new_session = _parent(
        parent, train_sh([PROBE, CONFIG, *DP2], 2) if via_train_sh else launcher(PROBE, 2)
    )
    env = dict(os.environ, PROBE_OUT=str(tmp_path), **dict(env))
    extra = {"stdin": stdin} if stdin is not None else {}
    return Run(cmd, env=env, new_session=new_session, **extra)


def _rank_pid(run, rank, timeout=120):
    """The pid of the run's rank `rank`, as soon as it exists."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for pid in run.processes():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    is_rank = b"--run-rank" in f.read()
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if is_rank and f"RANK={rank}".encode() in f.read().split(b"\0"):
                        return pid
            except OSError:
                pass
        assert run.proc.poll() is None, "the run ended early"
        time.sleep(0.02)
    raise AssertionError(f"rank {rank} did not start within {timeout} s")


def _wait_steps(run, tmp_path, steps=3, timeout=180):
    deadline = time.time() + timeout
    while not all(_step(tmp_path, r) >= steps for r in (0, 1)):
        assert run.proc.poll() is None and time.time() < deadline, "the ranks did not get going"
        time.sleep(0.1)


def _step(tmp_path, rank):
    try:
        with open(os.path.join(tmp_path, f"rank{rank}.step")) as f:
            return int(f.read() or -1)
    except (OSError, ValueError):
        return -1


def _ended(run, killed_at):
    proc = run.finish(timeout=ENDS_WITHIN + 60)  # also fails if a process of the run is left
    took = time.time() - killed_at
    output = (proc.stdout or "") + (proc.stderr or "")
    # a terminal echoes Ctrl-C
    lines = [line.strip().removeprefix("^C") for line in output.splitlines()]
    errors = [line for line in lines if line.startswith("error: ")]
    print(f"ended {took:.1f} s after the kill, status {proc.returncode}: {errors}")
    assert proc.returncode != 0
    assert took < ENDS_WITHIN
    return errors


PARENTS = ["subprocess", "ci", "bash -c", "nohup", "terminal"]
# the parent decides the launcher's session and signals, the timing whether the ranks have met:
# every parent is killed mid-run, the two ends of the parents (no terminal, a terminal) before
# the ranks meet
PARENTS_BEFORE_MEETING = ["ci", "terminal"]


@pytest.mark.slow
@pytest.mark.parametrize("parent", PARENTS_BEFORE_MEETING)
def test_kill9_of_a_rank_before_the_ranks_meet_ends_the_run(parent, tmp_path):
    run = _start(tmp_path, parent)
    pid = _rank_pid(run, 1)
    os.kill(pid, signal.SIGKILL)  # while it imports oneflow: rank 0 waits for it in the rendezvous
    errors = _ended(run, time.time())
    assert errors == ["error: rank 1 was killed by SIGKILL; stopped all 2 rank(s) of this node"]
    assert _step(tmp_path, 0) == _step(tmp_path, 1) == -1  # the ranks never met


@pytest.mark.slow
@pytest.mark.parametrize("parent", PARENTS)
def test_kill9_of_a_rank_mid_run_ends_the_run(parent, tmp_path):
    run = _start(tmp_path, parent)
    _wait_steps(run, tmp_path)
    os.kill(_rank_pid(run, 1), signal.SIGKILL)
    errors = _ended(run, time.time())
    assert errors == ["error: rank 1 was killed by SIGKILL; stopped all 2 rank(s) of this node"]


@pytest.mark.slow
def test_kill9_of_a_rank_of_train_sh_ends_the_run(tmp_path):
    run = _start(tmp_path, "bash -c", via_train_sh=True)
    _wait_steps(run, tmp_path)
    os.kill(_rank_pid(run, 0), signal.SIGKILL)
    errors = _ended(run, time.time())
    assert errors == ["error: rank 0 was killed by SIGKILL; stopped all 2 rank(s) of this node"]


@pytest.mark.slow
def test_sigterm_to_train_sh_stops_every_rank(tmp_path):
    run = _start(tmp_path, "ci", via_train_sh=True)
    _wait_steps(run, tmp_path)
    run.proc.send_signal(signal.SIGTERM)  # train.sh has exec'd the launcher: same process
    errors = _ended(run, time.time())
    assert run.proc.returncode == 128 + signal.SIGTERM
    assert errors == ["error: the launcher received SIGTERM; stopped all 2 rank(s) of this node"]


@pytest.mark.slow
def test_ctrl_c_on_the_terminal_stops_every_rank(tmp_path):
    import subprocess

    run = _start(tmp_path, "terminal", stdin=subprocess.PIPE, via_train_sh=True)
    _wait_steps(run, tmp_path)
    run.proc.stdin.write("\x03")  # typed on the terminal: SIGINT to its foreground job
    run.proc.stdin.flush()
    errors = _ended(run, time.time())
    assert errors == ["error: the launcher received SIGINT; stopped all 2 rank(s) of this node"]


@pytest.mark.slow
def test_a_rank_that_raises_ends_the_run_with_its_reason(tmp_path):
    run = _start(tmp_path, "ci", env={"PROBE_FAIL": "2"}, via_train_sh=True)
    _wait_steps(run, tmp_path, steps=1)  # rank 1 raises one step later
    errors = _ended(run, time.time())
    assert run.proc.returncode == 1
    assert errors == [
        "error: rank 1 exited with status 1; its last output: RuntimeError: rank 1 fails on "
        "purpose at step 2; stopped all 2 rank(s) of this node"
    ]


def test_the_rank_that_failed_first_is_named_and_its_followers_abort_is_summarised(tmp_path):
    """Rank 0 aborts on the broken connection (OneFlow's FATAL line and stack dump) and is seen to
    end first; rank 1, whose death broke it, is named; rank 0's abort is one note, no dump."""
    proc = _start(tmp_path, "ci", env={"PROBE_DIE": "2"}).finish(timeout=ENDS_WITHIN + 60)
    stderr = proc.stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: rank 1 was killed by SIGKILL; stopped all 2 rank(s) of this node"]
    assert proc.returncode == 128 + signal.SIGKILL
    assert (
        "note: then rank 0 was killed by SIGABRT on the broken connection to rank 1 (OneFlow: "
        "Check failed: !(cur_event->events & EPOLLERR)" in stderr
    )
    assert "Check failure stack trace" not in stderr and "LogMessage" not in stderr
    assert "(unknown)" not in stderr


@pytest.mark.slow
def test_ranks_that_never_meet_their_peers_are_stopped_by_the_rendezvous_watchdog(tmp_path):
    # node 0 of a 2-node run whose other node never comes: its ranks would wait forever
    cmd = launcher(PROBE, 2)
    cmd[2:2] = ["--nnodes", "2", "--rendezvous_timeout", "10"]
    run = Run(cmd, env=dict(os.environ, PROBE_OUT=str(tmp_path)))
    errors = _ended(run, time.time())
    assert errors == [
        "error: rank(s) 0, 1 did not meet their peers within 10 s (a rank of another node failed "
        "to start, or MASTER_ADDR/PORT is wrong); stopped all 2 rank(s) of this node"
    ]


@pytest.mark.slow
def test_concurrent_runs_do_not_meet(tmp_path):
    """Two runs started at once each take their own held port, and both finish."""
    runs = []
    for i in range(2):
        os.makedirs(tmp_path / str(i))
        runs.append(
            Run(
                launcher(PROBE, 2),
                env=dict(os.environ, PROBE_OUT=str(tmp_path / str(i)), PROBE_STEPS="5"),
            )
        )
    for r in runs:
        proc = r.finish(timeout=300)
        assert proc.returncode == 0 and proc.stdout.count(" done") == 2, proc.stderr[-2000:]


def test_a_master_port_in_use_is_refused_in_one_line():
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        port = taken.getsockname()[1]
        cmd = launcher(PROBE, 2)
        cmd[2:2] = ["--master_port", str(port)]
        proc = Run(cmd).finish(timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: master port {port} on 127.0.0.1 is in use (Address already in use): "
        f"another run? choose another PORT, or leave PORT unset on one node"
    )


def test_config_values_are_refused_before_any_rank_starts():
    proc = launch(
        ["tools/train_net.py", "configs/demo_digits_3d.py", "model.drop_path_rate=1.5"],
        8,
        check=False,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().splitlines()[-1] == "error: model.drop_path_rate=1.5 must be in [0, 1)"
    )
    # OneFlow prints this line once per process that imports it: only the check's, no rank's
    assert proc.stderr.count("ibv_fork_init skipped") <= 1


@pytest.mark.slow
def test_the_test_helper_ends_a_hanging_run_and_shows_its_output(tmp_path):
    # runs for a minute
    run = Run(launcher(PROBE, 2), env=dict(os.environ, PROBE_OUT=str(tmp_path)))
    with pytest.raises(
        AssertionError, match=r"(?s)timed out after 8 s; its last output:.*ibv_fork_init"
    ):
        run.finish(timeout=8)
    assert not run.processes()
    # a top process that ignores SIGTERM, and its child: killed all the same
    run = Run(["bash", "-c", "trap '' TERM; sleep 120; exit 0"])
    with pytest.raises(AssertionError, match="timed out after 1 s"):
        run.finish(timeout=1, term_grace=1)
    assert not run.processes()


@pytest.mark.slow
def test_a_master_port_held_by_another_run_is_refused(tmp_path):
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        port = s.getsockname()[1]
    cmd = launcher(PROBE, 2)
    cmd[2:2] = ["--master_port", str(port)]
    first = Run(cmd, env=dict(os.environ, PROBE_OUT=str(tmp_path)))
    _rank_pid(first, 0)  # the first run holds the port from before its ranks start
    second = Run(cmd, env=dict(os.environ, PROBE_OUT=str(tmp_path))).finish(timeout=60)
    first.proc.send_signal(signal.SIGTERM)
    assert first.finish(timeout=60).returncode == 128 + signal.SIGTERM
    assert (
        second.returncode == 2
        and f"error: master port {port} on 127.0.0.1 is in use" in second.stderr
    )


@pytest.mark.slow
def test_the_launchers_time_limit_stops_every_rank(tmp_path):
    cmd = launcher(PROBE, 2)
    cmd[2:2] = ["--timeout", "5"]
    run = Run(cmd, env=dict(os.environ, PROBE_OUT=str(tmp_path)))  # the probe runs for a minute
    errors = _ended(run, time.time())
    assert run.proc.returncode == 124
    assert errors == [
        "error: the run exceeded its time limit of 5 s; stopped all 2 rank(s) of this node"
    ]
