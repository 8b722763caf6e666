"""Launched by test_linear.py at TP=2: a small ViT of each block kind trained one step with and
without sequence parallelism. Saves (rank 0) every parameter's gradient in both runs, and the
most tokens a rank kept in the blocks for the backward pass in a residual-stream tensor (batch,
tokens, width).

    sequence_parallel_probe.py OUT.npz
"""

import sys

import numpy as np
import oneflow as flow
from omegaconf import DictConfig

import libai_vit  # noqa: F401  (applies the LiBai 0.1.1 compatibility fixes)
from libai_vit import parallel
from libai_vit.models.vision_transformer import VisionTransformer

WIDTH, DEPTH = 48, 2
KINDS = {  # 4x4 patches + the class token: 17 tokens, padded to 18 under sequence parallelism
    "block": dict(),
    "swiglu": dict(mlp_layer="swiglu", scale_mlp_norm=True),
    "parallel_scaling": dict(block_fn="parallel_scaling", qk_norm=True),
    "parallel_things": dict(block_fn="parallel_things", init_values=0.5),
}
images = np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype("float32")


def step(kind, sequence_parallel):
    """(each parameter's gradient, the most tokens a kept residual-stream tensor holds here)."""
    parallel.setup(
        DictConfig(
            dict(
                data_parallel_size=1,
                tensor_parallel_size=2,
                pipeline_parallel_size=1,
                sequence_parallel=sequence_parallel,
            )
        ),
        DEPTH,
    )
    model = VisionTransformer(
        img_size=32,
        patch_size=8,
        num_classes=5,
        embed_dim=WIDTH,
        depth=DEPTH,
        num_heads=4,
        mlp_ratio=3.0,  # 72 hidden units a rank: not WIDTH, which the probe looks for
        **KINDS[kind],
    )
    model.output = "tensor"
    x = flow.tensor(images, placement=parallel.placement(parallel.FIRST), sbp=parallel.batch_sbp())
    kept, in_block = [], []
    for block in model.blocks:
        block.register_forward_pre_hook(lambda module, inputs: in_block.append(1))
        block.register_forward_hook(lambda module, inputs, output: in_block.clear())

    def pack(t):
        local = t.to_local() if t.is_global else t
        if in_block and local.ndim == 3 and local.shape[-1] == WIDTH:
            kept.append(local.shape[1])
        return t

    with flow.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(x)
    (logits**2).sum().backward()
    grads = {}
    for name, p in model.named_parameters():
        whole = p.grad.to_global(sbp=[flow.sbp.broadcast] * len(p.grad.sbp))
        grads[name] = whole.to_local().numpy()
    return grads, max(kept)


out = {}
for kind in KINDS:
    for sp in (False, True):
        grads, tokens = step(kind, sp)
        tag = f"{kind}/{'sp' if sp else 'tp'}"
        out[f"{tag}/kept_tokens"] = np.array(tokens)
        for name, g in grads.items():
            out[f"{tag}/grad/{name}"] = g
if flow.env.get_rank() == 0:
    np.savez(sys.argv[1], **out)
