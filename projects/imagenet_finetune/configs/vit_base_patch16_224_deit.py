# ViT-B/16 at 224 from supervised DeiT or augreg (timm) weights: class-token pooling, 30 epochs.
from .finetune_common import dataloader, graph, model, optim, train  # noqa: F401

model.global_pool = "token"
train.train_epoch = 30
train.warmup_ratio = 3 / 30
train.output_dir = "./output/imagenet_finetune/vit_base_patch16_224_deit"
