# AdamW with no weight decay on biases and norms (LiBai's parameter groups).
import oneflow as flow
from libai.config import LazyCall
from libai.optim import get_default_optimizer_params

optim = LazyCall(flow.optim.AdamW)(
    params=LazyCall(get_default_optimizer_params)(
        # params.model is set to the model by LiBai before the optimizer is built
        # clip the whole model's gradient norm (torch's clip_grad_norm_); None: no clipping
        clip_grad_max_norm=1.0,
        clip_grad_norm_type=2.0,  # the norm's order
        weight_decay_norm=0.0,
        weight_decay_bias=0.0,
        overrides={"pos_embed": {"weight_decay": 0.0}, "cls_token": {"weight_decay": 0.0}},
    ),
    lr=5e-4,
    weight_decay=0.05,
    betas=(0.9, 0.999),
    eps=1e-8,
    do_bias_correction=True,
)
