# DINOv2 ViT-B/14 with registers fine-tuned on ImageNet-1K at 224 px (16 x 16 patches; the release's
# 37 x 37 grid from 518 px is resampled). DINOv2's paper evaluates its backbones frozen (linear
# probe: 84.5% for ViT-B/14) and publishes no full fine-tuning recipe for B/14, so this file uses
# MAE's ViT-B recipe (finetune_common.py: batch 1024, lr 5e-4 x batch / 256, layer decay 0.65, 100
# epochs, mixup/cutmix, RandAugment, drop path 0.1) with class-token pooling. Start from the release
# dinov2_vitb14_reg4_pretrain.pth or timm's vit_base_patch14_reg4_dinov2.lvd142m; for DINOv2 without
# registers use "vit_base_patch14_dinov2" (dinov2_vitb14_pretrain.pth).
from flowvision.loss.cross_entropy import SoftTargetCrossEntropy
from libai.config import LazyCall

from libai_vit.models.zoo import model_config

from .finetune_common import dataloader, graph, optim, train  # noqa: F401

model = model_config(
    "vit_base_patch14_reg4_dinov2",  # LayerScale, 4 registers, no_embed_class
    pretrained=None,  # the DINOv2 file
    trust=False,  # True lets a .pth pickle run code
    strict=True,  # refuse a file whose blocks do not fit (the head may differ)
    img_size=224,  # the release runs at 518 px; fine-tuning at 224 resamples the position grid
    num_classes=1000,
    drop_path_rate=0.1,
    loss_func=LazyCall(SoftTargetCrossEntropy)(),  # mixup/cutmix give soft labels
)
train.output_dir = "./output/imagenet_finetune/vit_base_patch14_reg4_dinov2"
