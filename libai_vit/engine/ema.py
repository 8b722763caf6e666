"""An exponential moving average of the model's weights, with timm's `ModelEmaV3` semantics.

The average is a copy of the model: same modules, same placement and SBP for every tensor (a split
weight's average is split the same way), so it updates with local element-wise ops at any layout
and is evaluated through its own eval graph like the model. It is updated after each optimizer step
with that step's number (1, 2, ...), as timm's train.py calls `ModelEmaV3.update(model, step)`:

    decay(step) = 0                                  if step - update_after_step - 1 <= 0
                = min(decay, max(min_decay, 1 - (1 + s / warmup_gamma) ** -warmup_power))  warm-up
                = decay                              otherwise,  s = step - update_after_step - 1
    ema = ema + (1 - decay) * (model - ema)          (floating tensors; others copied)
"""

import copy

import oneflow as flow


class ModelEma:
    def __init__(
        self,
        model,
        decay=0.9999,
        min_decay=0.0,
        update_after_step=0,
        use_warmup=False,
        warmup_gamma=1.0,
        warmup_power=2 / 3,
    ):
        self.module = copy.deepcopy(model)
        self.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.min_decay = min_decay
        self.update_after_step = update_after_step
        self.use_warmup = use_warmup
        self.warmup_gamma = warmup_gamma
        self.warmup_power = warmup_power

    def get_decay(self, step):
        step = max(0, step - self.update_after_step - 1)
        if step <= 0:
            return 0.0
        if self.use_warmup:
            decay = 1 - (1 + step / self.warmup_gamma) ** -self.warmup_power
            return max(min(decay, self.decay), self.min_decay)
        return self.decay

    @flow.no_grad()
    def update(self, model, step):
        weight = 1.0 - self.get_decay(step)
        for ema_v, model_v in zip(self.module.state_dict().values(), model.state_dict().values()):
            if ema_v.is_floating_point():
                ema_v.add_((model_v - ema_v) * weight)
            else:
                ema_v.copy_(model_v)

    @flow.no_grad()
    def set(self, model):
        for ema_v, model_v in zip(self.module.state_dict().values(), model.state_dict().values()):
            ema_v.copy_(model_v)

    def state_dict(self):
        return self.module.state_dict()

    @flow.no_grad()
    def load_state_dict(self, state):
        for name, value in self.module.state_dict().items():
            # a loaded tensor comes broadcast from rank 0: put it back on this tensor's placement
            # and SBP
            value.copy_(
                state[name].to_global(placement=value.placement, sbp=value.sbp)
                if value.is_global
                else state[name]
            )
