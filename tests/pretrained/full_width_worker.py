"""One process of the launched full-width DINOv3-7B check (test_full_width.py): build the model at
TP x PP, load the seeded timm-format file, compare with timm's logits. argv: TP PP FILE. Exits
non-zero on a mismatch."""

import sys

import full_width
import numpy as np
from omegaconf import DictConfig
from test_full_width import ORACLE
from timm_oracle import TOL, output

from libai_vit import create_model, parallel
from libai_vit.pretrained import load_pretrained

tp, pp, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
parallel.setup(
    DictConfig(dict(data_parallel_size=1, tensor_parallel_size=tp, pipeline_parallel_size=pp)),
    full_width.KWARGS["depth"],
)
model = create_model(full_width.NAME, **full_width.KWARGS).eval()
report = load_pretrained(model, path)
oracle = np.load(ORACLE)
ours = output(model, oracle["input"], "logits")
if ours.size:  # only the last stage's ranks hold the output
    diff = float(np.abs(ours - oracle["logits"]).max())
    print(f"TP={tp} PP={pp} DINOv3-7B full width: max diff {diff:.3g}", flush=True)
    sys.exit(0 if diff < TOL and not report.missing else 1)
