# The README demo: a small ViT on the digits, data x tensor x pipeline = 2 x 2 x 2 on 8 CPU
# processes, 1F1B over 2 micro-batches. Run:
#   bash tools/train.sh tools/train_net.py configs/demo_digits_3d.py 8
from .common.data.digits import dataloader
from .common.graph import graph
from .common.models.vit.vit_base_patch16_224 import model
from .common.optim import optim
from .common.train import train

model.img_size = 32
model.patch_size = 8  # 4 x 4 patches + class token: few tokens, quick steps on CPU
model.num_classes = 10
model.embed_dim = 64
model.depth = 4
model.num_heads = 4
model.mlp_ratio = 2.0

train.output_dir = "./output/demo_digits_3d"
train.dist.data_parallel_size = 2
train.dist.tensor_parallel_size = 2
train.dist.pipeline_parallel_size = 2
train.train_micro_batch_size = 16
train.num_accumulation_steps = 2  # two micro-batches in flight through the 2 pipeline stages
train.test_micro_batch_size = 64
train.train_iter = 240
train.warmup_ratio = 0.05
train.log_period = 1
train.evaluation.eval_period = 80
train.checkpointer.period = 240

optim.lr = 2e-3
optim.weight_decay = 0.05
