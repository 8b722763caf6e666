# DINOv2 ViT-g/14 with registers (1.1B parameters, 40 blocks, SwiGLU) fine-tuned on ImageNet-1K at
# 224 px (16 x 16 patches; the release's 37 x 37 grid from 518 px is resampled). DINOv2's paper
# evaluates its backbones frozen (linear probe) and its repository (facebookresearch/dinov2)
# publishes no full fine-tuning recipe, so this file uses MAE's recipe for its largest model
# (ViT-H: layer decay 0.75, 50 epochs, drop path 0.3; base lr 1e-3 x batch / 256, batch 1024,
# mixup/cutmix, RandAugment) with class-token pooling. Its 1.1B parameters with AdamW need about
# 18 GB per replica before activations; the planner's layouts for it are in ../README.md (set
# train.dist.* at launch). Start from dinov2_vitg14_reg4_pretrain.pth or timm's
# vit_giant_patch14_reg4_dinov2.lvd142m; without registers use "vit_giant_patch14_dinov2".
from flowvision.loss.cross_entropy import SoftTargetCrossEntropy
from libai.config import LazyCall

from libai_vit.models.zoo import model_config

from .finetune_common import dataloader, graph, optim, train  # noqa: F401

model = model_config(
    "vit_giant_patch14_reg4_dinov2",  # packed SwiGLU (4096 hidden), LayerScale, 4 registers
    pretrained=None,  # the DINOv2 file
    trust=False,  # True lets a .pth pickle run code
    strict=True,  # refuse a file whose blocks do not fit (the head may differ)
    img_size=224,  # the release runs at 518 px; fine-tuning at 224 resamples the position grid
    num_classes=1000,
    drop_path_rate=0.3,
    loss_func=LazyCall(SoftTargetCrossEntropy)(),  # mixup/cutmix give soft labels
)
optim.lr = 1e-3 * train.global_batch_size / 256  # MAE ViT-H's base lr per 256 samples
optim.params.layer_decay = 0.75  # lr x 0.75 per block below the head (MAE ViT-H)
train.train_micro_batch_size = 16
train.train_epoch = 50
train.warmup_ratio = 5 / 50
train.output_dir = "./output/imagenet_finetune/vit_giant_patch14_reg4_dinov2"
