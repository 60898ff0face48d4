"""Persistent user settings: one QSettings ini file behind a defaults dict with typed reads.

Where things live: `RVQ_VIEWER_SETTINGS` (a file) and `RVQ_VIEWER_CACHE` (a folder) override the
platform locations; tests point both at temporary paths (`use_paths`) so they never touch the user's.
Reading an unknown key is a `KeyError`: every key has a default here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, QStandardPaths

MAX_RECENT = 10

DEFAULTS: dict[str, object] = {
    "recent": [],                  # [{"checkpoint": str, "features": [str, ...]}], newest first
    "last_dir": "",                # where the last checkpoint or features were opened from
    "export_dir": "",              # where the last export went ("": the user's documents)
    "theme": "system",             # "system", "light" or "dark"
    "device": "auto",
    "audit/cluster": "",           # the Dask address last used in Audit > Run on ("": this machine)
    "histogram/log": True,
    "histogram/sorted": False,
    "map/all_layers": False,
    "map/umap": True,
    "dead/filter": "either",       # "unused", "ema" or "either"
    "window/geometry": QByteArray(),
    "window/state": QByteArray(),
}

_settings_file: Path | None = None
_cache_dir: Path | None = None
_qsettings: QSettings | None = None


def use_paths(settings_file: str | Path | None = None, cache_dir: str | Path | None = None) -> None:
    """Point settings and cache somewhere else (tests, --settings); None goes back to the defaults."""
    global _settings_file, _cache_dir, _qsettings
    _settings_file = Path(settings_file) if settings_file else None
    _cache_dir = Path(cache_dir) if cache_dir else None
    _qsettings = None


def settings_file() -> Path:
    if _settings_file is not None:
        return _settings_file
    if os.environ.get("RVQ_VIEWER_SETTINGS"):
        return Path(os.environ["RVQ_VIEWER_SETTINGS"])
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.GenericConfigLocation)
    return Path(base or Path.home() / ".config") / "rvq-viewer" / "rvq-viewer.ini"


def cache_dir() -> Path:
    """Where UMAP embeddings and numba's compiled functions are cached (`locations.cache_dir`)."""
    if _cache_dir is not None:
        return _cache_dir
    from ..locations import cache_dir as default
    return default()


def export_dir() -> Path:
    """The folder export dialogs open in: the last export's, else the user's documents (never the
    folder of the bundled demo, which a first session opens from)."""
    saved = get("export_dir")
    if saved and Path(saved).is_dir():
        return Path(saved)
    docs = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation)
    return Path(docs) if docs and Path(docs).is_dir() else Path.home()


def _store() -> QSettings:
    global _qsettings
    if _qsettings is None:
        path = settings_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        _qsettings = QSettings(str(path), QSettings.Format.IniFormat)
    return _qsettings


def get(key: str):
    default = DEFAULTS[key]
    store = _store()
    if not store.contains(key):
        return default.copy() if isinstance(default, (list, dict)) else default
    raw = store.value(key)
    try:
        if isinstance(default, bool):
            return raw if isinstance(raw, bool) else str(raw).lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, (list, dict)):
            value = json.loads(raw) if isinstance(raw, str) else raw
            return value if isinstance(value, type(default)) else default
        if isinstance(default, QByteArray):
            return raw if isinstance(raw, QByteArray) else QByteArray()
        return str(raw)
    except (TypeError, ValueError):
        return default


def set(key: str, value) -> None:  # noqa: A001  (the module is used as `settings.set`)
    if key not in DEFAULTS:
        raise KeyError(key)
    if isinstance(DEFAULTS[key], (list, dict)):
        value = json.dumps(value)
    _store().setValue(key, value)


def sync() -> None:
    _store().sync()


def recent() -> list[dict]:
    """Recently opened (checkpoint, features) pairs, newest first."""
    entries = []
    for entry in get("recent"):
        if isinstance(entry, dict) and isinstance(entry.get("checkpoint"), str):
            entries.append({"checkpoint": entry["checkpoint"],
                            "features": [str(f) for f in entry.get("features", [])]})
    return entries


def add_recent(checkpoint: str | Path, features: list[str | Path]) -> list[dict]:
    entry = {"checkpoint": str(Path(checkpoint).resolve()),
             "features": [str(Path(f).resolve()) for f in features]}
    entries = [e for e in recent() if e != entry]
    entries.insert(0, entry)
    del entries[MAX_RECENT:]
    set("recent", entries)
    return entries


def clear_recent() -> None:
    set("recent", [])
