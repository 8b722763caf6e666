"""Resuming a graph-mode checkpoint in eager mode is refused (it would restart the optimizer)."""

import pytest

from conftest import launch


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
    launch(args, 1)
    proc = launch(args + ["train.train_iter=6", "graph.enabled=False", "--resume"], 1, check=False)
    assert proc.returncode != 0
    assert (
        "has no optimizer state: it was written in graph mode; resume with graph.enabled=True"
        in proc.stderr
    )
    assert "Traceback" not in proc.stderr
