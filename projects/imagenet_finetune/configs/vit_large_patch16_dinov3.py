# DINOv3 ViT-L/16 fine-tuned on ImageNet-1K at 224 px (14 x 14 patches; DINOv3's RoPE normalises
# any grid to [-1, 1], so no position table is resampled). The DINOv3 paper and its repository
# (facebookresearch/dinov3) evaluate the backbones frozen (linear probe, k-NN) and publish no full
# fine-tuning recipe, so this file uses MAE's ViT-L recipe (finetune_common.py and
# vit_large_patch16_224_mae.py: batch 1024, lr 1e-3 x batch / 256, layer decay 0.75, 50 epochs with
# 5 of warm-up, drop path 0.2, mixup/cutmix, RandAugment) with class-token pooling as upstream
# DINOv3 classifies. Start from the release dinov3_vitl16_pretrain_lvd1689m-*.pth or timm's
# vit_large_patch16_dinov3.lvd1689m; the release's q/k/v bias loads into the "_qkvb" name only.
from flowvision.loss.cross_entropy import SoftTargetCrossEntropy
from libai.config import LazyCall

from libai_vit.models.zoo import model_config

from .finetune_common import dataloader, graph, optim, train  # noqa: F401

model = model_config(
    "vit_large_patch16_dinov3",  # RoPE (dinov3), 4 storage tokens, LayerScale, no pos_embed
    pretrained=None,  # the DINOv3 file
    trust=False,  # True lets a .pth pickle run code
    strict=True,  # refuse a file whose blocks do not fit (the head may differ)
    img_size=224,  # pre-trained at 256 px; RoPE needs no resampling
    num_classes=1000,
    global_pool="token",  # upstream DINOv3's class token (timm's default is 'avg')
    drop_path_rate=0.2,
    loss_func=LazyCall(SoftTargetCrossEntropy)(),  # mixup/cutmix give soft labels
)
optim.lr = 1e-3 * train.global_batch_size / 256  # MAE ViT-L's base lr per 256 samples
optim.params.layer_decay = 0.75  # lr x 0.75 per block below the head (MAE ViT-L)
train.train_micro_batch_size = 32
train.train_epoch = 50
train.warmup_ratio = 5 / 50
train.output_dir = "./output/imagenet_finetune/vit_large_patch16_dinov3"
