# Fine-tuning a pretrained ViT on an ImageFolder (MAE's recipe, ViT-B/16 at 224): AdamW with
# layer-wise lr decay, lr = base lr x global batch / 256, warm-up then cosine, mixup/cutmix + label
# smoothing, drop path 0.1. The per-model files change a few numbers. Set model.pretrained
# and dataloader.root.
import oneflow as flow
from flowvision.loss.cross_entropy import SoftTargetCrossEntropy
from libai.config import LazyCall

from libai_vit.models.zoo import pretrained_vit
from libai_vit.optim import layer_decay_param_groups, warmup_cosine_lr

# Relative imports: LazyConfig executes the shared files afresh for every load. LiBai projects'
# `from configs.common... import` is a cached module, so the recipes loaded in one process would
# share and change one object (DeiT III's settings reached the MAE config loaded after it).
from ....configs.common.data.imagenet import dataloader
from ....configs.common.graph import graph
from ....configs.common.models.vit.vit_base_patch16_224 import model
from ....configs.common.train import train

model._target_ = pretrained_vit  # VisionTransformer(...), then the pretrained file loaded into it
model.pretrained = None  # timm/DeiT/MAE (.safetensors/.pth/.bin) or JAX (.npz) checkpoint file
# True lets a .pth pickle run code (some MAE/DeiT files hold an argparse Namespace)
model.trust = False
model.strict = True  # refuse a file whose blocks do not fit (the head, norm and fc_norm may differ)
model.num_classes = 1000
# MAE fine-tunes on the mean of patch tokens; "token" for DeiT/augreg weights
model.global_pool = "avg"
model.drop_path_rate = 0.1
# mixup/cutmix give soft labels; DeiT III: libai_vit.losses.BinaryCrossEntropy
model.loss_func = LazyCall(SoftTargetCrossEntropy)()

optim = LazyCall(flow.optim.AdamW)(  # DeiT III: libai_vit.optim.Lamb (eager mode)
    params=LazyCall(layer_decay_param_groups)(
        # params.model is set to the model by LiBai before the optimizer is built
        lr="${optim.lr}",
        layer_decay=0.65,  # lr x 0.65 per block below the head (0.75 for ViT-L)
        weight_decay="${optim.weight_decay}",  # none on biases, norms, pos_embed, cls_token
        # e.g. 1.0: clip the whole model's gradient norm (torch's clip_grad_norm_); with layer decay
        # < 1 only in eager mode
        clip_grad_max_norm=None,
        clip_grad_norm_type=2.0,  # the norm's order
    ),
    lr=5e-4
    * 1024
    / 256,  # base lr per 256 samples x train.global_batch_size / 256: keep them in step
    weight_decay=0.05,
    betas=(0.9, 0.999),
    eps=1e-8,
    do_bias_correction=True,
)

train.global_batch_size = 1024  # micro-batch x DP x accumulation; accumulation is derived from it
train.train_micro_batch_size = 64
train.test_micro_batch_size = 64
train.train_epoch = 100
train.train_iter = 0
train.warmup_ratio = 5 / 100  # 5 warm-up epochs
train.scheduler = LazyCall(warmup_cosine_lr)(  # per-group lrs (layer decay) need this schedule
    warmup_factor=0.0,  # first step's lr / lr (MAE's adjust_learning_rate starts at 0)
    alpha=1e-6 / 2e-3,  # final lr / lr (MAE: min_lr 1e-6 under lr 2e-3)
    warmup_method="linear",
)
train.evaluation.eval_period = 1251  # steps per ImageNet epoch at 1024
train.checkpointer.period = 1251
train.log_period = 20
train.output_dir = "./output/imagenet_finetune/vit_base_patch16_224_mae"
