# AdamW over LiBai's parameter groups: no weight decay on biases, norms and the names of the
# model's no_weight_decay().
import oneflow as flow
from libai.config import LazyCall

from libai_vit.optim import default_param_groups

optim = LazyCall(flow.optim.AdamW)(
    params=LazyCall(default_param_groups)(
        # params.model is set to the model by LiBai before the optimizer is built
        # clip the whole model's gradient norm (torch's clip_grad_norm_); None: no clipping
        clip_grad_max_norm=1.0,
        clip_grad_norm_type=2.0,  # the norm's order
        weight_decay_norm=0.0,  # norms' weights and biases
        weight_decay_bias=0.0,  # every bias
    ),
    lr=5e-4,
    weight_decay=0.05,
    betas=(0.9, 0.999),
    eps=1e-8,
    do_bias_correction=True,
)
