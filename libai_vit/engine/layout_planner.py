"""Analytic cost model of this ViT at a DP x TP x PP layout: FLOPs, per-rank memory, communication.

Arithmetic only (no tensor is built), so tools can plan before anything is launched; blocks go to
pipeline stages by `parallel.stage_of_layers`, the rule training uses. The model follows the
Megatron papers (Narayanan et al. 2021, "Efficient large-scale language model training";
Korthikanti et al. 2022, "Reducing activation recomputation") applied to this ViT in fp32:

- FLOPs: every Linear costs 2·m·n·k forward, attention 2·2·s²·h per layer; training = 3x forward.
- Parameters / gradients / AdamW state: 4 + 4 + 8 bytes per parameter on each rank holding it;
  TP splits the Linears (not LayerNorms, row-parallel biases, embeddings), PP splits the blocks.
  ZeRO (`zero_stage`) splits the AdamW state (stage 1) and the gradients (stage 2) over DP ranks.
- Activations saved for backward per layer and micro-batch, in elements (Korthikanti et al.'s form):
  s·b·h·(c_r + c_s/t) + 2·a·s²·b/t, with c_r / c_s the s·b·h tensors TP replicates / splits in this
  implementation; nn.Graph on CPU holds GRAPH_ACT_FACTOR times more (no buffer reuse).
- 1F1B (nn.Graph): stage p holds the activations of min(PP - p, M) micro-batches in flight; eager
  mode runs the stages one after another, one micro-batch at a time.
- Communication per step and rank: DP ring all-reduce of the gradients 2·(d-1)/d·bytes; TP two
  all-reduces forward and two backward per layer of s·b·h (twice that for a parallel-things
  block's two branches); PP one s·b·h send per micro-batch and direction per stage boundary.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from libai_vit.layers.mlp import mlp_hidden
from libai_vit.parallel import stage_of_layers

BYTES = 4  # fp32 everywhere on CPU
# s·b·h activation tensors a block keeps for backward in eager mode, fitted to OneFlow 0.9 CPU peak
# RSS (tests/engine/test_layout_planner.py) with libai_vit.kernels loaded, as set-up builds them:
# those TP replicates (block input, the fused LayerNorms' outputs, residuals, row-parallel outputs)
# and those it splits with the heads / MLP columns (qkv, q/k/v, attention output, fc1 and GELU
# outputs); plus the 2·a·s²·b scores and softmax output. Without the kernels LayerNorm is composed
# of primitive ops whose intermediates add about 10 replicated tensors per block.
ACT_SBH_REPLICATED = 10
ACT_SBH_SPLIT = 5
# Under sequence parallelism (eager) the replicated tensors split along the tokens, the inputs of
# qkv and fc1 too (all-gathered again in the backward pass) but for about this many (measured,
# ViT-B at TP=2: 0.80 of the activations per image without it).
ACT_SBH_SP_WHOLE = 4
# Recomputing the attention core also drops this many s·b·h tensors split over TP (q, k, v copies)
# besides the scores and softmax output (measured: ViT-B, eager, 0.12 GiB of 0.29).
ACT_SBH_ATTENTION_CORE = 3
# nn.Graph on CPU keeps the forward's buffers and adds the recomputed ones: measured +0.5 of the
# activations with every block recomputed (ViT-B, one process: 3.87 -> 4.50 GiB).
GRAPH_RECOMPUTE_EXTRA = 0.5
# nn.Graph on CPU gives intermediates (forward and backward) their own buffers rather than reusing
# them as eager's allocator does: measured 4.4x eager's activation memory for this ViT.
GRAPH_ACT_FACTOR = 4.4
# A rank's memory beyond parameters and activations (workspaces, comm buffers, the compiled plan),
# measured against a model-less rank.
RUNTIME_OVERHEAD = {"eager": 50 * 2**20, "graph": 130 * 2**20}
# A training rank's own memory beside the model's share (OneFlow, LiBai's trainer, the data
# loader): a ViT-Ti-width run's peak (benchmarks.memory --size tiny) minus its estimate.
PROCESS_BYTES = {"eager": 0.38 * 2**30, "graph": 0.53 * 2**30}
# GFLOP/s a matmul-bound CPU core sustains; overridden with a measured number where one exists.
DEFAULT_CORE_GFLOPS = 40.0
# Fixed cost of one block's forward + backward for one micro-batch (~60 op launches): why tiny
# micro-batches lose even when the FLOPs are the same.
LAYER_OVERHEAD_S = 5e-3
# Bytes/s between processes on one host (shared-memory transport), for the communication estimate.
DEFAULT_LINK_GBS = 2.0


@dataclass(frozen=True)
class Device:
    """What the estimate assumes of a rank's device; only "cpu" is measured (constants above)."""

    act_factor: float  # nn.Graph's activation memory over eager's
    overhead_bytes: float  # the runtime's own memory per rank
    gflops: float  # sustained fp32 GFLOP/s
    link_gbs: float  # GB/s between ranks


