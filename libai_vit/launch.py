"""Start the ranks of one node, watch them, and end them all when one fails: our replacement for
`python -m oneflow.distributed.launch` (same arguments and environment for the ranks), used by every
multi-process run here (tools/train.sh, the tests' launch helper, benchmarks/training.py).

    python libai_vit/launch.py [--nproc_per_node N] [--nnodes K --node_rank R --master_addr A
                               --master_port P] [--timeout S] [--rendezvous_timeout S]
                               SCRIPT [ARGS ...]

Run as a file (not `-m`): it imports neither oneflow nor the package, so it costs no OneFlow
environment of its own.  What it does that OneFlow's launcher does not:
- each rank leads its own session, signalled whole (its data-loader workers end with it), so ranks
  are torn down the same way whatever started the launcher (terminal, `bash -c`, a Python
  subprocess, nohup, CI); OneFlow's `os.killpg(os.getpid())` reaches them only when the launcher
  leads a process group;
- when a rank fails (non-zero exit, a signal, the launcher's SIGINT/SIGTERM/SIGHUP, the run's time
  limit, or ranks that have not met their peers within the rendezvous limit), every rank is stopped
  (SIGTERM, then SIGKILL), within ``STOP_GRACE + TERM_GRACE`` seconds (under 10 s) of the failure,
  and one line names the rank that failed first and its reason; the exit status is the rank's
  (128 + signal if it was killed). Its peers' aborts on the broken connection (OneFlow's fatal
  check, then a C++ stack dump) are held back and summarised in one line (_first_failure);
- a rank dies with the launcher even on SIGKILL (PR_SET_PDEATHSIG);
- on one node the master port is chosen by the kernel and held (SO_REUSEPORT, which OneFlow's gRPC
  server also sets) for the whole run, so a concurrent run cannot take it before rank 0 binds it
  (see _hold_port).
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback

STOP_GRACE = 2.0  # s a failed run's other ranks get to exit on their own (rank 0 prints the error)
TERM_GRACE = 5.0  # s between SIGTERM and SIGKILL
POLL = 0.1
_MET_FD = "LIBAI_VIT_LAUNCH_MET_FD"
_LAUNCHER_PID = "LIBAI_VIT_LAUNCHER_PID"
_RUN_RANK = "--run-rank"
# a glog FATAL line ("F1202 07:24:54.184015 12285 file.cpp:95] Check failed: ...") and the stack
# dump glog prints after it, whose header also starts a dump on its own: a FATAL message of several
# lines puts lines between them
_FATAL = re.compile(rb"^F\d{4,8} [\d:.]+ +\d+ \S+:\d+\] ")
_STACK_HEADER = re.compile(rb"^\s*\*\*\* Check failure stack trace: \*\*\*")
_STACK = re.compile(rb"^\s*@\s")
# what OneFlow 0.9 reports when a peer's connection broke (the peer died): measured with kill -9 of
# one rank at DP=2 (io_event_poller: EPOLLERR) and 1x2x2 (ctrl_client: "Machine 2 lost")
_PEER_LOST = re.compile(
    rb"EPOLLERR|Machine \d+ lost|Connection reset by peer|Broken pipe|Socket closed|ECONNRESET"
)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nproc_per_node", type=int, default=1)
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--node_rank", type=int, default=0)
    p.add_argument("--master_addr", default="127.0.0.1")
    p.add_argument(
        "--master_port",
        type=int,
        default=None,
        help="default: a free port held for the run (one node); 12345 with several nodes",
    )
    p.add_argument(
        "--timeout", type=float, default=None, help="end the run after this many seconds"
    )
    p.add_argument(
        "--rendezvous_timeout",
        type=float,
        default=float(os.environ.get("LIBAI_VIT_RENDEZVOUS_TIMEOUT", 600)),
        help="end the run if a rank has not met its peers (import oneflow) within this many s",
    )
    p.add_argument("script")
    p.add_argument("script_args", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    if args.nproc_per_node < 1 or args.nnodes < 1 or not 0 <= args.node_rank < args.nnodes:
        p.error("need nproc_per_node >= 1, nnodes >= 1 and 0 <= node_rank < nnodes")
    return args


class LaunchError(RuntimeError):
    """The run cannot start (the message is the one line to print)."""


def _hold_port(port, addr):
    """Reserve the master port for the run: a bound, non-listening socket with SO_REUSEPORT.

    OneFlow's rank 0 binds MASTER_PORT with gRPC, which sets SO_REUSEPORT, so it can bind beside
    this socket; nothing else can take the port meanwhile: a bind to port 0 (another run's port
    choice, its gRPC control servers, outgoing connections) never lands on a bound port, and a
    plain bind fails.  Without this, a port found free and closed again (the old free_port()) can be
    taken in the seconds before rank 0 binds it, and rank 0 then aborts ("Port ... is unavailable").
    An explicit port is first bound without SO_REUSEPORT: another run listening there (two gRPC
    servers with SO_REUSEPORT would share the port and its connections) is refused."""
    if port is not None:
        probe = socket.socket()
        # a finished run's TIME_WAITs are no user
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError as e:
            raise LaunchError(
                f"master port {port} on {addr} is in use ({e.strerror}): another run? "
                f"choose another PORT, or leave PORT unset on one node"
            ) from None
        finally:
            probe.close()
    held = socket.socket()  # no SO_REUSEADDR: another launcher's probe must see it
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    held.bind(("0.0.0.0", port or 0))
    return held


class _Rank:
    def __init__(self, rank, cmd, env):
        met_r, met_w = os.pipe()
        env = dict(env, RANK=str(rank), **{_MET_FD: str(met_w)})
        self.rank, self.met, self.error_line, self.last_line = rank, False, None, b""
        self.fatal_line, self.dump = None, []  # its glog FATAL line; the stack dump held back
        self.ended_at = self.peer_lost_at = None  # when its exit / a broken connection was seen
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            pass_fds=(met_w,),
        )
        os.close(met_w)
        os.set_blocking(met_r, False)
        self._met_r = met_r
        self._pump = threading.Thread(target=self._forward_stderr, daemon=True)
        self._pump.start()
        self._waiter = threading.Thread(target=self._wait, daemon=True)
        self._waiter.start()

    def _wait(self):
        self.proc.wait()  # returns the moment it exits: its time, not the next poll's
        self.ended_at = time.monotonic()

    def _forward_stderr(self):
        """Copy the rank's stderr through; hold back its latest 'error: ' line, which becomes the
        launcher's one line if this rank fails (and is passed on as it was if not), and a glog
        FATAL line with its stack dump: summarised if this rank only followed a failed peer."""
        in_dump = False
        for line in iter(self.proc.stderr.readline, b""):
            with _WRITE_LOCK:
                if self.error_line is not None:
                    _write(self.error_line)
                    self.error_line = None
                if _PEER_LOST.search(line) and self.peer_lost_at is None:
                    self.peer_lost_at = time.monotonic()
                starts = _FATAL.match(line) or _STACK_HEADER.match(line)
                in_dump = bool(starts or (in_dump and _STACK.match(line)))
                if _FATAL.match(line) and self.fatal_line is None:
                    self.fatal_line = line.strip()
                if in_dump:
                    self.dump.append(line)
                elif line.startswith(b"error: "):
                    self.error_line = line
                else:
                    _write(line)
            if line.strip() and not in_dump:
                self.last_line = line.strip()

    def failed_at(self):
        """When its failure was first seen: its exit, or the broken connection it reported."""
        times = [t for t in (self.ended_at, self.peer_lost_at) if t is not None]
        return min(times) if times else float("inf")

    def finish_output(self, timeout=2.0):
        self._pump.join(timeout)
        self._waiter.join(timeout)

    def poll_met(self):
        if not self.met:
            try:
                self.met = bool(os.read(self._met_r, 1))
            except BlockingIOError:
                pass
            if self.met:
                os.close(self._met_r)
        return self.met

    def signal_group(self, sig):
        try:
            os.killpg(self.proc.pid, sig)  # the rank and everything it started (loader workers)
        except (ProcessLookupError, PermissionError):
            pass

    def reason(self):
        code = self.proc.returncode
        if code is None:
            return "is still running"
        if code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"


_WRITE_LOCK = threading.Lock()


def _write(line):
    try:
        sys.stderr.buffer.write(line)
        sys.stderr.buffer.flush()
    except (OSError, ValueError):  # our stderr is gone: keep draining the ranks' pipes regardless
        pass


def _flush_held(ranks):
    with _WRITE_LOCK:
        for r in ranks:
            if r.peer_lost_at is None:  # a follower's dump is summarised (_first_failure)
                for line in r.dump:
                    _write(line)
            r.dump = []
            if r.error_line is not None:
                _write(r.error_line)
                r.error_line = None


def _exit_status(proc):
    code = proc.returncode
    return 128 - code if code < 0 else code


def launch(args):
    """Run the ranks of this node; returns the exit status (0 when every rank succeeded)."""
    port, held = args.master_port, None
    if port is None and args.nnodes > 1:
        port = 12345  # every node must know it
    if args.node_rank == 0:  # rank 0 binds the master port here
        held = _hold_port(port, args.master_addr)
        port = held.getsockname()[1]
    world = args.nproc_per_node * args.nnodes
    env = dict(
        os.environ,
        MASTER_ADDR=args.master_addr,
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        **{_LAUNCHER_PID: str(os.getpid())},
    )
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [
        sys.executable,
        "-u",
        os.path.abspath(__file__),
        _RUN_RANK,
        args.script,
        *args.script_args,
    ]

    stop = []  # the signal that asks the run to stop

    def on_signal(signum, frame):
        stop.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is not signal.SIG_IGN:  # nohup's SIGHUP stays ignored
            signal.signal(sig, on_signal)

    ranks = []
    try:
        for local in range(args.nproc_per_node):
            ranks.append(
                _Rank(
                    args.node_rank * args.nproc_per_node + local,
                    cmd,
                    dict(env, LOCAL_RANK=str(local)),
                )
            )
        start = time.monotonic()
        failure = None
        while failure is None:
            time.sleep(POLL)
            now = time.monotonic() - start
            running = [r for r in ranks if r.proc.poll() is None]
            failed = [r for r in ranks if r.proc.returncode not in (None, 0)]
            if stop:
                failure = (
                    None,
                    f"the launcher received {signal.Signals(stop[0]).name}",
                    128 + stop[0],
                )
            elif failed:
                failure = _first_failure(ranks, failed)
            elif not running:
                for r in ranks:
                    r.finish_output()
                _flush_held(ranks)
                return 0
            elif args.timeout is not None and now > args.timeout:
                failure = (None, f"the run exceeded its time limit of {args.timeout:g} s", 124)
            elif now > args.rendezvous_timeout and not all(r.poll_met() for r in ranks):
                late = [r.rank for r in ranks if not r.met]
                failure = (
                    None,
                    f"rank(s) {', '.join(map(str, late))} did not meet their peers within "
                    f"{args.rendezvous_timeout:g} s (a rank of another node failed to start, "
                    f"or MASTER_ADDR/PORT is wrong)",
                    1,
                )
        _stop_all(ranks)
        rank, reason, status = failure
        stopped = (
            f"; stopped all {len(ranks)} rank(s) of this node" if len(ranks) > 1 or not rank else ""
        )
        _flush_held(ranks)  # error lines of ranks other than the one reported
        _write(f"error: {reason}{stopped}\n".encode())
        return status
    finally:
        _stop_all(ranks)
        if held is not None:
            held.close()


def _first_failure(ranks, failed):
    """Give the other ranks STOP_GRACE to end on their own, then report the rank that failed first.

    A rank that reported a broken connection to a peer (_PEER_LOST) only followed that peer; among
    the others, one that printed an 'error: ' line says most (train_net prints it on rank 0 only),
    else the first by the time its exit was seen (a waiter thread per rank: exact, not the poll's).
    The followers' aborts are summarised in one line, their stack dumps dropped."""
    deadline = time.monotonic() + STOP_GRACE
    while time.monotonic() < deadline and any(r.proc.poll() is None for r in ranks):
        time.sleep(POLL)
    failed = [r for r in ranks if r.proc.poll() not in (None, 0)] or failed
    for r in failed:
        r.finish_output()
    own = [r for r in failed if r.peer_lost_at is None] or failed
    speaking = [r for r in own if r.error_line]
    rank = min(speaking or own, key=lambda r: (r.failed_at(), r.rank))
    if rank.error_line:
        message, rank.error_line = (
            rank.error_line.decode(errors="replace").rstrip()[len("error: ") :],
            None,
        )
        reason = f"{message} [rank {rank.rank} {rank.reason()}]"
    else:
        last = rank.fatal_line or (rank.last_line if rank.proc.returncode > 0 else b"")
        last = last.decode(errors="replace")[-300:]
        reason = f"rank {rank.rank} {rank.reason()}" + (
            f"; its last output: {last}" if last else ""
        )
    followers = [r for r in failed if r is not rank and r.peer_lost_at is not None]
    if followers:
        seen = next((r.fatal_line for r in followers if r.fatal_line), b"")
        seen = seen.decode(errors="replace").split("] ", 1)[-1][:160]
        to = f"to rank {rank.rank}" if rank.peer_lost_at is None else "(every failed rank lost one)"
        note = ", ".join(f"rank {r.rank} {r.reason()}" for r in followers)
        note = f"note: then {note} on the broken connection {to}"
        if seen:
            note += f" (OneFlow: {seen}; stack dump not shown)"
        _write(f"{note}\n".encode())
    return rank, reason, _exit_status(rank.proc) or 1


def _stop_all(ranks):
    """SIGTERM to every rank's session, SIGKILL after TERM_GRACE; returns when all have exited."""
    live = [r for r in ranks if r.proc.poll() is None]
    for r in live:
        r.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + TERM_GRACE
    while time.monotonic() < deadline and any(r.proc.poll() is None for r in live):
        time.sleep(POLL)
    for r in ranks:  # also what an exited rank left behind in its session
        r.signal_group(signal.SIGKILL)
    for r in ranks:
        r.proc.wait()
        r.finish_output()


def run_rank(script, script_args):
    """Inside a rank: die with the launcher, meet the peers (OneFlow's rendezvous happens at
    `import oneflow`), tell the launcher, then run the script as `python SCRIPT ARGS` would."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if str(os.getppid()) != os.environ.get(_LAUNCHER_PID):  # it died before prctl took effect
        sys.exit(1)
    import runpy

    sys.argv = [script, *script_args]
    # as `python SCRIPT`, not this file's folder
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    import oneflow  # noqa: F401  (blocks until every rank of the run has connected)

    met = int(os.environ.pop(_MET_FD))
    os.write(met, b"1")
    os.close(met)
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        if e.code in (None, 0):
            raise
        if not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
        _exit_now(e.code if isinstance(e.code, int) else 1)
    except BaseException as e:  # noqa: BLE001  (a failed rank reports and leaves)
        tb = e.__traceback__
        while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) != os.path.abspath(
            script
        ):
            tb = tb.tb_next  # start the traceback at the script, not in this wrapper
        traceback.print_exception(type(e), e, tb or e.__traceback__)
        _exit_now(130 if isinstance(e, KeyboardInterrupt) else 1)


def _exit_now(status):
    """Leave without OneFlow's exit hooks: they wait for every peer (a barrier), and a failed rank's
    peers may be waiting for it elsewhere, so a normal exit would hang both."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [_RUN_RANK]:
        return run_rank(argv[1], argv[2:])
    try:
        return launch(parse_args(argv))
    except LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
