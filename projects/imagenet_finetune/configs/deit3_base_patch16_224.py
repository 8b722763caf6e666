# DeiT III ViT-B/16 (Touvron et al. 2022, "Revenge of the ViT": 83.8% top-1 on ImageNet-1k, 800
# epochs at 192 px then 20 at 224): LAMB lr 3e-3 at batch 2048, weight decay 0.02, gradient clipping
# 1.0, BCE loss on mixup/cutmix targets without label smoothing, repeated augmentation, no random
# erasing, drop path 0.1. The model is timm's deit3_base_patch16_224 (LayerScale 1e-6, no position
# embedding on the class token). Its 3-Augment and simple random crop are not among libai_vit's
# transforms: RandomResizedCrop + color jitter 0.3, no RandAugment. LAMB as DeiT III ran it (apex
# FusedLAMB) runs in eager mode: graph.enabled=False.
from libai.config import LazyCall

from libai_vit.losses import BinaryCrossEntropy
from libai_vit.optim import Lamb

from .finetune_common import dataloader, graph, model, optim, train  # noqa: F401

# libai_vit.optim.Lamb is eager-only (OneFlow's compiled LAMB is another variant)
graph.enabled = False

model.pretrained = None  # from scratch
model.init_values = 1e-6  # LayerScale, as timm's deit3_base_patch16_224
model.no_embed_class = True  # the position embedding covers the patches only
model.global_pool = "token"
model.drop_path_rate = 0.1
# DeiT III's --bce-loss: targets.gt(0)
model.loss_func = LazyCall(BinaryCrossEntropy)(target_threshold=0.0)

optim._target_ = Lamb
optim.lr = 3e-3  # DeiT III: --unscale-lr, the lr at batch 2048 as is
optim.weight_decay = 0.02
optim.eps = 1e-8  # DeiT's --opt-eps
optim.params.layer_decay = 1.0
optim.params.clip_grad_max_norm = 1.0  # FusedLAMB's max_grad_norm: the whole model's gradient norm

dataloader.train.num_repeats = 3  # --repeated-aug
# 3-Augment is not here: colour jitter instead
dataloader.train.dataset[0].transform.auto_augment = None
dataloader.train.dataset[0].transform.color_jitter = 0.3
dataloader.train.dataset[0].transform.re_prob = 0.0  # --reprob 0
dataloader.train.mixup_func.label_smoothing = 0.0  # --smoothing 0

train.global_batch_size = 2048
train.train_epoch = 800
train.warmup_ratio = 5 / 800
train.scheduler.warmup_factor = 1e-6 / 3e-3  # --warmup-lr 1e-6
train.scheduler.alpha = 1e-5 / 3e-3  # DeiT's default --min-lr 1e-5
train.evaluation.eval_period = 626  # steps per ImageNet epoch at 2048
train.checkpointer.period = 626
train.output_dir = "./output/imagenet_finetune/deit3_base_patch16_224"
