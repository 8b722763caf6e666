"""Make the InternViT fixtures that tests/pretrained/ compare against: OpenGVLab's own model code
(InternViT-6B is not in timm) is the oracle.

Regenerate in the timm venv (see make_timm_fixtures.py), with transformers 4.46 and einops added,
and OpenGVLab's `modeling_intern_vit.py` + `configuration_intern_vit.py` in SOURCE_DIR (from the
Hugging Face repo OpenGVLab/InternViT-6B-448px-V2_5, or InternVL's GitHub repo,
internvl_chat/internvl/model/internvl_chat/):

    .venv-timm/bin/pip install transformers==4.46.3 einops "huggingface_hub<1.0" "tokenizers<0.21"
    .venv-timm/bin/python generators/make_internvit_fixtures.py SOURCE_DIR [OUT_DIR]

Every model is OpenGVLab's InternVisionModel, randomly initialised (fixed seed) with small dims,
every tensor perturbed so that a wrong mapping shows:
- "intern6b": InternViT-6B's structure (RMSNorm, no q/k/v bias, a qk RMSNorm over the whole width,
  LayerScale, no final norm), saved as InternViT's own safetensors file, and again as an InternVL
  chat checkpoint in two safetensors shards with an index (the tower under `vision_model.`, beside
  a projector and a language model);
- "intern300m": InternViT-300M's (LayerNorm, q/k/v bias, no qk norm), its own file.
Outputs in OUT_DIR (default tests/fixtures/internvit): the files, oracle.npz ("<case>/output":
the class token of the last hidden state, OpenGVLab's `pooler_output`, per case of manifest.json,
and the inputs) and manifest.json (per case: our model name, kwargs, file, input, output kind).
"""

import importlib
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import timm_venv  # noqa: F401  (declares torchvision's ops: before timm is imported)
import torch

# isort: split
import safetensors.torch  # noqa: E402

SMALL = dict(image_size=28, patch_size=7, hidden_size=64, num_attention_heads=4)
FIXTURES = {
    # name: (our zoo name, InternVisionConfig kwargs, our kwargs for the same model)
    "intern6b": (
        "vit_intern6b_patch14_448",
        dict(
            SMALL,
            intermediate_size=256,
            num_hidden_layers=2,
            qkv_bias=False,
            qk_normalization=True,
            norm_type="rms_norm",
        ),
        dict(img_size=28, patch_size=7, embed_dim=64, depth=2, num_heads=4, num_classes=0),
    ),
    "intern300m": (
        "vit_intern300m_patch14_448",
        dict(
            SMALL,
            intermediate_size=256,
            num_hidden_layers=2,
            qkv_bias=True,
            qk_normalization=False,
            norm_type="layer_norm",
        ),
        dict(img_size=28, patch_size=7, embed_dim=64, depth=2, num_heads=4, num_classes=0),
    ),
}
CASES = {
    # case: (fixture, file, input size); 42 px: a 6x6 grid, the 4x4 position embedding resampled
    "intern6b.release": ("intern6b", "intern6b_release.safetensors", 28),
    "intern6b.release~dyn42": ("intern6b", "intern6b_release.safetensors", 42),
    "intern6b.chat_shards": ("intern6b", "intern6b_chat.safetensors.index.json", 28),
    "intern300m.release": ("intern300m", "intern300m_release.safetensors", 28),
}


def import_opengvlab(source_dir, tmp):
    """OpenGVLab's modules, imported as a package (the modeling file imports its config
    relatively)."""
    package = os.path.join(tmp, "opengvlab_internvit")
    os.makedirs(package)
    for name in ("modeling_intern_vit.py", "configuration_intern_vit.py"):
        shutil.copy(os.path.join(source_dir, name), package)
    open(os.path.join(package, "__init__.py"), "w").close()
    sys.path.insert(0, tmp)
    return importlib.import_module("opengvlab_internvit.modeling_intern_vit")


def build(module, seed, config_kwargs):
    torch.manual_seed(seed)
    config = module.InternVisionConfig(use_flash_attn=False, drop_path_rate=0.0, **config_kwargs)
    model = module.InternVisionModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".ls1", ".ls2")):
                p.copy_(0.5 + torch.rand_like(p))
            elif name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
            elif name.endswith("qkv.weight"):  # peaked attention: where tokens sit matters
                p[: 2 * p.shape[0] // 3].mul_(4.0)
    return model


def save_chat_shards(state, out_dir):
    """An InternVL chat checkpoint: the tower under vision_model., a projector and a language model
    beside it, in two shards listed by a Hugging Face index."""
    state = {f"vision_model.{k}": v for k, v in state.items()}
    state["mlp1.0.weight"] = torch.randn(64)
    state["language_model.model.layers.0.self_attn.q_proj.weight"] = torch.randn(8, 8)
    names = sorted(state)
    shards = {"intern6b_chat-00001-of-00002.safetensors": names[: len(names) // 2]}
    shards["intern6b_chat-00002-of-00002.safetensors"] = names[len(names) // 2 :]
    weight_map = {}
    for shard, keys in shards.items():
        safetensors.torch.save_file({k: state[k] for k in keys}, os.path.join(out_dir, shard))
        weight_map.update({k: shard for k in keys})
    with open(os.path.join(out_dir, "intern6b_chat.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=1, sort_keys=True)


def main(source_dir, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        module = import_opengvlab(source_dir, tmp)
        models = {}
        for seed, (name, (_, config_kwargs, _)) in enumerate(FIXTURES.items()):
            models[name] = build(module, seed, config_kwargs)
            state = {k: v.contiguous() for k, v in models[name].state_dict().items()}
            path = os.path.join(out_dir, f"{name}_release.safetensors")
            safetensors.torch.save_file(state, path)
            if name == "intern6b":
                save_chat_shards(state, out_dir)
        torch.manual_seed(1234)
        inputs = {s: torch.randn(2, 3, s, s) for s in (28, 42)}
        oracle = {f"internvit_input@{s}": x.numpy() for s, x in inputs.items()}
        manifest = {"fixtures": {}, "cases": {}}
        with torch.no_grad():
            for case, (name, file, size) in CASES.items():
                zoo_name, config_kwargs, kwargs = FIXTURES[name]
                manifest["fixtures"][name] = dict(config=config_kwargs)
                pooled = models[name](pixel_values=inputs[size]).pooler_output
                oracle[f"{case}/output"] = pooled.numpy()
                manifest["cases"][case] = dict(
                    fixture=name,
                    timm_name=zoo_name,
                    file=file,
                    kwargs=kwargs,
                    input=f"internvit_input@{size}",
                    output="pre_logits",
                )
                print(f"{case:28s} {tuple(pooled.shape)}")
    np.savez_compressed(os.path.join(out_dir, "oracle.npz"), **oracle)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    default = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "internvit")
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else default)
