"""Reading a monitored run: `rvq-viewer runs`, a trainer killed mid-run, and bad databases."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rvq_viewer.cli import main
from rvq_viewer.io.run_db import RunReader, run_files
from rvq_viewer.monitor import CodebookMonitor
from rvq_viewer.pipeline import open_run

ROOT = Path(__file__).resolve().parents[1]

WRITER = textwrap.dedent("""
    import sys, time, torch
    from rvq_viewer.monitor import CodebookMonitor
    mon = CodebookMonitor(sys.argv[1], every=2, codebook_size=32)
    step = 0
    while True:
        codes = torch.randint(0, 32, (2, 100), generator=torch.Generator().manual_seed(step))
        mon.log(step, codes)
        step += 1
        time.sleep(float(sys.argv[2]))
""")


def step_counts(step: int) -> np.ndarray:
    codes = torch.randint(0, 32, (2, 100), generator=torch.Generator().manual_seed(step))
    return np.stack([np.bincount(c.numpy(), minlength=32) for c in codes])


def start_writer(run_dir: Path, pause: float = 0.01) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", WRITER, str(run_dir), str(pause)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for_windows(run_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        files = list(run_dir.glob("*.sqlite"))
        if files:
            try:
                reader = RunReader(files[0])
                count = len(reader.windows())
                reader.close()
                if count >= n:
                    return
            except Exception:  # noqa: BLE001 - the schema may not be committed yet
                pass
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} windows after {timeout} s")


def test_a_trainer_killed_mid_run_leaves_every_committed_window_intact(tmp_path):
    run_dir = tmp_path / "run"
    proc = start_writer(run_dir)
    try:
        wait_for_windows(run_dir, 4, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    run = open_run(run_dir)
    assert len(run.windows) >= 4
    for index, w in enumerate(run.windows):
        assert (w.step_from, w.step_to) == (2 * index, 2 * index + 1)
        counts, _, _ = run.window_data(index)
        assert np.array_equal(np.stack(counts), step_counts(w.step_from) + step_counts(w.step_to))
    run.close()


def write_run(path: Path, collapsed: bool, windows: int = 4) -> None:
    g = torch.Generator().manual_seed(0)
    with CodebookMonitor(path, every=5, codebook_size=256) as mon:
        for step in range(5 * windows):
            late = collapsed and step >= 10
            codes = torch.randint(0, 3 if late else 256, (2, 1000), generator=g)
            mon.log(step, codes)


def test_runs_json_lists_windows_events_and_the_diagnosis_over_time(tmp_path, capsys):
    write_run(tmp_path / "sick", collapsed=True)
    out = tmp_path / "sick.json"
    assert main(["runs", str(tmp_path / "sick"), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = data["windows"]
    assert len(rows) == 8 and {"layer", "step_from", "step_to", "frames", "used", "perplexity", "ema_dead"} <= set(rows[0])
    assert [(r["step_from"], r["step_to"]) for r in rows if r["layer"] == 0] == [(0, 4), (5, 9), (10, 14), (15, 19)]
    assert all(r["frames"] == 5000 for r in rows)
    assert [r["used"] for r in rows if r["layer"] == 1][2:] == [3, 3]
    assert data["events"] == []
    assert data["layers"][0] == {"layer": 0, "first_collapse_step": 14, "recovered_step": None, "collapsed_now": True,
                                 "collapsed_windows": 2}
    text = capsys.readouterr().out
    assert "step 14" in text and "collapsed now" in text
    assert main(["runs", str(tmp_path / "sick"), "--fail-on", "collapse"]) == 3
    write_run(tmp_path / "well", collapsed=False)
    assert main(["runs", str(tmp_path / "well"), "--fail-on", "collapse"]) == 0


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = tmp_path / "good"
    write_run(good, collapsed=False, windows=2)
    db = run_files(good)[0]
    out = {}
    empty = tmp_path / "empty"
    empty.mkdir()
    out["no database"] = (empty, "no run database here")
    junk = tmp_path / "junk" / "rvq-monitor.rank0.sqlite"
    junk.parent.mkdir()
    junk.write_bytes(os.urandom(5000))
    out["corrupt"] = (junk, "not a readable run database")
    cut = tmp_path / "cut" / "rvq-monitor.rank0.sqlite"
    cut.parent.mkdir()
    cut.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    out["truncated"] = (cut.parent, "malformed")
    newer = tmp_path / "newer" / "rvq-monitor.rank0.sqlite"
    newer.parent.mkdir()
    shutil.copy(db, newer)
    con = sqlite3.connect(newer)
    con.execute("PRAGMA user_version=99")
    con.close()
    out["newer schema"] = (newer, "schema 99 is newer")
    other = tmp_path / "other" / "rvq-monitor.rank0.sqlite"
    other.parent.mkdir()
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    out["another app"] = (other, "not an rvq-viewer run database")
    return out


@pytest.mark.parametrize("case", ["no database", "corrupt", "truncated", "newer schema", "another app"])
def test_bad_run_databases_get_one_line_and_nothing_is_written(tmp_path, capsys, case):
    path, reason = bad_inputs(tmp_path)[case]
    folder = path if path.is_dir() else path.parent
    before = _snapshot(folder)
    out = tmp_path / "out.json"
    assert main(["runs", str(path), "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rvq-viewer: error: ") and reason in err[0], err
    assert str(path) in err[0] or path.name in err[0]
    assert not out.exists()
    assert _snapshot(folder) == before
