# ViT-L/16 at 224 from an MAE pretrained checkpoint (MAE: 85.9% top-1, 50 epochs).
from .finetune_common import dataloader, graph, model, optim, train  # noqa: F401

model.embed_dim = 1024
model.depth = 24
model.num_heads = 16
model.drop_path_rate = 0.2
optim.lr = 1e-3 * train.global_batch_size / 256
optim.params.layer_decay = 0.75
train.train_micro_batch_size = 32
train.train_epoch = 50
train.warmup_ratio = 5 / 50
train.output_dir = "./output/imagenet_finetune/vit_large_patch16_224_mae"
