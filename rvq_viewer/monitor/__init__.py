"""Watch a live training run's codebooks: `CodebookMonitor` records code usage, EMA sizes, dead-code
events and codebook snapshots into a run directory that `rvq-viewer RUN_DIR` follows.

    from rvq_viewer.monitor import CodebookMonitor
    mon = CodebookMonitor("runs/exp1"); mon.attach(model.quantizer)

It runs inside the training process, so it imports only torch, numpy and rvq-viewer's Qt-free layers.
Integrations: `rvq_viewer.monitor.lightning.CodebookMonitorCallback` (PyTorch Lightning) and
`rvq_viewer.monitor.huggingface.CodebookMonitorCallback` (transformers' Trainer).
"""

from .adapters import ADAPTERS, Adapter, find_adapter
from .monitor import CodebookMonitor, MonitorError

__all__ = ["ADAPTERS", "Adapter", "CodebookMonitor", "MonitorError", "find_adapter"]
