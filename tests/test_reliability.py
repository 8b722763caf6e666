"""Stop a run any way at any time and lose nothing: kills, a kill mid-save, a corrupt checkpoint, a
full disk and a NaN loss, each on real OneFlow processes (CPU) launched through tools/train.sh.

The resumed per-iteration raw losses must equal the uninterrupted run's (graph mode, DP=2, dropout,
attention dropout and drop path on; the demo config has no mixup yet).
"""

import json
import os
import random
import re
import signal
import subprocess
import time

import pytest

from libai_vit.engine.training_checkpoint import verify

from conftest import ROOT, Run, launch

CONFIG = "configs/demo_digits_3d.py"
STEPS, PERIOD = 8, 3  # checkpoints after iterations 2, 5 and 7


def _overrides(out, digits_root, nproc=2, steps=STEPS, extra=()):
    return [
        f"train.output_dir={out}",
        f"train.dist.data_parallel_size={nproc}",
        "train.dist.tensor_parallel_size=1",
        "train.dist.pipeline_parallel_size=1",
        "train.train_micro_batch_size=8",
        "train.num_accumulation_steps=1",
        f"train.train_iter={steps}",
        f"train.checkpointer.period={PERIOD}",
        "train.evaluation.enabled=False",
        "train.log_period=1",
        "model.drop_rate=0.1",
        "model.attn_drop_rate=0.1",
        "model.drop_path_rate=0.2",
        f"dataloader.train.dataset.0.root={digits_root}",
        f"dataloader.test.0.dataset.root={digits_root}",
        *extra,
    ]


def _train(out, digits_root, nproc=2, extra=(), env=None, check=True, resume=False):
    args = [
        os.path.join(ROOT, "tools", "train_net.py"),
        os.path.join(ROOT, CONFIG),
        *_overrides(out, digits_root, nproc, extra=extra),
        *(["--resume"] if resume else []),
    ]
    return launch(args, nproc, check=check, env=dict(os.environ, **(env or {})))


