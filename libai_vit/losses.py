"""Training losses beyond flowvision's.

BinaryCrossEntropy: DeiT III's loss (`--bce-loss`: `BCEWithLogitsLoss` on the mixup/cutmix targets
binarised by `targets.gt(0.0)`), with timm's `BinaryCrossEntropy` arguments: `target_threshold=0.0`
is DeiT III; `smoothing` applies to hard (index) labels only, mixed labels being smoothed by Mixup.
"""

import oneflow as flow
from oneflow import nn


class BinaryCrossEntropy(nn.Module):
    def __init__(self, smoothing=0.0, target_threshold=None):
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing={smoothing} must be in [0, 1)")
        self.smoothing = smoothing
        self.target_threshold = target_threshold

    def forward(self, logits, target):
        if target.shape != logits.shape:  # class indices: one-hot, smoothed
            num_classes = logits.shape[-1]
            off = self.smoothing / num_classes
            one_hot = flow.nn.functional.one_hot(target.long(), num_classes).to(logits.dtype)
            target = one_hot * (1.0 - self.smoothing) + off
        if self.target_threshold is not None:
            target = (target > self.target_threshold).to(logits.dtype)
        return flow.nn.functional.binary_cross_entropy_with_logits(logits, target)
