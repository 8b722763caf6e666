"""Make the small timm checkpoints and timm's own outputs that tests/pretrained/ compare against.

Regenerate (needs real timm + torch, which the project venv does not have):

    /root/.pyenv/versions/3.11.7/bin/python3.11 -m venv .venv-timm
    .venv-timm/bin/pip install torch==2.13.0
    .venv-timm/bin/pip install --no-deps timm torchvision
    .venv-timm/bin/pip install huggingface_hub safetensors pyyaml numpy pillow
    .venv-timm/bin/python generators/make_timm_fixtures.py [OUT_DIR]   # default tests/fixtures/timm

Every model is a randomly initialised (fixed seed) timm model (a named architecture: ViT, DeiT III,
DINOv2 (to giant), CLIP, SigLIP, EVA-02, DINOv3) with small dims, every tensor perturbed so that a
wrong mapping shows.
Outputs in OUT_DIR:
  <fixture>.safetensors / .pth / .npz   the checkpoints (npz: official JAX ViT naming);
  <fixture>_release.*   the same weights in the family's own release format (DeiT III, DINOv2,
                 CLIP, DINOv3);
  oracle.npz     "<case>/input" and "<case>/output": timm's logits (or pre-logits, when the head is
                 new) of the checkpoint loaded by timm itself, per case of manifest.json;
  manifest.json  per fixture: timm kwargs, files; per case: file, load kwargs, what the output is.
"""

import argparse
import json
import os
import sys

import numpy as np
import timm_venv  # noqa: F401  (declares torchvision's ops: before timm is imported)
import torch

# isort: split
import safetensors.torch  # noqa: E402
import timm  # noqa: E402

