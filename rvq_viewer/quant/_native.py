"""The fused native search kernel (`nearest.c`): built on this machine, one more candidate path. Private.

The kernel scores codes in registers and keeps each row's minimum as it goes, so no score tile is
written or read back: at small D that is most of the work a GEMM-based search does, and at large D it
saves the argmin's passes over the tile. It is compiled the first time it is wanted, with the C
compiler the machine has (`CC`, Python's own, `cc`, `gcc` or `clang`) and `-march=native`, into the
cache folder under a name made from the source, the flags and the CPU, and loaded with ctypes.
Without a compiler, or if the build fails, the engine simply goes without it (`unavailable()` says
why); `RVQ_VIEWER_NATIVE=0` turns it off. Like every path it is used only where the search probe
measured it fastest with codes equal to `addmm` + `argmin`.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path

import torch

from ._cpu_engine import squared_norms

SOURCE = Path(__file__).with_name("nearest.c")
KERNELS = ("r2c2", "r4c1", "r4c2", "r6c2", "r8c1", "r8c2")
ABI = 1
# Codes per kernel step are a multiple of this (16 lanes x up to 4 vectors); panels are rounded to it.
CODE_STEP = 64
ENABLED = os.environ.get("RVQ_VIEWER_NATIVE", "1") != "0"
# Flag sets tried in turn: the machine's own instructions (x86 / ARM spellings), then portable code.
FLAG_SETS = (["-O3", "-march=native"], ["-O3", "-mcpu=native"], ["-O3"])
BUILD_TIMEOUT_S = 120

_LOCK = threading.Lock()
_LIB: ctypes.CDLL | None = None
_WHY: str | None = None
_TRIED = False


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, built on first use; None where it cannot be had."""
    global _LIB, _WHY, _TRIED
    if _TRIED:
        return _LIB
    with _LOCK:
        if not _TRIED:
            try:
                _LIB = _load() if ENABLED else None
                _WHY = None if ENABLED else "turned off (RVQ_VIEWER_NATIVE=0)"
            except _Unavailable as exc:
                _LIB, _WHY = None, str(exc)
            except Exception as exc:  # noqa: BLE001 - e.g. the source missing from a broken install
                _LIB, _WHY = None, f"{type(exc).__name__}: {_first_line(exc)}"
            _TRIED = True
    return _LIB


def forget() -> None:
    """Load (or build) again on next use (tests)."""
    global _LIB, _WHY, _TRIED
    with _LOCK:
        _LIB, _WHY, _TRIED = None, None, False


def unavailable() -> str | None:
    """Why the kernel is not in use (None when it is)."""
    library()
    return _WHY


class _Unavailable(Exception):
    pass


def _load() -> ctypes.CDLL:
    from ..locations import cache_dir
    compiler = _compiler()
    if compiler is None:
        raise _Unavailable("no C compiler found (set CC to use one)")
    folder = cache_dir() / "native"
    source = SOURCE.read_bytes()
    errors = []
    for flags in FLAG_SETS:
        path = folder / f"nearest-{_build_id(source, compiler, flags)}{_suffix()}"
        try:
            if not path.exists():
                _build(compiler, flags, folder, path)
            return _bind(ctypes.CDLL(str(path)))
        except (OSError, subprocess.SubprocessError, _Unavailable) as exc:
            errors.append(f"{' '.join(flags)}: {_first_line(exc)}")
    raise _Unavailable(f"the kernel did not build with {compiler}: " + "; ".join(errors))


