"""Training-state checkpoints (model, optimizer, scheduler, iteration), one concern a file: manifest
(sizes and sha256; CheckpointError), resume (which checkpoint to resume from), nonfinite (no NaN is
saved), checkpointer (LiBai's Checkpointer made atomic and verified). Files are written by
`engine/atomic_files.py`; weights from other sources are imported by `libai_vit.pretrained`."""

from libai_vit.engine.training_checkpoint.checkpointer import ReliableCheckpointer
from libai_vit.engine.training_checkpoint.manifest import CheckpointError, verify
from libai_vit.engine.training_checkpoint.resume import periodic_checkpoints, select_resumable

__all__ = [
    "CheckpointError",
    "ReliableCheckpointer",
    "periodic_checkpoints",
    "select_resumable",
    "verify",
]
