"""PyTorch references for the recipe fidelity test (tests/projects/test_recipe_fidelity.py).

Each case trains a tiny timm ViT from the same weights on the same batches for a few steps as the
papers' PyTorch code does, and records the loss of every step. The test trains the same recipe here
(through the project's configs and tools/train.sh) and compares. Regenerate with the timm venv
(see generators/make_timm_fixtures.py for how it is built):

    .venv-timm/bin/python generators/make_recipe_fixtures.py [OUT_DIR]  # tests/fixtures/recipes

The references, after the papers' repositories:
- "mae": MAE's main_finetune.py step: `param_groups_lrd` (layer decay, no decay on 1-D tensors and
  model.no_weight_decay()), torch AdamW, `adjust_learning_rate` per step (linear warm-up from 0,
  then cosine to min_lr), mixup/cutmix with label smoothing + SoftTargetCrossEntropy, and timm's
  ModelEmaV3 (with warm-up) updated after every step with the step number, as timm's train.py.
- "deit3": DeiT III's step: timm's `param_groups_weight_decay`, timm's Lamb (= apex FusedLAMB, with
  its whole-model gradient clipping `max_grad_norm`), BCEWithLogitsLoss on `targets.gt(0.0)` of the
  mixup/cutmix targets (DeiT's --bce-loss, no smoothing), repeated augmentation by timm's
  RepeatAugSampler (DeiT's RASampler).
- "clip": the "mae" step without layer decay and with torch.nn.utils.clip_grad_norm_ on the
  whole model.
Mixup/cutmix use a fixed lambda (mixup on even steps, cutmix on odd ones, with a fixed box) so both
sides mix the same way; with data parallelism each rank mixes its own part of the global batch (its
every DP-th sample), as DDP does, which the reference reproduces for the case's layouts.
"""

import argparse
import json
import math
import os

import numpy as np
import timm_venv  # noqa: F401  (declares torchvision's ops: before timm is imported)
import torch

# isort: split
import safetensors.torch  # noqa: E402
import timm  # noqa: E402
import timm.data.mixup as timm_mixup  # noqa: E402
from timm.data.distributed_sampler import RepeatAugSampler  # noqa: E402
from timm.loss import SoftTargetCrossEntropy  # noqa: E402
from timm.optim import Lamb  # noqa: E402
from timm.optim._param_groups import param_groups_weight_decay  # noqa: E402
from timm.utils.model_ema import ModelEmaV3  # noqa: E402

MODEL = dict(
    img_size=16, patch_size=8, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=6
)
DATA = dict(size=48, seed=7)  # uint8 images 3 x 16 x 16, labels 0..5
NORMALIZE = (0.5, 0.25)  # x = (pixel / 255 - 0.5) / 0.25 on both sides
MIX = dict(mixup_lam=0.7, cutmix_lam=0.6, box=(4, 12, 2, 10))  # yl, yh, xl, xh
STEPS, GLOBAL_BATCH = 12, 8
# timm's RepeatAugSampler (shuffle=False: the same order on both sides) per rank, for the
# sampler test
REPEAT_AUG = dict(size=40, num_repeats=3, micro_batch=4, replicas=(1, 2, 4))
# timm's ModelEmaV3.get_decay per step, for the EMA test
EMA_DECAYS = [
    dict(
        decay=0.999,
        use_warmup=True,
        warmup_gamma=1.0,
        warmup_power=0.75,
        min_decay=0.5,
        update_after_step=2,
    ),
    dict(decay=0.99, use_warmup=False, update_after_step=0),
]
# per case, the nearest wrong recipe: its losses must differ by far more than the test's tolerance
VARIANTS = {"mae": dict(layer_decay=1.0), "deit3": dict(clip=None), "clip": dict(clip=None)}
CASES = {
    "mae": dict(
        global_pool="avg",
        optimizer="adamw",
        lr=2e-3,
        min_lr=2e-5,
        warmup_steps=3,
        weight_decay=0.05,
        layer_decay=0.75,
        clip=None,
        smoothing=0.1,
        loss="soft_ce",
        num_repeats=1,
        ema=dict(decay=0.9, use_warmup=True, warmup_gamma=1.0, warmup_power=2 / 3),
        dp=(1,),
    ),
    "deit3": dict(
        global_pool="token",
        optimizer="lamb",
        lr=2e-2,
        min_lr=2e-4,
        warmup_steps=3,
        weight_decay=0.05,
        layer_decay=1.0,
        clip=0.02,
        smoothing=0.0,
        loss="bce",
        num_repeats=2,
        ema=None,
        dp=(1, 2),
    ),
    "clip": dict(
        global_pool="avg",
        optimizer="adamw",
        lr=2e-3,
        min_lr=2e-5,
        warmup_steps=3,
        weight_decay=0.05,
        layer_decay=1.0,
        clip=0.5,
        smoothing=0.1,
        loss="soft_ce",
        num_repeats=1,
        ema=None,
        dp=(2,),
    ),
}


