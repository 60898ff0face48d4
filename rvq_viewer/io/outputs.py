"""Writing output files so that no input and no device is ever destroyed.

- `check_outputs` refuses, before any work, an output that is one of the inputs (the same file by
  inode, through any symlink or relative path) or that two outputs share.
- `atomic_path` writes a regular file through a temporary beside it, renamed over the target only when
  the write succeeded: a crash or a full disk leaves the old file (or none), never a half-written one.
  Something that is not a regular file is never replaced by a rename: a character device or a FIFO
  with a reader is written through as a stream (`--json /dev/stdout | jq`), a folder, a block
  device, a socket or a FIFO with no reader is refused.
- Every error names the path the user gave, never the temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import RvqViewerError

# Longest file name most file systems take (ext4, xfs, btrfs, tmpfs: 255 bytes).
_DEFAULT_NAME_MAX = 255
_TMP_SUFFIX = ".tmp"


class OutputError(RvqViewerError):
    """An output path that cannot or must not be written."""


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def check_outputs(outputs: Iterable[tuple[str, str | Path | None]], inputs: Iterable[str | Path]) -> None:
    """Refuse outputs that are inputs or that coincide. `outputs` holds (option name, path) pairs,
    e.g. ("--json", "out.json"); None paths are skipped. Folders among `inputs` count by the files in
    them that the caller lists itself: pass those files too."""
    ids: dict[tuple[int, int], str] = {}
    names: dict[str, str] = {}
    for raw in inputs:
        path = Path(raw)
        found = _file_id(path)
        if found is not None:
            ids[found] = str(raw)
        names[os.path.realpath(path)] = str(raw)
    taken: dict[str, str] = {}
    for option, raw in outputs:
        if raw is None:
            continue
        path = Path(raw)
        found = _file_id(path)
        real = os.path.realpath(path)
        same = ids.get(found) if found is not None else None
        same = same or names.get(real)
        if same is not None:
            raise OutputError(f"{option} is an input file ({same}): refusing to overwrite it; "
                              "choose another output path", raw)
        if real in taken:
            raise OutputError(f"{option} is the same file as {taken[real]}: choose two different paths", raw)
        taken[real] = option


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return _DEFAULT_NAME_MAX


def temporary_name(path: Path) -> Path:
    """A hidden name beside `path` that fits the file system's name limit, however long `path`'s is."""
    tag = "." + secrets.token_hex(4) + _TMP_SUFFIX
    room = _name_max(path.parent) - len(os.fsencode(tag)) - 1   # 1 for the leading dot
    stem = os.fsencode(path.name)[:max(1, room)]
    return path.parent / ("." + os.fsdecode(stem).rstrip("\udcff") + tag)


def _describe(mode: int) -> str | None:
    """Why a non-regular file cannot be written through, or None when it can be (char device, FIFO)."""
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if stat.S_ISBLK(mode):
        return "is a block device: refusing to write over it"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a file"
    return None


def _reason(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        text += " (the previous file, if any, is left as it was)"
    return f"cannot write: {text[:1].lower() + text[1:]}"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield the path to write: a temporary beside a regular file (renamed over it on success), or the
    target itself for a character device or a FIFO with a reader. Raises `OutputError` naming `path`."""
    given = Path(path)
    target = Path(os.path.realpath(given)) if given.is_symlink() else given
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise OutputError(_reason(exc), given) from None
    if mode is not None and not stat.S_ISREG(mode):
        why = _describe(mode)
        if why is not None:
            raise OutputError(why, given)
        if stat.S_ISFIFO(mode):
            _check_fifo_reader(target, given)
        try:
            yield target
        except OSError as exc:
            raise OutputError(_reason(exc), given) from None
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(_reason(exc), given) from None
    tmp = temporary_name(target)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)   # the umask applies, as for any file
        os.close(fd)
    except OSError as exc:
        raise OutputError(_reason(exc), given) from None
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, RvqViewerError):
            raise OutputError(_reason(exc), given) from None
        raise


def _check_fifo_reader(target: Path, given: Path) -> None:
    """A FIFO nobody reads would block the write forever: refuse it instead."""
    try:
        fd = os.open(target, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise OutputError("is a FIFO with no reader: start the reader first", given) from None
        raise OutputError(_reason(exc), given) from None
    os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            with contextlib.suppress(OSError):
                os.fsync(fh.fileno())