ARCH = "vit_tiny_patch16_224"  # the plain fixtures' timm name: every size kwarg overrides it
SMALL = dict(embed_dim=48, depth=2, num_heads=4, num_classes=10)  # 4 heads: TP=2 splits them
# 4x4 grids
P8, P7 = (
    dict(img_size=32, patch_size=8, **SMALL),
    dict(img_size=28, patch_size=7, **SMALL),
)
FIXTURES = {
    # name: (timm model name, timm kwargs (the checkpoint's own model), formats written)
    "tiny16": (
        ARCH,
        dict(img_size=48, patch_size=16, embed_dim=48, depth=2, num_heads=3, num_classes=10),
        ("safetensors", "pth", "npz"),
    ),
    "small_avg": (
        ARCH,
        dict(
            img_size=32,
            patch_size=16,
            embed_dim=64,
            depth=2,
            num_heads=4,
            num_classes=10,
            global_pool="avg",
        ),
        ("safetensors", "pth"),
    ),
    "p14": (
        ARCH,
        dict(img_size=28, patch_size=14, embed_dim=48, depth=2, num_heads=3, num_classes=10),
        ("safetensors",),
    ),
    "deit": (
        ARCH,
        dict(img_size=32, patch_size=16, embed_dim=48, depth=2, num_heads=3, num_classes=10),
        ("pth",),
    ),
    "mae": (
        ARCH,
        dict(img_size=32, patch_size=16, embed_dim=48, depth=2, num_heads=3, num_classes=0),
        ("pth",),
    ),
    # the families of today's strongest checkpoints, small (patch 8 or 7, 4x4 grids)
    "deit3": ("deit3_small_patch16_224", P8, ("safetensors", "release")),
    "dinov2": ("vit_small_patch14_dinov2", P7, ("release",)),
    "dinov2_reg4": ("vit_small_patch14_reg4_dinov2", P7, ("safetensors", "release")),
    "clip": ("vit_base_patch16_clip_224", {**P8, "num_classes": 16}, ("safetensors", "release")),
    "clip_quickgelu": ("vit_base_patch16_clip_quickgelu_224", P8, ("safetensors",)),
    "siglip": ("vit_base_patch16_siglip_224", P8, ("safetensors", "release")),
    "qk_norm": (ARCH, dict(P8, qk_norm=True), ("safetensors",)),
    # q/k/v, scale_mlp
    "eva02_b": (
        "eva02_base_patch14_224",
        dict(P7, ref_feat_shape=(4, 4)),
        ("safetensors",),
    ),
    # fused, packed
    "eva02_ti": (
        "eva02_tiny_patch14_224",
        dict(P7, ref_feat_shape=(4, 4)),
        ("safetensors",),
    ),
    "eva02_clip": ("eva02_base_patch16_clip_224", P8, ("safetensors",)),  # sub-LN in attention
    # the giants, small: DINOv2-g's packed SwiGLU; DINOv3's RoPE, storage tokens, no q/k/v bias
    # (S) or q/v biases and a SwiGLU whose hidden units align_to rounds up (139 -> 144) (S+ qkvb)
    "dinov2_g": ("vit_giant_patch14_reg4_dinov2", P7, ("safetensors", "release")),
    "dinov3_s": ("vit_small_patch16_dinov3", P8, ("safetensors", "release")),
    "dinov3_splus_qkvb": (
        "vit_small_plus_patch16_dinov3_qkvb",
        dict(P8, mlp_ratio=2.9),
        ("safetensors", "release"),
    ),
    # ViT-22B's parallel block: fused in_proj, RMSNorm everywhere, qk-norm, no q/k/v bias (xp);
    # with the in_proj bias, LayerScale, a register and average pooling (pwee)
    "xp": ("vit_base_patch16_xp_224", P8, ("safetensors",)),
    "pwee": ("vit_pwee_patch16_reg1_gap_256", P8, ("safetensors",)),
    # EVA-02-E's post-norm blocks: each norm on its branch's output, no LayerScale
    "eva02_e": ("eva02_enormous_patch14_clip_224", P7, ("safetensors",)),
    # AIMv2: RMSNorm on the patch embeddings and in the blocks, SwiGLU, no biases but the patch
    # projection's, average pooling; InternViT-300M: LayerScale, no final norm
    "aimv2": ("aimv2_large_patch14_224", P7, ("safetensors", "release")),
    "intern300m": ("vit_intern300m_patch14_448", P7, ("safetensors",)),
    # Perception Encoder: RoPE on an 'xy' grid offset by 1 and rescaled to the pre-training grid,
    # the attention pool over every token with heads of its own (core; G without a class token),
    # no final norm (spatial, lang); and timm's RoPE-ViT (no position embedding, 'xy' grid)
    "pe_core": ("vit_pe_core_large_patch14_336", P7, ("safetensors",)),
    "pe_core_g": ("vit_pe_core_gigantic_patch14_448", P7, ("safetensors",)),
    "pe_spatial": ("vit_pe_spatial_base_patch16_512", P8, ("safetensors",)),
    "pe_lang": ("vit_pe_lang_large_patch14_448", P7, ("safetensors",)),
    "rope_vit": ("vit_small_patch16_rope_224", P8, ("safetensors",)),
    # "Three things" parallel blocks: two attentions side by side, then two MLPs; LayerScale
    "things": ("vit_small_patch16_18x2_224", P8, ("safetensors",)),
    # Perception Encoder's own files: Core under visual. beside a text tower (G: no class token),
    # the vision-only Lang without the prefix, with LayerScale
    "pe_core_rel": ("vit_pe_core_large_patch14_336", P7, ("release",)),
    "pe_core_g_rel": ("vit_pe_core_gigantic_patch14_448", P7, ("release",)),
    "pe_lang_rel": ("vit_pe_lang_large_patch14_448", dict(P7, num_classes=0), ("release",)),
}
RELEASE = {  # fixture -> the family's own format: file name, writer (see save_release)
    "deit3": "deit3_release.pth",
    "dinov2": "dinov2_release.pth",
    "dinov2_reg4": "dinov2_reg4_release.pth",
    "clip": "clip_release.pt",
    "siglip": "siglip_openclip.bin",
    "dinov2_g": "dinov2_g_release.pth",
    "dinov3_s": "dinov3_s_release.pth",
    "dinov3_splus_qkvb": "dinov3_splus_qkvb_release.pth",
    "aimv2": "aimv2_release.safetensors",
    "pe_core_rel": "pe_core_release.pt",
    "pe_core_g_rel": "pe_core_g_release.pt",
    "pe_lang_rel": "pe_lang_release.pt",
}