def _compiler() -> str | None:
    names = [os.environ.get("CC", ""), (sysconfig.get_config_var("CC") or "").split(" ")[0], "cc", "gcc", "clang"]
    for name in names:
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _build(compiler: str, flags: list[str], folder: Path, path: Path) -> None:
    """Compile to a temporary name beside `path`, then rename: another process may be loading it."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".nearest-", suffix=_suffix(), dir=folder)
    os.close(fd)
    try:
        cmd = [compiler, *flags, "-shared", "-fPIC", "-o", tmp, str(SOURCE)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        if done.returncode != 0:
            raise _Unavailable((done.stderr or done.stdout or f"exit status {done.returncode}").strip())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    lib.rvq_nearest_abi.restype = ctypes.c_int
    if lib.rvq_nearest_abi() != ABI:
        raise _Unavailable("the built kernel is of another version")
    for name in KERNELS:
        fn = getattr(lib, f"nearest_{name}")
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                       ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    return lib


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """A digest of the kernel's source ("none" without it): a measured choice is of this code's speed."""
    try:
        return hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:10]
    except OSError:
        return "none"


def _build_id(source: bytes, compiler: str, flags: list[str]) -> str:
    """Source, compiler, flags and the CPU's exact model and instruction sets: a cache folder shared by
    machines of several kinds (a cluster's home directory) must never load code built for another."""
    h = hashlib.sha256(source)
    for part in (compiler, " ".join(flags), cpu_signature(), sys.platform):
        h.update(b"\0" + part.encode())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def cpu_signature() -> str:
    """The CPU's vendor, family, model, name and instruction-set lines (/proc/cpuinfo), else what
    `platform` says."""
    import platform
    try:
        with open("/proc/cpuinfo") as fh:
            wanted = ("vendor_id", "cpu family", "model", "model name", "flags", "Features", "CPU part")
            lines = {}
            for line in fh:
                key = line.split(":", 1)[0].strip()
                if key in wanted and key not in lines:
                    lines[key] = line.strip()
            return "\n".join(lines[k] for k in sorted(lines))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def _suffix() -> str:
    return ".dll" if sys.platform == "win32" else ".so"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --- the plan ------------------------------------------------------------------------------------------

# A plan gives each thread its own copy of its codebook (config.copies) only up to this size.
COPY_BYTES = 16 << 20


def layout(codebook: torch.Tensor, sq: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(w, bias) as nearest.c reads them: w [kp / 16, d, 16] = -2 E in groups of 16 codes, bias [kp] =
    ||e||^2, kp the code count rounded up to CODE_STEP (padding: w 0, bias +inf, never the minimum)."""
    codebook = codebook.detach().to(torch.float32).contiguous()
    if sq is None:
        sq = squared_norms(codebook)
    k, d = codebook.shape
    kp = -(-k // CODE_STEP) * CODE_STEP
    weight = torch.zeros(kp, d)
    weight[:k] = codebook * -2.0                           # exact: a power of two
    bias = torch.full((kp,), float("inf"))
    bias[:k] = sq.detach().to(torch.float32)
    return weight.view(kp // 16, 16, d).transpose(1, 2).contiguous(), bias


class NativePlan:
    """A codebook laid out for the kernel; `search` runs in the calling thread (a CPU worker's piece).

    With `config.copies`, each thread that searches reads its own copy of the layout, made on its first
    search: on some hosts (a virtual machine's cores) two cores reading one copy run 7-46% slower than
    each reading its own. The probe chooses it only where it measured so."""

    @staticmethod
    def can_copy(codebook: torch.Tensor) -> bool:
        return -(-codebook.shape[0] // CODE_STEP) * CODE_STEP * codebook.shape[1] * 4 <= COPY_BYTES

    def __init__(self, codebook: torch.Tensor, sq: torch.Tensor | None, config):
        lib = library()
        if lib is None or config.kernel not in KERNELS:
            raise RuntimeError(f"native kernel {config.kernel!r} unavailable: {unavailable()}")
        self.config = config
        self.k, self.d = codebook.shape
        self.weight, self.bias = layout(codebook, sq)
        self.kp = self.bias.shape[0]
        self.panel = -(-max(1, config.panel) // CODE_STEP) * CODE_STEP
        self._fn = getattr(lib, f"nearest_{config.kernel}")
        self._copies = threading.local() if config.copies and self.can_copy(codebook) else None

    def _layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) this thread reads: its own copy where the plan keeps copies."""
        if self._copies is None:
            return self.weight, self.bias
        mine = getattr(self._copies, "layout", None)
        if mine is None:
            mine = self._copies.layout = (self.weight.clone(), self.bias.clone())
        return mine

    def search(self, x: torch.Tensor, block: int | None = None) -> torch.Tensor:
        x = x.detach()
        if x.dim() != 2 or x.shape[1] != self.d:           # the kernel trusts its shapes: check here
            raise ValueError(f"native search: rows {tuple(x.shape)} for a codebook of dimension {self.d}")
        if x.dtype != torch.float32 or not x.is_contiguous():
            x = x.to(torch.float32).contiguous()
        out = torch.empty(x.shape[0], dtype=torch.long)
        if x.shape[0]:
            weight, bias = self._layout()
            # ctypes lets go of the GIL for the call: the CPU workers run it side by side.
            self._fn(x.data_ptr(), x.shape[0], self.d, weight.data_ptr(), bias.data_ptr(),
                     self.kp, self.panel, out.data_ptr())
        return out
