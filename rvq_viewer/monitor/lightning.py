"""PyTorch Lightning: `trainer = L.Trainer(callbacks=[CodebookMonitorCallback("runs/exp1")])`.

The callback finds the quantizer in the LightningModule (or takes `module="model.quantizer"`), numbers
windows by `trainer.global_step`, writes one file per `trainer.global_rank` and closes at the end of fit.
Needs `pip install rvq-viewer[lightning]`.
"""

from __future__ import annotations

from pathlib import Path

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:                            # the older package name
    from pytorch_lightning.callbacks import Callback

from .integration import make_monitor


class CodebookMonitorCallback(Callback):
    """Record the quantizer's codebooks during `trainer.fit` (keyword options: `CodebookMonitor`'s)."""

    def __init__(self, run_dir: str | Path, module: str | None = None, **options):
        super().__init__()
        self.run_dir, self.module, self.options = run_dir, module, options
        self.monitor = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self.monitor = make_monitor(self.run_dir, pl_module, self.module, trainer.global_rank, self.options)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.monitor is not None:
            self.monitor.set_step(trainer.global_step)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.monitor is not None:
            self.monitor.close()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.on_fit_end(trainer, pl_module)
