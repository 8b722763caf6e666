"""Make the small timm checkpoints and timm's own outputs that tests/pretrained/ compare against.

Regenerate (needs real timm + torch, which the project venv does not have):

    /root/.pyenv/versions/3.11.7/bin/python3.11 -m venv .venv-timm
    .venv-timm/bin/pip install torch==2.13.0
    .venv-timm/bin/pip install --no-deps timm torchvision
    .venv-timm/bin/pip install huggingface_hub safetensors pyyaml numpy pillow
    .venv-timm/bin/python tools/make_timm_fixtures.py [OUT_DIR]   # default tests/fixtures/timm

Every model is a randomly initialised (fixed seed) timm VisionTransformer with small dims but timm's
architecture. Outputs in OUT_DIR:
  <fixture>.safetensors / .pth / .npz   the checkpoints (npz: official JAX ViT naming);
  oracle.npz     "<case>/input" and "<case>/output": timm's logits (or pre-logits, when the head is
                 new) of the checkpoint loaded by timm itself, per case of manifest.json;
  manifest.json  per fixture: timm kwargs, files; per case: file, load kwargs, what the output is.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

# The registry's torchvision is a CUDA build whose C ops do not load with the CPU torch; timm imports
# torchvision, whose Python side registers fake kernels for these two ops and fails unless they exist.
_TV_LIB = torch.library.Library("torchvision", "DEF")
for _op in ("nms", "qnms"):
    _TV_LIB.define(f"{_op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

import safetensors.torch  # noqa: E402
import timm  # noqa: E402

ARCH = "vit_tiny_patch16_224"  # any timm ViT name: every size kwarg below overrides it
FIXTURES = {
    # name: timm kwargs (the checkpoint's own model), formats written
    "tiny16": (dict(img_size=48, patch_size=16, embed_dim=48, depth=2, num_heads=3, num_classes=10),
               ("safetensors", "pth", "npz")),
    "small_avg": (dict(img_size=32, patch_size=16, embed_dim=64, depth=2, num_heads=4, num_classes=10,
                       global_pool="avg"), ("safetensors", "pth")),
    "p14": (dict(img_size=28, patch_size=14, embed_dim=48, depth=2, num_heads=3, num_classes=10),
            ("safetensors",)),
    "deit": (dict(img_size=32, patch_size=16, embed_dim=48, depth=2, num_heads=3, num_classes=10),
             ("pth",)),
    "mae": (dict(img_size=32, patch_size=16, embed_dim=48, depth=2, num_heads=3, num_classes=0),
            ("pth",)),
}


def build(seed, **kwargs):
    torch.manual_seed(seed)
    model = timm.create_model(ARCH, pretrained=False, **kwargs).eval()
    with torch.no_grad():  # timm zero-inits biases, cls_token ~0: randomise so every mapping shows
        for name, p in model.named_parameters():
            if name.endswith("bias") or name in ("cls_token",) or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
        # trained-like magnitudes, so that a wrong resampling or head visibly changes the logits
        model.pos_embed.mul_(25.0)
        if isinstance(model.head, torch.nn.Linear):
            model.head.weight.mul_(25.0)
    return model


def to_jax(state, num_heads):
    """timm names -> official JAX ViT npz names, inverting the transposes of timm's `_load_weights`."""
    c = state["cls_token"].shape[-1]
    hd = c // num_heads
    w = {
        "embedding/kernel": state["patch_embed.proj.weight"].permute(2, 3, 1, 0),  # OIHW -> HWIO
        "embedding/bias": state["patch_embed.proj.bias"],
        "cls": state["cls_token"],
        "Transformer/posembed_input/pos_embedding": state["pos_embed"],
        "Transformer/encoder_norm/scale": state["norm.weight"],
        "Transformer/encoder_norm/bias": state["norm.bias"],
        "head/kernel": state["head.weight"].T,
        "head/bias": state["head.bias"],
    }
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    for i in range(depth):
        t, j = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        mha = j + "MultiHeadDotProductAttention_1/"
        qkv_w, qkv_b = state[t + "attn.qkv.weight"].chunk(3), state[t + "attn.qkv.bias"].chunk(3)
        for n, wn, bn in zip(("query", "key", "value"), qkv_w, qkv_b):
            w[mha + f"{n}/kernel"] = wn.T.reshape(c, num_heads, hd)
            w[mha + f"{n}/bias"] = bn.reshape(num_heads, hd)
        w[mha + "out/kernel"] = state[t + "attn.proj.weight"].reshape(c, num_heads, hd).permute(1, 2, 0)
        w[mha + "out/bias"] = state[t + "attn.proj.bias"]
        for jn, tn in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            w[j + f"{jn}/scale"] = state[t + f"{tn}.weight"]
            w[j + f"{jn}/bias"] = state[t + f"{tn}.bias"]
        for r in range(2):
            w[j + f"MlpBlock_3/Dense_{r}/kernel"] = state[t + f"mlp.fc{r + 1}.weight"].T
            w[j + f"MlpBlock_3/Dense_{r}/bias"] = state[t + f"mlp.fc{r + 1}.bias"]
    return {k: v.detach().numpy().astype(np.float32) for k, v in w.items()}


