"""Outputs never destroy inputs or devices, and their errors name the path the user gave.

Each CLI case asserts: exit status 2 (0 where a stream is written through), exactly one line on stderr
naming the output, no traceback, and the input (or the previous output) left byte for byte.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures_formats import encodec_layers
from rvq_viewer.cli import main
from rvq_viewer.io.outputs import OutputError, atomic_path, atomic_write_text, check_outputs, temporary_name

D = 8


@pytest.fixture()
def good(tmp_path):
    state = encodec_layers(torch.Generator().manual_seed(0), "quantizer.vq.", 2, 16, D)
    torch.save(state, tmp_path / "q.pt")
    np.save(tmp_path / "f.npy", np.random.default_rng(0).standard_normal((200, D)).astype(np.float32))
    return tmp_path / "q.pt", tmp_path / "f.npy"


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def one_error_line(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("rvq-viewer: error")]
    assert len(lines) == 1 and err.count("\n") == 1, err
    for needle in needles:
        assert needle in lines[0], err


# --- outputs that are inputs --------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["checkpoint", "features"])
def test_audit_refuses_to_write_its_report_over_an_input(good, capsys, which):
    checkpoint, features = good
    target = checkpoint if which == "checkpoint" else features
    before = target.read_bytes()
    code, err = run_cli(capsys, "audit", checkpoint, features, "--json", target, "--quiet")
    assert code == 2
    one_error_line(err, str(target), "input")
    assert target.read_bytes() == before


def test_the_same_file_by_another_name_is_still_an_input(good, capsys, tmp_path):
    checkpoint, features = good
    link = tmp_path / "link.pt"
    link.symlink_to(checkpoint)
    hard = tmp_path / "hard.pt"
    os.link(checkpoint, hard)
    before = checkpoint.read_bytes()
    for alias in (link, hard, tmp_path / "." / "q.pt"):
        code, err = run_cli(capsys, "audit", checkpoint, features, "--json", alias, "--quiet")
        assert code == 2, alias
        one_error_line(err, "input")
    assert checkpoint.read_bytes() == before and link.is_symlink()


def test_a_file_inside_an_input_folder_is_an_input(good, capsys, tmp_path):
    checkpoint, _ = good
    folder = tmp_path / "feats"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros((20, D), np.float32))
    before = (folder / "a.npy").read_bytes()
    code, err = run_cli(capsys, "audit", checkpoint, folder, "--json", folder / "a.npy", "--quiet")
    assert code == 2
    one_error_line(err, "a.npy", "input")
    assert (folder / "a.npy").read_bytes() == before


def test_report_refuses_its_inputs_and_two_outputs_on_one_path(good, capsys, tmp_path):
    checkpoint, features = good
    other = tmp_path / "b.pt"
    torch.save(encodec_layers(torch.Generator().manual_seed(1), "quantizer.vq.", 2, 16, D), other)
    before = other.read_bytes()
    code, err = run_cli(capsys, "report", checkpoint, features, "--compare", other, "--html",
                        tmp_path / "r.html", "--json", other, "--quiet")
    assert code == 2
    one_error_line(err, "b.pt", "input")
    assert other.read_bytes() == before
    code, err = run_cli(capsys, "report", checkpoint, features, "--html", tmp_path / "r.html",
                        "--json", tmp_path / "r.html", "--quiet")
    assert code == 2
    one_error_line(err, "r.html", "same file")
    assert not (tmp_path / "r.html").exists()


def test_events_refuses_a_checkpoint_of_the_series(tmp_path, capsys):
    series = tmp_path / "run"
    series.mkdir()
    for step in (1, 2):
        torch.save({**encodec_layers(torch.Generator().manual_seed(step), "quantizer.vq.", 1, 16, D),
                    "step": step}, series / f"s{step}.pt")
    before = (series / "s1.pt").read_bytes()
    code, err = run_cli(capsys, "events", series, "--json", series / "s1.pt")
    assert code == 2
    one_error_line(err, "s1.pt", "input")
    assert (series / "s1.pt").read_bytes() == before


def test_check_outputs_allows_new_and_unrelated_paths(tmp_path):
    (tmp_path / "in.pt").write_bytes(b"x")
    check_outputs([("--json", tmp_path / "out.json"), ("--html", None)], [tmp_path / "in.pt"])
    with pytest.raises(OutputError):
        check_outputs([("--json", tmp_path / "in.pt")], [tmp_path / "in.pt"])


# --- outputs that are not regular files -----------------------------------------------------------------
def test_dev_full_is_written_through_and_stays_a_device(good, capsys):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    checkpoint, features = good
    code, err = run_cli(capsys, "audit", checkpoint, features, "--json", "/dev/full", "--quiet")
    assert code == 2
    one_error_line(err, "/dev/full", "no space left")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
    assert not [p for p in Path("/dev").iterdir() if p.name.startswith(".full.")]


def test_dev_null_takes_the_report(good, capsys):
    checkpoint, features = good
    assert main(["audit", str(checkpoint), str(features), "--json", "/dev/null", "--quiet"]) == 0
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_fifo_with_a_reader_gets_the_stream_and_one_without_is_refused(good, capsys, tmp_path):
    checkpoint, features = good
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    code, err = run_cli(capsys, "audit", checkpoint, features, "--json", fifo, "--quiet")
    assert code == 2
    one_error_line(err, str(fifo), "no reader")
    received = bytearray()
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)   # a reader is there before the writer starts
    done = threading.Event()

    def read():
        # Non-blocking reads: EOF (b"") means no writer yet, or the writer finished once data came.
        while True:
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                data = None
            if data:
                received.extend(data)
            elif data == b"" and (received or done.is_set()):
                return
            else:
                time.sleep(0.005)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert main(["audit", str(checkpoint), str(features), "--json", str(fifo), "--quiet"]) == 0
    finally:
        done.set()
        reader.join(10)
        os.close(fd)
    assert json.loads(bytes(received))["frames"] == 200
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_folder_as_output_is_refused(good, capsys, tmp_path):
    checkpoint, features = good
    folder = tmp_path / "out"
    folder.mkdir()
    code, err = run_cli(capsys, "audit", checkpoint, features, "--json", folder, "--quiet")
    assert code == 2
    one_error_line(err, str(folder), "folder")
    assert folder.is_dir() and not list(folder.iterdir())


def test_a_symlinked_output_keeps_its_link(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"


# --- messages name the user's path ----------------------------------------------------------------------
def test_long_names_fit_and_too_long_names_name_the_path(good, capsys, tmp_path):
    checkpoint, features = good
    name = "r" * 244 + ".json"                       # 249 bytes: valid, but not with a suffix added
    assert main(["audit", str(checkpoint), str(features), "--json", str(tmp_path / name), "--quiet"]) == 0
    assert json.loads((tmp_path / name).read_text())["frames"] == 200
    assert len(os.fsencode(temporary_name(tmp_path / name).name)) <= 255
    too_long = tmp_path / ("x" * 300 + ".json")
    code, err = run_cli(capsys, "audit", checkpoint, features, "--json", too_long, "--quiet")
    assert code == 2
    one_error_line(err, str(too_long), "too long")
    assert ".tmp" not in err


def test_a_failing_write_names_the_output_and_keeps_the_old_file(tmp_path, monkeypatch):
    out = tmp_path / "out.json"
    out.write_text("previous")

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError) as caught:
        with atomic_path(out) as tmp:
            tmp.write_text("half")
            full()
    text = str(caught.value)
    assert str(out) in text and "no space left" in text and ".tmp" not in text and "\n" not in text
    assert out.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_read_only_folder_names_the_output(tmp_path):
    """A real read-only folder; as root, without the capability that writes anyway (as test_hostile)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    out = folder / "out.json"
    code = ("import sys; from rvq_viewer.io.outputs import atomic_write_text, OutputError\n"
            "try: atomic_write_text(sys.argv[1], 'x')\n"
            "except OutputError as e: print(e)\n")
    command = [sys.executable, "-c", code, str(out)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "util-linux's setpriv is needed to test permissions as root"
        command = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *command]
    folder.chmod(0o500)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    finally:
        folder.chmod(0o700)
    assert done.stdout.strip() == f"{out}: cannot write: permission denied", done
    assert not out.exists()


def test_a_file_size_limit_hit_mid_write_names_the_output(good, tmp_path):
    """A real write that fails half-way (RLIMIT_FSIZE: 'File too large', as a full quota does): exit 2,
    one line naming the output path (not a temporary, not an empty name), the previous file intact."""
    checkpoint, features = good
    for option, name in (("--json", "out.json"), ("--html", "out.html")):
        out = tmp_path / name
        out.write_text("previous")
        command = "report" if option == "--html" else "audit"
        code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))\n"
                "from rvq_viewer.cli import main; sys.exit(main(sys.argv[1:]))")
        done = subprocess.run([sys.executable, "-c", code, command, str(checkpoint), str(features), option,
                               str(out), "--quiet"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stderr
        one_error_line(done.stderr, str(out), "file too large", "left as it was")
        assert ".tmp" not in done.stderr
        assert out.read_text() == "previous"
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
