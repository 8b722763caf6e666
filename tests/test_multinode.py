"""Two nodes of 2 processes on one machine (DP=2 x TP=2), started as the README says.

OneFlow 0.9 counts one node per address the ranks reach the master from. So the test makes its own
network namespace (unshare: a user + network namespace, nothing outside it changes) whose loopback
also carries 127.0.0.2: node 0 reaches the master at 127.0.0.1, node 1 at 127.0.0.2, as two machines
would reach node 0 from their own addresses.
"""

import json
import os
import time

import pytest

from conftest import launch, run, train_losses

CONFIG = "configs/demo_digits_3d.py"
STEPS = 3
NETNS = ["unshare", "--user", "--map-root-user", "--net", "bash", "-c"]
NODE_SCRIPT = """
set -u
ip link set lo up && ip addr add 127.0.0.2/32 dev lo
for r in 0 1; do
  if [ $r = 0 ]; then addr=127.0.0.1; else addr=$ADDR1; fi
  (NODE=2 NODE_RANK=$r ADDR=$addr PORT=29500 bash tools/train.sh tools/train_net.py {config} 2 \
     train.output_dir=$OUT/node$r {overrides} > $OUT/node$r.log 2>&1; echo $? > $OUT/node$r.rc) &
done
wait
"""


def _overrides(digits_root):
    return [
        "train.dist.data_parallel_size=2",
        "train.dist.tensor_parallel_size=2",
        "train.dist.pipeline_parallel_size=1",
        "train.train_micro_batch_size=8",
        "train.num_accumulation_steps=1",
        f"train.train_iter={STEPS}",
        "train.evaluation.enabled=False",
        "train.checkpointer.period=100000",
        "train.log_period=1",
        "model.depth=2",
        f"dataloader.train.dataset.0.root={digits_root}",
        f"dataloader.test.0.dataset.root={digits_root}",
    ]


def _two_nodes(out, digits_root, node1_addr, timeout=600):
    """Both nodes' launches inside one new network namespace; returns (seconds, [rc0, rc1])."""
    script = NODE_SCRIPT.format(config=CONFIG, overrides=" ".join(_overrides(digits_root)))
    env = dict(os.environ, OUT=str(out), ADDR1=node1_addr)
    start = time.monotonic()
    proc = run(NETNS + [script], timeout, check=False, env=env)
    missing = [r for r in (0, 1) if not (out / f"node{r}.rc").exists()]
    assert not missing, (
        f"no node ran ({' '.join(NETNS[:4])} + ip exited {proc.returncode}): this test needs "
        f"unprivileged user and network namespaces and iproute2"
    )
    rcs = [int((out / f"node{r}.rc").read_text()) for r in (0, 1)]
    return time.monotonic() - start, rcs


def _losses(metrics):
    with open(metrics) as f:
        return [json.loads(line)["total_loss"] for line in f if "total_loss" in line]


@pytest.mark.slow
def test_two_nodes_train_like_one_node_of_four(digits_root, tmp_path):
    _, rcs = _two_nodes(tmp_path, digits_root, "127.0.0.2")
    assert rcs == [0, 0], (tmp_path / "node0.log").read_text()[-3000:] + (
        tmp_path / "node1.log"
    ).read_text()[-3000:]
    two_nodes = _losses(tmp_path / "node0" / "metrics.json")
    one_node = train_losses(tmp_path / "one", CONFIG, 4, _overrides(digits_root))
    print(f"two nodes {two_nodes}\none node  {one_node}")
    assert len(two_nodes) == STEPS and two_nodes == pytest.approx(one_node, rel=1e-6)


@pytest.mark.slow
def test_nodes_that_oneflow_cannot_tell_apart_fail_with_one_line(digits_root, tmp_path):
    """Both nodes reach the master at 127.0.0.1: OneFlow sees one node where the launch made two
    (this spun forever before); every rank now stops at set-up, rank 0 with one line."""
    seconds, rcs = _two_nodes(tmp_path, digits_root, "127.0.0.1", timeout=300)
    assert all(rc != 0 for rc in rcs)
    log = (tmp_path / "node0.log").read_text()
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    expected = "OneFlow sees 1 node(s) for 4 ranks but the launch asked for NODE=2"
    assert len(errors) == 1 and expected in errors[0], log[-3000:]
    assert "Traceback" not in log
    print(f"refused in {seconds:.0f} s: {errors[0]}")


@pytest.mark.slow
def test_a_node_that_never_starts_ends_the_run_with_one_line(digits_root, tmp_path):
    """Node 1 is never started: OneFlow's start-up would wait forever; the launcher gives up after
    LIBAI_VIT_RENDEZVOUS_TIMEOUT seconds with one line."""
    env = dict(
        os.environ, NODE="2", NODE_RANK="0", ADDR="127.0.0.1", LIBAI_VIT_RENDEZVOUS_TIMEOUT="20"
    )
    start = time.monotonic()
    proc = launch(
        ["tools/train_net.py", CONFIG, f"train.output_dir={tmp_path}", *_overrides(digits_root)],
        2,
        timeout=300,
        check=False,
        env=env,
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert (
        proc.returncode != 0
        and len(errors) == 1
        and "did not meet their peers within 20 s" in errors[0]
    ), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Check failed" not in proc.stderr
    print(f"gave up in {time.monotonic() - start:.0f} s")
