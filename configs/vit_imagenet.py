# LiBai's ImageNet recipe on this ViT: DeiT-B/16 from scratch, 300 epochs at a global batch of 1024,
# lr 5e-4 x 1024 / 512, 5 warm-up epochs, RandAugment, random erasing, mixup/cutmix, label smoothing
#   bash tools/train.sh tools/train_net.py configs/vit_imagenet.py 8 dataloader.root=/data/imagenet
from flowvision.loss.cross_entropy import SoftTargetCrossEntropy
from libai.config import LazyCall

from .common.data.imagenet import dataloader  # noqa: F401
from .common.graph import graph  # noqa: F401
from .common.models.vit.vit_base_patch16_224 import model
from .common.optim import optim
from .common.train import train

model.num_classes = 1000
model.drop_path_rate = 0.1
model.loss_func = LazyCall(SoftTargetCrossEntropy)()  # mixup/cutmix give soft labels

train.global_batch_size = 1024
train.train_micro_batch_size = 128
train.test_micro_batch_size = 128
train.train_epoch = 300
train.train_iter = 0
train.warmup_ratio = 5 / 300
train.evaluation.eval_period = 1251  # one epoch
train.checkpointer.period = 1251
train.output_dir = "./output/vit_imagenet"

optim.lr = 5e-4 * train.global_batch_size / 512  # DeiT's linear scaling rule
optim.weight_decay = 0.05
optim.params.clip_grad_max_norm = None
optim.params.clip_grad_norm_type = None
