# ViT-B/16 at 384 from 224 weights (DeiT/augreg): the position embedding is resampled to 24x24,
# evaluation crops at crop_pct 1.0.
from .vit_base_patch16_224_deit import dataloader, graph, model, optim, train  # noqa: F401

model.img_size = 384
train.train_micro_batch_size = 16
train.test_micro_batch_size = 32
train.output_dir = "./output/imagenet_finetune/vit_base_patch16_384"
