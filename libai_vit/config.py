"""Loading a LazyConfig with command-line overrides, and `validate`: every check of a config that
can be made before a rank starts (keys, values, the layout for the launched processes, the
pretrained file), run once by tools/check_config.py before tools/train.sh launches anything and
again in each rank."""

import difflib
import inspect
import math
import os

from libai.config import LazyConfig
from libai.config.lazy import locate
from omegaconf import DictConfig, ListConfig, OmegaConf

_MISSING = object()


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says what to change."""


def model_arguments(cfg):
    """The model's arguments in a config: `cfg.model`, or its `cfg` node when the model is built
    from one as LiBai's own configs do (`LazyCall(VisionTransformer)(cfg=...)`)."""
    return cfg.model.cfg if "cfg" in cfg.model else cfg.model


def mlp_hidden_of(model):
    """The MLP width of the blocks of a config's model arguments (layers.mlp.mlp_hidden)."""
    from libai_vit.layers.mlp import mlp_hidden

    kind = "swiglu" if model.get("swiglu_mlp") else model.get("mlp_layer") or "mlp"  # Eva: a flag
    align = int(model.get("swiglu_align_to") or 0)
    return mlp_hidden(int(model.embed_dim), float(model.mlp_ratio), kind, align)[1]


def _known_keys(node, prefix=""):
    keys = []
    if isinstance(node, DictConfig):
        for k in node.keys():
            keys.append(prefix + str(k))
            keys += _known_keys(
                node[k] if not OmegaConf.is_missing(node, k) else None, prefix + str(k) + "."
            )
    return keys


