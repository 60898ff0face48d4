"""The run database: what `rvq_viewer.monitor` records of a live training run, one SQLite file per rank.

SQLite in WAL mode (the standard library's `sqlite3`): the monitor's writer thread commits one logging
window per transaction, a reader (the app, `rvq-viewer runs`) follows while the trainer writes, and a
killed trainer leaves every committed window readable. The schema is versioned (`PRAGMA user_version`)
and marked as ours (`PRAGMA application_id`); docs/monitor.md documents every table and column.

Arrays are stored as little-endian bytes: counts as zlib-compressed int64 [K] (mostly small numbers and
zeros), EMA cluster sizes float32 [K] and codebooks float32 [K, D] row-major, uncompressed (floats do not
compress, and zlib on a 4 MB codebook costs a quarter of a second).
"""

from __future__ import annotations

import json
import sqlite3
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LoadError

SCHEMA_VERSION = 1
APPLICATION_ID = 0x52565156          # "RVQV"
FILE_PREFIX = "rvq-monitor"
FILE_SUFFIX = ".sqlite"
# How long a connection waits for another one's lock (the writer's commit) before giving up.
BUSY_TIMEOUT_MS = 5000

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE layers (layer INTEGER PRIMARY KEY, codebook_size INTEGER NOT NULL, dim INTEGER);
CREATE TABLE windows (
    id INTEGER PRIMARY KEY, step_from INTEGER NOT NULL, step_to INTEGER NOT NULL, steps INTEGER NOT NULL,
    invalid INTEGER NOT NULL DEFAULT 0, written REAL NOT NULL);
CREATE TABLE window_layers (
    window INTEGER NOT NULL REFERENCES windows(id), layer INTEGER NOT NULL, frames INTEGER NOT NULL,
    ema_dead INTEGER, counts BLOB NOT NULL, ema_size BLOB, PRIMARY KEY (window, layer));
CREATE TABLE events (
    id INTEGER PRIMARY KEY, window INTEGER NOT NULL REFERENCES windows(id), step INTEGER NOT NULL,
    layer INTEGER NOT NULL, code INTEGER NOT NULL, kind TEXT NOT NULL, ema_size_before REAL,
    ema_size_after REAL, jump REAL);
CREATE TABLE snapshots (
    window INTEGER NOT NULL REFERENCES windows(id), step INTEGER NOT NULL, layer INTEGER NOT NULL,
    rows INTEGER NOT NULL, dim INTEGER NOT NULL, codebook BLOB NOT NULL, PRIMARY KEY (window, layer));
CREATE TABLE drops (
    id INTEGER PRIMARY KEY, step_from INTEGER NOT NULL, step_to INTEGER NOT NULL, windows INTEGER NOT NULL,
    reason TEXT NOT NULL, written REAL NOT NULL);
"""


def run_file_name(rank: int) -> str:
    return f"{FILE_PREFIX}.rank{int(rank)}{FILE_SUFFIX}"


def run_files(path: str | Path) -> list[Path]:
    """The database files of a run: every rank's file in a run directory, or the one file given.
    Raises a one-line LoadError when there is none (nothing is created)."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob(f"{FILE_PREFIX}.rank*{FILE_SUFFIX}"), key=_rank_of)
        if not found:
            raise LoadError(f"no run database here (a monitored run writes {run_file_name(0)})", path)
        return found
    if not path.exists():
        raise LoadError("no such file or directory", path)
    return [path]


def is_run_path(path: str | Path) -> bool:
    """A run directory (holding a rank's database) or a run database file, by name."""
    path = Path(path)
    if path.is_dir():
        return any(path.glob(f"{FILE_PREFIX}.rank*{FILE_SUFFIX}"))
    return path.name.startswith(FILE_PREFIX) and path.suffix == FILE_SUFFIX


def _rank_of(path: Path) -> int:
    text = path.name[len(FILE_PREFIX) + len(".rank"):-len(FILE_SUFFIX)]
    return int(text) if text.isdigit() else 1 << 30


def pack(array: np.ndarray, dtype) -> bytes:
    """Little-endian bytes of `array` as `dtype`, zlib-compressed for integers."""
    raw = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    return zlib.compress(raw, 1) if np.dtype(dtype).kind in "iu" else raw


def unpack(blob: bytes, dtype, shape: tuple, path: Path, what: str) -> np.ndarray:
    try:
        raw = zlib.decompress(blob) if np.dtype(dtype).kind in "iu" else bytes(blob)
        array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
        return array.reshape(shape).astype(dtype)
    except (zlib.error, ValueError, TypeError) as exc:
        raise LoadError(f"{what} is damaged ({exc})", path) from None


