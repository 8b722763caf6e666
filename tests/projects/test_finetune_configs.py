"""The project's configs load, and their data follows the model: image size, eval crop, classes."""

import pytest
from libai.config import instantiate
from omegaconf import OmegaConf

import libai_vit  # noqa: F401
from libai_vit.config import load_config

CONFIGS = [
    "projects/imagenet_finetune/configs/" + name
    for name in (
        "vit_base_patch16_224_mae.py",
        "vit_base_patch16_224_deit.py",
        "vit_large_patch16_224_mae.py",
        "vit_base_patch16_384.py",
        "demo_digits_pretrain.py",
        "demo_digits_finetune.py",
        "deit_base_patch16_224_scratch.py",
        "deit3_base_patch16_224.py",
    )
] + ["configs/vit_imagenet.py"]


@pytest.mark.parametrize("path", CONFIGS)
def test_config_loads(path):
    cfg = load_config(path, ["model.num_classes=7"])
    assert cfg.dataloader.train.mixup_func.num_classes == 7
    test_tf = instantiate(cfg.dataloader.test[0].dataset.transform)
    size = cfg.model.img_size
    assert test_tf.transforms[1].size == (size, size)
    assert test_tf.transforms[0].size == (size if size > 224 else int(size / 0.875))


def test_a_config_is_the_same_whatever_was_loaded_before_it():
    def load(path):
        return OmegaConf.to_container(load_config(path), resolve=False)

    mae = load(CONFIGS[0])
    load(CONFIGS[7])  # DeiT III changes the shared recipe's model, data and training keys
    assert load(CONFIGS[0]) == mae


def test_layer_decay_and_lr_scaling():
    large = load_config(CONFIGS[2])
    assert large.optim.params.layer_decay == 0.75 and large.model.depth == 24
    assert large.optim.lr == pytest.approx(1e-3 * large.train.global_batch_size / 256)
    base = load_config(CONFIGS[0])
    assert base.optim.params.layer_decay == 0.65 and base.model.global_pool == "avg"


FAMILY_CONFIGS = {  # config: (timm name, pooling, what its normalisation mean starts with)
    "eva02_base_patch14_448.py": ("eva02_base_patch14_448", "avg", 0.4814),
    "vit_base_patch16_clip_224.py": ("vit_base_patch16_clip_224", "token", 0.4814),
    "vit_base_patch16_siglip_224.py": ("vit_base_patch16_siglip_224", "map", 0.5),
    "vit_base_patch14_reg4_dinov2.py": ("vit_base_patch14_reg4_dinov2", "token", 0.485),
    "vit_large_patch16_dinov3.py": ("vit_large_patch16_dinov3", "token", 0.485),
    "vit_giant_patch14_reg4_dinov2.py": ("vit_giant_patch14_reg4_dinov2", "token", 0.485),
    "vit_7b_patch16_dinov3.py": ("vit_7b_patch16_dinov3", "token", 0.485),
}


@pytest.mark.parametrize("name", list(FAMILY_CONFIGS))
def test_family_config_builds_the_timm_architecture(name):
    from libai_vit.models.zoo import MODELS, model_kwargs

    timm_name, pool, mean = FAMILY_CONFIGS[name]
    small = ["model.depth=2", "model.embed_dim=64", "model.num_heads=4", "model.num_classes=3"]
    cfg = load_config("projects/imagenet_finetune/configs/" + name, small)
    for key, value in model_kwargs(timm_name).items():  # every architecture key as timm's
        # img_size: the recipe's own
        if key not in (
            "depth",
            "embed_dim",
            "num_heads",
            "num_classes",
            "img_size",
        ):
            assert cfg.model[key] == (list(value) if isinstance(value, tuple) else value), key
    model = instantiate(cfg.model)
    assert model.global_pool == pool and type(model).__name__ == (
        "Eva" if MODELS[timm_name]["arch"] == "eva" else "VisionTransformer"
    )
    for transform in (
        cfg.dataloader.train.dataset[0].transform,
        cfg.dataloader.test[0].dataset.transform,
    ):
        normalize = [
            t for t in instantiate(transform).transforms if type(t).__name__ == "Normalize"
        ]
        assert normalize[0].mean[0] == pytest.approx(mean, abs=1e-3)
    tf = instantiate(cfg.dataloader.test[0].dataset.transform)
    assert tf.transforms[1].size == (cfg.model.img_size, cfg.model.img_size)


def test_recipes_pass_the_value_checks_and_name_their_parts():
    from libai_vit.config import validate_values
    from libai_vit.losses import BinaryCrossEntropy
    from libai_vit.optim import Lamb

    for path in CONFIGS:
        validate_values(load_config(path))
    deit = load_config(CONFIGS[6])
    assert deit.train.model_ema.enabled and deit.train.model_ema.decay == 0.99996
    assert deit.dataloader.train.num_repeats == 3 and deit.optim.params.layer_decay == 1.0
    deit3 = load_config(CONFIGS[7])
    assert deit3.optim._target_ is Lamb and deit3.model.loss_func._target_ is BinaryCrossEntropy
    assert deit3.model.loss_func.target_threshold == 0.0 and deit3.graph.enabled is False
    assert (
        deit3.optim.params.clip_grad_max_norm == 1.0
        and deit3.dataloader.train.mixup_func.label_smoothing == 0.0
    )
