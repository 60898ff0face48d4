"""Hugging Face transformers: `Trainer(..., callbacks=[CodebookMonitorCallback("runs/exp1")])`.

The callback finds the quantizer in the Trainer's model (or takes `module="quantizer"`), numbers windows
by `state.global_step`, writes one file per `args.process_index` and closes when training ends.
Needs `pip install rvq-viewer[huggingface]`.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from .integration import make_monitor


class CodebookMonitorCallback(TrainerCallback):
    """Record the quantizer's codebooks during `trainer.train()` (keyword options: `CodebookMonitor`'s)."""

    def __init__(self, run_dir: str | Path, module: str | None = None, **options):
        self.run_dir, self.module, self.options = run_dir, module, options
        self.monitor = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.monitor = make_monitor(self.run_dir, model, self.module, args.process_index, self.options)

    def on_step_begin(self, args, state, control, **kwargs):
        if self.monitor is not None:
            self.monitor.set_step(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.monitor is not None:
            self.monitor.close()
