# The MAE fine-tuning recipe (projects/imagenet_finetune/configs/vit_base_patch16_224_mae.py) on the
# reference's tiny model and fixed batches (tests/fixtures/recipes, tools/make_recipe_fixtures.py);
# the test sets the case's numbers (lr, schedule, layout, ...) on the command line.
from libai.config import LazyCall
from libai.data.build import build_image_test_loader

from tests.projects.recipe_support import FixedMixup, NpzImages, reference

from ....projects.imagenet_finetune.configs.vit_base_patch16_224_mae import dataloader, graph, model, optim, train  # noqa: F401

ref = reference()
for key, value in ref["model"].items():
    setattr(model, key, value)
model.drop_path_rate = 0.0  # random: no PyTorch run can draw the same

mixup = dataloader.train.mixup_func
dataloader.train.dataset = [LazyCall(NpzImages)(normalize=ref["normalize"])]
dataloader.train.mixup_func = LazyCall(FixedMixup)(
    mixup_lam=ref["mix"]["mixup_lam"], cutmix_lam=ref["mix"]["cutmix_lam"], box=ref["mix"]["box"],
    mixup_alpha=mixup.mixup_alpha, cutmix_alpha=mixup.cutmix_alpha, prob=mixup.prob, switch_prob=mixup.switch_prob,
    mode=mixup.mode, label_smoothing=mixup.label_smoothing, num_classes="${model.num_classes}")
dataloader.train.shuffle = False  # the reference's order (timm's RepeatAugSampler, shuffle=False)
dataloader.train.num_workers = 0
dataloader.test = [LazyCall(build_image_test_loader)(dataset=LazyCall(NpzImages)(normalize=ref["normalize"]),
                                                     num_workers=0)]

train.train_epoch = 0
train.train_iter = ref["steps"]
train.global_batch_size = ref["global_batch"]
train.test_micro_batch_size = 8
train.log_period = 1
train.checkpointer.period = ref["steps"]
train.evaluation.eval_period = ref["steps"]