def build(seed, timm_name, sharp=False, head_bias=True, **kwargs):
    """A perturbed timm model; `sharp`: q and k scaled up so attention is peaked, and where tokens
    sit (position embedding, RoPE) visibly matters; `head_bias=False`: the head's bias zero (a
    CLIP-style projection, which has none)."""
    torch.manual_seed(seed)
    model = timm.create_model(timm_name, pretrained=False, **kwargs).eval()
    with torch.no_grad():
        if sharp:
            for name, p in model.named_parameters():
                if name.endswith(("attn.q_proj.weight", "attn.k_proj.weight")):
                    p.mul_(4.0)
                elif name.endswith("attn.qkv.weight"):
                    p[: 2 * p.shape[0] // 3].mul_(4.0)
                elif name.endswith("in_proj.weight"):  # rows [fc1 | q | k | v]
                    c = p.shape[1]
                    p[p.shape[0] - 3 * c : p.shape[0] - c].mul_(4.0)
        # timm zero-inits biases, tokens ~0, LayerScale 1e-5: randomise so every mapping shows
        for name, p in model.named_parameters():
            if (
                name.endswith(("bias", "_bias"))
                or name in ("cls_token", "reg_token")
                or "norm" in name
            ):
                p.add_(torch.randn_like(p) * 0.1)
            if name.endswith(("gamma", "gamma_1", "gamma_2")):
                p.copy_(0.5 + torch.rand_like(p))
        # trained-like magnitudes, so that a wrong resampling or head visibly changes the logits
        if getattr(model, "pos_embed", None) is not None:
            model.pos_embed.mul_(25.0)
        if isinstance(model.head, torch.nn.Linear):
            # EVA's head_init_scale: a trained head's magnitude instead
            if model.head.weight.std() < 1e-3:
                model.head.weight.normal_(0.0, 0.02)
            model.head.weight.mul_(25.0)
            if "_clip_" in timm_name or not head_bias:  # CLIP's / PE's projection: no bias
                model.head.bias.zero_()
    return model


def to_jax(state, num_heads):
    """timm names -> official JAX ViT npz names, undoing timm's `_load_weights` transposes."""
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
        w[mha + "out/kernel"] = (
            state[t + "attn.proj.weight"].reshape(c, num_heads, hd).permute(1, 2, 0)
        )
        w[mha + "out/bias"] = state[t + "attn.proj.bias"]
        for jn, tn in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            w[j + f"{jn}/scale"] = state[t + f"{tn}.weight"]
            w[j + f"{jn}/bias"] = state[t + f"{tn}.bias"]
        for r in range(2):
            w[j + f"MlpBlock_3/Dense_{r}/kernel"] = state[t + f"mlp.fc{r + 1}.weight"].T
            w[j + f"MlpBlock_3/Dense_{r}/bias"] = state[t + f"mlp.fc{r + 1}.bias"]
    return {k: v.detach().numpy().astype(np.float32) for k, v in w.items()}


# case name -> (fixture, file format, kwargs overriding the fixture's for the loading model,
# output[, input size])
# output "logits": the model's output; "pre_logits": pooled (+fc_norm) features (a new head).
CASES = {
    "tiny16.safetensors": ("tiny16", "safetensors", {}, "logits"),
    "tiny16.pth": ("tiny16", "pth", {}, "logits"),
    "tiny16.npz": ("tiny16", "npz", {}, "logits"),
    # upsampled pos-embed
    "tiny16.safetensors@64": (
        "tiny16",
        "safetensors",
        dict(img_size=64),
        "logits",
    ),
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
    # patch resample
    "p14.safetensors/p16": (
        "p14",
        "safetensors",
        dict(patch_size=16, img_size=32),
        "logits",
    ),
    "deit.pth": ("deit", "pth", {}, "logits"),
    "mae.pth/token": ("mae", "pth", {}, "logits"),  # pretrain encoder: class token + norm, no head
    # fine-tune: fc_norm, norm unused
    "mae.pth/avg": (
        "mae",
        "pth",
        dict(global_pool="avg"),
        "logits",
    ),
    "mae.pth/avg_nc5": ("mae", "pth", dict(global_pool="avg", num_classes=5), "pre_logits"),
    # DeiT III: LayerScale, no_embed_class (timm's file and the release's gamma_1/gamma_2 names)
    "deit3.safetensors": ("deit3", "safetensors", {}, "logits"),
    "deit3.release": ("deit3", "release", {}, "logits"),
    "deit3.safetensors@48": ("deit3", "safetensors", dict(img_size=48), "logits"),
    # DINOv2: the release (518 px -> 37x37 grid; here 56 px -> 4x4) resampled to a fine-tuning size
    "dinov2.release": ("dinov2", "release", {}, "pre_logits"),  # the release has no head
    "dinov2.release@42/nc7": ("dinov2", "release", dict(img_size=42, num_classes=7), "pre_logits"),
    "dinov2_reg4.safetensors": ("dinov2_reg4", "safetensors", {}, "logits"),
    "dinov2_reg4.release": ("dinov2_reg4", "release", {}, "pre_logits"),
    "dinov2_reg4.release@56/nc7": (
        "dinov2_reg4",
        "release",
        dict(img_size=56, num_classes=7),
        "pre_logits",
    ),
    # CLIP image towers: pre_norm, eps 1e-5, no patch bias, the projection as head; OpenAI's names
    "clip.safetensors": ("clip", "safetensors", {}, "logits"),
    "clip.release": ("clip", "release", {}, "logits"),
    "clip.release/nc7": ("clip", "release", dict(num_classes=7), "pre_logits"),
    "clip_quickgelu.safetensors": ("clip_quickgelu", "safetensors", {}, "logits"),
    # SigLIP: no class token, MAP head (timm's file, OpenCLIP's timm trunk)
    "siglip.safetensors": ("siglip", "safetensors", {}, "logits"),
    "siglip.release": ("siglip", "release", {}, "logits"),
    "siglip.safetensors@48": ("siglip", "safetensors", dict(img_size=48), "logits"),
    "qk_norm.safetensors": ("qk_norm", "safetensors", {}, "logits"),
    # EVA-02: RoPE, SwiGLU (+ inner norm), q/k/v without k bias; RoPE grid rescaled at another size
    "eva02_b.safetensors": ("eva02_b", "safetensors", {}, "logits"),
    "eva02_b.safetensors@42": ("eva02_b", "safetensors", dict(img_size=42), "logits"),
    "eva02_b.safetensors/nc7": ("eva02_b", "safetensors", dict(num_classes=7), "pre_logits"),
    "eva02_ti.safetensors": ("eva02_ti", "safetensors", {}, "logits"),
    "eva02_clip.safetensors": ("eva02_clip", "safetensors", {}, "logits"),
    # dynamic_img_size: another input size, the position embedding / RoPE grid resampled on the fly
    "tiny16.safetensors~dyn32": (
        "tiny16",
        "safetensors",
        dict(dynamic_img_size=True),
        "logits",
        32,
    ),
    "dinov2_reg4.safetensors~dyn42": (
        "dinov2_reg4",
        "safetensors",
        dict(dynamic_img_size=True),
        "logits",
        42,
    ),
    "siglip.safetensors~dyn48": (
        "siglip",
        "safetensors",
        dict(dynamic_img_size=True),
        "logits",
        48,
    ),
    "eva02_b.safetensors~dyn42": (
        "eva02_b",
        "safetensors",
        dict(dynamic_img_size=True),
        "logits",
        42,
    ),
    # DINOv2 giant (timm's SwiGLUPacked; the release's w12 / w3)
    "dinov2_g.safetensors": ("dinov2_g", "safetensors", {}, "logits"),
    "dinov2_g.release": ("dinov2_g", "release", {}, "pre_logits"),
    # DINOv3: its RoPE grid normalised to [-1, 1] at any size (dynamic_img_size is timm's default)
    "dinov3_s.safetensors": ("dinov3_s", "safetensors", {}, "logits"),
    "dinov3_s.release": ("dinov3_s", "release", {}, "pre_logits"),
    "dinov3_s.safetensors/token": ("dinov3_s", "safetensors", dict(global_pool="token"), "logits"),
    "dinov3_s.safetensors~dyn48": (
        "dinov3_s",
        "safetensors",
        dict(dynamic_img_size=True),
        "logits",
        48,
    ),
    "dinov3_splus_qkvb.safetensors": ("dinov3_splus_qkvb", "safetensors", {}, "logits"),
    "dinov3_splus_qkvb.release": ("dinov3_splus_qkvb", "release", {}, "pre_logits"),
    "dinov3_splus_qkvb.safetensors~dyn48": (
        "dinov3_splus_qkvb",
        "safetensors",
        dict(dynamic_img_size=True),
        "logits",
        48,
    ),
    "xp.safetensors": ("xp", "safetensors", {}, "logits"),
    "pwee.safetensors": ("pwee", "safetensors", {}, "logits"),
    "eva02_e.safetensors": ("eva02_e", "safetensors", {}, "logits"),
    "aimv2.safetensors": ("aimv2", "safetensors", {}, "logits"),
    "aimv2.release": ("aimv2", "release", {}, "pre_logits"),
    "intern300m.safetensors": ("intern300m", "safetensors", {}, "logits"),
    "intern300m.safetensors@42": ("intern300m", "safetensors", dict(img_size=42), "logits"),
    "pe_core.safetensors": ("pe_core", "safetensors", {}, "logits"),
    "pe_core.safetensors@42": ("pe_core", "safetensors", dict(img_size=42), "logits"),
    "pe_core_g.safetensors": ("pe_core_g", "safetensors", {}, "logits"),
    "pe_spatial.safetensors": ("pe_spatial", "safetensors", {}, "logits"),
    "pe_lang.safetensors": ("pe_lang", "safetensors", {}, "logits"),
    "rope_vit.safetensors": ("rope_vit", "safetensors", {}, "logits"),
    "things.safetensors": ("things", "safetensors", {}, "logits"),
    "pe_core_rel.release": ("pe_core_rel", "release", {}, "logits"),
    "pe_core_g_rel.release": ("pe_core_g_rel", "release", {}, "logits"),
    "pe_lang_rel.release": ("pe_lang_rel", "release", {}, "logits"),
}
NO_HEAD_RELEASES = ("dinov2", "dinov3", "aimv2")  # backbones: the release has no head
# Perception Encoder release fixture -> its prefix (Core: under visual., beside the text tower)
PE_RELEASES = {"pe_core_rel": "visual.", "pe_core_g_rel": "visual.", "pe_lang_rel": ""}


def save(model, name, fmt, out_dir):
    state = model.state_dict()
    if fmt == "release":
        return save_release(model, name, os.path.join(out_dir, RELEASE[name]))
    path = os.path.join(out_dir, f"{name}.{fmt}")
    if name == "deit":  # DeiT's released checkpoints: the state dict under "model"
        torch.save({"model": state}, path)
    # MAE's: the encoder under "model" (norm, no head); full ones also carry the decoder
    elif name == "mae":
        c = state["cls_token"].shape[-1]
        extra = {
            "mask_token": torch.randn(1, 1, 32),
            "decoder_embed.weight": torch.randn(32, c),
            "decoder_embed.bias": torch.randn(32),
        }
        torch.save({"model": {**state, **extra}}, path)
    elif fmt == "safetensors":
        safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, path)
    elif fmt == "pth":
        torch.save(state, path)
    else:
        np.savez(path, **to_jax(state, model.blocks[0].attn.num_heads))
    return path