def make_data():
    rng = np.random.default_rng(DATA["seed"])
    images = rng.integers(0, 256, size=(DATA["size"], 3, 16, 16), dtype=np.uint8)
    labels = np.arange(DATA["size"]) % MODEL["num_classes"]
    return images, labels


def build(global_pool):
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, global_pool=global_pool, **MODEL
    )
    with torch.no_grad():  # timm zero-inits biases and tokens: randomise them so every path trains
        for name, p in model.named_parameters():
            if name.endswith("bias") or name == "cls_token":
                p.add_(torch.randn_like(p) * 0.02)
    return model


def param_groups_lrd(model, weight_decay, layer_decay):
    """MAE's util/lr_decay.py: a group per (layer, decay), lr_scale = layer_decay ** (L - layer)."""
    num_layers = len(model.blocks) + 1
    groups = {}
    for name, p in model.named_parameters():
        no_decay = p.ndim == 1 or name in model.no_weight_decay()
        if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
            layer = 0
        elif name.startswith("blocks"):
            layer = int(name.split(".")[1]) + 1
        else:
            layer = num_layers
        key = (layer, no_decay)
        groups.setdefault(
            key,
            dict(
                params=[],
                weight_decay=0.0 if no_decay else weight_decay,
                lr_scale=layer_decay ** (num_layers - layer),
            ),
        )
        groups[key]["params"].append(p)
    return list(groups.values())


def adjust_learning_rate(optimizer, step, case):
    """MAE's util/lr_sched.py in steps: linear warm-up from 0, then half-cycle cosine to min_lr."""
    w, total = case["warmup_steps"], STEPS
    if step < w:
        lr = case["lr"] * step / w
    else:
        lr = case["min_lr"] + (case["lr"] - case["min_lr"]) * 0.5 * (
            1 + math.cos(math.pi * (step - w) / (total - w))
        )
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


class FixedMixup(timm_mixup.Mixup):
    """timm's Mixup with the lambda fixed per step and the cutmix box fixed."""

    calls = 0

    def _params_per_batch(self):
        cutmix = self.calls % 2 == 1
        self.calls += 1
        return (MIX["cutmix_lam"] if cutmix else MIX["mixup_lam"]), cutmix


timm_mixup.rand_bbox = lambda img_shape, lam, margin=0.0, count=None: MIX["box"]


