"""Where every tensor lives: the layout (DP x TP x PP) -> placements, SBP signatures and stage ids.

This is the one module that knows the rank arithmetic. LiBai's `dist` utilities hold the state
(`setup_dist_util`); `setup` here adds what LiBai 0.1.1 lacks (uneven pipeline splits) and the
functions below answer "which placement / SBP / stage" for the model, the data and the graph.

Rank order (LiBai's): ranks are cut into PP contiguous stages; inside a stage the ranks form a
(DP, TP) mesh, TP fastest. With DP=TP=PP=2: stage 0 = [[0, 1], [2, 3]], stage 1 = [[4, 5], [6, 7]].
"""

import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import oneflow as flow
from libai.utils import distributed as dist
from omegaconf import DictConfig


class LayoutError(ValueError):
    """A parallel layout or batch setting that cannot run; the message says what to change."""


@dataclass(frozen=True)
class Layout:
    data_parallel_size: int = 1
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1

    @property
    def world_size(self):
        return self.data_parallel_size * self.tensor_parallel_size * self.pipeline_parallel_size

    def data_parallel_rank(self, rank: int) -> int:
        """The data-parallel index of `rank` (equal on every stage, so all stages read one sample).

        LiBai 0.1.1 computes `rank // (TP * PP)`, which is wrong whenever DP > 1 and PP > 1.
        """
        ranks_per_stage = self.world_size // self.pipeline_parallel_size
        return (rank % ranks_per_stage) // self.tensor_parallel_size


def layout_of(dist_cfg) -> Layout:
    return Layout(
        int(dist_cfg.data_parallel_size),
        int(dist_cfg.tensor_parallel_size),
        int(dist_cfg.pipeline_parallel_size),
    )


def stage_of_layers(depth: int, num_stages: int, layers_per_stage: Optional[Sequence[int]] = None):
    """Stage id of each of `depth` blocks: an even split, or `layers_per_stage` (e.g. [4, 2])."""
    if layers_per_stage is None:
        base, extra = divmod(depth, num_stages)
        # the first stages carry the embeddings, so the extra layers go to the last ones
        layers_per_stage = [base + (1 if s >= num_stages - extra else 0) for s in range(num_stages)]
    layers_per_stage = list(layers_per_stage)
    stages = [s for s, n in enumerate(layers_per_stage) for _ in range(n)]
    return stages


