"""Every user-facing tool given a missing, unreadable or wrong-kind file (or an out-of-range value)
exits non-zero with one line saying which and why: no traceback."""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from libai_vit.config import ConfigError, load_config, validate_values

from conftest import ROOT

CONFIG = os.path.join(ROOT, "configs", "demo_digits_3d.py")
ONE = [
    "train.dist.data_parallel_size=1",
    "train.dist.tensor_parallel_size=1",
    "train.dist.pipeline_parallel_size=1",
]


def _files(tmp):
    os.makedirs(tmp / "adir")
    (tmp / "broken.py").write_text("train = dict(\n")
    (tmp / "notes.txt").write_text("hello")
    (tmp / "garbage.safetensors").write_bytes(b"\x00\x01 not a checkpoint")
    bad = tmp / "run" / "model_0000002"  # a checkpoint whose manifest does not match its data
    os.makedirs(bad / "model")
    (bad / "model" / "data").write_bytes(b"12345")
    (bad / "manifest.json").write_text(
        json.dumps({"iteration": 2, "files": {"model/data": [9, "00"]}})
    )
    return tmp


PLAN = os.path.join(ROOT, "tools", "plan_layout.py")
VIT_B = os.path.join(ROOT, "configs", "common", "models", "vit", "vit_base_patch16_224.py")


def _train(*args):
    return [os.path.join(ROOT, "tools", "train_net.py"), *args]


