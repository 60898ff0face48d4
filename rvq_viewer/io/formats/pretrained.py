"""Folders as transformers' `save_pretrained` writes them, and Hugging Face cache folders.

A `save_pretrained` folder holds `config.json` and the weights: `model.safetensors`, or shards listed
by `model.safetensors.index.json` (its `weight_map` names each tensor's shard), or the older
`pytorch_model.bin` (SNAC's repositories) and its own index. The cache keeps a repository as
`models--org--name/` with `refs/main` (a commit hash) and `snapshots/<hash>/`, a `save_pretrained`
folder of links into `blobs/`: the repository folder, its `snapshots/` or one snapshot all open.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ...errors import LoadError
from ..containers import read_container

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_SUFFIX = ".index.json"
_INDEX_MAX_BYTES = 64 << 20
_SHARD_NAME = re.compile(r"^[\w.+-]+$")      # a plain file name in the folder: no path, no ".."
_REVISION = re.compile(r"^[0-9A-Za-z._-]{1,128}$")


def is_model_folder(path: Path) -> bool:
    """A folder that holds model weights (a save_pretrained or cache folder), not feature files."""
    path = Path(path)
    if not path.is_dir():
        return False
    if path.name == "snapshots" or (path / "snapshots").is_dir():
        return True
    return any((path / name).exists() or (path / (name + INDEX_SUFFIX)).exists() for name in WEIGHT_FILES)


def snapshot_folder(path: Path) -> tuple[Path, str | None]:
    """The folder holding the weights, and a note when it was found inside a Hugging Face cache
    repository (the snapshot `refs/main` names, or its only snapshot)."""
    repo = path.parent if path.name == "snapshots" else path
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return path, None
    revision = _read_ref(repo / "refs" / "main")
    if revision is not None and (snapshots / revision).is_dir():
        return snapshots / revision, f"Hugging Face cache: snapshot {revision[:12]} (refs/main)"
    found = sorted(p for p in snapshots.iterdir() if p.is_dir())
    if len(found) == 1:
        return found[0], f"Hugging Face cache: its only snapshot, {found[0].name[:12]}"
    if not found:
        raise LoadError("a Hugging Face cache folder with no snapshot downloaded", path)
    raise LoadError(f"a Hugging Face cache folder with {len(found)} snapshots and no refs/main naming one: "
                    f"open one of {snapshots}/<hash>/", path)


def _read_ref(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip() if path.is_file() and path.stat().st_size < 1024 else ""
    except (OSError, UnicodeDecodeError):
        return None
    return text if _REVISION.match(text) and text not in (".", "..") else None


def read_pretrained(path: Path) -> tuple[dict[str, Any], Path, list[str]]:
    """The tensors of a `save_pretrained` (or cache) folder, the folder, and notes on what was read."""
    folder, note = snapshot_folder(path)
    notes = [note] if note else []
    for name in WEIGHT_FILES:
        single, index = folder / name, folder / (name + INDEX_SUFFIX)
        if single.exists() or single.is_symlink():
            notes.append(f"save_pretrained folder: {name}" + (" + config.json" if (folder / "config.json").is_file()
                                                               else " (no config.json)"))
            return _as_state(read_container(single), single), folder, notes
        if index.exists() or index.is_symlink():
            state, shards = _read_shards(index)
            notes.append(f"save_pretrained folder: {len(shards)} shards listed by {index.name}")
            return state, folder, notes
    raise LoadError("is a folder without model weights: expected a save_pretrained folder (config.json with "
                    f"{' or '.join(WEIGHT_FILES)}, or a sharded *{INDEX_SUFFIX}), or a Hugging Face cache folder",
                    path)


def _as_state(obj: Any, path: Path) -> dict:
    if not isinstance(obj, dict):
        raise LoadError(f"not a checkpoint: the file holds a {type(obj).__name__}, not a dict of tensors", path)
    return obj


def _read_shards(index: Path) -> tuple[dict[str, Any], list[str]]:
    weight_map = _weight_map(index)
    shards = list(dict.fromkeys(weight_map.values()))
    state: dict[str, Any] = {}
    for shard in shards:
        part = _as_state(read_container(index.parent / shard), index.parent / shard)
        for key in part:
            if key in state:
                raise LoadError(f"tensor {key!r} is in two shards", index.parent / shard)
        state.update(part)
    missing = [key for key in weight_map if key not in state]
    if missing:
        raise LoadError(f"the index lists {len(missing)} tensors its shards lack (e.g. {missing[0]!r} in "
                        f"{weight_map[missing[0]]})", index)
    return state, shards


def _weight_map(index: Path) -> dict[str, str]:
    try:
        if index.stat().st_size > _INDEX_MAX_BYTES:
            raise LoadError(f"index is larger than {_INDEX_MAX_BYTES >> 20} MiB", index)
        data = json.loads(index.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LoadError("broken symbolic link" if index.is_symlink() else "no such file", index) from None
    except OSError as exc:
        raise LoadError((exc.strerror or type(exc).__name__).lower(), index) from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise LoadError("the shard index is not valid JSON", index) from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise LoadError("the shard index has no weight_map", index)
    for key, shard in weight_map.items():
        if not isinstance(shard, str) or not _SHARD_NAME.match(shard) or shard in (".", ".."):
            raise LoadError(f"the shard index names {shard!r} for {str(key)[:80]!r}: not a file in this folder",
                            index)
    return weight_map