def validate(cfg, world_size: int, model, mlp_hidden: int):
    """Refuse a config whose layout cannot run, before anything is built; `model`: the config's
    model arguments (config.model_arguments), `mlp_hidden` its blocks' MLP width
    (config.mlp_hidden_of). One line per problem."""
    d = cfg.train.dist
    lay = layout_of(d)
    for key in ("data_parallel_size", "tensor_parallel_size", "pipeline_parallel_size"):
        if int(d[key]) < 1:
            raise LayoutError(f"train.dist.{key}={d[key]} must be >= 1")
    if lay.world_size != world_size:
        raise LayoutError(
            f"the layout DP x TP x PP = {lay.data_parallel_size} x {lay.tensor_parallel_size} x "
            f"{lay.pipeline_parallel_size} = {lay.world_size} processes, but {world_size} were "
            f"launched: launch {lay.world_size} (tools/train.sh FILE CONFIG {lay.world_size}) or "
            f"change train.dist.*"
        )
    m = model
    tp, pp = lay.tensor_parallel_size, lay.pipeline_parallel_size
    embed_dim, heads = int(m.embed_dim), int(m.num_heads)
    hidden = mlp_hidden
    if embed_dim % heads:
        raise LayoutError(f"model embed_dim={embed_dim} is not divisible by num_heads={heads}")
    for name, value in (
        ("num_heads", heads),
        ("embed_dim", embed_dim),
        ("mlp hidden", hidden),
    ):
        if value % tp:
            # heads are not padded (e.g. InternViT-6B's 25): name the sizes that split everything
            fits = [t for t in range(1, heads + 1) if heads % t == embed_dim % t == hidden % t == 0]
            raise LayoutError(
                f"model {name}={value} is not divisible by train.dist.tensor_parallel_size={tp}: "
                f"tensor_parallel_size {' / '.join(map(str, fits))} splits this model"
            )
    depth = int(m.depth)
    split = d.get("pipeline_stage_layers", None)
    if split is not None:
        split = list(split)
        if len(split) != pp or sum(split) != depth or min(split) < 1:
            raise LayoutError(
                f"train.dist.pipeline_stage_layers={split} must list {pp} positive layer counts "
                f"(one per pipeline stage) summing to the model depth {depth}"
            )
    elif depth < pp:
        raise LayoutError(
            f"model depth={depth} < train.dist.pipeline_parallel_size={pp}: "
            f"every pipeline stage needs at least one block"
        )
    t = cfg.train
    micro, acc = int(t.train_micro_batch_size), t.get("num_accumulation_steps", None)
    gbs = t.get("global_batch_size", None)
    dp = lay.data_parallel_size
    if gbs is not None:
        acc_eff = int(acc) if acc is not None else None
        if acc_eff is None and int(gbs) % (micro * dp):
            raise LayoutError(
                f"train.global_batch_size={gbs} is not divisible by train_micro_batch_size x DP "
                f"= {micro} x {dp}: change one of them"
            )
        if acc_eff is not None and int(gbs) != micro * dp * acc_eff:
            raise LayoutError(
                f"train.global_batch_size={gbs} != train_micro_batch_size x DP x "
                f"num_accumulation_steps = {micro} x {dp} x {acc_eff}"
            )
    if d.get("sequence_parallel", False) and tp > 1 and cfg.graph.enabled:
        raise LayoutError(
            f"train.dist.sequence_parallel=True at TP={tp} does not run in graph mode (OneFlow "
            f"0.9's CPU nn.Graph aborts on the token split's boxing: register.cpp "
            f"'separated_header_mem_ptr() == nullptr'): set graph.enabled=False (eager) "
            f"or sequence_parallel=False"
        )


def check_nodes(environ=os.environ):
    """Every rank sits where OneFlow thinks it does, or a one-line LayoutError (instead of a hang).

    OneFlow 0.9 counts a node per distinct address its ranks reach the master from, then maps rank r
    to node r // (world / nodes) and device LOCAL_RANK. Two launches on one host that both reach the
    master at 127.0.0.1 look like one node of 4 although each has LOCAL_RANK 0, 1: ranks 0 and 2
    both claim (node 0, device 0), collectives cross and the run spins forever (measured)."""
    world, nodes = flow.env.get_world_size(), flow.env.get_node_size()
    if world == 1:
        return
    wanted = int(environ.get("NODE", nodes))
    per_node = world // nodes
    local = int(environ.get("LOCAL_RANK", flow.env.get_rank() % per_node))
    if nodes != wanted or flow.env.get_rank() % per_node != local:
        raise LayoutError(
            f"OneFlow sees {nodes} node(s) for {world} ranks but the launch asked for "
            f"NODE={wanted} (this rank: LOCAL_RANK={local}): each node must reach the master from "
            f"its own address (on one machine: ADDR=127.0.0.1 for node 0, ADDR=127.0.0.2 for node "
            f"1)"
        )


_SEQUENCE_PARALLEL = False  # set by `setup` from train.dist.sequence_parallel


def hide_depth_from_libai(dist_cfg):
    """LiBai 0.1.1 splits blocks evenly only and asserts depth % PP == 0: it is told of PP layers
    (one per stage) to build the stage meshes, and `setup` then writes the real per-layer stages."""
    dist_cfg.pipeline_num_layers = int(dist_cfg.pipeline_parallel_size)


