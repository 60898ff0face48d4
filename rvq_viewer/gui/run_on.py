"""Audit > Run on: this machine, or a Dask cluster (the pipeline's sharded audit, the `dask` extra)."""

from __future__ import annotations

from PySide6.QtWidgets import QInputDialog

from . import settings


def ask_cluster(w) -> None:
    """Ask main window `w`'s user for a cluster: local:N starts N worker processes here, tcp://host:8786
    is an existing scheduler (its workers must read the feature files at the same paths)."""
    text, ok = QInputDialog.getText(w, "Run the audit on a Dask cluster",
                                    "local:N (N worker processes here) or a scheduler address (tcp://host:8786).\n"
                                    "The workers read the feature files at the same paths.",
                                    text=settings.get("audit/cluster") or "local:2")
    if ok and text.strip():
        set_cluster(w, text.strip())
    else:                                   # cancelled: the menu shows where audits still run
        w.commands["audit.run_dask" if w.state.cluster else "audit.run_local"].setChecked(True)


def set_cluster(w, address: str) -> None:
    """Audits of `w` run on `address` from now ("" this machine); the open features are audited there."""
    w.state.cluster = address
    if address:
        settings.set("audit/cluster", address)
    dask = w.commands["audit.run_dask"]
    w.commands["audit.run_dask" if address else "audit.run_local"].setChecked(True)
    dask.setText(f"A &Dask cluster… ({address})" if address else "A &Dask cluster…")
    if w.session is not None and w.session.source is not None:
        w.start_audit()