CASES = {  # name: (argv after the interpreter, exit code, text the one error line must hold)
    "train config missing": (
        _train("--config-file", "{tmp}/nope.py"),
        2,
        "{tmp}/nope.py' does not exist",
    ),
    "train config is a directory": (
        _train("--config-file", "{tmp}/adir"),
        2,
        "is not a LazyConfig",
    ),
    "train config wrong kind": (
        _train("--config-file", "{tmp}/notes.txt"),
        2,
        "is not a LazyConfig",
    ),
    "train config does not parse": (
        _train("--config-file", "{tmp}/broken.py"),
        2,
        "broken.py' cannot be loaded: SyntaxError: {tmp}/broken.py, line 1: ",
    ),
    "train eval-only without weights": (
        _train("--config-file", CONFIG, "--eval-only", *ONE, "train.output_dir={tmp}/fresh"),
        2,
        "--eval-only needs weights to evaluate: set train.load_weight=",
    ),
    "check eval-only without weights": (
        [os.path.join(ROOT, "tools", "check_config.py"), CONFIG, "1", *ONE, "--eval-only"],
        2,
        "--eval-only needs weights to evaluate",
    ),
    "train eval-only resume without a checkpoint": (
        _train(
            "--config-file", CONFIG, "--eval-only", "--resume", *ONE, "train.output_dir={tmp}/e"
        ),
        2,
        "--eval-only --resume: train.output_dir={tmp}/e has no checkpoint to evaluate",
    ),
    "train load_weight missing": (
        _train("--config-file", CONFIG, *ONE, "train.load_weight={tmp}/none"),
        2,
        "{tmp}/none' is not a checkpoint directory (it does not exist)",
    ),
    "train load_weight is a file": (
        _train("--config-file", CONFIG, *ONE, "train.load_weight={tmp}/notes.txt"),
        2,
        "is not a checkpoint directory (it is a file)",
    ),
    "train resume corrupt checkpoint": (
        _train("--config-file", CONFIG, "--resume", *ONE, "train.output_dir={tmp}/run"),
        1,
        "{tmp}/run/model_0000002/model/data is truncated or altered",
    ),
    "train negative lr": (
        _train("--config-file", CONFIG, *ONE, "optim.lr=-1"),
        2,
        "optim.lr=-1 must be",
    ),
    "convert source missing": (
        [
            os.path.join(ROOT, "tools", "convert_checkpoint.py"),
            "{tmp}/none.pth",
            "{tmp}/out",
            "--model",
            "vit_tiny_patch16_224",
        ],
        None,
        "{tmp}/none.pth",
    ),
    "convert source wrong kind": (
        [
            os.path.join(ROOT, "tools", "convert_checkpoint.py"),
            "{tmp}/garbage.safetensors",
            "{tmp}/out",
            "--model",
            "vit_tiny_patch16_224",
        ],
        None,
        "garbage.safetensors",
    ),
    "convert unknown model name": (
        [
            os.path.join(ROOT, "tools", "convert_checkpoint.py"),
            "{tmp}/garbage.safetensors",
            "{tmp}/out",
            "--model",
            "vit_foo_patch16_224",
        ],
        None,
        "unknown model 'vit_foo_patch16_224' (timm's ViT",
    ),
    "visualize into a missing folder": (
        [
            os.path.join(ROOT, "tools", "visualize_attention.py"),
            "{tmp}/none",
            "{tmp}/notes.txt",
            "--out",
            "{tmp}/missing/a.png",
        ],
        2,
        "cannot write {tmp}/missing/a.png: folder {tmp}/missing does not exist",
    ),
    "export onnx to a folder": (
        [os.path.join(ROOT, "tools", "export_onnx.py"), "{tmp}/none", "{tmp}/adir"],
        1,
        "{tmp}/adir is a folder: give a file to write, e.g. {tmp}/adir/model.onnx",
    ),
    "plan_layout no processes": (
        [PLAN, VIT_B, "--gpus", "0", "--mem-gb", "4"],
        2,
        "--gpus 0: must be > 0",
    ),
    "plan_layout negative memory": (
        [PLAN, VIT_B, "--gpus", "8", "--mem-gb", "-5"],
        2,
        "--mem-gb -5: must be > 0",
    ),
    "plan_layout batch no layout divides": (
        [
            PLAN,
            VIT_B,
            "--gpus",
            "8",
            "--mem-gb",
            "4",
            "--global-batch",
            "12",
            "--micro-batches",
            "8",
        ],
        2,
        "no layout of 8 processes splits the global batch 12 into whole micro-batches (8) x DP: "
        "choose --global-batch a multiple of 64",
    ),
    "predict checkpoint missing": (
        [os.path.join(ROOT, "tools", "predict.py"), "{tmp}/none", "{tmp}/notes.txt"],
        None,
        "{tmp}/none",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_tool_error_is_one_line(name, tmp_path):
    argv, code, expected = CASES[name]
    tmp = str(_files(tmp_path))
    argv = [a.replace("{tmp}", tmp) for a in argv]
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="3")
    proc = subprocess.run(
        [sys.executable, *argv], cwd=tmp, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode != 0 and (code is None or proc.returncode == code), (
        proc.returncode,
        proc.stderr[-3000:],
    )
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and expected.replace("{tmp}", tmp) in errors[0], proc.stderr[-3000:]


VALUES = {  # override: the key the message must name
    "optim.lr=-0.001": "optim.lr",
    "optim.lr=nan": "optim.lr",
    "model.drop_path_rate=1.0": "model.drop_path_rate",
    "model.drop_rate=-0.1": "model.drop_rate",
    "model.patch_size=5": "model.img_size=32 must be positive and divisible by model.patch_size=5",
    "train.warmup_ratio=1.5": "train.warmup_ratio",
    "train.checkpointer.max_to_keep=0": "train.checkpointer.max_to_keep",
    "train.nonfinite_loss=ignore": "train.nonfinite_loss",
    "train.nonfinite_loss=skip": "needs eager mode",
    "train.train_micro_batch_size=0": "train.train_micro_batch_size",
    # process counts and blocks per stage: whole numbers, never rounded
    "train.dist.data_parallel_size=1.9": "train.dist.data_parallel_size=1.9 must be an integer",
    "train.dist.tensor_parallel_size=2.5": "train.dist.tensor_parallel_size=2.5 must be an integer",
    "train.dist.data_parallel_size=one": "train.dist.data_parallel_size=one must be an integer",
    "train.dist.pipeline_stage_layers=[a,b]": "pipeline_stage_layers=['a', 'b'] must be a list",
    "train.num_accumulation_steps=1.5": "train.num_accumulation_steps=1.5 must be an integer",
}


@pytest.mark.parametrize("override", list(VALUES))
def test_out_of_range_values_are_refused(override):
    cfg = load_config(CONFIG, [override])
    with pytest.raises(ConfigError, match=re.escape(VALUES[override])):
        validate_values(cfg)


@pytest.mark.parametrize("key,value", [("prob", 1.5), ("switch_prob", -0.1), ("mixup_alpha", -1.0)])
def test_mixup_values_are_refused(key, value):
    cfg = load_config(CONFIG)
    cfg.dataloader.train.mixup_func = {
        "prob": 1.0,
        "switch_prob": 0.5,
        "mixup_alpha": 0.8,
        key: value,
    }
    with pytest.raises(ConfigError, match=f"mixup_func.{key}"):
        validate_values(cfg)


def test_the_demo_config_is_valid():
    validate_values(load_config(CONFIG))


FINETUNE = os.path.join(ROOT, "projects", "imagenet_finetune", "configs", "demo_digits_finetune.py")


@pytest.mark.parametrize("bad", ["garbage.safetensors"])
def test_a_bad_pretrained_file_gives_convert_checkpoints_line_before_launch_and_in_a_rank(
    bad, tmp_path, digits_root
):
    """tools/check_config.py (train.sh's check before any rank starts), tools/train_net.py (in a
    rank) and tools/convert_checkpoint.py print the same one line for a bad
    model.pretrained file."""
    tmp = str(_files(tmp_path))
    src = os.path.join(tmp, bad)
    over = [
        *ONE,
        f"model.pretrained={src}",
        f"train.output_dir={tmp}/out",
        f"dataloader.train.dataset.0.root={digits_root}",
        f"dataloader.test.0.dataset.root={digits_root}",
    ]
    runs = {
        "check_config": [os.path.join(ROOT, "tools", "check_config.py"), FINETUNE, "1", *over],
        "train_net": _train("--config-file", FINETUNE, *over),
        "convert_checkpoint": [
            os.path.join(ROOT, "tools", "convert_checkpoint.py"),
            src,
            f"{tmp}/conv",
            "--model",
            "vit_tiny_patch16_224",
        ],
    }
    lines = {}
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="3")
    for name, argv in runs.items():
        proc = subprocess.run(
            [sys.executable, *argv], cwd=tmp, env=env, capture_output=True, text=True, timeout=300
        )
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
        assert proc.returncode != 0 and "Traceback" not in proc.stderr and len(errors) == 1, (
            name,
            proc.stderr[-3000:],
        )
        lines[name] = errors[0]
    assert len(set(lines.values())) == 1 and src in lines["check_config"], lines


def test_an_output_dir_that_cannot_be_written_is_refused_before_launch(tmp_path):
    from libai_vit.config import check_output_dir

    (tmp_path / "notes.txt").write_text("a file")
    with pytest.raises(ConfigError, match=f"cannot be made: {tmp_path}/notes.txt is a file"):
        validate_values(load_config(CONFIG, [f"train.output_dir={tmp_path}/notes.txt/out"]))
    check_output_dir(str(tmp_path / "new" / "run"))  # made by the run: its parent is writable
    # a read-only and a 40 kB file system, mounted in a user + mount namespace (nothing outside
    # it changes; as tests/test_multinode.py's network namespace)
    ro, tiny = tmp_path / "ro", tmp_path / "tiny"
    ro.mkdir(), tiny.mkdir()
    check = (
        "import sys; from libai_vit.config import ConfigError, check_output_dir\n"
        "for d in sys.argv[1:]:\n"
        "    try: check_output_dir(d)\n"
        "    except ConfigError as e: print(e)\n"
    )
    script = (
        f"mount -t tmpfs -o ro none {ro} && mount -t tmpfs -o size=40k none {tiny} && "
        f"{sys.executable} -c {shlex.quote(check)} {ro}/run {tiny}/run"
    )
    proc = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "bash", "-c", script],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=ROOT),
        timeout=120,
    )
    if proc.returncode != 0 and "mount" in proc.stderr and "Traceback" not in proc.stderr:
        pytest.skip(f"no user + mount namespace here: {proc.stderr.strip()[-200:]}")
    assert proc.stdout.splitlines() == [
        f"train.output_dir='{ro}/run' is not writable ({ro}: read-only file system); choose "
        "another folder",
        f"train.output_dir='{tiny}/run': its file system has 40 kB free, too little for the run's "
        "log and checkpoints; free space or choose another folder",
    ], proc.stderr[-2000:]


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        (  # qkv cannot even be split into 12 heads
            dict(embed_dim=192, num_heads=12, depth=2),
            "embed_dim=64 (the model has 192; patch_embed.proj.weight is (64, 3, 16, 16), the "
            "model's (192, 3, 16, 16))",
        ),
        (dict(embed_dim=128, num_heads=4, depth=2), "embed_dim=64 (the model has 128; "),
        (dict(embed_dim=64, num_heads=4, depth=3), "depth=2 (the model has 3)"),
    ],
)
def test_a_checkpoint_of_another_size_names_the_option_and_tensor(kwargs, expected, tmp_path):
    from safetensors.numpy import save_file

    from libai_vit.models.zoo import create_model
    from libai_vit.pretrained import PretrainedError, load_pretrained
    from libai_vit.pretrained.timm_format import from_libai

    small = dict(img_size=32, num_classes=10)
    saved = create_model("vit_tiny_patch16_224", embed_dim=64, num_heads=4, depth=2, **small)
    state = {k: v.to_local().numpy() for k, v in saved.state_dict().items()}
    path = str(tmp_path / "vit64.safetensors")
    save_file(from_libai(state, saved), path)
    model = create_model("vit_tiny_patch16_224", **kwargs, **small)
    with pytest.raises(PretrainedError) as e:
        load_pretrained(model, path)
    line = str(e.value)
    assert line.startswith(
        f"{path}: does not fit the model, the checkpoint is a ViT of another size: {expected}"
    ), line
    assert "\n" not in line