def setup(dist_cfg, depth: int):
    """Set up LiBai's dist state for `depth` blocks, honouring `pipeline_stage_layers` and
    `sequence_parallel` if given."""
    global _SEQUENCE_PARALLEL
    check_nodes()
    pp = int(dist_cfg.pipeline_parallel_size)
    _SEQUENCE_PARALLEL = bool(dist_cfg.get("sequence_parallel", False)) and (
        int(dist_cfg.tensor_parallel_size) > 1
    )
    split = (
        dist_cfg.get("pipeline_stage_layers", None) if isinstance(dist_cfg, DictConfig) else None
    )
    hide_depth_from_libai(dist_cfg)
    dist.setup_dist_util(dist_cfg)
    util = dist.get_dist_util()
    stage_ranks = [util._layer_ranks[s] for s in range(pp)]
    util._layer_stage_ids = stage_of_layers(depth, pp, split)
    util._layer_ranks = [stage_ranks[s] for s in util._layer_stage_ids]
    dist_cfg.pipeline_num_layers = depth
    return util


def ensure_setup(depth: int):
    """Outside the trainer (a script, a test, no launcher): a layout of all processes as DP."""
    if dist._DIST_UTIL is None or len(dist.get_dist_util()._layer_stage_ids) != depth:
        cfg = DictConfig(
            dict(
                data_parallel_size=flow.env.get_world_size(),
                tensor_parallel_size=1,
                pipeline_parallel_size=1,
            )
        )
        if dist._DIST_UTIL is not None:
            old = dist.get_dist_util()
            cfg = DictConfig(
                dict(
                    data_parallel_size=old.data_parallel_size,
                    tensor_parallel_size=old.tensor_parallel_size,
                    pipeline_parallel_size=old.pipeline_parallel_size,
                )
            )
        setup(cfg, depth)


def current_layout() -> Layout:
    u = dist.get_dist_util()
    return Layout(u.data_parallel_size, u.tensor_parallel_size, u.pipeline_parallel_size)


def data_parallel_rank() -> int:
    return current_layout().data_parallel_rank(flow.env.get_rank())


FIRST, LAST = 0, -1  # layer indices of the first and last stage's modules


def placement(layer_idx: int):
    """Placement of block `layer_idx` (FIRST for embeddings, LAST for norm/head/loss)."""
    return dist.get_layer_placement(layer_idx)


def stage_id(layer_idx: int) -> int:
    return dist.get_dist_util().get_layer_stage_id(layer_idx)


def broadcast_sbp():
    """Replicated on every rank of a stage (parameters outside TP layers: cls_token, pos_embed)."""
    return dist.get_nd_sbp([flow.sbp.broadcast, flow.sbp.broadcast])


def batch_sbp():
    """Activations and inputs: split over the batch across DP, replicated across TP."""
    return dist.get_nd_sbp([flow.sbp.split(0), flow.sbp.broadcast])


def sequence_parallel() -> bool:
    """Megatron's sequence parallelism: under TP, the residual stream (norms, dropout, residual
    adds) is split along tokens across the tensor-parallel ranks instead of replicated."""
    return _SEQUENCE_PARALLEL


def residual_sbp():
    """The residual stream inside the blocks: split over the batch across DP; across TP split
    along tokens under sequence parallelism, else replicated. Column-parallel Linears all-gather
    it (LiBai's Linear asks for B), row-parallel outputs are reduce-scattered into it
    (`layers.linear.row_parallel`)."""
    tp = flow.sbp.split(1) if _SEQUENCE_PARALLEL else flow.sbp.broadcast
    return dist.get_nd_sbp([flow.sbp.split(0), tp])


def device_type(tensor) -> str:
    """ "cpu" or "cuda": where a local or a global tensor lives."""
    return tensor.placement.type if tensor.is_global else tensor.device.type


def replicate_like(small, ref):
    """A local mask or bias placed beside a global reference tensor, replicated (eager only)."""
    if ref.is_global and not small.is_global:
        return small.to_global(placement=ref.placement, sbp=[flow.sbp.broadcast] * len(ref.sbp))
    return small


def channels_like(vector, x):
    """A per-channel (C,) parameter laid out as the last dim of `x`: split where tensor
    parallelism splits x's channels, replicated elsewhere (a broadcast vector meeting split
    channels would otherwise move x)."""
    last = flow.sbp.split(x.ndim - 1)
    return vector.to_global(
        sbp=[flow.sbp.split(0) if s == last else flow.sbp.broadcast for s in x.sbp]
    )


