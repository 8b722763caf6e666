# CLIP ViT-B/16 (OpenAI's image tower) fine-tuned on ImageNet-1K at 224 px: FT-CLIP (Dong et al.
# 2022, "CLIP Itself is a Strong Fine-tuner", 85.7% top-1). Hyper-parameters from LightDXY/FT-CLIP,
# scripts/bash_fine_Openai_CLIP_P16.sh: batch 2048, lr 6e-4, layer decay 0.6, weight decay 0.05, 50
# epochs with 10 of warm-up, no drop path, no mixup/cutmix, CLIP's mean/std, model EMA 0.9998. Start
# from OpenAI's ViT-B-16.pt state dict (visual.* keys), OpenCLIP's, or timm's
# vit_base_patch16_clip_224.openai file.
from flowvision.loss.cross_entropy import LabelSmoothingCrossEntropy
from libai.config import LazyCall

from libai_vit.models.zoo import model_config

from .finetune_common import dataloader, graph, optim, train  # noqa: F401

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)

model = model_config(
    "vit_base_patch16_clip_224",  # pre_norm, LayerNorm eps 1e-5, class token pooling
    pretrained=None,  # the CLIP file; its image projection (the head) is replaced
    trust=False,  # True lets a .pth pickle run code
    strict=True,  # refuse a file whose blocks do not fit (the head may differ)
    num_classes=1000,
    drop_path_rate=0.0,
    loss_func=LazyCall(LabelSmoothingCrossEntropy)(smoothing=0.1),  # FT-CLIP's default smoothing
)
optim.params.layer_decay = 0.6  # lr x 0.6 per block below the head
optim.lr = 6e-4  # at global batch 2048, as in the script
optim.weight_decay = 0.05
dataloader.train.mixup_func = None  # FT-CLIP: --mixup 0 --cutmix 0
dataloader.train.dataset[0].transform.mean = CLIP_MEAN
dataloader.train.dataset[0].transform.std = CLIP_STD
dataloader.test[0].dataset.transform.mean = CLIP_MEAN
dataloader.test[0].dataset.transform.std = CLIP_STD
train.global_batch_size = 2048
train.train_micro_batch_size = 64
train.train_epoch = 50
train.warmup_ratio = 10 / 50
train.model_ema.enabled = True  # FT-CLIP's --model_ema_decay 0.9998
train.model_ema.decay = 0.9998
train.output_dir = "./output/imagenet_finetune/vit_base_patch16_clip_224"
