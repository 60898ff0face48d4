"""Before Qt starts: missing X11 libraries are named in one line with the commands that install them."""

from __future__ import annotations

import sys

from rvq_viewer.gui import platform_check


def test_when_qt_would_use_its_x11_plugin():
    linux = sys.platform.startswith("linux")
    assert platform_check.uses_xcb({"DISPLAY": ":0"}) is linux
    assert platform_check.uses_xcb({"DISPLAY": ":0", "QT_QPA_PLATFORM": "xcb"}) is linux
    assert not platform_check.uses_xcb({"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"})
    assert not platform_check.uses_xcb({"WAYLAND_DISPLAY": "wayland-0", "XDG_SESSION_TYPE": "wayland",
                                        "DISPLAY": ":0"})
    assert not platform_check.uses_xcb({})


def test_missing_libraries_come_from_the_plugin_and_qts_runtime(monkeypatch):
    monkeypatch.setattr(platform_check, "_not_found_by_ldd", lambda files: {"libxcb-icccm.so.4"})
    monkeypatch.setattr(platform_check, "_cannot_open", lambda names: {"libxcb-cursor.so.0"} & set(names))
    assert platform_check.missing_libraries() == ["libxcb-cursor.so.0", "libxcb-icccm.so.4"]
    # Without ldd, the known list is tried one by one.
    monkeypatch.setattr(platform_check, "_not_found_by_ldd", lambda files: None)
    monkeypatch.setattr(platform_check, "_cannot_open", lambda names: {"libxcb-keysyms.so.1"} & set(names))
    assert platform_check.missing_libraries() == ["libxcb-keysyms.so.1"]


def test_ldd_reads_a_real_binary():
    found = platform_check._not_found_by_ldd([__import__("pathlib").Path(sys.executable).resolve()])
    assert found is None or found == set()


def test_the_app_says_what_to_install_in_one_line_and_exits_2(monkeypatch, capsys):
    from rvq_viewer.gui import app
    monkeypatch.setattr(platform_check, "uses_xcb", lambda env=None: True)
    monkeypatch.setattr(platform_check, "missing_libraries",
                        lambda: ["libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1"])
    assert app.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rvq-viewer: error: ")
    assert "sudo apt install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1" in err
    assert "sudo dnf install xcb-util-cursor xcb-util-keysyms xcb-util-wm" in err
