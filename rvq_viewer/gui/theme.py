"""Light and dark: the window follows the desktop's colour scheme, or the choice in View > Theme.

One `Theme` holds the few colours that are not data colours (those stay the same in both: they are
chosen to read on white and on near-black): the plot paper and ink, secondary text, faint fills, and the
style sheet's dock titles and table headers. Views take `ink()`/`muted()` when they draw; a theme
change restyles what is drawn already (`restyle`), and the window redraws its headers.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from string import Template

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette

from ..locations import resources_dir

CHOICES = ("system", "light", "dark")


@dataclass(frozen=True)
class Theme:
    name: str
    paper: str          # plot background
    ink: str            # text, axes and marks on it
    muted: str          # secondary text
    faint: str          # grid-like fills (evidence chips, table bands)
    header: str         # dock titles
    header_ink: str
    section: str        # table headers
    border: str
    selection: str      # selected table rows
    selection_ink: str
    note: str           # notes and cautions in text (amber)
    window: str = ""    # window and widget backgrounds (light: the style's own)
    base: str = ""
    text: str = ""


LIGHT = Theme("light", paper="#FFFFFF", ink="#222222", muted="#5F6368", faint="#EEF0F3", header="#E9EEF3",
              header_ink="#1B1B1B", section="#F3F5F7", border="#D0D4D9", selection="#FFD8B0",
              selection_ink="#111111", note="#8A5A00")
DARK = Theme("dark", paper="#1C1D20", ink="#E4E4E4", muted="#A9ADB3", faint="#2E3137", header="#2F333A",
             header_ink="#EDEDED", section="#2A2D33", border="#444A52", selection="#8A5424",
             selection_ink="#FFFFFF", note="#E8B45A", window="#25272B", base="#1C1D20", text="#E4E4E4")
THEMES = {"light": LIGHT, "dark": DARK}

_current = LIGHT


def current() -> Theme:
    return _current


def ink() -> str:
    return _current.ink


def muted() -> str:
    return _current.muted


def paper_brush(alpha: int = 255):
    c = QColor(_current.paper)
    c.setAlpha(alpha)
    return pg.mkBrush(c)


# A layer's health mark in the Overview: (text, cell) per level; the light theme's are the base colours.
_HEALTH_DARK = {"ok": ("#7BD88F", "#1F3A28"), "warn": ("#F2C14E", "#45381A"), "bad": ("#FF8A80", "#4A2222"),
                "unknown": ("#B0B0B0", "#2E3137")}


def health_colors(level: str, light: tuple[str, str]) -> tuple[str, str]:
    """(text, background) of a health mark at `level`; `light` is the light theme's pair."""
    return _HEALTH_DARK.get(level, light) if _current is DARK else light


def system_scheme() -> str:
    """"dark" when the desktop says so (Qt 6.5+ reads it from the platform), else "light"."""
    hints = QGuiApplication.styleHints()
    scheme = getattr(hints, "colorScheme", None)
    return "dark" if scheme is not None and scheme() == Qt.ColorScheme.Dark else "light"


def resolve(choice: str) -> Theme:
    return THEMES[system_scheme() if choice not in THEMES else choice]


def _palette(theme: Theme, style_palette: QPalette) -> QPalette:
    if not theme.window:
        return style_palette
    p = QPalette(style_palette)
    roles = QPalette.ColorRole
    for role, color in ((roles.Window, theme.window), (roles.WindowText, theme.text), (roles.Base, theme.base),
                        (roles.AlternateBase, theme.faint), (roles.Text, theme.text), (roles.Button, theme.header),
                        (roles.ButtonText, theme.text), (roles.ToolTipBase, theme.header),
                        (roles.ToolTipText, theme.text), (roles.Highlight, theme.selection),
                        (roles.HighlightedText, theme.selection_ink), (roles.PlaceholderText, theme.muted),
                        (roles.Link, "#7FB3FF")):
        p.setColor(role, QColor(color))
    for role in (roles.WindowText, roles.Text, roles.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor(theme.muted))
    return p


def stylesheet(theme: Theme) -> str:
    """resources/style.qss with the theme's colours in its $placeholders."""
    path = resources_dir() / "style.qss"
    if not path.is_file():
        return ""
    return Template(path.read_text(encoding="utf-8")).safe_substitute(
        {f.name: getattr(theme, f.name) for f in fields(theme)})


def apply(app, choice: str) -> Theme:
    """Make `choice` ("system", "light" or "dark") the application's theme; returns the one applied."""
    global _current
    theme = resolve(choice)
    _current = theme
    app.setPalette(_palette(theme, app.style().standardPalette()))
    app.setStyleSheet(stylesheet(theme))
    pg.setConfigOptions(background=theme.paper, foreground=theme.ink)
    return theme


def restyle(widgets, old: Theme, new: Theme) -> None:
    """Plots already drawn inside `widgets` in the colours of `new`: backgrounds, axes, titles, legends,
    and texts that were in `old`'s ink or muted colour."""
    swap = {QColor(old.ink).name(): new.ink, QColor(old.muted).name(): new.muted, QColor("#666666").name(): new.muted}
    for root in widgets:
        for view in root.findChildren(pg.GraphicsView):
            view.setBackground(new.paper)
            for item in view.scene().items():
                if isinstance(item, pg.AxisItem):
                    item.setPen(new.ink)
                    item.setTextPen(new.ink)
                elif isinstance(item, pg.LegendItem):
                    item.setLabelTextColor(new.ink)
                elif isinstance(item, pg.LabelItem):
                    item.setText(item.text, color=new.ink)
                elif isinstance(item, pg.TextItem):
                    color = item.color.name() if hasattr(item, "color") else ""
                    if color in swap:
                        item.setColor(swap[color])
