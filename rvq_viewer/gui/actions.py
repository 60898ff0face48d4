"""The window's actions and menus, by id: "file.open", "view.next_layer", "train.start", ...

Components and tests find an action by its id, never by its visible text; menus too ("file",
"file.export"). The ids are listed by `Actions.ids()` (Help > Keyboard shortcuts shows them).
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMenu, QWidget


class Actions(QObject):
    """QActions and QMenus of one window, each under an id. Actions are added to the window too, so
    their shortcuts work wherever the focus is inside it."""

    def __init__(self, window: QWidget):
        super().__init__(window)
        self.window = window
        self._actions: dict[str, QAction] = {}
        self._menus: dict[str, QMenu] = {}

    def menu(self, id: str, title: str | None = None, parent: str | None = None) -> QMenu:
        """The menu `id`, made on first use under `parent` (a menu id; None: the menu bar)."""
        if id not in self._menus:
            if title is None:
                raise KeyError(f"no menu {id!r}")
            owner = self._menus[parent] if parent is not None else self.window.menuBar()
            menu = owner.addMenu(title)
            menu.setObjectName(f"menu-{id}")
            self._menus[id] = menu
        return self._menus[id]

    def add(self, id: str, text: str, slot: Callable | None = None, menu: str | None = None,
            shortcut: str | QKeySequence | list | None = None, tip: str = "", checkable: bool = False) -> QAction:
        if id in self._actions:
            raise ValueError(f"action {id!r} exists already")
        action = QAction(text, self.window)
        action.setObjectName(f"action-{id}")
        action.setCheckable(checkable)
        if shortcut is not None:
            shortcuts = shortcut if isinstance(shortcut, list) else [shortcut]
            action.setShortcuts([QKeySequence(s) for s in shortcuts])
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        if tip:
            action.setStatusTip(tip)
            action.setToolTip(tip)
        if slot is not None:
            if checkable:
                action.toggled.connect(slot)
            else:
                action.triggered.connect(lambda checked=False: slot())
        if menu is not None:
            self.menu(menu).addAction(action)
        self.window.addAction(action)
        self._actions[id] = action
        return action

    def separator(self, menu: str) -> None:
        self.menu(menu).addSeparator()

    def __getitem__(self, id: str) -> QAction:
        return self._actions[id]

    def __contains__(self, id: str) -> bool:
        return id in self._actions

    def ids(self) -> list[str]:
        return list(self._actions)

    def shortcuts(self) -> list[tuple[str, str, str]]:
        """(id, text, shortcut) of every action with a shortcut, in the order they were added."""
        out = []
        for id, action in self._actions.items():
            keys = ", ".join(k.toString(QKeySequence.SequenceFormat.NativeText) for k in action.shortcuts())
            if keys:
                out.append((id, action.text().replace("&", ""), keys))
        return out