def save_release(model, name, path):
    """The weights in the family's own release format (timm's checkpoint_filter_fn converts it)."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if name == "deit3":  # facebookresearch/deit: block-level gamma_1 / gamma_2, under "model"
        state = {
            k.replace("ls1.gamma", "gamma_1").replace("ls2.gamma", "gamma_2"): v
            for k, v in state.items()
        }
        torch.save({"model": state}, path)
    elif name.startswith("dinov3"):
        torch.save(to_dinov3_release(state), path)
    # facebookresearch/dinov2: no head, mask_token, registers as register_tokens
    elif name.startswith("dinov2"):
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        state = {  # ViT-g's packed SwiGLU
            k.replace("mlp.fc1.", "mlp.w12." if name == "dinov2_g" else "mlp.fc1.").replace(
                "mlp.fc2.", "mlp.w3." if name == "dinov2_g" else "mlp.fc2."
            ): v
            for k, v in state.items()
        }
        c = state["cls_token"].shape[-1]
        state["mask_token"] = torch.randn(1, c)
        if "reg_token" in state:  # the class token's position is separate in the release
            cls_pos = torch.randn(1, 1, c)
            state["register_tokens"] = state.pop("reg_token")
            state["cls_token"] = state["cls_token"] - cls_pos
            state["pos_embed"] = torch.cat([cls_pos, state["pos_embed"]], dim=1)
        torch.save(state, path)
    elif name == "aimv2":  # apple/ml-aim's safetensors: no head
        safetensors.torch.save_file(to_aimv2_release(state), path)
    elif name in PE_RELEASES:
        torch.save(to_pe_release(state, PE_RELEASES[name]), path)
    elif name == "clip":  # OpenAI CLIP: the image tower under visual.*, the text tower beside it
        torch.save(
            {
                **to_openai_clip(state),
                "token_embedding.weight": torch.randn(8, 16),
                "logit_scale": torch.tensor(4.6),
            },
            path,
        )
    elif name == "siglip":  # OpenCLIP's timm-trunk models: visual.trunk.*, the text tower beside it
        torch.save(
            {
                **{f"visual.trunk.{k}": v for k, v in state.items()},
                "text.token_embedding.weight": torch.randn(8, 16),
                "logit_bias": torch.tensor(-10.0),
            },
            path,
        )
    return path


def to_dinov3_release(state):
    """timm's DINOv3 names -> facebookresearch/dinov3's (the inverse of timm's filter): no head,
    storage_tokens, ls1/ls2, the SwiGLU's w1/w2/w3, a q/k/v bias with a k part that its bias_mask
    zeroes (random here, so that loading it as given shows), a pre-training mask_token and the RoPE
    periods."""
    out = {}
    swiglu = "blocks.0.mlp.fc1_g.weight" in state  # DINOv3's GELU MLP keeps fc1 / fc2
    for k, v in state.items():
        if k.startswith("head."):
            continue
        k = k.replace("reg_token", "storage_tokens").replace("gamma_1", "ls1.gamma")
        k = k.replace("gamma_2", "ls2.gamma").replace("mlp.fc1_g.", "mlp.w1.")
        k = k.replace("mlp.fc1_x.", "mlp.w2.")
        k = k.replace("mlp.fc2.", "mlp.w3.") if swiglu else k
        if k.endswith((".attn.q_bias", ".attn.v_bias")):
            continue
        out[k] = v
    c = state["cls_token"].shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    for i in range(depth):
        t = f"blocks.{i}.attn."
        q, v = state.get(t + "q_bias"), state.get(t + "v_bias")
        if q is None:  # the no-bias models' releases hold zero q/v biases
            q, v = torch.zeros(c), torch.zeros(c)
        out[t + "qkv.bias"] = torch.cat([q, torch.randn(c), v])
        out[t + "qkv.bias_mask"] = torch.cat([torch.ones(c), torch.zeros(c), torch.ones(c)])
    out["mask_token"] = torch.randn(1, c)
    out["rope_embed.periods"] = torch.rand(c // 16)
    return out


# timm's AIMv2 name -> apple/ml-aim's (a substring, replaced in order): timm's _convert_aimv2
# inverted
_AIMV2 = [
    ("norm1", "norm_1"),
    ("norm2", "norm_2"),
    ("mlp.fc1_g", "mlp.fc1"),
    ("mlp.fc1_x", "mlp.fc3"),
    ("patch_embed.", "preprocessor.patchifier."),
    ("pos_embed", "preprocessor.pos_embed"),
]


def to_aimv2_release(state):
    out = {}
    for k, v in state.items():
        if k.startswith("head."):
            continue
        for old, new in _AIMV2:
            k = k.replace(old, new)
        if k.startswith("norm."):
            k = "post_trunk_norm." + k[len("norm.") :]
        if not k.startswith("preprocessor."):
            k = "trunk." + k
        out[k] = v.contiguous()
    return out


# timm's Perception Encoder name -> facebookresearch/perception_models' (a substring, replaced in
# order): timm's _convert_pe inverted; the attention pool's q and kv are joined apart
_PE = [
    ("patch_embed.proj", "conv1"),
    ("norm_pre", "ln_pre"),
    ("blocks.", "transformer.resblocks."),
    ("norm1", "ln_1"),
    ("norm2", "ln_2"),
    ("gamma_1", "ls_1.gamma"),
    ("gamma_2", "ls_2.gamma"),
    ("attn.qkv.", "attn.in_proj_"),
    ("attn.proj", "attn.out_proj"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
    ("attn_pool.latent", "attn_pool.probe"),
    ("attn_pool.norm", "attn_pool.layernorm"),
    ("attn_pool.proj", "attn_pool.attn.out_proj"),
]


def to_pe_release(state, prefix):
    """The tower under `prefix`; with "visual.", a text tower beside it whose names (a block, a
    position embedding) are the tower's without the prefix: a reader must keep them apart."""
    out = {}
    for k, v in state.items():
        if k == "cls_token":
            out["class_embedding"] = v.reshape(-1)
        elif k == "pos_embed":
            out["positional_embedding"] = v[0]
        elif k == "head.weight":
            out["proj"] = v.T.contiguous()
        elif k == "head.bias":
            assert not v.any(), "PE's projection has no bias"
        elif k.startswith("norm."):
            out["ln_post." + k[len("norm.") :]] = v
        elif k.startswith(("attn_pool.q.", "attn_pool.kv.")):
            kind = k.rsplit(".", 1)[1]
            q, kv = state[f"attn_pool.q.{kind}"], state[f"attn_pool.kv.{kind}"]
            out[f"attn_pool.attn.in_proj_{kind}"] = torch.cat([q, kv])
        else:
            for a, b in _PE:
                k = k.replace(a, b)
            out[k] = v
    out = {prefix + k: v for k, v in out.items()}
    if prefix:
        out["positional_embedding"] = torch.randn(8, 16)
        out["token_embedding.weight"] = torch.randn(8, 16)
        out["transformer.resblocks.0.attn.in_proj_weight"] = torch.randn(48, 16)
        out["transformer.resblocks.9.ln_1.weight"] = torch.randn(16)
        out["logit_scale"] = torch.tensor(4.6)
    return out


def to_openai_clip(state):
    """timm's CLIP tower names -> OpenAI CLIP's (the inverse of timm's _convert_openai_clip)."""
    swaps = [
        ("patch_embed.proj", "conv1"),
        ("norm_pre", "ln_pre"),
        ("blocks.", "transformer.resblocks."),
        ("norm1", "ln_1"),
        ("norm2", "ln_2"),
        ("attn.qkv.", "attn.in_proj_"),
        ("attn.proj", "attn.out_proj"),
        ("mlp.fc1", "mlp.c_fc"),
        ("mlp.fc2", "mlp.c_proj"),
    ]
    out = {}
    for k, v in state.items():
        if k == "cls_token":
            out["visual.class_embedding"] = v.reshape(-1)
        elif k == "pos_embed":
            out["visual.positional_embedding"] = v[0]
        elif k == "head.weight":
            out["visual.proj"] = v.T.contiguous()
        elif k == "head.bias":
            continue  # CLIP's projection has no bias (timm's head gets zeros)
        elif k.startswith("norm."):
            out["visual." + k.replace("norm.", "ln_post.")] = v
        else:
            for a, b in swaps:
                k = k.replace(a, b)
            out["visual." + k] = v
    return out


def timm_load(path, timm_name, fixture_kwargs, overrides):
    """The checkpoint loaded the way its users load it in timm (MAE: its fine-tuning recipe)."""
    kwargs = {**fixture_kwargs, **overrides}
    if os.path.basename(path).startswith("mae"):
        model = timm.create_model(timm_name, pretrained=False, **kwargs).eval()
        model.load_state_dict(torch.load(path, weights_only=True)["model"], strict=False)
        return model
    if path.endswith(".npz"):  # timm's _load_weights; it drops a head of another size itself
        cfg = dict(file=path, custom_load=True)
    else:  # the saved num_classes, so that timm drops the head exactly when it differs
        cfg = dict(file=path, num_classes=fixture_kwargs["num_classes"])
    if "release" in path and os.path.basename(path).startswith(NO_HEAD_RELEASES):
        # the release has no head: timm keeps its own init
        cfg["num_classes"] = 0
    return timm.create_model(
        timm_name, pretrained=True, pretrained_cfg_overlay=cfg, **kwargs
    ).eval()


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(1234)
    inputs = {s: torch.randn(2, 3, s, s) for s in (28, 32, 48, 64, 42, 56)}
    oracle = {f"input@{s}": x.numpy() for s, x in inputs.items()}
    manifest = {"fixtures": {}, "cases": {}}
    originals = {}
    for seed, (name, (timm_name, kwargs, formats)) in enumerate(FIXTURES.items()):
        model = build(
            seed,
            timm_name,
            sharp=name not in ("tiny16", "small_avg", "p14", "deit", "mae"),
            head_bias=name not in PE_RELEASES,
            **kwargs,
        )
        originals[name] = model
        files = {fmt: os.path.basename(save(model, name, fmt, out_dir)) for fmt in formats}
        manifest["fixtures"][name] = dict(timm_name=timm_name, timm_kwargs=kwargs, files=files)
    # unpickling this needs argparse.Namespace, which a weights-only reader must refuse
    torch.save(
        {"model": {"cls_token": torch.zeros(1, 1, 4)}, "args": argparse.Namespace(lr=0.1)},
        os.path.join(out_dir, "unsafe.pth"),
    )

    with torch.no_grad():
        for case, (name, fmt, overrides, output, *size) in CASES.items():
            fixture = manifest["fixtures"][name]
            kwargs, timm_name = fixture["timm_kwargs"], fixture["timm_name"]
            path = os.path.join(out_dir, fixture["files"][fmt])
            model = timm_load(path, timm_name, kwargs, overrides)
            size = size[0] if size else overrides.get("img_size", kwargs["img_size"])
            x = inputs[size]
            feats = model.forward_features(x)
            y = model.forward_head(feats, pre_logits=output == "pre_logits")
            if not overrides and not (name.startswith(NO_HEAD_RELEASES) and fmt == "release"):
                # loading as-is must reproduce the saved model (DINOv2's release has no head)
                ref = originals[name].forward_head(originals[name].forward_features(x))
                diff = (y - ref).abs().max().item()
                assert diff < 1e-5, f"{case}: timm reload differs from the saved model by {diff}"
            oracle[f"{case}/output"] = y.numpy()
            # the resampled embeddings themselves, checked tighter than the logits
            if getattr(model, "pos_embed", None) is not None:
                oracle[f"{case}/pos_embed"] = model.pos_embed.numpy()
            if "patch_size" in overrides:
                oracle[f"{case}/patch_embed"] = model.patch_embed.proj.weight.numpy()
            manifest["cases"][case] = dict(
                fixture=name,
                timm_name=timm_name,
                file=fixture["files"][fmt],
                kwargs={**kwargs, **overrides},
                input=f"input@{size}",
                output=output,
            )
            print(f"{case:34s} {output:10s} {tuple(y.shape)}")
    np.savez_compressed(os.path.join(out_dir, "oracle.npz"), **oracle)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    default = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "timm")
    main(sys.argv[1] if len(sys.argv) > 1 else default)
