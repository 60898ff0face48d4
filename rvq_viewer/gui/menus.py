"""The main window's menus and actions, by id (`window.commands["file.compare"]`): one place that lists
everything the window can do, built after its panels."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QAction, QActionGroup, QKeySequence

from ..runtime import available_devices
from . import run_on, settings
from .widgets.common import RESET_VIEW_KEY
from .load_dialog import ask_open_with_options


def build_menus(w) -> None:
    """Menus of main window `w`: File, View, Audit, Train, Help."""
    a = w.commands
    state = w.state
    a.menu("file", "&File")
    a.add("file.open", "Open &checkpoint…", w.ask_open_checkpoint, "file", QKeySequence.StandardKey.Open)
    a.add("file.open_model_folder", "Open &model folder…", w.ask_open_model_folder, "file",
          tip="a transformers save_pretrained folder or a Hugging Face cache folder (models--org--name)")
    a.add("file.open_options", "Open with &options…", lambda: ask_open_with_options(w), "file",
          tip="a checkpoint with what its file cannot tell: FSQ levels and stages, format, heads")
    a.add("file.open_features", "Open &features…", w.ask_open_features, "file", "Ctrl+Shift+O")
    a.add("file.open_folder", "Open feature f&older…", w.ask_open_folder, "file")
    a.add("file.open_series", "Open checkpoint &series…", w.open_series, "file",
          tip="a folder of checkpoints saved during one training run: dead-code events over steps")
    a.add("file.open_run", "Open &run…", lambda: w.open_run(), "file",
          tip="a run directory written by rvq_viewer.monitor: followed live while the training runs")
    a.menu("file.demo", "Open &demo", "file")
    a.add("file.demo_healthy", "Healthy quantizer", lambda: w.controller.open_demo("healthy"), "file.demo")
    a.add("file.demo_collapsed", "Collapsed quantizer", lambda: w.controller.open_demo("collapsed"), "file.demo")
    recent = a.menu("file.recent", "&Recent", "file")
    recent.aboutToShow.connect(lambda: fill_recent(w))
    a.separator("file")
    a.add("file.compare", "Co&mpare with…", w.compare.ask, "file",
          tip="audit a second checkpoint or feature set and compare it with this one")
    a.separator("file")
    a.menu("file.export", "&Export", "file")
    ex = w.exporter
    a.add("export.html", "&HTML report…", ex.ask_html, "file.export",
          tip="the self-contained report `rvq-viewer report` writes (with the comparison, when one is open)")
    a.add("export.json", "Audit report (&JSON)…", ex.ask_json, "file.export", "Ctrl+E")
    a.add("export.overview", "Overview table (CSV)…",
          lambda: ex.ask("overview.csv", "CSV (*.csv)", w.overview.export_csv), "file.export")
    a.add("export.dead_codes", "Dead codes table (CSV)…",
          lambda: ex.ask(f"dead_codes_layer{state.selection.layer}.csv", "CSV (*.csv)", w.dead_codes.export_csv),
          "file.export")
    a.add("export.histogram", "Usage histogram (PNG)…",
          lambda: ex.ask(f"histogram_layer{state.selection.layer}.png", "PNG (*.png)", w.histogram.export_png),
          "file.export")
    a.add("export.map", "Centroid map (PNG)…", lambda: ex.ask("centroid_map.png", "PNG (*.png)", w.map.export_png),
          "file.export")
    a.add("export.residuals", "Residual norms (PNG)…",
          lambda: ex.ask("residuals.png", "PNG (*.png)", w.residuals.export_png), "file.export")
    a.separator("file.export")
    a.add("export.all", "Everything to a &folder…", ex.ask_all, "file.export", "Ctrl+Shift+E")
    a.separator("file")
    a.add("file.quit", "&Quit", w.close, "file", QKeySequence.StandardKey.Quit)

    a.menu("view", "&View")
    a.add("view.next_layer", "&Next layer", lambda: state.selection.step_layer(1), "view", ["]", "Alt+Right"])
    a.add("view.previous_layer", "&Previous layer", lambda: state.selection.step_layer(-1), "view",
          ["[", "Alt+Left"])
    a.add("view.goto", "&Go to code…", w.focus_goto, "view", "Ctrl+G",
          tip="type a code (256) or layer:code (3:256) in the toolbar")
    a.add("view.clear_code", "Clear selection (code and box)", state.selection.clear, "view", "Ctrl+D")
    a.add("view.reset_views", "Reset plot &views", w.reset_views, "view", RESET_VIEW_KEY,
          tip="every plot back to all its data after zooming or panning")
    a.separator("view")
    log = a.add("view.histogram_log", "Histogram: &log scale", w.histogram.log_box.setChecked, "view", "Ctrl+L",
                checkable=True)
    w.histogram.log_box.toggled.connect(log.setChecked)
    ranked = a.add("view.histogram_sorted", "Histogram: &sorted (rank-frequency)", w.histogram.sorted_box.setChecked,
                   "view", "Ctrl+R", checkable=True)
    w.histogram.sorted_box.toggled.connect(ranked.setChecked)
    layers = a.add("view.map_all_layers", "Map: &all layers", w.map.set_all_layers, "view", "Ctrl+Shift+A",
                   checkable=True)
    w.map.mode_box.currentIndexChanged.connect(lambda _: layers.setChecked(w.map.all_layers))
    a.separator("view")
    for dock in w.docks.values():
        a.menu("view").addAction(dock.toggleViewAction())
    a.add("view.reset_layout", "Reset &layout", w.reset_layout, "view")
    themes = a.menu("view.theme", "&Theme", "view")
    w.theme_group = QActionGroup(w)
    for choice, text in (("system", "Follow the &desktop"), ("light", "&Light"), ("dark", "&Dark")):
        act = QAction(text, w, checkable=True)
        act.setObjectName(f"action-view.theme.{choice}")
        act.setData(choice)
        act.setChecked(settings.get("theme") == choice)
        act.triggered.connect(lambda checked=False, c=choice: w.set_theme(c))
        w.theme_group.addAction(act)
        themes.addAction(act)

    a.menu("audit", "&Audit")
    a.add("audit.rerun", "&Re-run", w.controller.start_audit, "audit", "F5")
    a.add("audit.cancel", "&Cancel", w.controller.cancel_audit, "audit", "Esc")
    devices = a.menu("audit.device", "&Device", "audit")
    w.device_group = QActionGroup(w)
    for name in available_devices():
        act = QAction(name, w, checkable=True)
        act.setObjectName(f"action-audit.device.{name}")
        act.triggered.connect(lambda checked=False, n=name: w.set_device(n))
        w.device_group.addAction(act)
        devices.addAction(act)
    run_on_menu = a.menu("audit.run_on", "Run &on", "audit")
    w.run_on_group = QActionGroup(w)
    for id, text, slot in (("audit.run_local", "&This machine", lambda: w.set_cluster("")),
                           ("audit.run_dask", "A &Dask cluster…", lambda: run_on.ask_cluster(w))):
        act = a.add(id, text, slot)
        act.setCheckable(True)
        w.run_on_group.addAction(act)
        run_on_menu.addAction(act)
    a["audit.run_local"].setChecked(True)
    a.separator("audit")
    a.add("audit.pin", "&Pin as comparison reference", w.pin_reference, "audit", "Ctrl+K",
          "keep this audit as a dotted reference in the residual plot")
    a.add("audit.clear_reference", "C&lear reference", lambda: w.set_reference(None), "audit")

    a.menu("train", "&Train")
    trainer = w.trainer_panel
    a.add("train.show", "What-if &trainer", w.show_trainer, "train", "Ctrl+T")
    a.separator("train")
    a.add("train.start", "&Start run", lambda: (w.show_trainer(), trainer.start()), "train")
    a.add("train.pause", "&Pause", trainer.pause, "train")
    a.add("train.resume", "&Resume", trainer.resume, "train")
    a.add("train.stop", "S&top", trainer.stop, "train")
    a.separator("train")
    a.add("train.save", "&Save run…", trainer.ask_save, "train")
    a.menu("train").aboutToShow.connect(lambda: sync_train_actions(w))

    a.menu("help", "&Help")
    a.add("help.shortcuts", "&Keyboard shortcuts", w.show_shortcuts, "help", "F1")
    a.add("help.about", "&About", w.about, "help")


def sync_train_actions(w) -> None:
    """The Train menu's actions do what the trainer's buttons can do now."""
    t, a = w.trainer_panel, w.commands
    for id, button in (("train.start", t.start_button), ("train.pause", t.pause_button),
                       ("train.resume", t.resume_button), ("train.stop", t.stop_button),
                       ("train.save", t.save_button)):
        a[id].setEnabled(button.isEnabled())


def fill_recent(w) -> None:
    menu = w.commands.menu("file.recent")
    menu.clear()
    entries = settings.recent()
    for entry in entries:
        ckpt = Path(entry["checkpoint"])
        feats = entry["features"]
        label = ckpt.name + (f"  +  {Path(feats[0]).name}" if feats else "")
        if len(feats) > 1:
            label += f" (+{len(feats) - 1})"
        act = menu.addAction(label)
        act.setToolTip("\n".join([str(ckpt), *feats]))
        act.setEnabled(ckpt.exists())
        act.triggered.connect(lambda checked=False, c=ckpt, f=feats: w.open(c, f))
    if not entries:
        menu.addAction("(none)").setEnabled(False)
    else:
        menu.addSeparator()
        menu.addAction("Clear list").triggered.connect(settings.clear_recent)
