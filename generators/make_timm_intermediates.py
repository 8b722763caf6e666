"""Write timm's own `forward_intermediates` outputs for the timm fixtures, which
tests/pretrained/test_forward_intermediates.py compares against.

Run with the timm venv of generators/make_timm_fixtures.py, after it (this reads its checkpoints,
manifest.json and the inputs in oracle.npz):

    .venv-timm/bin/python generators/make_timm_intermediates.py [DIR]  # tests/fixtures/timm

Per case (one of every family, dynamic sizes included) and per call (CALLS: timm's arguments),
DIR/intermediates.npz holds "<case>/<call>/final" (the final tokens, unless
intermediates_only), "<case>/<call>/<k>" (the k-th intermediate) and "<case>/<call>/<k>/prefix"
(its prefix tokens, with return_prefix_tokens).
"""

import json
import os
import sys

import numpy as np
import torch

# isort: split
from make_timm_fixtures import timm_load  # noqa: E402  (imports timm after timm_venv)

CASES = (
    "tiny16.safetensors",  # ViT: class token, final norm
    "small_avg.safetensors",  # average pooling: fc_norm, no final norm
    "deit3.safetensors",  # LayerScale, no_embed_class
    "dinov2_reg4.safetensors",  # registers
    "clip.safetensors",  # norm_pre
    "siglip.safetensors",  # no class token, MAP head
    "eva02_b.safetensors",  # EVA-02: RoPE
    "dinov2_reg4.safetensors~dyn42",  # dynamic_img_size: another grid
    "eva02_b.safetensors~dyn42",  # ... with RoPE
)
CALLS = {
    "all": dict(),
    "last1_norm_prefix_nlc": dict(
        indices=1, norm=True, return_prefix_tokens=True, output_fmt="NLC"
    ),
    "first_stop_early": dict(indices=[0], stop_early=True),
    "neg_only": dict(indices=[-2, -1], intermediates_only=True, norm=True),
}


def main(fixture_dir):
    with open(os.path.join(fixture_dir, "manifest.json")) as f:
        manifest = json.load(f)
    inputs = np.load(os.path.join(fixture_dir, "oracle.npz"))
    out = {}
    with torch.no_grad():
        for case in CASES:
            c = manifest["cases"][case]
            fixture = manifest["fixtures"][c["fixture"]]
            base = fixture["timm_kwargs"]
            overrides = {k: v for k, v in c["kwargs"].items() if base.get(k) != v}
            path = os.path.join(fixture_dir, c["file"])
            model = timm_load(path, c["timm_name"], base, overrides)
            x = torch.from_numpy(inputs[c["input"]])
            for call, kwargs in CALLS.items():
                result = model.forward_intermediates(x, **kwargs)
                if kwargs.get("intermediates_only"):
                    final, intermediates = None, result
                else:
                    final, intermediates = result
                    out[f"{case}/{call}/final"] = final.numpy()
                for k, y in enumerate(intermediates):
                    if isinstance(y, tuple):
                        y, prefix = y
                        out[f"{case}/{call}/{k}/prefix"] = prefix.numpy()
                    out[f"{case}/{call}/{k}"] = y.contiguous().numpy()
                print(f"{case:32s} {call:24s} {len(intermediates)} x {tuple(y.shape)}")
    np.savez_compressed(os.path.join(fixture_dir, "intermediates.npz"), **out)


if __name__ == "__main__":
    default = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "timm")
    main(sys.argv[1] if len(sys.argv) > 1 else default)
