"""One rank of the launch tests (tests/test_launch.py): small all-gathers, one per 0.2 s, each step
logged to PROBE_OUT/rank<R>.step, until PROBE_OUT/stop exists or PROBE_STEPS steps are done.
PROBE_FAIL=<step> makes rank 1 raise at that step; PROBE_DIE=<step> makes rank 1 SIGKILL itself at
that step, 0.5 s after rank 0 aborted as OneFlow's ranks do on a dead peer's broken connection (its
glog FATAL line, of two lines, and stack dump): the follower ends, and is seen, first. Ignores its
argv (train.sh passes a config)."""

import os
import signal
import sys
import time

import oneflow as flow

out, steps, fail, die = (
    os.environ["PROBE_OUT"],
    int(os.environ.get("PROBE_STEPS", 300)),
    os.environ.get("PROBE_FAIL"),
    os.environ.get("PROBE_DIE"),
)
rank, world = flow.env.get_rank(), flow.env.get_world_size()
x = flow.ones(
    world, placement=flow.placement("cpu", ranks=list(range(world))), sbp=flow.sbp.split(0)
)
for step in range(steps):
    if os.path.exists(os.path.join(out, "stop")):
        break
    assert x.to_global(sbp=flow.sbp.broadcast).to_local().numpy().sum() == world  # meets every peer
    if fail is not None and rank == 1 and step == int(fail):
        raise RuntimeError(f"rank 1 fails on purpose at step {step}")
    if die is not None and step == int(die):
        if rank == 0:
            sys.stderr.write(
                "F1202 07:24:54.184015 12285 io_event_poller.cpp:95] Check failed: "
                "!(cur_event->events & EPOLLERR) fd: 30: Resource temporarily unavailable [11]\n"
                "  a FATAL message's second line\n"  # glog's header then starts the dump alone
                "*** Check failure stack trace: ***\n"
                "    @     0x7f924f5d09ca  google::LogMessage::Fail()\n"
                "    @              (nil)  (unknown)\n"
            )
            sys.stderr.flush()
            os.abort()
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)
    with open(os.path.join(out, f"rank{rank}.step"), "w") as f:
        f.write(str(step))
    time.sleep(0.2)
print(f"rank {rank} done", flush=True)
