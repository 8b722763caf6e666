"""Real timm's logits for the full-width DINOv3-7B proof (tests/pretrained/full_width.py): write the
seeded timm-format file, load it into timm's own `vit_7b_patch16_dinov3` (2 blocks, 32 px) and save
its input and logits to tests/fixtures/timm/full_width_7b.npz (a few KB).

    .venv-timm/bin/python generators/make_full_width_oracle.py   # ~1 min, ~5 GB of memory
"""

import os
import sys
import tempfile

import numpy as np
import timm_venv  # noqa: F401  (declares torchvision's ops: before timm is imported)
import torch

# isort: split
import timm  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "pretrained"))
import full_width  # noqa: E402

OUT = os.path.join(HERE, "..", "tests", "fixtures", "timm", "full_width_7b.npz")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        path = full_width.write(os.path.join(tmp, "vit_7b_2blocks.safetensors"))
        model = timm.create_model(
            full_width.NAME,
            pretrained=True,
            pretrained_cfg_overlay=dict(file=path, num_classes=full_width.KWARGS["num_classes"]),
            **full_width.KWARGS,
        ).eval()
    theirs = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert theirs == full_width.shapes(), "full_width.shapes() no longer matches timm's model"
    torch.manual_seed(0)
    x = torch.randn(2, 3, full_width.KWARGS["img_size"], full_width.KWARGS["img_size"])
    with torch.no_grad():
        logits = model(x)
    np.savez_compressed(OUT, input=x.numpy(), logits=logits.numpy())
    print(f"timm {timm.__version__}: logits {tuple(logits.shape)}, |max| {logits.abs().max():.3f}")
    print(f"written {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