# --- writing -------------------------------------------------------------------------------------------
@dataclass
class LayerRecord:
    layer: int
    counts: np.ndarray                 # int64 [K]
    ema_size: np.ndarray | None = None  # float32 [K] at the window's end
    ema_dead: int | None = None


@dataclass
class EventRecord:
    step: int
    layer: int
    code: int
    kind: str
    ema_size_before: float | None = None
    ema_size_after: float | None = None
    jump: float | None = None


class RunWriter:
    """Appends windows to one rank's database (created with the schema when new). Not thread-safe: one
    thread (the monitor's writer) owns it."""

    def __init__(self, path: str | Path, meta: dict, layers: list[tuple[int, int | None]]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        self.db = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        # A commit survives a killed process (WAL + NORMAL); only a power loss may lose the last ones.
        self.db.execute("PRAGMA synchronous=NORMAL")
        if fresh:
            rows = ",".join(f"({i}, {int(k)}, {'NULL' if d is None else int(d)})" for i, (k, d) in enumerate(layers))
            self.db.executescript(f"BEGIN IMMEDIATE;{SCHEMA}INSERT INTO layers VALUES {rows};"
                                  f"PRAGMA user_version={SCHEMA_VERSION};PRAGMA application_id={APPLICATION_ID};COMMIT;")
        else:
            check_header(self.db, self.path)
        with self._transaction():
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                [(k, json.dumps(v)) for k, v in meta.items()])
        self.next_window = int(self.db.execute("SELECT COALESCE(MAX(id) + 1, 0) FROM windows").fetchone()[0])

    def _transaction(self):
        return _Transaction(self.db)

    def write_window(self, step_from: int, step_to: int, steps: int, layers: list[LayerRecord],
                     events: list[EventRecord] = (), codebooks: list[np.ndarray] | None = None,
                     invalid: int = 0) -> int:
        """One window, its events and (optionally) a snapshot of the codebooks, in one transaction."""
        window = self.next_window
        with self._transaction():
            self.db.execute("INSERT INTO windows VALUES (?, ?, ?, ?, ?, ?)",
                            (window, int(step_from), int(step_to), int(steps), int(invalid), time.time()))
            self.db.executemany("INSERT INTO window_layers VALUES (?, ?, ?, ?, ?, ?)", [
                (window, r.layer, int(r.counts.sum()), r.ema_dead, pack(r.counts, np.int64),
                 None if r.ema_size is None else pack(r.ema_size, np.float32)) for r in layers])
            self.db.executemany("INSERT INTO events (window, step, layer, code, kind, ema_size_before, "
                                "ema_size_after, jump) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
                                    (window, e.step, e.layer, e.code, e.kind, e.ema_size_before, e.ema_size_after,
                                     e.jump) for e in events])
            if codebooks is not None:
                self.db.executemany("INSERT INTO snapshots VALUES (?, ?, ?, ?, ?, ?)", [
                    (window, int(step_to), layer, int(cb.shape[0]), int(cb.shape[1]), pack(cb, np.float32))
                    for layer, cb in enumerate(codebooks)])
        self.next_window += 1
        return window

    def write_drops(self, ranges: list[tuple[int, int]], reason: str) -> None:
        """Windows the monitor dropped (its queue was full): their step ranges, one row per run of drops."""
        if not ranges:
            return
        with self._transaction():
            self.db.execute("INSERT INTO drops (step_from, step_to, windows, reason, written) VALUES (?, ?, ?, ?, ?)",
                            (min(a for a, _ in ranges), max(b for _, b in ranges), len(ranges), reason, time.time()))

    def set_meta(self, **values) -> None:
        with self._transaction():
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                [(k, json.dumps(v)) for k, v in values.items()])

    def close(self) -> None:
        self.db.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, tb):
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
        return False


# --- reading -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WindowRow:
    id: int
    step_from: int
    step_to: int
    steps: int
    invalid: int
    written: float


@dataclass
class LayerRow:
    layer: int
    frames: int
    ema_dead: int | None
    counts: np.ndarray
    ema_size: np.ndarray | None


