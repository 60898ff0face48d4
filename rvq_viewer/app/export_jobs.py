"""File > Export > Everything to a folder, the part that needs no Qt: the audit JSON, the typed tables of
every layer and the HTML report, written in a worker that yields progress and stops between files.

The plots (PNG) are drawn by the window after this job (gui/exports.py): they need its views.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Generator

from ..analysis.diagnosis import write_json
from ..errors import CancelledError
from ..io import check_outputs
from ..report import iter_write_report
from .dead_codes import dead_code_table
from .session import Session, Snapshot
from .tables import (DEAD_CODES_HEADER, OVERVIEW_HEADER, USAGE_HEADER, dead_code_rows, overview_rows, usage_rows,
                     write_csv)


@dataclass(frozen=True)
class ExportStep:
    """`done` of `total` parts written; `what` the one now being written."""

    done: int
    total: int
    what: str


def folder_files(n_layers: int, with_report: bool) -> list[str]:
    """The names `export_folder_job` writes, in order."""
    names = ["audit.json", "overview.csv"]
    for layer in range(n_layers):
        names += [f"usage_layer{layer}.csv", f"dead_codes_layer{layer}.csv"]
    if with_report:
        names.append("report.html")
    return names


def export_folder_job(cancel: threading.Event, folder: str | Path, session: Session, snapshot: Snapshot,
                      compared=None, died_at: dict | None = None) -> Generator[ExportStep, None, list[Path]]:
    """Write the JSON, the overview, every layer's usage and dead-code tables and (for a complete audit)
    the HTML report into `folder`; returns the files written. Raises CancelledError when cancelled
    between files (the files already written stay: each one is whole)."""
    folder = Path(folder)
    with_report = snapshot.final and snapshot.outcome is not None and snapshot.verdicts is not None
    names = folder_files(len(snapshot.result.layers), with_report)
    check_outputs([("the export", folder / name) for name in names], session.inputs())
    folder.mkdir(parents=True, exist_ok=True)
    report_parts = 1 + len(snapshot.result.layers) + (compared is not None) if with_report else 0
    total = len(names) - with_report + report_parts
    written: list[Path] = []
    done = 0

    def step(name: str) -> ExportStep:
        if cancel.is_set():
            raise CancelledError("export cancelled")
        return ExportStep(done, total, name)

    yield step("audit.json")
    write_json(folder / "audit.json", snapshot.result, snapshot.verdicts if snapshot.final else [])
    written.append(folder / "audit.json")
    done += 1
    yield step("overview.csv")
    write_csv(folder / "overview.csv", OVERVIEW_HEADER, overview_rows(snapshot))
    written.append(folder / "overview.csv")
    done += 1
    for layer in range(len(snapshot.result.layers)):
        yield step(f"usage_layer{layer}.csv")
        write_csv(folder / f"usage_layer{layer}.csv", USAGE_HEADER, usage_rows(session, snapshot, layer))
        written.append(folder / f"usage_layer{layer}.csv")
        done += 1
        yield step(f"dead_codes_layer{layer}.csv")
        table = dead_code_table(cancel, session, layer, snapshot.counts[layer], snapshot.complete)
        write_csv(folder / f"dead_codes_layer{layer}.csv", DEAD_CODES_HEADER, dead_code_rows(table, died_at))
        written.append(folder / f"dead_codes_layer{layer}.csv")
        done += 1
    if with_report:
        steps = iter_write_report(folder / "report.html", snapshot.outcome,
                                  compared.pipeline if compared is not None else None)
        what = "report.html"
        while True:
            yield step(what)
            try:
                what = f"report.html: {next(steps).what} done"
            except StopIteration as end:
                written.append(end.value)
                break
            done += 1
    return written
