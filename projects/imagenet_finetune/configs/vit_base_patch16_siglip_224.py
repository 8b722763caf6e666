# SigLIP ViT-B/16 (no class token, attention-pooling head) fine-tuned on ImageNet-1K at 224 px.
# SigLIP's authors publish no ImageNet fine-tuning recipe for B/16 (timm's fine-tuned SigLIP weights
# carry none either), so this file uses FT-CLIP's recipe for a contrastive image tower of this size
# (see vit_base_patch16_clip_224.py: batch 2048, lr 6e-4, layer decay 0.6, 50 epochs, EMA) with
# SigLIP's own normalisation (mean = std = 0.5). Start from timm's vit_base_patch16_siglip_224.webli
# (model.safetensors) or OpenCLIP's ViT-B-16-SigLIP (visual.trunk.* keys).
from flowvision.loss.cross_entropy import LabelSmoothingCrossEntropy
from libai.config import LazyCall

from libai_vit.models.zoo import model_config

from .finetune_common import dataloader, graph, optim, train  # noqa: F401

model = model_config(
    "vit_base_patch16_siglip_224",
    pretrained=None,  # the SigLIP file; its MAP head (attn_pool) is kept, the classifier is new
    trust=False,  # True lets a .pth pickle run code
    strict=True,  # refuse a file whose blocks do not fit (the head may differ)
    num_classes=1000,
    drop_path_rate=0.0,
    loss_func=LazyCall(LabelSmoothingCrossEntropy)(smoothing=0.1),
)
optim.params.layer_decay = 0.6  # lr x 0.6 per block below the head (attn_pool counts as the head)
optim.lr = 6e-4  # at global batch 2048
optim.weight_decay = 0.05
dataloader.train.mixup_func = None
dataloader.train.dataset[0].transform.mean = (0.5, 0.5, 0.5)
dataloader.train.dataset[0].transform.std = (0.5, 0.5, 0.5)
dataloader.test[0].dataset.transform.mean = (0.5, 0.5, 0.5)
dataloader.test[0].dataset.transform.std = (0.5, 0.5, 0.5)
train.global_batch_size = 2048
train.train_micro_batch_size = 64
train.train_epoch = 50
train.warmup_ratio = 10 / 50
train.model_ema.enabled = True  # as FT-CLIP
train.model_ema.decay = 0.9998
train.output_dir = "./output/imagenet_finetune/vit_base_patch16_siglip_224"