def _rows(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _losses(out):
    rows = [r for r in _rows(out) if "total_loss" in r]
    assert [r["iteration"] for r in rows] == list(range(len(rows))), (
        "each iteration logged once, in order"
    )
    return [r["total_loss"] for r in rows]


def _assert_same(losses, reference):
    assert len(losses) == len(reference) == STEPS
    diff = max(abs(a - b) / abs(b) for a, b in zip(losses, reference))
    print(f"max relative loss difference after resume: {diff:.2e}")
    assert diff <= 1e-5


def _start(out, digits_root, env=None, capture=False):
    """The 2-process run, left running (the test kills a part of it); its output kept if
    `capture`."""
    cmd = [
        "bash",
        os.path.join(ROOT, "tools", "train.sh"),
        os.path.join(ROOT, "tools", "train_net.py"),
        os.path.join(ROOT, CONFIG),
        "2",
        *_overrides(out, digits_root),
    ]
    return Run(
        cmd,
        env=dict(os.environ, **(env or {})),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE if capture else subprocess.DEVNULL,
    )


def _wait_for(condition, proc, timeout=300):
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, "the run ended before the kill"
        assert time.time() < deadline, "timed out waiting for the run"
        time.sleep(0.2)


def _ranks(launcher_pid):
    out = subprocess.run(["pgrep", "-P", str(launcher_pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _reached(out, iteration):
    def check():
        try:
            return any(r.get("iteration", -1) >= iteration for r in _rows(out))
        except (OSError, ValueError):
            return False

    return check


@pytest.fixture(scope="module")
def reference(digits_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("uninterrupted"))
    _train(out, digits_root)
    return out, _losses(out)


@pytest.mark.slow
def test_kill9_one_rank_then_resume_and_fall_back_past_a_corrupt_checkpoint(
    reference, digits_root, tmp_path
):
    ref_dir, ref = reference
    kill_at = random.Random().randint(3, STEPS - 2)
    print(f"kill -9 of rank 1 once iteration {kill_at} is logged")
    run = _start(tmp_path, digits_root, capture=True)
    try:
        _wait_for(_reached(tmp_path, kill_at), run.proc)
        os.kill(_ranks(run.proc.pid)[-1], signal.SIGKILL)
    finally:
        killed = run.finish(timeout=120)
    # the launcher notices, stops the other rank and names the one killed, whichever ended first;
    # rank 0's abort on the broken connection (if it came first) is one note, not a stack dump
    assert killed.returncode == 128 + signal.SIGKILL
    errors = [line for line in killed.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: rank 1 was killed by SIGKILL; stopped all 2 rank(s) of this node"]
    assert "Check failure stack trace" not in killed.stderr
    _train(tmp_path, digits_root, resume=True)
    _assert_same(_losses(tmp_path), ref)

    # the newest checkpoint is damaged: resuming warns, naming the file, and takes the previous one
    victim = os.path.join(tmp_path, "model_0000007", "model")
    data = sorted(os.path.join(d, f) for d, _, fs in os.walk(victim) for f in fs)[0]
    with open(data, "r+b") as f:
        f.truncate(max(0, os.path.getsize(data) // 2))
    proc = _train(tmp_path, digits_root, resume=True)
    assert f"checkpoint file {data} is truncated" in proc.stdout + proc.stderr
    assert "Starting training from iteration 6" in proc.stdout + proc.stderr
    _assert_same(_losses(tmp_path), ref)
    verify(os.path.join(tmp_path, "model_0000007"))  # written again, whole


@pytest.mark.slow
def test_kill9_launcher_in_the_middle_of_a_save_then_resume(reference, digits_root, tmp_path):
    _, ref = reference
    # every rank sleeps inside each save after writing its data, before the checkpoint is published
    run = _start(tmp_path, digits_root, env={"LIBAI_VIT_FAULT": "save_sleep=3"})
    try:
        _wait_for(lambda: os.path.isdir(os.path.join(tmp_path, ".tmp-model_0000005")), run.proc)
        os.kill(run.proc.pid, signal.SIGKILL)
    finally:
        run.finish(timeout=60)  # fails if a rank outlived its killed launcher
    assert not os.path.exists(os.path.join(tmp_path, "model_0000005"))
    with open(os.path.join(tmp_path, "last_checkpoint")) as f:
        assert f.read().strip() == "model_0000002"
    result = _train(tmp_path, digits_root, resume=True)
    assert "Starting training from iteration 3" in result.stdout + result.stderr
    _assert_same(_losses(tmp_path), ref)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


@pytest.mark.slow
def test_full_disk_during_a_save_fails_cleanly_keeping_the_last_good_checkpoint(
    digits_root, tmp_path
):
    proc = _train(
        tmp_path,
        digits_root,
        nproc=1,
        check=False,
        env={"LIBAI_VIT_FAULT": "save_enospc=model_0000005"},
    )
    assert proc.returncode == 1
    last = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert (
        last
        and "saving checkpoint" in last[-1]
        and "model_0000005 failed: [Errno 28] No space left on device" in last[-1]
        and "model_0000002 is intact" in last[-1]
    ), proc.stderr[-2000:]
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith(("model_", ".tmp-"))) == [
        "model_0000002"
    ]
    verify(os.path.join(tmp_path, "model_0000002"))


@pytest.mark.slow
def test_nan_loss_stops_the_run_before_a_checkpoint_holds_it(digits_root, tmp_path):
    proc = _train(
        tmp_path, digits_root, nproc=1, check=False, env={"LIBAI_VIT_FAULT": "nan_loss=4"}
    )
    assert proc.returncode == 1
    assert "error: non-finite loss (nan) at iteration 4" in proc.stderr, proc.stderr[-2000:]
    # no traceback from the run (the launcher prints its own)
    assert 'train_net.py", line' not in proc.stderr
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("model_")) == ["model_0000002"]
    assert [r["iteration"] for r in _rows(tmp_path) if "total_loss" in r] == [0, 1, 2, 3]


@pytest.mark.slow
def test_nan_loss_skip_mode_skips_the_step_eager(digits_root, tmp_path):
    _train(
        tmp_path,
        digits_root,
        nproc=1,
        env={"LIBAI_VIT_FAULT": "nan_loss=2"},
        extra=("graph.enabled=False", "train.nonfinite_loss=skip"),
    )
    rows = [r for r in _rows(tmp_path) if "total_loss" in r]
    assert [r["iteration"] for r in rows] == [i for i in range(STEPS) if i != 2]
    assert all(r["total_loss"] == r["total_loss"] for r in rows)  # no NaN
    verify(os.path.join(tmp_path, "model_0000007"))


def test_a_last_checkpoint_of_binary_garbage_is_repointed_not_decoded(tmp_path):
    from libai_vit.engine.training_checkpoint import select_resumable
    from libai_vit.engine.training_checkpoint.manifest import write_manifest

    good = tmp_path / "model_0000004"
    (good / "model").mkdir(parents=True)
    (good / "model" / "data").write_bytes(b"weights")
    write_manifest(str(good), iteration=4)
    (tmp_path / "last_checkpoint").write_bytes(b"\xff\xfe\x00\x9c garbage")
    assert select_resumable(str(tmp_path)) == "model_0000004"
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004"


def test_a_resume_with_another_schedule_is_named_in_one_line():
    from omegaconf import OmegaConf

    from libai_vit.engine.trainer import schedule_changes

    saved = {"train": {"train_iter": 200, "warmup_iter": 10, "global_batch_size": 64}}
    saved["optim"] = {"lr": 2e-3}
    same = OmegaConf.create(saved)
    assert schedule_changes(saved, same) is None
    now = OmegaConf.create(
        {
            "train": {"train_iter": 7, "warmup_iter": 10, "global_batch_size": 32},
            "optim": saved["optim"],
        }
    )
    line = schedule_changes(saved, now)
    assert line.startswith(
        "the config's schedule differs from the checkpoint's (train.train_iter 200 -> 7, "
        "train.global_batch_size 64 -> 32): the learning rate continues on the checkpoint's "
        "schedule (its saved scheduler), the run stops after train.train_iter=7 steps with "
        "batches of 32"
    ), line
    assert "\n" not in line


def test_curves_png_is_written_whole_or_not_at_all(tmp_path, caplog):
    from libai_vit.engine.hooks import CurvePlotter, plot_curves

    rows = [{"iteration": i, "total_loss": 2.0 - 0.1 * i} for i in range(5)]
    (tmp_path / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot_curves(str(tmp_path / "metrics.json"), str(tmp_path / "curves.png"))
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
    # the PNG cannot be published (here: a folder is in its place; a full disk fails the same
    # way): no part of a file is left, and the finished run is not failed for it
    (tmp_path / "curves.png").unlink()
    (tmp_path / "curves.png").mkdir()
    CurvePlotter(str(tmp_path)).after_train()
    assert sorted(os.listdir(tmp_path)) == ["curves.png", "metrics.json"]
    assert "could not write" in caplog.text and "metrics.json holds the same numbers" in caplog.text


def test_a_data_loader_workers_failure_is_one_line(tmp_path):
    """A worker's DatasetError arrives with the worker's whole traceback in its message: the run
    reports the worker's own line."""
    import oneflow as flow
    from PIL import Image

    from libai_vit.data.folder import DatasetError, ImageFolder
    from libai_vit.engine.trainer import data_loader_failure

    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    (tmp_path / "train" / "a").mkdir(parents=True)
    os.replace(tmp_path / "ok.png", tmp_path / "train" / "a" / "ok.png")
    (tmp_path / "train" / "b").mkdir()
    (tmp_path / "train" / "b" / "bad.jpg").write_bytes(b"garbage")
    loader = flow.utils.data.DataLoader(
        ImageFolder(str(tmp_path)), batch_size=2, num_workers=1, collate_fn=lambda batch: batch
    )
    with pytest.raises(DatasetError) as e:
        next(iter(loader))
    assert "Traceback" in str(e.value)  # as OneFlow re-raises it
    short = data_loader_failure(e.value)
    assert isinstance(short, DatasetError) and str(short) == (
        f"{tmp_path}/train/b: no readable image in the class folder (1 files, all unreadable): fix "
        "or remove it"
    )
    assert data_loader_failure(RuntimeError("something else")) is None


@pytest.mark.slow
def test_a_killed_data_loader_worker_ends_the_run_in_one_line(digits_root, tmp_path):
    run = Run(
        [
            "bash",
            os.path.join(ROOT, "tools", "train.sh"),
            os.path.join(ROOT, "tools", "train_net.py"),
            os.path.join(ROOT, CONFIG),
            "1",
            *_overrides(tmp_path, digits_root, nproc=1, steps=300),
            "dataloader.train.num_workers=2",
        ]
    )
    try:
        _wait_for(_reached(tmp_path, 2), run.proc)
        rank = _ranks(run.proc.pid)[0]
        os.kill(_ranks(rank)[0], signal.SIGKILL)  # one of the rank's two loader workers
    finally:
        proc = run.finish(timeout=120)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and re.match(
        r"error: DataLoader worker \(pid \d+\) is killed by signal: Killed \(killed from outside, "
        r"or out of memory\?\): lower dataloader.train.num_workers, then continue with --resume "
        r"\[rank 0 exited with status 1\]$",
        errors[0],
    ), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
