"""Before the window closes: a what-if trainer run that trained and was not saved is asked about."""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox


def confirm_close(w) -> bool:
    """True to go on closing main window `w`: nothing unsaved, or the user chose to discard it. "Save…"
    opens the save dialog for the run and keeps the window open."""
    runs = w.trainer_panel.unsaved_runs()
    if not runs:
        return True
    answer = w._ask_unsaved(runs)
    if answer == "save":
        w.show_trainer()
        w.trainer_panel.set_compare(runs[-1], None)
        w.trainer_panel.ask_save()
        w.statusBar().showMessage("Quit again once the run is saved.", 8000)
    return answer == "discard"


def ask(parent, runs) -> str:
    """"save", "discard" or "cancel", from a question naming the unsaved runs."""
    names = ", ".join(f"{run.name} (step {run.last_step:,})" for run in runs[:3])
    more = f" and {len(runs) - 3} more" if len(runs) > 3 else ""
    box = QMessageBox(QMessageBox.Icon.Warning, "Unsaved trainer runs",
                      f"The what-if trainer has {len(runs)} unsaved run{'s' if len(runs) > 1 else ''}: "
                      f"{names}{more}.", parent=parent)
    box.setObjectName("unsaved-dialog")
    box.setInformativeText("Their trained codebooks go when the window closes.")
    save = box.addButton("Save…", QMessageBox.ButtonRole.AcceptRole)
    discard = box.addButton("Quit without saving", QMessageBox.ButtonRole.DestructiveRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(save)
    box.exec()
    clicked = box.clickedButton()
    return "save" if clicked is save else "discard" if clicked is discard else "cancel"
