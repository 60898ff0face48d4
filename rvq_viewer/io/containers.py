"""Reading untrusted checkpoint containers without running code from them.

Pickles go through `torch.load(weights_only=True)`, whose unpickler builds tensors and plain containers
only. A few classes that real checkpoints carry as configuration (GPT-SoVITS's `utils.HParams`,
Lightning's `AttributeDict`, OmegaConf containers, `argparse.Namespace`, paths, numpy scalars) are
mapped to inert stand-ins that merely store what was pickled: none of their own code runs. Any other
global (a function, `os.system`, `builtins.open`...) is refused with `UnsafeFileError`. Every failure
arrives as a one-line `LoadError` naming the file.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import LoadError, UnsafeFileError

# GPT-SoVITS v3/v4 LoRA and v2Pro files overwrite the zip magic "PK" with these two bytes.
SOVITS_MAGICS = (b"03", b"04", b"05", b"06")
ZIP_MAGIC = b"PK"
NPY_MAGIC = b"\x93NUMPY"
PICKLE_PROTO = b"\x80"


class HParamsStandIn(dict):
    """Holds the attributes of a pickled GPT-SoVITS `utils.HParams` as dict items; runs nothing."""

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.update(state)

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class OpaqueObject(dict):
    """Stand-in for a configuration object of a class we do not import (OmegaConf, AttributeDict...).

    Built by the unpickler instead of the real class: it keeps the constructor arguments in `args`
    and any pickled state as dict items (or in `state`), and has no behaviour of its own.
    """

    qualname = "object"

    def __new__(cls, *args, **kwargs):
        return dict.__new__(cls)

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.args = args

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] if isinstance(state[0], dict) else {}), **state[1]}
        if isinstance(state, dict):
            self.update({k: v for k, v in state.items() if isinstance(k, (str, int, float, bool))})
        else:
            self.state = state

    def __repr__(self):
        return f"<{self.qualname} (not loaded)>"


def plain_config(value: Any, depth: int = 0) -> Any:
    """OmegaConf stand-ins as the plain dicts, lists and values they hold (a container's `_content`, a
    node's `_val`), so a pickled DictConfig reads like the YAML it came from; anything else as it is."""
    if depth > 32 or not isinstance(value, OpaqueObject) or not value.qualname.startswith("omegaconf."):
        return value
    if "_content" in value:
        content = value["_content"]
        if isinstance(content, dict):
            return {str(k): plain_config(v, depth + 1) for k, v in content.items()}
        if isinstance(content, (list, tuple)):
            return [plain_config(v, depth + 1) for v in content]
        return content          # None, or a "???" / "${...}" string
    return plain_config(value.get("_val"), depth + 1)


ALLOWED_GLOBALS = [(HParamsStandIn, "utils.HParams"), (HParamsStandIn, "GPT_SoVITS.utils.HParams")]

# Classes seen in real checkpoints' metadata that are safe to stand in for (the stand-in runs no code
# of theirs). Names outside this list are refused: a pickle naming a function is how code execution
# attacks work, and no checkpoint of a supported project needs one.
_INERT = re.compile(
    r"^(?:omegaconf\.[\w.]+"
    r"|(?:pytorch_lightning|lightning|lightning_fabric|lightning\.fabric)(?:\.\w+)*\.AttributeDict"
    r"|argparse\.Namespace"
    r"|pathlib\.(?:Pure)?(?:Posix|Windows)?Path"
    r"|numpy\.(?:_?core\.multiarray\.scalar|dtype|dtypes\.\w+)"
    r"|typing\.Any"
    r"|collections\.defaultdict"
    r"|builtins\.bytes"   # a type reference only: bytes(n) from pickled arguments would allocate n bytes
    r"|(?:GPT_SoVITS\.)?utils\.HParams)$")
# Builtin types a config pickle refers to (OmegaConf records `dict` / `list` as a node's object type;
# protocol 2, torch.save's, writes a set as a call of `__builtin__.set`): the real types, since
# building one from the file's own values runs no code of the file's.
_SAFE_BUILTINS = {f"builtins.{t.__name__}": t for t in
                  (list, dict, set, frozenset, tuple, int, float, str, bool, complex, object)}
_MAX_STAND_INS = 32


def check_readable(path: Path) -> None:
    """Fail early, with one line, on the usual ways a path is not a readable file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise LoadError("broken symbolic link", path) from None
        raise LoadError("no such file", path) from None
    except OSError as exc:  # a symlink loop, a name too long, a vanished network share...
        raise LoadError(_os_reason(exc), path) from None
    if path.is_dir():
        raise LoadError("is a folder, not a file", path)
    if not path.is_file():
        raise LoadError("not a regular file (a device, pipe or socket)", path)
    if not os.access(path, os.R_OK):
        raise LoadError("permission denied", path)
    if st.st_size == 0:
        raise LoadError("file is empty (0 bytes)", path)


def read_head(path: Path, n: int = 8) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError as exc:
        raise LoadError(_os_reason(exc), path) from None


def read_container(path: str | Path) -> Any:
    """Load a checkpoint or array file into tensors and plain containers, chosen by its leading bytes."""
    path = Path(path)
    check_readable(path)
    head = read_head(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if head.startswith(NPY_MAGIC):
        return torch.from_numpy(np.array(_numpy_call(np.load, path)))
    if head.startswith(ZIP_MAGIC) and path.suffix == ".npz":
        return _read_npz(path)
    if head[:2] in SOVITS_MAGICS:
        # Restore the zip magic in memory, as GPT-SoVITS's own loader does.
        try:
            data = bytearray(path.read_bytes())
        except OSError as exc:
            raise LoadError(_os_reason(exc), path) from None
        data[:2] = ZIP_MAGIC
        return _torch_load(lambda: io.BytesIO(bytes(data)), path)
    if head.startswith(ZIP_MAGIC) or head[:1] == PICKLE_PROTO:
        return _torch_load(lambda: path, path)
    if _looks_like_safetensors(head, path):
        return _read_safetensors(path)
    raise LoadError("not a checkpoint: expected a PyTorch (.pt/.pth/.ckpt/.bin), safetensors, .npy or "
                    ".npz file", path)


def safe_torch_load(source, path: Path, mmap: bool = False) -> Any:
    """`torch.load` restricted to tensors, plain containers and the inert stand-ins above."""
    return _torch_load(lambda: source, path, mmap=mmap)


def _torch_load(opener, path: Path, mmap: bool = False) -> Any:
    stand_ins: list[tuple[type, str]] = []
    for _ in range(_MAX_STAND_INS):
        try:
            with torch.serialization.safe_globals(ALLOWED_GLOBALS + stand_ins), warnings.catch_warnings():
                # torch warns about pickle protocols other than 2 and about legacy files; the file is
                # read the same way, and the CLI's stderr stays one line.
                warnings.simplefilter("ignore", UserWarning)
                warnings.simplefilter("ignore", FutureWarning)
                return torch.load(opener(), map_location="cpu", weights_only=True, mmap=mmap)
        except Exception as exc:  # the unpickler and the zip reader raise many types on bad input
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            message = str(exc)
            culprit = _unsupported_global(message)
            if culprit is None:
                if "Weights only load failed" in message:
                    blocked = re.search(r"GLOBAL ([\w.]+)", message)
                    if blocked:
                        raise UnsafeFileError(f"refused: the pickle asks for '{blocked[1]}', which could run "
                                              "code; rvq-viewer loads tensors and plain data only", path) from None
                    detail = _weights_only_reason(message)
                    if re.search(r"global|reduce|not allowed|class|callable", detail, re.IGNORECASE):
                        raise UnsafeFileError("refused: the pickle asks for something beyond tensors and plain "
                                              f"data{detail}; rvq-viewer does not run code from files",
                                              path) from None
                    raise LoadError(f"corrupt or unsupported pickle{detail}", path) from None
                raise LoadError(f"cannot read the PyTorch file: {_first_line(message) or type(exc).__name__}",
                                path) from None
            allowed = culprit in _SAFE_BUILTINS or _INERT.match(culprit)
            if not allowed or any(name == culprit for _, name in stand_ins):
                raise UnsafeFileError(f"refused: the pickle asks to build '{culprit}', which could run code; "
                                      "rvq-viewer loads tensors and plain data only", path) from None
            stand_ins.append((_SAFE_BUILTINS.get(culprit) or _stand_in(culprit), culprit))
    raise UnsafeFileError("refused: the pickle names too many classes", path)


def _stand_in(qualname: str) -> type:
    return type("OpaqueObject", (OpaqueObject,), {"qualname": qualname})


def _unsupported_global(message: str) -> str | None:
    """The full name of the global torch's unpickler refused. It looks the name up as `module.name`
    but reports a builtin without its `builtins.` module (`dict`, not `builtins.dict`): a name with no
    module is a builtin, and the allowlist and the stand-in are keyed by the name it looks up."""
    match = re.search(r"Unsupported global: GLOBAL (\S+) was not", message)
    if not match:
        return None
    return match[1] if "." in match[1] else f"builtins.{match[1]}"


def _weights_only_reason(message: str) -> str:
    match = re.search(r"WeightsUnpickler error: ([^\n]+)", message)
    if not match:
        return ""
    return f" ({match[1].strip()[:160]})"


def _looks_like_safetensors(head: bytes, path: Path) -> bool:
    if len(head) < 8:
        return False
    header_len = int.from_bytes(head, "little")
    try:
        return 1 < header_len < path.stat().st_size - 7
    except OSError:
        return False


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    try:
        return load_file(str(path))
    except Exception as exc:  # SafetensorError, OSError, and whatever a hostile header provokes
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise LoadError(f"cannot read the safetensors file: {_first_line(str(exc)) or type(exc).__name__}",
                        path) from None


def _read_npz(path: Path) -> dict[str, torch.Tensor]:
    archive = _numpy_call(np.load, path)
    try:
        with archive:
            return {name: torch.from_numpy(np.array(archive[name])) for name in archive.files}
    except Exception as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        if "allow_pickle" in str(exc):
            raise UnsafeFileError("refused: the archive holds Python objects (a pickle)", path) from None
        raise LoadError(f"cannot read the .npz archive: {_first_line(str(exc)) or type(exc).__name__}",
                        path) from None


def _numpy_call(fn, path: Path, **kwargs):
    """Call a numpy loader with pickles refused, turning its errors into one-line LoadErrors."""
    try:
        return fn(path, allow_pickle=False, **kwargs)
    except Exception as exc:  # ValueError, OSError, EOFError, BadZipFile, SyntaxError from a bad header...
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        if "allow_pickle" in str(exc):
            raise UnsafeFileError("refused: the array holds Python objects (a pickle)", path) from None
        if isinstance(exc, OSError) and exc.strerror:
            raise LoadError(f"cannot read the array: {_os_reason(exc)}", path) from None
        raise LoadError(f"cannot read the array: {_first_line(str(exc)) or type(exc).__name__}", path) from None


def _os_reason(exc: OSError) -> str:
    return (exc.strerror or str(exc) or type(exc).__name__).strip().lower()


def _first_line(message: str) -> str:
    message = re.sub(r"\x1b\[[0-9;]*m", "", message)
    return message.strip().splitlines()[0][:200] if message.strip() else ""