def run(case, dp, images, labels):
    model = build(case["global_pool"])
    init = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    if case["optimizer"] == "adamw":
        optimizer = torch.optim.AdamW(
            param_groups_lrd(model, case["weight_decay"], case["layer_decay"]),
            lr=case["lr"],
            betas=(0.9, 0.999),
            eps=1e-8,
        )
    else:
        groups = param_groups_weight_decay(
            model, case["weight_decay"], no_weight_decay_list=model.no_weight_decay()
        )
        optimizer = Lamb(
            groups,
            lr=case["lr"],
            betas=(0.9, 0.999),
            eps=1e-8,
            weight_decay=case["weight_decay"],
            max_grad_norm=case["clip"],
        )
    ema = ModelEmaV3(model, **case["ema"]) if case["ema"] else None
    sampler = RepeatAugSampler(
        range(DATA["size"]), num_replicas=1, rank=0, shuffle=False, num_repeats=case["num_repeats"]
    )
    order = []
    while len(order) < STEPS * GLOBAL_BATCH:
        sampler.set_epoch(len(order) // len(sampler))
        order += list(sampler)[: len(sampler) // GLOBAL_BATCH * GLOBAL_BATCH]
    mixers = [
        FixedMixup(
            mixup_alpha=0.8,
            cutmix_alpha=1.0,
            label_smoothing=case["smoothing"],
            num_classes=MODEL["num_classes"],
        )
        for _ in range(dp)
    ]
    criterion = (
        SoftTargetCrossEntropy() if case["loss"] == "soft_ce" else torch.nn.BCEWithLogitsLoss()
    )
    losses = []
    for step in range(STEPS):
        batch = np.array(order[step * GLOBAL_BATCH : (step + 1) * GLOBAL_BATCH])
        xs, ts = [], []
        for r in range(dp):  # each data-parallel rank mixes its own samples: r, r + dp, ...
            idx = batch[r::dp]
            x = (torch.tensor(images[idx], dtype=torch.float32) / 255 - NORMALIZE[0]) / NORMALIZE[1]
            x, t = mixers[r](x, torch.tensor(labels[idx]))
            xs.append(x)
            ts.append(t)
        x, t = torch.cat(xs), torch.cat(ts)
        if case["loss"] == "bce":
            t = t.gt(0.0).type(t.dtype)  # DeiT's engine.py with --bce-loss
        adjust_learning_rate(optimizer, step, case)
        loss = criterion(model(x), t)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        if case["clip"] is not None and case["optimizer"] == "adamw":
            torch.nn.utils.clip_grad_norm_(model.parameters(), case["clip"])
        optimizer.step()
        if ema is not None:
            ema.update(model, step=step + 1)
    return init, losses, (ema.module.state_dict() if ema is not None else None)


def lamb_steps():
    """timm's Lamb (no clipping) on two small tensors, one with weight decay and one without."""
    rng = np.random.default_rng(3)
    init = [
        rng.standard_normal((3, 4)).astype(np.float32),
        rng.standard_normal(4).astype(np.float32),
    ]
    grads = [[rng.standard_normal(w.shape).astype(np.float32) for w in init] for _ in range(4)]
    params = [torch.nn.Parameter(torch.tensor(w)) for w in init]
    kw = dict(lr=0.05, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    opt = Lamb(
        [dict(params=[params[0]]), dict(params=[params[1]], weight_decay=0.0)],
        max_grad_norm=None,
        **kw,
    )
    for step in grads:
        for p, g in zip(params, step):
            p.grad = torch.tensor(g)
        opt.step()
    return dict(
        kwargs=kw,
        init=[w.tolist() for w in init],
        grads=[[g.tolist() for g in s] for s in grads],
        result=[p.detach().numpy().tolist() for p in params],
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "out",
        nargs="?",
        default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "recipes"),
    )
    out = parser.parse_args().out
    os.makedirs(out, exist_ok=True)
    images, labels = make_data()
    np.savez_compressed(os.path.join(out, "data.npz"), images=images, labels=labels)
    reference = dict(
        model=MODEL, normalize=NORMALIZE, mix=MIX, steps=STEPS, global_batch=GLOBAL_BATCH, cases={}
    )
    for name, case in CASES.items():
        losses = {}
        for dp in case["dp"]:
            init, losses[str(dp)], ema = run(case, dp, images, labels)
            if ema is not None:
                safetensors.torch.save_file(
                    {k: v.contiguous() for k, v in ema.items()},
                    os.path.join(out, f"{name}_dp{dp}_ema.safetensors"),
                )
        safetensors.torch.save_file(
            {k: v.contiguous() for k, v in init.items()},
            os.path.join(out, f"{name}_init.safetensors"),
        )
        dp = str(case["dp"][0])
        _, wrong, _ = run(dict(case, **VARIANTS[name]), int(dp), images, labels)
        variant = dict(
            change=VARIANTS[name],
            max_relative_difference=max(abs(a - b) / abs(b) for a, b in zip(wrong, losses[dp])),
        )
        reference["cases"][name] = dict(case, losses=losses, variant=variant)
        print(
            name,
            {dp: [round(v, 5) for v in per_step[:4]] for dp, per_step in losses.items()},
            variant,
        )
    reference["repeat_aug"] = dict(
        REPEAT_AUG,
        per_rank={
            str(w): [
                list(
                    RepeatAugSampler(
                        range(REPEAT_AUG["size"]),
                        num_replicas=w,
                        rank=r,
                        shuffle=False,
                        num_repeats=REPEAT_AUG["num_repeats"],
                    )
                )
                for r in range(w)
            ]
            for w in REPEAT_AUG["replicas"]
        },
    )
    reference["ema_decay"] = [
        dict(
            kwargs=kw,
            decays=[ModelEmaV3(torch.nn.Linear(1, 1), **kw).get_decay(s) for s in range(40)],
        )
        for kw in EMA_DECAYS
    ]
    reference["lamb"] = lamb_steps()
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)


if __name__ == "__main__":
    main()
