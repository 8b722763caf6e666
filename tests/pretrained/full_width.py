"""`vit_7b_patch16_dinov3` at its real width (4096 wide, 32 heads, SwiGLU of 8192 hidden units), 2
of its 40 blocks, at 32 px: a timm-format state dict drawn from a seed with numpy only, so that a
test writes the very file that generators/make_full_width_oracle.py handed to real timm (~670 MB in
float16: too big to commit; only timm's logits are, in tests/fixtures/timm/full_width_7b.npz).

Values: Linear weights N(0, 0.02) (like timm's init; q.k then spreads over a few units, so attention
is neither uniform nor one-hot), biases N(0, 0.1), norm scales 1 + N(0, 0.1), LayerScale
U(0.5, 1.5), tokens N(0, 1); each tensor from its own (seed, name) stream.
"""

import zlib

import numpy as np

NAME = "vit_7b_patch16_dinov3"
KWARGS = dict(depth=2, img_size=32, num_classes=10)  # timm's own kwargs otherwise
SEED = 7
EMBED, HIDDEN, PATCH, REGISTERS = 4096, 8192, 16, 4


def shapes():
    """timm's state dict names and shapes for NAME with KWARGS."""
    c, h = EMBED, HIDDEN
    out = {
        "cls_token": (1, 1, c),
        "reg_token": (1, REGISTERS, c),
        "patch_embed.proj.weight": (c, 3, PATCH, PATCH),
        "patch_embed.proj.bias": (c,),
    }
    for i in range(KWARGS["depth"]):
        t = f"blocks.{i}."
        out.update(
            {
                t + "gamma_1": (c,),
                t + "gamma_2": (c,),
                t + "norm1.weight": (c,),
                t + "norm1.bias": (c,),
                t + "attn.qkv.weight": (3 * c, c),
                t + "attn.proj.weight": (c, c),
                t + "attn.proj.bias": (c,),
                t + "norm2.weight": (c,),
                t + "norm2.bias": (c,),
                t + "mlp.fc1_g.weight": (h, c),
                t + "mlp.fc1_g.bias": (h,),
                t + "mlp.fc1_x.weight": (h, c),
                t + "mlp.fc1_x.bias": (h,),
                t + "mlp.fc2.weight": (c, h),
                t + "mlp.fc2.bias": (c,),
            }
        )
    n = KWARGS["num_classes"]
    out.update({"norm.weight": (c,), "norm.bias": (c,), "head.weight": (n, c), "head.bias": (n,)})
    return out


def tensor(name, shape):
    rng = np.random.default_rng([SEED, zlib.crc32(name.encode())])
    if name.endswith(("gamma_1", "gamma_2")):
        return rng.uniform(0.5, 1.5, shape).astype(np.float16)
    x = rng.standard_normal(shape, dtype=np.float32)
    if "norm" in name and name.endswith("weight"):
        x = 1.0 + 0.1 * x
    elif name.endswith("bias"):
        x *= 0.1
    elif not name.endswith("token"):
        x *= 0.02
    return x.astype(np.float16)


def state_dict():
    return {name: tensor(name, shape) for name, shape in shapes().items()}


def write(path):
    """Write the timm-format safetensors file to `path`."""
    from safetensors.numpy import save_file

    save_file(state_dict(), path)
    return path