def check_override(cfg, override):
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not of the form key=value")
    key = override.split("=", 1)[0].lstrip("+")
    if OmegaConf.select(cfg, key, default=_MISSING) is not _MISSING:
        return
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
    # a LazyCall accepts any argument of the callable it calls, set in the file or not
    if isinstance(parent, DictConfig) and "_target_" in parent:
        target = parent._target_
        params = inspect.signature(locate(target) if isinstance(target, str) else target).parameters
        if leaf in params or any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return
    close = difflib.get_close_matches(key, _known_keys(cfg), n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise ConfigError(f"unknown config key {key!r} in override {override!r}{hint}")


def load_config(path, overrides=()):
    if not os.path.exists(path):
        raise ConfigError(f"config file {path!r} does not exist")
    if os.path.isdir(path) or not path.endswith((".py", ".yaml", ".yml")):
        raise ConfigError(f"config file {path!r} is not a LazyConfig (.py or .yaml file)")
    try:
        cfg = LazyConfig.load(path)
    except Exception as e:  # noqa: BLE001  (a config runs arbitrary code: say which file failed)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        cause = e
        while cause is not None and not getattr(cause, "lineno", None):
            cause = cause.__cause__ or cause.__context__  # LiBai re-raises without the line
        if isinstance(cause, SyntaxError):
            where = cause.filename if cause.filename not in (None, "<unknown>") else path
            first = f"{where}, line {cause.lineno}: {cause.msg}"
        raise ConfigError(
            f"config file {path!r} cannot be loaded: {type(e).__name__}: {first}"
        ) from None
    for override in overrides:
        check_override(cfg, override)
    return LazyConfig.apply_overrides(cfg, list(overrides))


def _get(cfg, key, default=None):
    value = OmegaConf.select(cfg, key, default=default)
    return default if value is None else value


def _finite(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v, least=1):  # 2.0 / 1.9 / 'one' / True are not process or batch counts
    return isinstance(v, int) and not isinstance(v, bool) and v >= least


def _fraction(v):
    return _finite(v) and 0 <= v < 1


def _probability(v):
    return _finite(v) and 0 <= v <= 1


_POSITIVE = "an integer >= 1"
_MIXUP = "dataloader.train.mixup_func"
# (key, the test its value must pass, what it must be); MODEL is the model's node (model, or
# model.cfg for a config that wraps one); a key the config leaves unset (None) is not checked
MODEL = "{m}"
VALUE_RULES = (
    ("optim.lr", lambda v: _finite(v) and v > 0, "a finite number > 0"),
    ("optim.weight_decay", lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    ("optim.eps", lambda v: _finite(v) and v > 0, "> 0"),
    ("optim.betas", lambda v: len(v) == 2 and all(map(_fraction, v)), "two numbers in [0, 1)"),
    (
        "optim.params.clip_grad_max_norm",
        lambda v: _finite(v) and v > 0,
        "> 0 (or None: no clipping)",
    ),
    (f"{MODEL}.drop_rate", _fraction, "in [0, 1)"),
    (f"{MODEL}.attn_drop_rate", _fraction, "in [0, 1)"),
    *((f"{MODEL}.{k}", _integer, ">= 1") for k in ("embed_dim", "depth", "num_heads", "in_chans")),
    (f"{MODEL}.num_classes", lambda v: _integer(v, 0), ">= 0"),
    (f"{MODEL}.mlp_ratio", lambda v: _finite(v) and v > 0, "> 0"),
    *((f"{_MIXUP}.{k}", _probability, "in [0, 1]") for k in ("prob", "switch_prob")),
    (f"{_MIXUP}.label_smoothing", _probability, "in [0, 1]"),
    *(
        (f"{_MIXUP}.{k}", lambda v: _finite(v) and v >= 0, ">= 0")
        for k in ("mixup_alpha", "cutmix_alpha")
    ),
    *(
        (f"train.{k}", _integer, _POSITIVE)
        for k in ("train_micro_batch_size", "test_micro_batch_size", "log_period")
    ),
    ("train.checkpointer.period", _integer, _POSITIVE),
    ("train.checkpointer.max_to_keep", _integer, "an integer >= 1 (or None: keep all)"),
    ("train.checkpointer.sharded", lambda v: isinstance(v, bool), "True or False"),
    (
        "train.activation_checkpoint.granularity",
        lambda v: v in ("block", "attention"),
        "'block' or 'attention'",
    ),
    ("train.activation_checkpoint.every", _integer, "an integer >= 1 (1: every block)"),
    ("train.train_iter", lambda v: _integer(v, 0), "an integer >= 0"),
    ("train.train_epoch", lambda v: _integer(v, 0), "an integer >= 0"),
    ("train.warmup_ratio", _fraction, "in [0, 1)"),
    ("train.nonfinite_loss", lambda v: v in ("stop", "skip"), "'stop' or 'skip'"),
    ("dataloader.train.num_repeats", _integer, "an integer >= 1 (1: no repeats)"),
    ("train.model_ema.decay", _probability, "in [0, 1]"),
    *(
        (f"train.dist.{k}", _integer, _POSITIVE)
        for k in ("data_parallel_size", "tensor_parallel_size", "pipeline_parallel_size")
    ),
    (
        "train.dist.pipeline_stage_layers",
        lambda v: not isinstance(v, (str, bytes)) and len(v) >= 1 and all(map(_integer, v)),
        "a list of integers >= 1 (blocks per stage, e.g. [3,1]) or None (an even split)",
    ),
    ("train.num_accumulation_steps", _integer, "an integer >= 1 (or None: derived)"),
    ("train.global_batch_size", _integer, "an integer >= 1 (or None: derived)"),
)


def validate_values(cfg):
    """Refuse values that cannot train correctly, before anything is built; one line per problem."""
    m = "model.cfg" if OmegaConf.select(cfg, "model.cfg", default=None) is not None else "model"
    check_value_rules(cfg, m)
    check_model_arguments(cfg, m)
    graph = _get(cfg, "graph.enabled", True)
    check_graph_mode_features(cfg, graph)
    check_mixup(cfg, graph)
    check_cuda_only_features(cfg)
    check_output_dir(_get(cfg, "train.output_dir", ""))
    weights = _get(cfg, "train.load_weight", "")
    if weights and not os.path.isdir(weights):
        raise ConfigError(
            f"train.load_weight={weights!r} is not a checkpoint directory "
            f"({'it is a file' if os.path.exists(weights) else 'it does not exist'})"
        )


def check_value_rules(cfg, m):
    """Each of VALUE_RULES (the model's keys under `m`), then that the run has a length."""
    rules = list(VALUE_RULES)
    if _get(cfg, "train.evaluation.enabled", False):
        rules.append(("train.evaluation.eval_period", _integer, _POSITIVE))
    for key, ok, must in rules:
        key = key.replace(MODEL, m)
        value = _get(cfg, key)
        if value is None:
            continue
        try:
            good = ok(value)
        except TypeError:
            good = False
        if not good:
            raise ConfigError(f"{key}={value} must be {must}")
    if not _get(cfg, "train.train_iter", 0) and not _get(cfg, "train.train_epoch", 0):
        raise ConfigError("train.train_iter and train.train_epoch are both 0: set one of them")


def check_model_arguments(cfg, m):
    """VisionTransformer's own argument rules (models.vision_transformer.argument_problem) on the
    arguments the config sets."""
    from libai_vit.models.vision_transformer import argument_problem

    model = OmegaConf.select(cfg, m)
    given = {  # the scalar and list arguments the config sets
        k: OmegaConf.to_container(v) if isinstance(v, ListConfig) else v
        for k, v in ((k, model[k]) for k in model)
        if isinstance(v, (bool, int, float, str, ListConfig))
    }
    problem = argument_problem(f"{m}.", **given)
    if problem:
        raise ConfigError(problem)


def graph_clip_refusal(max_norm, differ):
    """The line refusing whole-model gradient clipping in nn.Graph over parameter groups that
    differ in `differ` (optim/clip.py says why); the pre-launch check and the optimizer raise it."""
    return (
        f"whole-model gradient clipping (optim.params.clip_grad_max_norm={max_norm}) cannot run in "
        f"graph mode with parameter groups that differ in {differ}: OneFlow 0.9's nn.Graph clips "
        f"each group on its own; set graph.enabled=False (eager clips the whole model), or "
        f"optim.params.layer_decay=1.0, or optim.params.clip_grad_max_norm=None"
    )


def check_graph_mode_features(cfg, graph):
    """What OneFlow 0.9's nn.Graph cannot do that eager mode does."""
    if not graph:
        return
    optimizer = _get(cfg, "optim._target_")
    optimizer = locate(optimizer) if isinstance(optimizer, str) else optimizer
    if getattr(optimizer, "__name__", "") == "Lamb" and optimizer.__module__.startswith(
        "libai_vit"
    ):
        raise ConfigError(
            "optim._target_=libai_vit.optim.Lamb (DeiT III's LAMB) runs in eager mode only: set "
            "graph.enabled=False (OneFlow 0.9's compiled LAMB is another variant)"
        )
    clip = _get(cfg, "optim.params.clip_grad_max_norm")
    layer_decay = _get(cfg, "optim.params.layer_decay", 1.0)
    if clip is not None and layer_decay != 1.0:
        raise ConfigError(graph_clip_refusal(clip, f"lr (optim.params.layer_decay={layer_decay})"))
    if _get(cfg, "train.nonfinite_loss") == "skip":
        raise ConfigError(
            "train.nonfinite_loss=skip needs eager mode (graph.enabled=False): a compiled graph "
            "applies the update inside the step; use 'stop' and --resume instead"
        )


HARD_LABEL_LOSS = "model.loss_func._target_=oneflow.nn.CrossEntropyLoss"


def check_mixup(cfg, graph):
    """flowvision's Mixup mixes each batch with itself reversed and asserts an even batch; the
    batch it sees is a rank's loader batch: the micro-batch in eager mode, x accumulation in
    nn.Graph (LiBai's DefaultTrainer sets dataloader.train.train_batch_size so). Without it the
    labels are class indices, which a soft-target loss would read as weights."""
    loss = _get(cfg, "model.loss_func._target_")
    loss = getattr(loss, "__name__", str(loss or ""))
    if _get(cfg, "dataloader.train.mixup_func") is None:
        if loss.endswith("SoftTargetCrossEntropy"):
            raise ConfigError(
                f"model.loss_func={loss} needs mixup's soft labels, but "
                f"dataloader.train.mixup_func is None: set {HARD_LABEL_LOSS}"
            )
        return
    micro = _get(cfg, "train.train_micro_batch_size")
    accumulation = _get(cfg, "train.num_accumulation_steps") if graph else 1
    if accumulation is None:  # derived by LiBai from the global batch
        data_parallel = _get(cfg, "train.dist.data_parallel_size", 1)
        accumulation = _get(cfg, "train.global_batch_size", micro * data_parallel) // (
            micro * data_parallel
        )
    if isinstance(micro, int) and isinstance(accumulation, int) and micro * accumulation % 2:
        where = (
            f"train.train_micro_batch_size={micro} x train.num_accumulation_steps={accumulation}"
            if graph
            else f"train.train_micro_batch_size={micro} (eager: the loader's batch)"
        )
        raise ConfigError(
            f"dataloader.train.mixup_func mixes images in pairs and needs an even batch per rank, "
            f"not {where}: make it even, or turn mixup off with dataloader.train.mixup_func=null "
            f"and {HARD_LABEL_LOSS}"
        )


# below this, not even the run's log and metrics fit (a 40 kB file system failed inside every rank)
MIN_FREE_BYTES = 1 << 20


def check_output_dir(output_dir):
    """train.output_dir can be made and written: its nearest existing folder is a writable folder
    on a file system with room; checked before launch, where the ranks would fail one by one."""
    if not output_dir:
        return
    found = os.path.abspath(output_dir)
    while not os.path.exists(found):
        found = os.path.dirname(found)
    key = f"train.output_dir={output_dir!r}"
    if not os.path.isdir(found):
        raise ConfigError(f"{key} cannot be made: {found} is a file; choose another folder")
    if not os.access(found, os.W_OK | os.X_OK):
        why = (
            "read-only file system" if os.statvfs(found).f_flag & os.ST_RDONLY else "no permission"
        )
        raise ConfigError(f"{key} is not writable ({found}: {why}); choose another folder")
    stat = os.statvfs(found)
    free = stat.f_bavail * stat.f_frsize
    if free < MIN_FREE_BYTES:
        raise ConfigError(
            f"{key}: its file system has {free // 1024} kB free, too little for the run's log and "
            f"checkpoints; free space or choose another folder"
        )


def check_eval_only(cfg, resume):
    """--eval-only evaluates train.load_weight, or with --resume the run's last checkpoint: with
    neither it would evaluate a randomly initialised model."""
    if not _get(cfg, "train.load_weight", "") and not resume:
        raise ConfigError(
            "--eval-only needs weights to evaluate: set train.load_weight=<checkpoint directory>, "
            f"or add --resume to evaluate the last checkpoint in "
            f"train.output_dir={_get(cfg, 'train.output_dir')}"
        )


def check_cuda_only_features(cfg, cuda_available=None):
    """AMP and ZeRO need CUDA in OneFlow 0.9 (measured on CPU): AMP's graph pass leaves a CPU graph
    in fp32 (the same losses; there are no fp16 CPU matmul/softmax kernels), and a ZeRO step aborts
    in the CPU transport (register.cpp "separated_header_mem_ptr() == nullptr")."""
    if cuda_available is None:
        import oneflow as flow

        cuda_available = flow.cuda.is_available()
    if cuda_available:
        return
    if _get(cfg, "train.amp.enabled", False):
        raise ConfigError(
            "train.amp.enabled=True needs CUDA GPUs (OneFlow 0.9 runs no fp16 on CPU): "
            "set train.amp.enabled=False on CPU"
        )
    if _get(cfg, "train.zero_optimization.enabled", False):
        raise ConfigError(
            "train.zero_optimization.enabled=True needs CUDA GPUs (OneFlow 0.9's CPU "
            "transport aborts on ZeRO's split optimizer state): set it to False on CPU"
        )


def validate(cfg, world_size, read_pretrained=True):
    """Refuse a config that cannot train: its values, its layout for `world_size` processes and (if
    `read_pretrained`) its `model.pretrained` file, which is read as tools/convert_checkpoint.py
    reads it. Raises ConfigError with the one line to print (the same line convert_checkpoint prints
    for a bad file)."""
    from libai_vit import parallel

    validate_values(cfg)
    try:
        model = model_arguments(cfg)
        parallel.validate(cfg, world_size, model, mlp_hidden_of(model))
    except parallel.LayoutError as e:
        raise ConfigError(str(e)) from None
    pretrained = _get(cfg, "model.pretrained")
    if pretrained and read_pretrained:
        from libai_vit.pretrained import PretrainedError, read

        try:
            read(pretrained, trust=bool(_get(cfg, "model.trust", False)))
        except PretrainedError as e:
            raise ConfigError(str(e)) from None