# case name -> (fixture, file format, kwargs overriding the fixture's for the loading model, output)
# output "logits": the model's output; "pre_logits": pooled (+fc_norm) features, when the head is new.
CASES = {
    "tiny16.safetensors": ("tiny16", "safetensors", {}, "logits"),
    "tiny16.pth": ("tiny16", "pth", {}, "logits"),
    "tiny16.npz": ("tiny16", "npz", {}, "logits"),
    "tiny16.safetensors@64": ("tiny16", "safetensors", dict(img_size=64), "logits"),  # upsampled pos-embed
    "tiny16.safetensors@32": ("tiny16", "safetensors", dict(img_size=32), "logits"),  # downsampled
    "tiny16.npz@64": ("tiny16", "npz", dict(img_size=64), "logits"),
    "tiny16.npz@32": ("tiny16", "npz", dict(img_size=32), "logits"),
    "tiny16.safetensors/nc7": ("tiny16", "safetensors", dict(num_classes=7), "pre_logits"),
    "tiny16.npz/nc7": ("tiny16", "npz", dict(num_classes=7), "pre_logits"),
    "tiny16.pth/nc0": ("tiny16", "pth", dict(num_classes=0), "logits"),
    "small_avg.safetensors": ("small_avg", "safetensors", {}, "logits"),
    "small_avg.pth": ("small_avg", "pth", {}, "logits"),
    "small_avg.safetensors@48": ("small_avg", "safetensors", dict(img_size=48), "logits"),
    "p14.safetensors": ("p14", "safetensors", {}, "logits"),
    "p14.safetensors/p16": ("p14", "safetensors", dict(patch_size=16, img_size=32), "logits"),  # patch resample
    "deit.pth": ("deit", "pth", {}, "logits"),
    "mae.pth/token": ("mae", "pth", {}, "logits"),  # pretrain encoder: class token + norm, no head
    "mae.pth/avg": ("mae", "pth", dict(global_pool="avg"), "logits"),  # fine-tune: fc_norm, norm unused
    "mae.pth/avg_nc5": ("mae", "pth", dict(global_pool="avg", num_classes=5), "pre_logits"),
}


def save(model, name, fmt, out_dir):
    path = os.path.join(out_dir, f"{name}.{fmt}")
    state = model.state_dict()
    if name == "deit":  # DeiT's released checkpoints: the state dict under "model"
        torch.save({"model": state}, path)
    elif name == "mae":  # MAE's: the encoder under "model" (norm, no head); full ones also carry the decoder
        c = state["cls_token"].shape[-1]
        extra = {"mask_token": torch.randn(1, 1, 32), "decoder_embed.weight": torch.randn(32, c),
                 "decoder_embed.bias": torch.randn(32)}
        torch.save({"model": {**state, **extra}}, path)
    elif fmt == "safetensors":
        safetensors.torch.save_file(state, path)
    elif fmt == "pth":
        torch.save(state, path)
    else:
        np.savez(path, **to_jax(state, model.blocks[0].attn.num_heads))
    return path


def timm_load(path, fixture_kwargs, overrides):
    """The checkpoint loaded the way its users load it in timm (MAE: its fine-tuning recipe)."""
    kwargs = {**fixture_kwargs, **overrides}
    if os.path.basename(path).startswith("mae"):
        model = timm.create_model(ARCH, pretrained=False, **kwargs).eval()
        model.load_state_dict(torch.load(path, weights_only=True)["model"], strict=False)
        return model
    if path.endswith(".npz"):  # timm's _load_weights; it drops a head of another size itself
        cfg = dict(file=path, custom_load=True)
    else:  # the saved num_classes, so that timm drops the head exactly when it differs
        cfg = dict(file=path, num_classes=fixture_kwargs["num_classes"])
    return timm.create_model(ARCH, pretrained=True, pretrained_cfg_overlay=cfg, **kwargs).eval()


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(1234)
    inputs = {s: torch.randn(2, 3, s, s) for s in (28, 32, 48, 64)}
    oracle = {f"input@{s}": x.numpy() for s, x in inputs.items()}
    manifest = {"fixtures": {}, "cases": {}}
    originals = {}
    for seed, (name, (kwargs, formats)) in enumerate(FIXTURES.items()):
        model = build(seed, **kwargs)
        originals[name] = model
        files = {fmt: os.path.basename(save(model, name, fmt, out_dir)) for fmt in formats}
        manifest["fixtures"][name] = dict(timm_kwargs=kwargs, files=files)
    # unpickling this needs argparse.Namespace, which a weights-only reader must refuse
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 4)}, "args": argparse.Namespace(lr=0.1)},
               os.path.join(out_dir, "unsafe.pth"))

    with torch.no_grad():
        for case, (name, fmt, overrides, output) in CASES.items():
            kwargs = manifest["fixtures"][name]["timm_kwargs"]
            path = os.path.join(out_dir, manifest["fixtures"][name]["files"][fmt])
            model = timm_load(path, kwargs, overrides)
            size = overrides.get("img_size", kwargs["img_size"])
            x = inputs[size]
            feats = model.forward_features(x)
            y = model.forward_head(feats, pre_logits=output == "pre_logits")
            if not overrides:  # loading as-is must reproduce the model that was saved
                ref = originals[name].forward_head(originals[name].forward_features(x))
                diff = (y - ref).abs().max().item()
                assert diff < 1e-5, f"{case}: timm reload differs from the saved model by {diff}"
            oracle[f"{case}/output"] = y.numpy()
            # the resampled embeddings themselves, checked tighter than the logits
            oracle[f"{case}/pos_embed"] = model.pos_embed.numpy()
            if "patch_size" in overrides:
                oracle[f"{case}/patch_embed"] = model.patch_embed.proj.weight.numpy()
            manifest["cases"][case] = dict(fixture=name, file=manifest["fixtures"][name]["files"][fmt],
                                           kwargs={**kwargs, **overrides}, input=f"input@{size}", output=output)
            print(f"{case:28s} {output:10s} {tuple(y.shape)}")
    np.savez_compressed(os.path.join(out_dir, "oracle.npz"), **oracle)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "timm"))
