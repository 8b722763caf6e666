"""DINOv3-7B at its real width (4096, 32 heads, SwiGLU 8192; 2 of its 40 blocks): the timm-format
file that real timm loaded (drawn from a seed, see full_width.py) gives timm's logits here."""

import os
import re

import full_width
import numpy as np
import pytest
from timm_oracle import TOL, output

from libai_vit import create_model
from libai_vit.pretrained import load_pretrained

from conftest import launch_script

HERE = os.path.dirname(os.path.abspath(__file__))
ORACLE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "timm", "full_width_7b.npz")


def test_dinov3_7b_full_width_matches_timm(tmp_path):
    path = full_width.write(str(tmp_path / "vit_7b_2blocks.safetensors"))
    model = create_model(full_width.NAME, **full_width.KWARGS).eval()
    attn = model.blocks[0].self_attention
    assert (model.embed_dim, attn.num_heads, attn.head_size) == (4096, 32, 128)
    assert tuple(model.blocks[0].mlp.dense_4h_to_h.weight.shape) == (8192, 4096)
    report = load_pretrained(model, path)
    assert report.missing == [] and report.unexpected == []
    oracle = np.load(ORACLE)
    diff = float(np.abs(output(model, oracle["input"], "logits") - oracle["logits"]).max())
    print(f"DINOv3-7B full width, 2 blocks: max |ours - timm| = {diff:.3g}")
    assert diff < TOL


@pytest.mark.slow
def test_dinov3_7b_full_width_at_tp2_pp2_matches_timm(tmp_path):
    # the real shapes split: 32 heads and 8192 SwiGLU units over 2 tensor-parallel ranks, the 2
    # blocks over 2 stages (registers, class token and RoPE tables where they are used)
    path = full_width.write(str(tmp_path / "vit_7b_2blocks.safetensors"))
    proc = launch_script(os.path.join(HERE, "full_width_worker.py"), 4, [2, 2, path])
    # counted, not split into lines: the two ranks' prints can land on one line of the output
    reports = re.findall(r"DINOv3-7B full width: max diff [0-9.e+-]+", proc.stdout)
    print("\n".join(reports))
    assert len(reports) == 2  # the last stage's two ranks (each exits non-zero on a mismatch)
