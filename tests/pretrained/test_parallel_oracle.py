"""timm checkpoints loaded into a tensor- or pipeline-parallel ViT (2 processes) match timm."""

import os

import pytest
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
    families = ("deit3", "dinov2_reg4", "clip", "siglip", "qk_norm", "eva02_b", "eva02_clip")
    for family in families + ("dinov2_g", "dinov3_s", "dinov3_splus_qkvb", "xp", "pwee"):
        assert f"TP={tp} PP={pp} {family}." in proc.stdout, family
