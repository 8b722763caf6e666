# EVA-02-B/14 at 448 px fine-tuned on ImageNet-1K from its MIM pre-training (EVA-02 paper: 88.3%
# top-1 without, 88.7% with IN-21K intermediate fine-tuning). Hyper-parameters from baaivision/EVA,
# EVA-02/asuka/README.md, "Fine-tune MIM pre-trained eva02_B_pt_in21k_p14 on IN-1K": batch 1024, lr
# 1e-4, layer decay 0.7, weight decay 0.05, 30 epochs with 3 of warm-up, drop path 0.1, RandAugment
# m9, no mixup/cutmix/erasing, label smoothing 0.1, crop 1.0, model EMA. Start from timm's
# eva02_base_patch14_224.mim_in22k (model.safetensors) or any EVA-02-B file in timm's names.
from flowvision.loss.cross_entropy import LabelSmoothingCrossEntropy
from libai.config import LazyCall

from libai_vit.models.zoo import model_config

from .finetune_common import dataloader, graph, optim, train  # noqa: F401

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)

model = model_config(
    "eva02_base_patch14_448",
    # the pre-trained file; its 16x16 position grid and RoPE are resampled to 32x32
    pretrained=None,
    trust=False,  # True lets a .pth pickle run code
    strict=True,  # refuse a file whose blocks do not fit (the head may differ)
    num_classes=1000,
    drop_path_rate=0.1,
    # no mixup: hard labels, smoothed
    loss_func=LazyCall(LabelSmoothingCrossEntropy)(smoothing=0.1),
)
optim.params.layer_decay = 0.7  # lr x 0.7 per block below the head
optim.lr = 1e-4  # EVA's lr is per run at global batch 1024 (not scaled per 256)
optim.weight_decay = 0.05
dataloader.train.mixup_func = None  # EVA-02 fine-tunes without mixup/cutmix
dataloader.train.dataset[0].transform.re_prob = 0.0  # nor random erasing
dataloader.train.dataset[0].transform.mean = CLIP_MEAN  # EVA-02 normalises like CLIP
dataloader.train.dataset[0].transform.std = CLIP_STD
dataloader.test[0].dataset.transform.mean = CLIP_MEAN
dataloader.test[0].dataset.transform.std = CLIP_STD
dataloader.test[0].dataset.transform.crop_pct = 1.0  # evaluated on the whole 448 px image
train.global_batch_size = 1024
train.train_micro_batch_size = 32
train.train_epoch = 30
train.warmup_ratio = 3 / 30
train.scheduler.alpha = 0.0  # cosine down to 0 (min_lr 0)
train.model_ema.enabled = True  # EVA's --model_ema (BEiT code's default decay 0.9999)
train.model_ema.decay = 0.9999
train.output_dir = "./output/imagenet_finetune/eva02_base_patch14_448"
