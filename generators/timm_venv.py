"""Import this before timm in the timm venv (.venv-timm, see generators/make_timm_fixtures.py).

The registry's torchvision is a CUDA build whose C ops do not load with the CPU torch; timm imports
torchvision, whose Python side registers fake kernels for `nms` and `qnms` and fails unless their
schemas exist, so they are declared here (once, on import).
"""

import torch

_TORCHVISION_OPS = torch.library.Library("torchvision", "DEF")
for _op in ("nms", "qnms"):
    _TORCHVISION_OPS.define(f"{_op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
