"""Config loading: overrides of unknown keys are refused with a suggestion."""

import re

import pytest

from libai_vit.config import ConfigError, load_config

DEMO = "configs/demo_digits_3d.py"


def test_override_applies():
    cfg = load_config(DEMO, ["train.train_iter=7", "model.depth=6"])
    assert cfg.train.train_iter == 7 and cfg.model.depth == 6


def test_unknown_key_is_refused_with_a_suggestion():
    with pytest.raises(
        ConfigError, match=r"unknown config key 'train.train_itr'.*did you mean train.train_iter"
    ):
        load_config(DEMO, ["train.train_itr=7"])


def test_argument_of_the_lazycall_target_is_known_even_if_unset():
    # VisionTransformer(in_chans=...) is not in the file
    cfg = load_config(DEMO, ["model.in_chans=1"])
    assert cfg.model.in_chans == 1


def test_unknown_model_argument_is_refused():
    with pytest.raises(ConfigError, match="unknown config key 'model.depht'"):
        load_config(DEMO, ["model.depht=3"])


def test_malformed_override_and_missing_file():
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(DEMO, ["train.train_iter"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("configs/nope.py", [])


def test_validate_checks_values_layout_and_the_pretrained_file(tmp_path):
    from libai_vit.config import validate

    validate(load_config(DEMO), 8)
    with pytest.raises(ConfigError, match="optim.lr=-1 must be"):
        validate(load_config(DEMO, ["optim.lr=-1"]), 8)
    with pytest.raises(ConfigError, match="= 8 processes, but 2 were launched"):
        validate(load_config(DEMO), 2)
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"not a checkpoint")
    finetune = "projects/imagenet_finetune/configs/demo_digits_finetune.py"
    cfg = load_config(
        finetune,
        [
            "train.dist.data_parallel_size=1",
            "train.dist.tensor_parallel_size=1",
            "train.dist.pipeline_parallel_size=1",
            f"model.pretrained={bad}",
        ],
    )
    with pytest.raises(ConfigError, match=f"{bad}: not a safetensors, torch"):
        validate(cfg, 1)
    validate(cfg, 1, read_pretrained=False)  # in a rank: the load itself reports the file


def test_mixup_needs_an_even_batch_per_rank_and_its_absence_a_hard_label_loss():
    from libai_vit.config import validate_values

    finetune = "projects/imagenet_finetune/configs/demo_digits_finetune.py"
    eager = ["graph.enabled=False", "train.num_accumulation_steps=2"]
    with pytest.raises(ConfigError, match=r"mixup_func .* not train.train_micro_batch_size=1 \("):
        validate_values(load_config(finetune, [*eager, "train.train_micro_batch_size=1"]))
    graph = ["graph.enabled=True", "train.dist.data_parallel_size=1", "train.global_batch_size=3"]
    with pytest.raises(ConfigError, match=r"size=3 x train.num_accumulation_steps=1: make it"):
        validate_values(load_config(finetune, [*graph, "train.train_micro_batch_size=3"]))
    # an even loader batch, or no mixup, passes: nn.Graph's is micro-batch x accumulation
    even = ["graph.enabled=True", "train.train_micro_batch_size=1", *eager[1:]]
    validate_values(load_config(finetune, even))
    no_mixup = ["train.train_micro_batch_size=1", "dataloader.train.mixup_func=null"]
    with pytest.raises(ConfigError, match="SoftTargetCrossEntropy needs mixup's soft labels"):
        validate_values(load_config(finetune, [*eager, *no_mixup]))
    hard = "model.loss_func._target_=oneflow.nn.CrossEntropyLoss"
    validate_values(load_config(finetune, [*eager, *no_mixup, hard]))


def test_the_models_argument_rules_are_checked_before_launch_and_by_the_constructor():
    from libai_vit.config import validate_values
    from libai_vit.models.vision_transformer import VisionTransformer

    cases = {  # overrides: the line, with the config's prefix
        ("model.block_fn=res_post", "model.init_values=0.1"): "model.block_fn='res_post' has no",
        ("model.block_fn=parallel_scaling", "model.mlp_layer=swiglu"): "'parallel_scaling' has a",
        ("model.block_fn=nope",): "model.block_fn='nope' is not one of",
        ("model.global_pool=token", "model.class_token=False"): "needs model.class_token=True",
        ("model.patch_size=5",): "must be positive and divisible by model.patch_size=5",
    }
    for overrides, line in cases.items():
        with pytest.raises(ConfigError, match=re.escape(line)):
            validate_values(load_config(DEMO, list(overrides)))
        kwargs = {o.split("=")[0][len("model.") :]: o.split("=")[1] for o in overrides}
        kwargs = {k: {"False": False, "0.1": 0.1, "5": 5}.get(v, v) for k, v in kwargs.items()}
        with pytest.raises(ValueError, match=re.escape(line.replace("model.", ""))):
            VisionTransformer(img_size=32, embed_dim=32, depth=1, num_heads=4, **kwargs)


def test_graph_mode_refuses_whole_model_clipping_over_layer_decayed_groups():
    from libai_vit.config import validate_values

    finetune = "projects/imagenet_finetune/configs/demo_digits_finetune.py"
    clip = ["optim.params.clip_grad_max_norm=1.0", "optim.params.layer_decay=0.75"]
    line = "parameter groups that differ in lr (optim.params.layer_decay=0.75): OneFlow 0.9"
    with pytest.raises(ConfigError, match=re.escape(line)):
        validate_values(load_config(finetune, ["graph.enabled=True", *clip]))
    validate_values(load_config(finetune, ["graph.enabled=False", *clip]))  # eager clips it all
