# DeiT-B/16 at 224 trained from scratch (DeiT, Touvron et al. 2021: 81.8% top-1, 300 epochs): AdamW
# lr 5e-4 x batch / 512, no layer decay, RandAugment, random erasing, mixup/cutmix + label
# smoothing, repeated augmentation x3, drop path 0.1, model EMA 0.99996. DeiT steps its schedule per
# epoch; here it is per step (the same curve, sampled finer).
from .finetune_common import dataloader, graph, model, optim, train  # noqa: F401

model.pretrained = None  # from scratch: the model's own initialisation (timm's)
model.global_pool = "token"  # DeiT classifies the class token
model.drop_path_rate = 0.1

optim.params.layer_decay = 1.0  # one lr for every layer
# DeiT scales lr per 512 samples: keep it in step with train.global_batch_size
optim.lr = 5e-4 * 1024 / 512
optim.weight_decay = 0.05

dataloader.train.num_repeats = 3  # DeiT's RASampler

train.global_batch_size = 1024  # DeiT: 1024 (8 GPUs x 128)
train.train_epoch = 300
train.warmup_ratio = 5 / 300  # 5 warm-up epochs
train.scheduler.warmup_factor = 1e-6 / 1e-3  # DeiT: warmup_lr 1e-6
train.scheduler.alpha = 1e-5 / 1e-3  # DeiT: min_lr 1e-5
train.model_ema.enabled = True  # DeiT's --model-ema (on by default)
train.model_ema.decay = 0.99996
train.output_dir = "./output/imagenet_finetune/deit_base_patch16_224_scratch"
