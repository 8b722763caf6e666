"""Run under OneFlow's launcher by test_vm_scheduler.py: a real nn.Graph train step, the watch
around it, and what happened to the threads, written as JSON per rank."""

import json
import os
import sys
import time

import oneflow as flow

from libai_vit.vm_scheduler import SpinningSchedulerWatch, thread_cpu_seconds


class Step(flow.nn.Graph):
    def __init__(self, model, optimizer):
        super().__init__()
        self.model = model
        self.add_optimizer(optimizer)

    def build(self, x):
        loss = self.model(x).square().mean()
        loss.backward()
        return loss


def main(out_dir):
    flow.manual_seed(0)
    model = flow.nn.Sequential(*[flow.nn.Linear(512, 512) for _ in range(4)])
    step = Step(model, flow.optim.SGD(model.parameters(), lr=1e-3))
    x = flow.randn(2048, 512)

    def run(n):
        for _ in range(n):
            step(x).numpy()

    run(1)  # compiles
    flow._oneflow_internal.eager.Sync()  # the step's update may still run after its loss is out
    watch = SpinningSchedulerWatch()
    watch.start()
    time.sleep(0.3)  # nothing in flight: nothing spins, nothing may be changed
    idle = watch.lower()
    nice_after_idle = {tid: os.getpriority(os.PRIO_PROCESS, tid) for tid in thread_cpu_seconds()}

    # an independent look at the same kind of steps: which thread spends them in the kernel
    before = thread_cpu_seconds()
    t0 = time.perf_counter()
    run(3)
    wall = time.perf_counter() - t0
    after = thread_cpu_seconds()
    system = {t: (after[t][1] - before[t][1]) / wall for t in after if t in before}
    top_system = max(system, key=system.get)

    watch.start()
    run(3)
    lowered = watch.lower()
    result = dict(
        idle=idle,
        nice_after_idle=sorted(set(nice_after_idle.values())),
        lowered=lowered,
        top_system=top_system,
        top_system_share=system[top_system],
        main=os.getpid(),
        nice={str(t): os.getpriority(os.PRIO_PROCESS, t) for t in thread_cpu_seconds()},
    )
    with open(os.path.join(out_dir, f"rank{flow.env.get_rank()}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])