DEVICES = {
    "cpu": Device(
        GRAPH_ACT_FACTOR, RUNTIME_OVERHEAD["graph"], DEFAULT_CORE_GFLOPS, DEFAULT_LINK_GBS
    ),
    # NOT measured (no GPU runs OneFlow 0.9 here): nn.Graph on CUDA reuses activation buffers
    # (factor 1), ~1 GiB of CUDA context and cuBLAS workspace, half of the 19.5 TFLOP/s fp32 peak,
    # NVLink 300 GB/s.
    "a100-80gb": Device(1.0, 2**30, 9750.0, 300.0),
}


@dataclass(frozen=True)
class ViTShape:
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    # the giants' MLPs: a SwiGLU (VisionTransformer's mlp_layer, Eva's swiglu_mlp) has three
    # projections; timm's packed one counts gate and value units in mlp_ratio (DINOv2-g)
    mlp_layer: str = "mlp"
    swiglu_mlp: bool = False
    swiglu_align_to: int = 0
    reg_tokens: int = 0  # registers (Eva's num_reg_tokens): tokens beside the class token
    num_reg_tokens: int = 0
    # 'parallel_things' (timm's ParallelThingsBlock) holds two attentions and two MLPs a block
    block_fn: str = "block"

    @property
    def tokens(self):
        return (self.img_size // self.patch_size) ** 2 + 1 + self.reg_tokens + self.num_reg_tokens

    @property
    def gated(self):
        return self.swiglu_mlp or self.mlp_layer in ("swiglu", "swiglu_packed")

    @property
    def branches(self):
        return 2 if self.block_fn == "parallel_things" else 1

    @property
    def mlp_matrices(self):
        return 3 if self.gated else 2

    @property
    def hidden(self):
        kind = "swiglu" if self.swiglu_mlp else self.mlp_layer
        return mlp_hidden(self.embed_dim, self.mlp_ratio, kind, self.swiglu_align_to)[1]

    @classmethod
    def from_config(cls, model_cfg):
        keys = cls.__dataclass_fields__
        return cls(
            **{
                k: (
                    model_cfg[k] if not isinstance(model_cfg[k], (list, tuple)) else model_cfg[k][0]
                )
                for k in keys
                if k in model_cfg and model_cfg[k] is not None
            }
        )


def forward_flops_per_image(m: ViTShape) -> float:
    s, h, f = m.tokens, m.embed_dim, m.hidden
    patch = 2 * (s - 1) * h * m.in_chans * m.patch_size**2
    block = m.branches * (2 * s * h * (3 * h + h + m.mlp_matrices * f) + 2 * 2 * s * s * h)
    return patch + m.depth * block + 2 * h * m.num_classes


def train_flops_per_image(m: ViTShape) -> float:
    return 3 * forward_flops_per_image(m)


def blocks_per_stage(
    m: ViTShape, pp: int, stage_layers: Optional[Sequence[int]] = None
) -> List[int]:
    """Blocks per stage: `stage_layers` (train.dist.pipeline_stage_layers) or the even split."""
    stages = stage_of_layers(m.depth, pp, stage_layers)
    return [stages.count(p) for p in range(pp)]


def parameter_counts(
    m: ViTShape, tp: int, pp: int, stage_layers: Optional[Sequence[int]] = None
) -> List[float]:
    """Parameters held by one rank of each pipeline stage."""
    h, f = m.embed_dim, m.hidden
    # column/row-parallel weights, column biases (a SwiGLU's two input projections)
    split = 3 * h * h + 3 * h + h * h + (m.mlp_matrices - 1) * (h * f + f) + f * h
    replicated = 4 * h + 2 * h  # two LayerNorms, row-parallel biases (dense, fc2)
    per_block = m.branches * (split / tp + replicated)
    first = h * m.in_chans * m.patch_size**2 + h + h + m.tokens * h  # patch conv, cls, pos
    last = 2 * h + h * m.num_classes + m.num_classes  # norm, head (replicated in LiBai's Linear)
    counts = [n * per_block for n in blocks_per_stage(m, pp, stage_layers)]
    counts[0] += first
    counts[-1] += last
    return counts


@dataclass
class Plan:
    dp: int
    tp: int
    pp: int
    micro_batch: int
    num_micro: int  # micro-batches per step (gradient accumulation / pipeline)
    param_bytes: float  # params + grads + AdamW states + runtime overhead, worst rank
    act_bytes: float  # activations kept for backward, worst rank
    comm_bytes: float  # sent per rank per step, worst rank
    step_s: float  # estimated step time
    notes: List[str] = field(default_factory=list)

    @property
    def world(self):
        return self.dp * self.tp * self.pp

    @property
    def global_batch(self):
        return self.micro_batch * self.dp * self.num_micro

    @property
    def mem_bytes(self):
        return self.param_bytes + self.act_bytes

    @property
    def images_per_s(self):
        return self.global_batch / self.step_s


@dataclass(frozen=True)
class Recompute:
    """train.activation_checkpoint: blocks 0, every, 2·every, ... recompute their whole forward
    ("block") or their attention core ("attention") in backward."""

    every: int = 1
    granularity: str = "block"


def activation_bytes(
    m: ViTShape,
    tp: int,
    pp: int,
    micro_batch: int,
    num_micro: int,
    graph=True,
    graph_act_factor: float = GRAPH_ACT_FACTOR,
    stage_layers: Optional[Sequence[int]] = None,
    sequence_parallel: bool = False,
    recompute: Optional[Recompute] = None,
) -> float:
    """Worst rank's activations: under 1F1B stage 0 keeps min(PP, M) micro-batches of its layers;
    eager mode keeps one. A recomputed block keeps its input (or all but its attention core), and
    one block's worth is live again while it is recomputed."""
    s, h, a, b = m.tokens, m.embed_dim, m.num_heads, micro_batch
    sbh = s * b * h
    replicated = ACT_SBH_REPLICATED
    if sequence_parallel and tp > 1:
        replicated = ACT_SBH_SP_WHOLE + (ACT_SBH_REPLICATED - ACT_SBH_SP_WHOLE) / tp
    scores = m.branches * 2 * a * s * s * b / tp
    full = m.branches * sbh * (replicated + ACT_SBH_SPLIT / tp) + scores
    if recompute is None:
        kept, live = full, 0.0
    elif recompute.granularity == "attention":
        live = scores + m.branches * sbh * ACT_SBH_ATTENTION_CORE / tp
        kept = full - live
    else:
        kept, live = sbh / (tp if sequence_parallel else 1), full
    stages = stage_of_layers(m.depth, pp, stage_layers)
    worst = 0.0
    for p in range(pp):
        layers = [i for i, st in enumerate(stages) if st == p]
        again = 0 if recompute is None else sum(i % recompute.every == 0 for i in layers)
        if graph:  # the graph keeps the forward's buffers and adds the recomputed ones
            per_micro = full * (len(layers) + GRAPH_RECOMPUTE_EXTRA * again)
        else:
            per_micro = (len(layers) - again) * full + again * kept + (live if again else 0.0)
        in_flight = min(pp - p, num_micro) if pp > 1 and graph else 1
        worst = max(worst, in_flight * per_micro)
    return worst * BYTES * (graph_act_factor if graph else 1.0)


def rank_peak_bytes(plan: "Plan", graph=True) -> float:
    """The peak resident memory of a rank of tools/train_net.py on CPU: the plan's share and the
    process's own."""
    return plan.mem_bytes + PROCESS_BYTES["graph" if graph else "eager"]


def optimizer_state_bytes(
    m: ViTShape,
    dp: int,
    tp: int,
    pp: int,
    zero_stage: int = 0,
    stage_layers: Optional[Sequence[int]] = None,
) -> float:
    """AdamW's exp_avg and exp_avg_sq on the worst rank; ZeRO splits them over the DP ranks."""
    return (
        max(parameter_counts(m, tp, pp, stage_layers)) * 2 * BYTES / (dp if zero_stage >= 1 else 1)
    )


def plan(
    m: ViTShape,
    dp: int,
    tp: int,
    pp: int,
    micro_batch: int,
    num_micro: int,
    core_gflops: float = DEFAULT_CORE_GFLOPS,
    link_gbs: float = DEFAULT_LINK_GBS,
    graph=True,
    zero_stage: int = 0,
    device: str = "cpu",
    stage_layers: Optional[Sequence[int]] = None,
    sequence_parallel: bool = False,
    recompute: Optional[Recompute] = None,
) -> Plan:
    """`graph`: nn.Graph (the trainer's default) or eager. `device`:
    a key of DEVICES for the memory model (speeds come from `core_gflops` / `link_gbs`).
    `stage_layers`: blocks per stage (train.dist.pipeline_stage_layers; None: the even split).
    `sequence_parallel` / `recompute`: train.dist.sequence_parallel, train.activation_checkpoint."""
    dev = DEVICES[device]
    params = parameter_counts(m, tp, pp, stage_layers)
    # param_bytes: weights, grads (split over DP by ZeRO stage 2), AdamW exp_avg and exp_avg_sq, and
    # the runtime's own overhead
    grads = max(params) * BYTES / (dp if zero_stage >= 2 else 1)
    overhead = (
        RUNTIME_OVERHEAD["graph" if graph else "eager"] if device == "cpu" else dev.overhead_bytes
    )
    optimizer = optimizer_state_bytes(m, dp, tp, pp, zero_stage, stage_layers)
    param_bytes = max(params) * BYTES + grads + optimizer + overhead
    act = activation_bytes(
        m,
        tp,
        pp,
        micro_batch,
        num_micro,
        graph,
        dev.act_factor,
        stage_layers,
        sequence_parallel,
        recompute,
    )
    s, h, b = m.tokens, m.embed_dim, micro_batch
    sbh = s * b * h * BYTES
    layers_per_stage = max(blocks_per_stage(m, pp, stage_layers))  # the slowest stage sets the pace
    comm_dp = 2 * (dp - 1) / dp * max(params) * BYTES
    comm_tp = m.branches * 4 * 2 * (tp - 1) / tp * sbh * layers_per_stage * num_micro
    comm_pp = 2 * sbh * num_micro if pp > 1 else 0.0
    comm = comm_dp + comm_tp + comm_pp
    # Compute: the step's FLOPs spread over the ranks; 1F1B adds (PP-1) micro-batch slots of bubble,
    # and eager mode runs the stages one after another (each waits for the others: PP x).
    flops = train_flops_per_image(m) * micro_batch * dp * num_micro
    compute_s = flops / (dp * tp * pp) / (core_gflops * 1e9)
    bubble = 1.0 if pp == 1 else (num_micro + pp - 1) / num_micro if graph else float(pp)
    overhead_s = num_micro * layers_per_stage * LAYER_OVERHEAD_S
    step_s = (compute_s + overhead_s) * bubble + comm / (link_gbs * 1e9)
    notes = []
    if pp > 1 and graph:
        notes.append(f"1F1B bubble (PP-1)/M = {(pp - 1) / num_micro:.0%} of compute")
    elif pp > 1:
        notes.append(f"eager: the {pp} stages run one after another")
    if tp > 1:
        reduces = 4 * m.branches * layers_per_stage
        notes.append(f"TP all-reduces {comm_tp / 2**20:.0f} MB/step ({reduces} per micro-batch)")
    if dp > 1:
        notes.append(
            f"DP all-reduce of {max(params) * BYTES / 2**20:.0f} MB gradients once per step"
        )
    return Plan(dp, tp, pp, micro_batch, num_micro, param_bytes, act, comm, step_s, notes)


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def enumerate_plans(
    m: ViTShape,
    world: int,
    mem_bytes: float,
    global_batch: int,
    micro_batches: Optional[List[int]] = None,
    core_gflops: float = DEFAULT_CORE_GFLOPS,
    link_gbs: float = DEFAULT_LINK_GBS,
    zero_stage: int = 0,
    device: str = "cpu",
    stage_layers: Optional[Sequence[int]] = None,
    graph: bool = True,
) -> Dict[str, List[Plan]]:
    """Every DP x TP x PP = world (and micro-batch) that the model allows, split into those that fit
    `mem_bytes` per rank and those that do not; the fitting ones fastest first. `stage_layers`
    (train.dist.pipeline_stage_layers) applies to the layouts with as many stages; the others split
    evenly."""
    fits, too_big = [], []
    for tp in _divisors(world):
        if m.num_heads % tp or m.embed_dim % tp or m.hidden % tp:
            continue
        for pp in _divisors(world // tp):
            if pp > m.depth:
                continue
            dp = world // (tp * pp)
            for mb in micro_batches or [1, 2, 4, 8, 16, 32, 64]:
                if global_batch % (mb * dp):
                    continue
                split = (
                    stage_layers if stage_layers is not None and len(stage_layers) == pp else None
                )
                p = plan(
                    m,
                    dp,
                    tp,
                    pp,
                    mb,
                    global_batch // (mb * dp),
                    core_gflops,
                    link_gbs,
                    graph=graph,
                    zero_stage=zero_stage,
                    device=device,
                    stage_layers=split,
                )
                (fits if p.mem_bytes <= mem_bytes else too_big).append(p)
    fits.sort(key=lambda p: (p.step_s, p.mem_bytes))
    too_big.sort(key=lambda p: p.mem_bytes)
    return {"fits": fits, "too_big": too_big}
