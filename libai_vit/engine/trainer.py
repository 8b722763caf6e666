"""LiBai's DefaultTrainer with this project's writers and hooks."""
import json
import os

from libai.engine import DefaultTrainer
from libai.utils import distributed as dist
from libai.utils.events import CommonMetricPrinter, JSONWriter, get_event_storage

from libai_vit.engine.hooks import CurvePlotter


class RawMetricsWriter(JSONWriter):
    """metrics.json with one row per write holding each scalar's raw value since the last write.

    LiBai's JSONWriter writes 20-step medians and keeps one "last written iteration" for all
    scalars: the `lr` it stores one iteration ahead makes it skip every following `total_loss` when
    `log_period=1`. Here each scalar is tracked on its own and written unsmoothed.
    """

    def __init__(self, json_file):
        super().__init__(json_file)
        self._written = {}

    def write(self):
        storage = get_event_storage()
        row = {}
        for name, (value, itr) in storage.latest().items():
            if self._written.get(name, -1) < itr:
                row[name] = value
                self._written[name] = itr
        if row:
            row["iteration"] = storage.iter - 1  # the step that just finished
            self._file_handle.write(json.dumps(row, sort_keys=True) + "\n")
            self._file_handle.flush()


class Trainer(DefaultTrainer):
    def build_writers(self):
        return [
            CommonMetricPrinter(self.global_batch_size, self.max_iter),  # progress with ETA
            RawMetricsWriter(os.path.join(self.cfg.train.output_dir, "metrics.json")),
        ]

    def build_hooks(self):
        hooks = super().build_hooks()
        if dist.is_main_process():
            hooks.append(CurvePlotter(self.cfg.train.output_dir))
        return hooks
