"""A checkpoint written on one layout loads on another, for the weights (eval logits) and for a full
--resume (model, graph-held optimizer state, scheduler: the resumed losses equal the uninterrupted
run's), in both formats: sharded (each rank writes its slices, each reads the slices it needs) and
whole (gathered to rank 0; `train.checkpointer.sharded=False`).

Saved at 1x2x2 (tensor- and pipeline-split parameters), loaded at 1x1x1 and 1x2x1.
"""

import json
import os
import pickle
import shutil

import numpy as np
import pytest

from conftest import ROOT, launch_script, train

CONFIG = "configs/demo_digits_3d.py"
STEPS, PERIOD = 4, 2  # checkpoints after iterations 1 and 3, then model_final
SAVED_AT = (1, 2, 2)
LOAD_AT = [(1, 1, 1), (1, 2, 1)]
GLOBAL_BATCH = 16
PROBE = os.path.join(ROOT, "tests", "checkpoint_layout_probe.py")


def _train(out, digits_root, layout, resume=False, sharded=True, eager=False, acc=None):
    dp, tp, pp = layout
    if acc is None:
        acc = 2 if pp > 1 else 1  # two micro-batches in flight through two stages
    train(
        [
            os.path.join(ROOT, "tools", "train_net.py"),
            os.path.join(ROOT, CONFIG),
            f"train.output_dir={out}",
            f"train.dist.data_parallel_size={dp}",
            f"train.dist.tensor_parallel_size={tp}",
            f"train.dist.pipeline_parallel_size={pp}",
            f"train.train_micro_batch_size={GLOBAL_BATCH // dp // acc}",
            f"train.num_accumulation_steps={acc}",
            f"train.train_iter={STEPS}",
            f"train.checkpointer.period={PERIOD}",
            "train.evaluation.enabled=False",
            "train.log_period=1",
            f"train.checkpointer.sharded={sharded}",
            *(["graph.enabled=False"] if eager else []),
            f"dataloader.train.dataset.0.root={digits_root}",
            f"dataloader.test.0.dataset.root={digits_root}",
            *(["--resume"] if resume else []),
        ],
        dp * tp * pp,
    )


def _losses(out):
    with open(os.path.join(out, "metrics.json")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r["total_loss"] for r in rows if "total_loss" in r]


@pytest.fixture(scope="module", params=["sharded", "whole"])
def saved(request, digits_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp(f"saved_1x2x2_{request.param}"))
    _train(out, digits_root, SAVED_AT, sharded=request.param == "sharded")
    return out


@pytest.mark.slow
def test_sharded_pieces_tile_each_tensor_once_and_each_rank_writes_its_own(saved):
    from safetensors import safe_open

    from libai_vit.pretrained import sharded_format

    for entry in ("model", "graph"):
        folder = os.path.join(saved, "model_final", entry)
        if saved.rstrip("0123456789").endswith("whole"):
            assert not sharded_format.is_sharded(folder)
            continue
        with open(os.path.join(folder, sharded_format.STRUCTURE), "rb") as f:
            structure = pickle.load(f)
        sizes = {tuple(r.path): int(np.prod(r.shape)) for _, r in sharded_format.records(structure)}
        covered, per_rank = dict.fromkeys(sizes, 0), []
        for name in sorted(os.listdir(folder)):
            if not name.endswith(".safetensors"):
                continue
            per_rank.append(0)
            with safe_open(os.path.join(folder, name), framework="np") as f:
                for key in f.keys():
                    path, bounds = json.loads(key)
                    n = int(np.prod([hi - lo for lo, hi in bounds]))
                    covered[tuple(path)] += n
                    per_rank[-1] += n
        assert covered == sizes, f"{entry}: the pieces overlap or leave a gap"
        total = sum(sizes.values())
        shares = [round(n / total, 3) for n in per_rank]
        print(f"{entry}: share of the elements each rank wrote {shares}")
        # TP2 x PP2: each rank writes about a quarter (stage 0's ranks also the embeddings)
        assert len(per_rank) == 4 and max(per_rank) <= 0.4 * total


def _logits(run_dir, checkpoint, layout, tmp_path):
    out = str(tmp_path / f"logits_{'x'.join(map(str, layout))}.npz")
    launch_script(PROBE, int(np.prod(layout)), [run_dir, checkpoint, *layout, out])
    return np.load(out)


@pytest.mark.slow
def test_weights_load_on_other_layouts_with_identical_logits(saved, tmp_path):
    checkpoint = os.path.join(saved, "model_final")
    with open(os.path.join(checkpoint, "manifest.json")) as f:
        layout = json.load(f)["layout"]
    assert (
        layout["data_parallel_size"],
        layout["tensor_parallel_size"],
        layout["pipeline_parallel_size"],
    ) == SAVED_AT
    reference = _logits(saved, checkpoint, SAVED_AT, tmp_path)
    assert np.abs(reference["loaded"] - reference["initial"]).max() > 1e-3, (
        "the checkpoint was not loaded"
    )
    for layout in LOAD_AT:
        diff = float(
            np.abs(
                _logits(saved, checkpoint, layout, tmp_path)["loaded"] - reference["loaded"]
            ).max()
        )
        print(
            f"max |logit difference| {'x'.join(map(str, layout))} vs "
            f"{'x'.join(map(str, SAVED_AT))}: {diff:.2e}"
        )
        assert diff <= 1e-5


@pytest.mark.slow
def test_resume_on_another_layout_continues_the_run(saved, digits_root, tmp_path):
    out = str(tmp_path / "resumed_1x1x1")
    shutil.copytree(saved, out)
    for later in ("model_0000003", "model_final"):  # resume from the checkpoint after iteration 1
        shutil.rmtree(os.path.join(out, later))
    _train(out, digits_root, (1, 1, 1), resume=True)
    resumed, reference = _losses(out), _losses(saved)
    assert len(resumed) == len(reference) == STEPS
    diff = max(abs(a - b) / abs(b) for a, b in zip(resumed, reference))
    print(f"max relative loss difference, 1x2x2 resumed at 1x1x1: {diff:.2e}")
    assert diff <= 1e-5


@pytest.mark.slow
def test_eager_optimizer_state_resumes_on_another_layout(digits_root, tmp_path):
    """An eager optimizer keys its state by parameter index: each index's m and v are read into
    that parameter's layout (saved at TP2 x PP2, where eager mode runs the stages one after
    another; resumed at 1x1x1). One micro-batch a step: LiBai's eager trainer counts iterations
    by micro-batch."""
    saved, out = str(tmp_path / "eager_1x2x2"), str(tmp_path / "eager_resumed")
    _train(saved, digits_root, (1, 2, 2), eager=True, acc=1)
    assert os.path.exists(os.path.join(saved, "model_0000001", "optimizer", "structure.pickle"))
    shutil.copytree(saved, out)
    for later in ("model_0000003", "model_final"):
        shutil.rmtree(os.path.join(out, later))
    _train(out, digits_root, (1, 1, 1), resume=True, eager=True)
    resumed, reference = _losses(out), _losses(saved)
    assert len(resumed) == len(reference) == STEPS
    diff = max(abs(a - b) / abs(b) for a, b in zip(resumed, reference))
    print(f"max relative loss difference, eager 1x2x2 resumed at 1x1x1: {diff:.2e}")
    assert diff <= 1e-5
