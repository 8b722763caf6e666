"""timm checkpoints loaded into a tensor- or pipeline-parallel ViT (2 processes) match timm: the
logits and forward_intermediates; and at PP=2 set_grad_checkpointing keeps a train graph's
losses."""

import os

import pytest
from intermediates_oracle import CASES as INTERMEDIATES
from timm_oracle import CASES, MANIFEST

from conftest import launch_script

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.slow
@pytest.mark.parametrize("tp,pp", [(2, 1), (1, 2)], ids=["TP2", "PP2"])
def test_two_process_layout_matches_timm(tp, pp):
    proc = launch_script(os.path.join(HERE, "parallel_oracle_worker.py"), 2, [tp, pp])
    # every case whose heads split over the ranks, each family's among them (the worker exits
    # non-zero on a mismatch)
    expected = [c for c in CASES if MANIFEST["cases"][c]["kwargs"]["num_heads"] % tp == 0]
    assert f"checked {len(expected)} cases" in proc.stdout
    inter = [c for c in INTERMEDIATES if MANIFEST["cases"][c]["kwargs"]["num_heads"] % tp == 0]
    assert f"checked {len(inter)} intermediates cases" in proc.stdout
    families = ("deit3", "dinov2_reg4", "clip", "siglip", "qk_norm", "eva02_b", "eva02_clip")
    for family in families + (
        "dinov2_g",
        "dinov3_s",
        "dinov3_splus_qkvb",
        "xp",
        "pwee",
        "eva02_e",
        "aimv2",
        "intern300m",
        "things",
        "intern6b",
    ):
        assert f"TP={tp} PP={pp} {family}." in proc.stdout, family
    for family in ("small_avg", "dinov2_reg4", "siglip", "eva02_b.safetensors~dyn42"):
        assert f"TP={tp} PP={pp} intermediates {family}" in proc.stdout, family
    # (the worker also fails unless the intermediates are replicated on the last stage and a
    # reset_classifier head sits where the constructed one does)
    assert f"TP={tp} PP={pp} intermediates sbp" in proc.stdout
    if pp > 1:  # set_grad_checkpointing: the same per-step losses in a pipelined train graph
        assert f"TP={tp} PP={pp} grad checkpointing losses" in proc.stdout
