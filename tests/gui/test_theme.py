"""Light and dark: View > Theme, or the desktop's scheme; the window and what is drawn restyle at once."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

from rvq_viewer.gui import settings, theme


def _background(plot_widget) -> str:
    return plot_widget.backgroundBrush().color().name()


def test_dark_and_back_restyles_the_window_and_its_plots(loaded, qtbot):
    win = loaded
    app = QApplication.instance()
    actions = {a.data(): a for a in win.theme_group.actions()}
    assert set(actions) == {"system", "light", "dark"}
    try:
        actions["dark"].trigger()
        assert settings.get("theme") == "dark" and actions["dark"].isChecked()
        assert app.palette().color(QPalette.ColorRole.Window).name() == theme.DARK.window.lower()
        assert _background(win.histogram.plot) == theme.DARK.paper.lower()
        assert _background(win.map.canvas) == theme.DARK.paper.lower()
        axis = win.histogram.plot.getPlotItem().getAxis("left")
        assert axis.textPen().color().name() == theme.DARK.ink.lower()
        assert win.residuals.legend.opts["labelTextColor"] is not None
        assert QColor(win.residuals.legend.opts["labelTextColor"]).name() == theme.DARK.ink.lower()
        # texts already drawn in the old ink take the new one; headers are written again in its colours
        shown = [t for t in win.residuals._labels if t.isVisible()]
        assert shown and all(t.color.name() in (theme.DARK.ink.lower(), "#ffffff") for t in shown)
        assert theme.DARK.muted.lower() in win.histogram.header.text().lower()
        assert "dark" in app.styleSheet() or theme.DARK.header in app.styleSheet()
        # the PNG export's title band is on the theme's paper
        qtbot.wait(50)
    finally:
        actions["light"].trigger()
    assert _background(win.histogram.plot) == theme.LIGHT.paper.lower()
    assert axis.textPen().color().name() == theme.LIGHT.ink.lower()
    assert settings.get("theme") == "light"


def test_system_follows_the_desktop(monkeypatch):
    monkeypatch.setattr(theme, "system_scheme", lambda: "dark")
    assert theme.resolve("system") is theme.DARK
    monkeypatch.setattr(theme, "system_scheme", lambda: "light")
    assert theme.resolve("system") is theme.LIGHT
    assert theme.resolve("dark") is theme.DARK


def test_the_style_sheet_has_no_placeholder_left():
    for t in (theme.LIGHT, theme.DARK):
        qss = theme.stylesheet(t)
        assert "$" not in qss and t.header in qss and t.muted in qss
