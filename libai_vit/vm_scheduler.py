"""Keep OneFlow's VM scheduler thread from taking CPU time away from computation.

OneFlow 0.9's virtual machine has one scheduler thread per process that busy-waits, calling
`sched_yield` in a loop, for as long as any instruction is in flight. An nn.Graph step is one such
instruction, so the thread spins for the whole step. Measured on this 2-core machine (ViT-Ti, graph
mode): it used 62-78% of a core, nearly all of it system time, competing with OneFlow's compute
threads for the cores. Found with per-thread CPU times (`top -H`, /proc), gdb and `perf`.

The fix lowers that one thread to nice 19, so it runs only when a core would otherwise be idle. It
still wakes up at once when a step ends, because the cores are idle then. OneFlow gives its threads
no names, so the spinner is recognised by what it does: during a step it is the one thread that
spends most of its time in the kernel. CPU only: on GPUs the cores are not the limit.

Effect (`benchmarks/training.py --vm-ab`: the same processes alternate blocks of steps spinning and
lowered): a 1-process ViT-Ti step is 1.10-1.26x faster (OneFlow also runs a second compute thread
and a 2-thread pool, which the spinner slowed); with 2 ranks on the 2 cores the difference is within
the noise (0.98-1.05x), because there the compute threads already keep the cores busy and the
spinner got only ~12% of a core.
"""

import logging
import os
import time

logger = logging.getLogger(__name__)

NICE = 19
# A spinner spends at least this share of the measured wall time in the kernel (measured: 0.62-0.78
# for one process with a free core, 0.10-0.25 per process when ranks fill both cores), and most of
# its own CPU time there (compute threads run in user space)
MIN_SPIN_SHARE = 0.05
MIN_SYSTEM_FRACTION = 0.6
MIN_WINDOW_S = 0.5  # CPU times tick at 100 Hz: short steps are measured together
_TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds():
    """{thread id: (user seconds, system seconds)} for every thread of this process."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(tid)] = (int(fields[11]) / _TICKS, int(fields[12]) / _TICKS)
    return out


class SpinningSchedulerWatch:
    """Call `start()` before nn.Graph steps (not the first, which compiles) and `lower()` after one
    or more of them."""

    def __init__(self):
        self._before, self._t0 = None, None

    def start(self):
        self._before, self._t0 = thread_cpu_seconds(), time.perf_counter()

    def elapsed(self):
        return time.perf_counter() - self._t0 if self._before is not None else 0.0

    def lower(self):
        """Renice the thread that spun through the step; returns (thread id, its system-time share)
        or None when no thread spun (see MIN_SPIN_SHARE, MIN_SYSTEM_FRACTION)."""
        if self._before is None:
            raise RuntimeError("SpinningSchedulerWatch.lower() called before start()")
        wall = time.perf_counter() - self._t0
        after = thread_cpu_seconds()
        main = os.getpid()
        used = {
            tid: [a - b for a, b in zip(after[tid], self._before.get(tid, (0.0, 0.0)))]
            for tid in after
            if tid != main
        }
        self._before = None
        if not used or wall <= 0:
            return None
        tid = max(used, key=lambda t: used[t][1])
        user, system = used[tid]
        share = system / wall
        if share < MIN_SPIN_SHARE or system < MIN_SYSTEM_FRACTION * (user + system):
            return None
        os.setpriority(os.PRIO_PROCESS, tid, NICE)
        logger.info(
            f"OneFlow's VM scheduler thread {tid} spun {share:.0%} of a core in sched_yield while "
            f"nn.Graph steps ran; lowered it to nice {NICE} so that it uses idle time only"
        )
        return tid, share


def wanted(graph_enabled: bool) -> bool:
    """nn.Graph steps on CPU, with no more ranks on this machine than cores. Eager mode is left as
    OneFlow has it: there the scheduler dispatches every op, so a lowered scheduler could delay the
    work itself (not measured). With more ranks than cores (the demo: 8 on 2) a lowered scheduler
    can be starved by the other ranks' computation while its own rank's step waits on it: 60-step
    demo runs gave 0.73 and 0.69 s per step lowered vs 0.57 and 0.67 s left alone."""
    import oneflow as flow

    local_ranks = flow.env.get_world_size() // max(flow.env.get_node_size(), 1)
    return (
        graph_enabled
        and not flow.cuda.is_available()
        and os.path.isdir("/proc/self/task")
        and local_ranks <= len(os.sched_getaffinity(0))
    )
