"""LiBai 0.1.1 on OneFlow 0.9.0 (and on CPU): the measured incompatibilities, fixed in one place.

`apply()` is idempotent and runs when `libai_vit` is imported. Each fix names what broke:

1. `layer_norm_affine` (every CPU layer_norm kernel) aborts with "TODO" on CPU: LiBai's layers build
   `libai_vit.layers.norm.LayerNorm`, which keeps CUDA's fused kernel and uses primitives on CPU.
2. `default_setup` runs `make` for NLP data helpers that the wheel does not ship, and exits: skipped
   (a ViT reads images, it never needs them).
3. `dist.ttol` gives the gathered loss/outputs a "cuda" placement: it now keeps the tensor's type.
4. evaluation's `pad_batch` builds "cuda" tensors and placements: run with "cuda" mapped to the
   device that exists.
5. OneFlow 0.9's nn.Graph proxies lack the `.origin` / `.config` that LiBai's graph code uses: given
   as properties over `to(nn.Module)` / `to(GraphModule)`.
6. (silent) `dist.get_data_parallel_rank()` is `rank // (TP*PP)`, wrong when DP > 1 and PP > 1:
   first and last stages read different samples and the model learns nothing. Replaced by the
   layout's rule.
7. (silent) AMP's dynamic loss scale and its good-step counter are graph variables named after the
   graph (`System-Train-DynamicLossScale-<graph name>-LossScale`): a train graph rebuilt (checkpoint
   boundary) or resumed has another name, so `load_state_dict` parked the old values under the old
   names and the scale restarted at 2^30 (fp16 then skips steps after every checkpoint). Renamed to
   the loading graph's name.
8. `train.zero_optimization.enabled=True` crashed every rank at graph build: LiBai's GraphBase calls
   `config.set_zero_redundancy_optimizer_mode("distributed_split")`, which OneFlow 0.9 turned into a
   RuntimeError in favour of `enable_zero`. It now calls `enable_zero(True, stage=1)` (the optimizer
   states split over DP ranks); LiBai itself then adds stage 2's and 3's NCCL settings.
"""

import oneflow as flow

_applied = False


def apply():
    global _applied
    if _applied:
        return
    _applied = True
    _cpu_layer_norm()
    _skip_data_helper_build()
    _device_aware_ttol()
    _device_aware_pad_batch()
    _graph_proxy_origin_config()
    _data_parallel_rank()
    _loss_scale_follows_graph()
    _zero_redundancy_optimizer()


def _cpu_layer_norm():
    import libai.layers as layers
    import libai.layers.transformer_layer as transformer_layer
    import libai.models.vision_transformer as libai_vit_model

    from libai_vit.layers.norm import LayerNorm

    for module in (layers, transformer_layer, libai_vit_model):
        module.LayerNorm = LayerNorm


def _skip_data_helper_build():
    import libai.engine.default as default

    default._compile_dependencies = lambda: None


def _device_aware_ttol():
    from libai.utils import distributed as dist

    original = dist.ttol

    def ttol(tensor, pure_local=False, ranks=None):
        if tensor.is_global and ranks is not None and tensor.placement.type != "cuda":
            # same as LiBai's, but on the tensor's own device type
            tensor = tensor.to_global(placement=flow.placement(tensor.placement.type, ranks))
            ranks = None
        return original(tensor, pure_local=pure_local, ranks=ranks)

    dist.ttol = ttol


class _CudaFallbackEnv:
    @staticmethod
    def all_device_placement(device):
        return flow.env.all_device_placement(_available(device))


class _CudaFallback:
    """`oneflow` as pad_batch sees it: "cuda" means the CPU when there is no CUDA."""

    env = _CudaFallbackEnv

    def __getattr__(self, name):
        return getattr(flow, name)

    @staticmethod
    def zeros(*shape, device=None, **kwargs):
        return flow.zeros(*shape, device=_available(device), **kwargs)


def _available(device):
    return "cpu" if device == "cuda" and not flow.cuda.is_available() else device


def _device_aware_pad_batch():
    import libai.evaluation.utils as evaluation_utils

    evaluation_utils.flow = _CudaFallback()


def _graph_proxy_origin_config():
    from oneflow import nn
    from oneflow.nn.graph import GraphModule
    from oneflow.nn.graph.proxy import ProxyModule

    if not hasattr(ProxyModule, "origin"):
        ProxyModule.origin = property(lambda self: self.to(nn.Module))
    if not hasattr(ProxyModule, "config"):
        ProxyModule.config = property(lambda self: self.to(GraphModule))


def _data_parallel_rank():
    from libai.utils import distributed as dist

    from libai_vit import parallel

    dist.get_data_parallel_rank = parallel.data_parallel_rank


LOSS_SCALE_PREFIX = "System-Train-DynamicLossScale-"
LOSS_SCALE_STATES = ("-LossScale", "-GoodStepCounter")


def loss_scale_key(graph_name, state="-LossScale"):
    return LOSS_SCALE_PREFIX + graph_name + state


def _loss_scale_follows_graph():
    from oneflow import nn

    original = nn.Graph.load_state_dict

    def load_state_dict(self, state_dict, strict=True):
        renamed = {}
        for key, value in state_dict.items():
            if isinstance(key, str) and key.startswith(LOSS_SCALE_PREFIX):
                key = next(
                    (
                        loss_scale_key(self.name, end)
                        for end in LOSS_SCALE_STATES
                        if key.endswith(end)
                    ),
                    key,
                )
            renamed[key] = value
        return original(self, renamed, strict)

    nn.Graph.load_state_dict = load_state_dict


def _zero_redundancy_optimizer():
    from oneflow.nn.graph.graph_config import GraphConfig

    def set_zero_redundancy_optimizer_mode(self, mode="distributed_split"):
        if mode != "distributed_split":
            raise ValueError(f"ZeRO mode {mode!r}: OneFlow 0.9 has only 'distributed_split'")
        self.enable_zero(True, stage=1)

    GraphConfig.set_zero_redundancy_optimizer_mode = set_zero_redundancy_optimizer_mode
