"""Resuming a graph-mode checkpoint in eager mode is refused (it would restart the optimizer); a
resume with another schedule says so and continues on the checkpoint's."""

import json
import os

import pytest

from conftest import launch, train


@pytest.mark.slow
def test_resume_in_the_other_mode_is_refused_in_one_line(tmp_path, digits_root):
    args = [
        "tools/train_net.py",
        "configs/demo_digits_3d.py",
        f"train.output_dir={tmp_path}",
        "train.dist.data_parallel_size=1",
        "train.dist.tensor_parallel_size=1",
        "train.dist.pipeline_parallel_size=1",
        "train.train_iter=4",
        "train.evaluation.enabled=False",
        "train.checkpointer.period=2",
        f"dataloader.train.dataset.0.root={digits_root}",
        f"dataloader.test.0.dataset.root={digits_root}",
    ]
    train(args, 1)
    proc = launch(args + ["train.train_iter=6", "graph.enabled=False", "--resume"], 1, check=False)
    assert proc.returncode != 0
    assert (
        "has no optimizer state: it was written in graph mode; resume with graph.enabled=True"
        in proc.stderr
    )
    assert "Traceback" not in proc.stderr

    # 4 -> 6 steps: one line names the change; the two new steps run at the end of the saved
    # 4-step cosine (lr x alpha = 2e-3 x 0.01), not where a fresh 6-step schedule would be
    proc = train(args + ["train.train_iter=6", "--resume"], 1)
    out = proc.stdout + proc.stderr
    assert (
        "the config's schedule differs from the checkpoint's (train.train_iter 4 -> 6): the "
        "learning rate continues on the checkpoint's schedule" in out
    ), out[-3000:]
    with open(os.path.join(tmp_path, "metrics.json")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    lrs = {r["iteration"]: r["lr"] for r in rows if "lr" in r}
    assert sorted(lrs) == list(range(6))
    assert lrs[4] == pytest.approx(2e-5) and lrs[5] == pytest.approx(2e-5), lrs
