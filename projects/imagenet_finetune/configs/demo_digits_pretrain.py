# Demo, step 1 (a minute or two on a CPU): "pretrain" a tiny ViT from scratch on digits 0-4 at 16 px
# with this recipe (no pretrained file, no layer decay). Step 2 (demo_digits_finetune.py)
# starts from its output.
from .finetune_common import dataloader, graph, model, optim, train  # noqa: F401

dataloader.root = "./data/digits"  # written by libai_vit.data.digits.write_digits_imagefolder
dataloader.train.dataset[0].classes = ["0", "1", "2", "3", "4"]
dataloader.train.dataset[0].transform.scale = (0.5, 1.0)  # 8x8 scans: keep most of the digit
dataloader.train.dataset[0].transform.hflip = 0.0  # a mirrored digit is another glyph
dataloader.train.dataset[0].transform.auto_augment = None  # lighter augmentation for a short run
# flowvision's ColorJitter costs ~10 ms an image
dataloader.train.dataset[0].transform.color_jitter = None
dataloader.train.dataset[0].transform.re_prob = 0.0
dataloader.train.mixup_func.prob = 0.5
dataloader.train.num_workers = 0
dataloader.test[0].num_workers = 0

model.img_size = 16
model.patch_size = 4
model.embed_dim = 64
model.depth = 4
model.num_heads = 4
model.mlp_ratio = 2.0
model.num_classes = 5
model.global_pool = "token"
model.drop_path_rate = 0.0

train.global_batch_size = 64
optim.lr = 4e-3 * train.global_batch_size / 256
optim.params.layer_decay = 1.0

train.train_micro_batch_size = 64
train.test_micro_batch_size = 128
train.train_epoch = 0
train.train_iter = 200
train.warmup_ratio = 0.1
# the demo's schedule (MAE's starts at 0 and ends at 5e-4 x lr)
train.scheduler.warmup_factor = 0.001
train.scheduler.alpha = 1e-3
train.evaluation.eval_period = 100
train.checkpointer.period = 100
train.log_period = 10
train.output_dir = "./output/imagenet_finetune/demo_digits_pretrain"
