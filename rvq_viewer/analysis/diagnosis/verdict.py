"""`Verdict`: one finding of the diagnosis, with its evidence, cause, remedy and the view that shows it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

SEVERITIES = ("ok", "info", "warning", "collapse")
"""In increasing order: `collapse` is what `--fail-on collapse` stops a training run for."""
VIEWS = ("overview", "histogram", "centroids", "residuals", "dead_codes", "family")
"""The app views a verdict can point at: the one that shows its evidence ("family": the FSQ levels / LFQ
bits / per-table view)."""


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


@dataclass
class Verdict:
    """A finding. `layer` None is about the whole quantizer; `evidence` holds the numbers behind it
    (numbers, or short lists of numbers such as code indices); `view` is one of `VIEWS`."""

    id: str
    layer: int | None
    severity: str
    title: str
    evidence: dict = field(default_factory=dict)
    message: str = ""
    remedy: str = ""
    view: str = "overview"
    cause: str = ""

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")
        if self.view not in VIEWS:
            raise ValueError(f"unknown view {self.view!r}")

    @property
    def key(self) -> str:
        """Unique within one diagnosis: the rule and the layer it is about."""
        return f"{self.id}@{'all' if self.layer is None else self.layer}"

    @property
    def rank(self) -> int:
        return severity_rank(self.severity)

    def to_dict(self) -> dict:
        return _json_safe(asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> "Verdict":
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in names})


def _json_safe(obj):
    """Plain JSON types (numpy scalars unwrapped); NaN and infinities become None (JSON has none)."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_json_safe(v) for v in obj]
    if obj is None or isinstance(obj, (str, bool)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    return str(obj)
