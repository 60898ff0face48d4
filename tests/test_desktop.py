"""`rvq-viewer desktop`: the application-menu entry and icon in the user's data folder, and --remove."""

from __future__ import annotations

import configparser
import shlex
import sys

from rvq_viewer.cli import main
from rvq_viewer.cli import desktop


def test_desktop_entry_starts_this_installation(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data home"))
    script = tmp_path / "my venv" / "bin" / "rvq-viewer"      # a path with a space needs quoting
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "argv", [str(script), "desktop"])
    assert main(["desktop"]) == 0
    entry, icon = desktop.targets()
    assert entry == tmp_path / "data home" / "applications" / "rvq-viewer.desktop"
    assert icon.read_bytes().startswith(b"<") and icon.name == "rvq-viewer.svg"
    parsed = configparser.ConfigParser(interpolation=None)
    parsed.read_string(entry.read_text(encoding="utf-8"))
    section = parsed["Desktop Entry"]
    assert section["Name"] == "rvq-viewer" and section["Icon"] == "rvq-viewer"
    assert shlex.split(section["Exec"]) == [str(script.resolve()), "%F"]
    assert str(entry) in capsys.readouterr().out

    assert main(["desktop", "--remove"]) == 0
    assert not entry.exists() and not icon.exists()


def test_run_as_a_module_the_entry_runs_the_module(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["-m"])
    assert desktop.launcher().split()[-2:] == ["-m", "rvq_viewer"]
