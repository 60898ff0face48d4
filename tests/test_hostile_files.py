"""Files that change while they are read, arrays of types torch lacks, names that are not UTF-8.

A memory-mapped feature file truncated by another program killed the audit with SIGBUS; features are
now read block by block with pread (`io/file_arrays.py`), so a file that shrinks or is replaced under
the reader is one line naming it. The truncation cases run in child processes (a SIGBUS would kill
this one), three times in a row each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fixtures_formats import encodec_layers
from rvq_viewer.cli import main
from rvq_viewer.errors import LoadError
from rvq_viewer.io import FeatureSource, load_quantizer
from rvq_viewer.io.features import SMALL_NPY_BYTES

D = 32
ROWS = SMALL_NPY_BYTES // (4 * D) * 2            # large enough to be read block by block


def write_features(path: Path, data: np.ndarray) -> Path:
    if path.suffix == ".npy":
        np.save(path, data)
    elif path.suffix == ".safetensors":
        save_file({"feats": torch.from_numpy(data)}, str(path))
    else:
        torch.save({"feats": torch.from_numpy(data)}, path)
    return path


@pytest.fixture()
def checkpoint(tmp_path):
    path = tmp_path / "q.pt"
    torch.save(encodec_layers(torch.Generator().manual_seed(0), "quantizer.vq.", 4, 256, D), path)
    return path


# --- files that change while read -----------------------------------------------------------------------
CHANGE_WHILE_READING = """
import os, sys
from rvq_viewer.io import FeatureSource
path, dim, change = sys.argv[1], int(sys.argv[2]), sys.argv[3]
chunks = iter(FeatureSource([path], dim, chunk_frames=1024))
next(chunks)
if change == "truncate":
    os.truncate(path, os.path.getsize(path) // 3)
else:
    os.replace(change, path)
try:
    frames = sum(len(chunk.frames) for chunk in chunks)
    print("completed", frames)
except Exception as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.parametrize("suffix", [".npy", ".safetensors", ".pt"])
def test_a_feature_file_truncated_while_read_is_one_error(tmp_path, suffix):
    data = np.random.default_rng(1).standard_normal((ROWS, D)).astype(np.float32)
    for run in range(3):
        path = write_features(tmp_path / f"feats{run}{suffix}", data)
        done = subprocess.run([sys.executable, "-c", CHANGE_WHILE_READING, str(path), str(D), "truncate"],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"run {run}: the reader died ({done.returncode}): {done.stderr[-1500:]}"
        line = done.stdout.strip()
        assert line.startswith(f"LoadError {path}: changed while being read"), line
        assert "truncated" in line and "\n" not in line


@pytest.mark.parametrize("suffix", [".npy", ".pt"])
def test_a_feature_file_replaced_while_read_is_one_error(tmp_path, suffix):
    data = np.random.default_rng(2).standard_normal((ROWS, D)).astype(np.float32)
    path = write_features(tmp_path / f"feats{suffix}", data)
    other = write_features(tmp_path / f"other{suffix}", data[: ROWS // 2] + 1)
    done = subprocess.run([sys.executable, "-c", CHANGE_WHILE_READING, str(path), str(D), str(other)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-1500:]
    assert done.stdout.strip() == f"LoadError {path}: was replaced by another file while being read", done.stdout


def run_cli_until_progress(argv: list[str], then) -> subprocess.CompletedProcess:
    """Run the CLI; once its progress bar shows frames done, call `then(process)` from this process."""
    # SIGINT back to its default in the child: a test run started in the background (`cmd &` in a
    # script) has it ignored, and an ignored signal stays ignored across exec.
    proc = subprocess.Popen([sys.executable, "-m", "rvq_viewer", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = bytearray()
    started = threading.Event()

    def read_stderr():
        while chunk := proc.stderr.read1(4096):
            seen.extend(chunk)
            if b"frames" in seen and b"/" in seen:
                started.set()
        started.set()

    reader = threading.Thread(target=read_stderr)
    reader.start()
    started.wait(240)
    then(proc)
    out = proc.stdout.read()
    proc.wait(240)
    reader.join(10)
    return subprocess.CompletedProcess(argv, proc.returncode, out.decode(), bytes(seen).decode("utf-8", "replace"))


def test_the_cli_survives_another_process_truncating_its_features(tmp_path, checkpoint):
    """`audit` while another process cuts the feature file: exit 2, one error line naming the file
    (after the progress bar), the previous report intact; three runs in a row."""
    data = np.random.default_rng(3).standard_normal((ROWS, D)).astype(np.float32)
    report = tmp_path / "report.json"
    for run in range(3):
        path = write_features(tmp_path / f"big{run}.npy", data)
        listing = tmp_path / f"list{run}.txt"
        listing.write_text(f"{path.name}\n" * 40)
        report.write_text('{"previous": true}')
        start = time.monotonic()
        done = run_cli_until_progress(["audit", str(checkpoint), str(listing), "--json", str(report)],
                                      lambda proc: os.truncate(path, 4096))
        assert done.returncode == 2, (run, done.returncode, done.stderr[-1500:])
        lines = [line for line in done.stderr.replace("\r", "\n").splitlines() if line.strip()]
        assert lines[-1].startswith(f"rvq-viewer: error: {path}: "), lines[-3:]
        assert "changed while being read" in lines[-1] or "truncated" in lines[-1], lines[-1]
        assert not [line for line in lines[:-1] if "error" in line or "Traceback" in line], lines
        assert json.loads(report.read_text()) == {"previous": True}
        assert time.monotonic() - start < 240


def test_a_file_truncated_before_it_is_read_names_itself(tmp_path):
    data = np.random.default_rng(4).standard_normal((ROWS, D)).astype(np.float32)
    for suffix in (".npy", ".safetensors", ".pt"):
        path = write_features(tmp_path / f"cut{suffix}", data)
        os.truncate(path, path.stat().st_size - 4096)
        with pytest.raises(LoadError) as info:
            list(FeatureSource([path], D))
        text = str(info.value)
        assert text.startswith(str(path)) and "\n" not in text, text


# --- arrays of types torch lacks ------------------------------------------------------------------------
def test_big_endian_arrays_are_converted(tmp_path):
    data = np.random.default_rng(5).standard_normal((ROWS, D)).astype(np.float32)
    for rows, name in ((ROWS, "big.npy"), (40, "small.npy")):
        np.save(tmp_path / name, data[:rows].astype(">f4"))
        got = np.concatenate([c.frames.numpy() for c in FeatureSource([tmp_path / name], D)])
        np.testing.assert_array_equal(got, data[:rows])
    codebooks = np.random.default_rng(6).standard_normal((2, 16, 8))
    np.save(tmp_path / "books.npy", codebooks.astype(">f8"))
    np.savez(tmp_path / "books.npz", codebooks=codebooks.astype(">f4"))
    for name in ("books.npy", "books.npz"):
        quantizer = load_quantizer(tmp_path / name)
        assert quantizer.n_q == 2 and quantizer.codebook_size == 16
        np.testing.assert_allclose(quantizer.codebooks[1].numpy(), codebooks[1], rtol=1e-6)
    np.save(tmp_path / "long.npy", data[:40].astype(np.longdouble))
    got = np.concatenate([c.frames.numpy() for c in FeatureSource([tmp_path / "long.npy"], D)])
    np.testing.assert_allclose(got, data[:40])


ODD_ARRAYS = {
    "structured": (np.zeros(16, dtype=[("a", "<f4"), ("b", "<i4")]), "structured"),
    "datetime": (np.zeros((16, 8), dtype="datetime64[s]"), "datetime64"),
    "timedelta": (np.zeros((16, 8), dtype="timedelta64[ms]"), "timedelta64"),
    "unicode": (np.array([["abc"] * 8] * 16), "unicode string"),
    "bytes": (np.array([[b"abc"] * 8] * 16), "byte string"),
}


@pytest.mark.parametrize("case", sorted(ODD_ARRAYS))
@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_arrays_that_are_not_numbers_fail_in_one_line(tmp_path, capsys, case, suffix):
    array, needle = ODD_ARRAYS[case]
    path = tmp_path / f"odd{suffix}"
    np.save(path, array) if suffix == ".npy" else np.savez(path, codebooks=array)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and needle in err and "not numbers" in err, err


def test_meta_device_tensors_have_no_data(tmp_path, capsys):
    ckpt = tmp_path / "meta.pt"
    torch.save({"quantizer.vq.layers.0._codebook.embed": torch.empty(32, 8, device="meta")}, ckpt)
    assert main(["info", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(ckpt) in err and "meta device" in err, err
    good = tmp_path / "q.pt"
    torch.save(encodec_layers(torch.Generator().manual_seed(1), "quantizer.vq.", 2, 16, 8), good)
    for zipped in (True, False):
        feats = tmp_path / f"meta_feats{int(zipped)}.pt"
        torch.save({"feats": torch.empty(100, 8, device="meta")}, feats, _use_new_zipfile_serialization=zipped)
        assert main(["audit", str(good), str(feats), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(feats) in err and "no data" in err, err


def test_torch_feature_files_stream_the_same_frames_as_they_hold(tmp_path):
    """Views, transposed layouts and batches of a torch zip file, read block by block."""
    data = torch.randn(3, D, 500, generator=torch.Generator().manual_seed(7))
    torch.save({"bdt": data, "view": data[1].t()[100:400], "td": data[2].t().contiguous()}, tmp_path / "f.pt")
    for key, expected in (("bdt", data.transpose(1, 2).reshape(-1, D)), ("view", data[1].t()[100:400]),
                          ("td", data[2].t())):
        source = FeatureSource([tmp_path / "f.pt"], D, chunk_frames=64, key=key)
        got = torch.cat([c.frames for c in source])
        torch.testing.assert_close(got, expected.float(), rtol=0, atol=0)


# --- names that are not UTF-8 -----------------------------------------------------------------------------
@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems refuse names that are not UTF-8")
def test_report_with_names_that_are_not_utf8(tmp_path, checkpoint):
    folder = os.fsencode(tmp_path) + b"/run\xff"
    os.mkdir(folder)
    ckpt = folder + b"/q\xfe.pt"
    feats = folder + b"/f\xfd.npy"
    html = folder + b"/r\xfc.html"
    with open(ckpt, "wb") as fh:
        fh.write(checkpoint.read_bytes())
    np.save(os.fsdecode(feats), np.random.default_rng(8).standard_normal((300, D)).astype(np.float32))
    done = subprocess.run([os.fsencode(sys.executable), b"-m", b"rvq_viewer", b"report", ckpt, feats,
                           b"--html", html, b"--json", folder + b"/r.json", b"--quiet"],
                          capture_output=True, timeout=300, env={**os.environ, "LC_ALL": "C.UTF-8"})
    assert done.returncode == 0, done.stderr[-1500:]
    assert b"Traceback" not in done.stderr and html in done.stdout        # printed as the bytes it is
    text = Path(os.fsdecode(html)).read_bytes().decode("utf-8")           # valid UTF-8
    assert "run\\xff/q\\xfe.pt" in text and "<title>rvq-viewer report: q\\xfe.pt" in text
    missing = folder + b"/gone\xfb.pt"
    done = subprocess.run([os.fsencode(sys.executable), b"-m", b"rvq_viewer", b"info", missing],
                          capture_output=True, timeout=300)
    assert done.returncode == 2 and done.stderr == b"rvq-viewer: error: " + missing + b": no such file\n"


def test_error_lines_stay_one_line_whatever_the_name(tmp_path, capsys):
    path = tmp_path / "two\nlines.pt"
    path.write_bytes(b"\x80\x02garbage")
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "two\\nlines.pt" in err, err