def check_header(db: sqlite3.Connection, path: Path) -> None:
    """Is this one of our databases, of a schema this version reads? A one-line LoadError if not."""
    try:
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise LoadError(f"not a readable run database ({_reason(exc)})", path) from None
    if app_id != APPLICATION_ID:
        raise LoadError("not an rvq-viewer run database (SQLite file of another application)", path)
    if version > SCHEMA_VERSION:
        raise LoadError(f"run database schema {version} is newer than this rvq-viewer reads ({SCHEMA_VERSION}): "
                        "upgrade rvq-viewer", path)
    if version < 1:
        raise LoadError("run database without a schema version (not written by rvq-viewer's monitor)", path)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class RunReader:
    """One rank's database, opened read-only: nothing is ever written to it. Every query that finds the
    file damaged raises a one-line LoadError naming it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise LoadError("no such run database", self.path)
        self._connect()
        try:
            check_header(self.db, self.path)
            self.meta = {k: json.loads(v) for k, v in self._query("SELECT key, value FROM meta")}
            self.layers = [(int(k), None if d is None else int(d))
                           for _, k, d in self._query("SELECT layer, codebook_size, dim FROM layers ORDER BY layer")]
        except (LoadError, ValueError) as exc:
            self.db.close()
            if isinstance(exc, LoadError):
                raise
            raise LoadError(f"run database metadata is damaged ({exc})", self.path) from None
        if not self.layers:
            self.db.close()
            raise LoadError("run database lists no layers", self.path)

    def _connect(self) -> None:
        """Read-only. A live writer keeps a `-wal` file beside the database; without one nobody writes it,
        and it is opened immutable so that SQLite creates no `-wal`/`-shm` files either."""
        self.immutable = not self.wal_path.exists()
        uri = self.path.resolve().as_uri() + ("?immutable=1" if self.immutable else "?mode=ro")
        try:
            self.db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
        except sqlite3.Error as exc:
            raise LoadError(f"cannot open the run database ({_reason(exc)})", self.path) from None

    @property
    def wal_path(self) -> Path:
        return self.path.with_name(self.path.name + "-wal")

    def refresh(self) -> None:
        """Reopen a database opened immutable once a writer has started on it again (a resumed run)."""
        if self.immutable and self.wal_path.exists():
            self.db.close()
            self._connect()

    @property
    def codebook_sizes(self) -> list[int]:
        return [k for k, _ in self.layers]

    @property
    def rank(self) -> int:
        return int(self.meta.get("rank", 0))

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise LoadError(f"run database is damaged ({_reason(exc)})", self.path) from None

    def windows(self, after: int = -1) -> list[WindowRow]:
        """Windows committed with an id above `after`, in the order written."""
        return [WindowRow(*row) for row in self._query(
            "SELECT id, step_from, step_to, steps, invalid, written FROM windows WHERE id > ? ORDER BY id", (after,))]

    def window_layers(self, window: int) -> list[LayerRow]:
        out = []
        sizes = self.codebook_sizes
        for layer, frames, ema_dead, counts, ema in self._query(
                "SELECT layer, frames, ema_dead, counts, ema_size FROM window_layers WHERE window = ? ORDER BY layer",
                (window,)):
            if not 0 <= layer < len(sizes):
                raise LoadError(f"window {window} names layer {layer}, the run has {len(sizes)}", self.path)
            k = sizes[layer]
            row = LayerRow(int(layer), int(frames), None if ema_dead is None else int(ema_dead),
                           unpack(counts, np.int64, (k,), self.path, f"window {window} layer {layer} counts"),
                           None if ema is None else unpack(ema, np.float32, (k,), self.path,
                                                           f"window {window} layer {layer} EMA sizes"))
            if int(row.counts.sum()) != row.frames:
                raise LoadError(f"window {window} layer {layer}: counts do not add up to its frames", self.path)
            out.append(row)
        return out

    def events(self, after: int = -1) -> list[tuple[int, EventRecord]]:
        """(event id, event) for events with an id above `after`."""
        return [(int(row[0]), EventRecord(*row[1:])) for row in self._query(
            "SELECT id, step, layer, code, kind, ema_size_before, ema_size_after, jump FROM events WHERE id > ? "
            "ORDER BY id", (after,))]

    def snapshot_windows(self) -> list[tuple[int, int]]:
        """(window id, step) of every window that carries a snapshot of the codebooks."""
        return [(int(w), int(s)) for w, s in self._query("SELECT DISTINCT window, step FROM snapshots ORDER BY window")]

    def snapshot(self, window: int) -> list[np.ndarray]:
        rows = self._query("SELECT layer, rows, dim, codebook FROM snapshots WHERE window = ? ORDER BY layer", (window,))
        if len(rows) != len(self.layers):
            raise LoadError(f"snapshot of window {window} holds {len(rows)} of {len(self.layers)} layers", self.path)
        return [unpack(blob, np.float32, (int(k), int(d)), self.path, f"snapshot {window} layer {layer}")
                for layer, k, d, blob in rows]

    def drops(self) -> list[tuple[int, int, int, str]]:
        """(step_from, step_to, windows, reason) of every run of dropped windows."""
        return [(int(a), int(b), int(n), str(r)) for a, b, n, r in
                self._query("SELECT step_from, step_to, windows, reason FROM drops ORDER BY id")]

    def close(self) -> None:
        self.db.close()
