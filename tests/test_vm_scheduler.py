"""OneFlow's VM scheduler thread spins through each nn.Graph step; the watch finds and lowers it."""

import json
import os

from conftest import launch_script

PROBE = os.path.join(os.path.dirname(__file__), "vm_scheduler_probe.py")


def test_the_spinning_scheduler_thread_is_found_and_only_it_is_lowered(tmp_path):
    launch_script(PROBE, 1, [tmp_path])
    r = json.load(open(tmp_path / "rank0.json"))
    # an idle window changes nothing
    assert r["idle"] is None
    assert r["nice_after_idle"] == [0]
    # during steps one thread spent much of the time in the kernel, and it was lowered
    tid, share = r["lowered"]
    assert share >= 0.05
    assert tid != r["main"]
    assert r["nice"][str(tid)] == 19
    assert sorted(n for t, n in r["nice"].items() if int(t) != tid) == [0] * (len(r["nice"]) - 1)
    # it is the thread that an independent measurement of earlier steps found in the kernel the most
    assert tid == r["top_system"]
    assert r["top_system_share"] >= 0.05
