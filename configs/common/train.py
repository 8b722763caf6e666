# Training loop settings read by LiBai's DefaultTrainer (keys as in LiBai 0.1.1).
from libai.config import LazyCall
from libai.evaluation import ClsEvaluator
from libai.scheduler import WarmupCosineLR
from omegaconf import DictConfig

train = DictConfig(
    dict(
        output_dir="./output",  # log.txt, metrics.json, curves.png, config.yaml, checkpoints
        train_micro_batch_size=32,  # samples per micro-batch per data-parallel rank
        global_batch_size=None,  # micro x DP x accumulation; derived when None
        # micro-batches per step (the pipeline's micro-batches in graph mode)
        num_accumulation_steps=None,
        train_iter=10000,  # steps; the larger of this and train_epoch x steps-per-epoch is used
        train_epoch=0,
        warmup_ratio=0.0,  # fraction of steps with linear warm-up
        start_iter=0,  # set by the trainer when resuming
        amp=dict(enabled=False),  # fp16 autocast (graph mode, CUDA)
        # recompute activations in backward instead of keeping them; granularity: "block" (all of
        # it) or "attention" (qkv, softmax core, projection); every: blocks 0, k, 2k, ... only
        activation_checkpoint=dict(enabled=False, granularity="block", every=1),
        zero_optimization=dict(enabled=False, stage=1),  # shard optimizer state over DP ranks
        nccl_fusion_threshold_mb=16,
        nccl_fusion_max_ops=24,
        # save every `period` steps, keep the last few; sharded: each rank writes and reads its own
        # slices (False: whole tensors gathered to rank 0, as LiBai saves)
        checkpointer=dict(period=5000, max_to_keep=3, sharded=True),
        test_micro_batch_size=32,  # evaluation samples per data-parallel rank
        evaluation=dict(
            enabled=True,
            evaluator=LazyCall(ClsEvaluator)(topk=(1, 5)),
            eval_period=5000,  # steps between evaluations (and after the last)
            eval_iter=1e9,  # at most this many evaluation batches
            eval_metric="Acc@1",  # metric that picks model_best
            eval_mode="max",
        ),
        load_weight="",  # a checkpoint to start from (weights only)
        log_period=20,  # steps between console lines and metrics.json rows
        scheduler=LazyCall(WarmupCosineLR)(warmup_factor=0.001, alpha=0.01, warmup_method="linear"),
        dist=dict(
            data_parallel_size=1,
            tensor_parallel_size=1,
            pipeline_parallel_size=1,
            pipeline_stage_layers=None,  # blocks per pipeline stage, e.g. [4, 2]; None: even split
            # under TP, split the residual stream (norms, dropout, residual adds) along tokens
            # across the tensor-parallel ranks (Megatron's sequence parallelism); eager mode only
            sequence_parallel=False,
            pipeline_num_layers=None,  # set from the model depth at start-up
        ),
        # a moving average of the weights (timm's ModelEmaV3), evaluated beside the model
        model_ema=dict(
            # True: metrics Acc@1_ema / Acc@5_ema at every evaluation; saved and resumed
            enabled=False,
            decay=0.9999,  # the average's decay per optimizer step (DeiT: 0.99996)
            min_decay=0.0,  # lower bound of the warm-up decay
            # steps before the average starts following (it copies the model until then)
            update_after_step=0,
            # True: decay = 1 - (1 + step / warmup_gamma) ** -warmup_power, capped at `decay`
            use_warmup=False,
            warmup_gamma=1.0,
            warmup_power=2 / 3,
        ),
        # NaN/Inf loss: "stop" the run (resume from the last checkpoint) or "skip" the step (eager)
        nonfinite_loss="stop",
        seed=1234,  # one seed for every rank (data order, dropout, drop path)
    )
)