def to_stage(tensor, layer_idx: int):
    """Move an input onto the stage of `layer_idx`; a local tensor is this rank's batch share."""
    if tensor.is_global:
        return tensor.to_global(placement=placement(layer_idx))
    return tensor.to_global(placement=placement(layer_idx), sbp=batch_sbp())


def to_residual(x, layer_idx: int):
    """`x` (the residual stream, (batch, tokens, C)) on the stage of block `layer_idx`. Under
    sequence parallelism a stream in the batch SBP is padded with zero tokens to a multiple of TP
    and split along them: OneFlow 0.9's boxing of an uneven split on a DP x TP mesh fails
    ("slice_boxing_op.cpp: Check failed ... elem_cnt", measured at 17 tokens)."""
    x = x.to_global(placement=placement(layer_idx))
    if _SEQUENCE_PARALLEL and x.sbp[-1] == flow.sbp.broadcast:
        x = pad_tokens(x).to_global(sbp=residual_sbp())
    return x


def pad_tokens(x):
    """`x` with zero tokens appended up to a multiple of TP (under sequence parallelism)."""
    pad = -x.shape[1] % current_layout().tensor_parallel_size if _SEQUENCE_PARALLEL else 0
    return flow.nn.functional.pad(x, (0, 0, 0, pad)) if pad else x


def gather_tokens(x, num_tokens: int):
    """The residual stream in the batch SBP with its `num_tokens` real tokens (the inverse of
    `to_residual`): what attention, the MLP's first matmul and the head read."""
    if not _SEQUENCE_PARALLEL:
        return x
    x = x.to_global(sbp=batch_sbp())
    return x[:, :num_tokens] if x.shape[1] != num_tokens else x


def set_stage(proxy, layer_idx: int):
    """Pin an nn.Graph proxy (module or parameter) to the pipeline stage of `layer_idx`."""
    from oneflow.nn.graph import GraphModule, GraphTensor
    from oneflow.nn.graph.proxy import ProxyModule

    block = proxy.to(GraphModule) if isinstance(proxy, ProxyModule) else proxy.to(GraphTensor)
    block.set_stage(stage_id(layer_idx), placement(layer_idx))


# ---------------------------------------------------------------- what a rank owns
def local_region(tensor):
    """The index slices of global `tensor` that this rank holds, or None when it holds none.

    OneFlow's rule: each mesh axis with S(a) cuts axis `a` of what the previous mesh axes left into
    balanced parts (the first `n % k` parts one longer); B and P keep it whole."""
    ranks = np.asarray(tensor.placement.ranks)
    where = np.argwhere(ranks == flow.env.get_rank())
    if not len(where):
        return None
    bounds = [[0, n] for n in tensor.shape]
    for mesh_axis, sbp in enumerate(tensor.sbp):
        axis = next((a for a in range(tensor.ndim) if sbp == flow.sbp.split(a)), None)
        if axis is None:
            continue
        start, stop = bounds[axis]
        parts, index = ranks.shape[mesh_axis], int(where[0][mesh_axis])
        base, extra = divmod(stop - start, parts)
        lo = start + index * base + min(index, extra)
        bounds[axis] = [lo, lo + base + (1 if index < extra else 0)]
    return tuple(slice(lo, hi) for lo, hi in bounds)


def holds_layer(layer_idx: int) -> bool:
    """Whether this rank is on the pipeline stage of block `layer_idx`."""
    return flow.env.get_rank() in np.asarray(placement(layer_idx).ranks)


def write_local(param, values_of):
    """Fill this rank's shard of global `param` in place with `values_of(region)`: an array of
    the region's shape (the region as `local_region` gives it). Ranks that hold none do nothing,
    so nothing whole is built or sent."""
    region = local_region(param)
    if region is None:
        return
    value = np.ascontiguousarray(values_of(region))
    param.to_local().copy_(flow.tensor(value, dtype=param.dtype))
