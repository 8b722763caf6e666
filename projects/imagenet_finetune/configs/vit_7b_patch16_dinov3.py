# DINOv3 ViT-7B/16 (6.7B parameters: 4096 wide, 40 blocks, 32 heads, SwiGLU of 8192 units)
# fine-tuned on ImageNet-1K at 224 px, the model that needs model parallelism most: with AdamW in
# fp32 it needs ~107 GB of parameters, gradients and optimizer state, so no single device holds it.
# DINOv3 publishes no fine-tuning recipe (its paper evaluates frozen backbones); this file keeps
# vit_large_patch16_dinov3.py's (MAE ViT-L's) recipe with drop path 0.4 and layer decay 0.85 for
# the depth, laid out as the planner's estimate ranks first for 64 A100-80GB (../README.md):
# DP 32 x TP 2, micro-batch 8. Start from the release dinov3_vit7b16_pretrain_lvd1689m-*.pth or
# timm's vit_7b_patch16_dinov3.lvd1689m.
from .vit_large_patch16_dinov3 import dataloader, graph, model, optim, train  # noqa: F401

model.pretrained = None  # the DINOv3-7B file
model.depth = 40
model.embed_dim = 4096
model.num_heads = 32
model.mlp_ratio = 2.0  # 8192 SwiGLU units
model.swiglu_mlp = True
model.swiglu_align_to = 64
model.drop_path_rate = 0.4
optim.params.layer_decay = 0.85  # 40 blocks: a gentler decay than ViT-L's 0.75 per block
train.train_micro_batch_size = 8
train.dist.data_parallel_size = 32
train.dist.tensor_parallel_size = 2  # 16 of the 32 heads and 4096 SwiGLU units per rank
train.dist.pipeline_parallel_size = 1
train.output_dir = "./output/imagenet_finetune/vit_7b_patch16_dinov3"
