"""Hostile and broken input through the Python API (`load_quantizer`, `FeatureSource`) and the CLI.

Every case ends in a one-line error naming the file (or a warning and a skip where the rest can go on),
never a traceback, a hang, code run from a file, or a half-written report.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fixtures_formats import (CreatesFile, RunsSystem, encodec_layers, family_files, fake_hparams_module,
                              factorized_layers, mimi_layers, vqpytorch_layers)
from rvq_viewer.analysis.audit import run_audit
from rvq_viewer.cli import main
from rvq_viewer.errors import LoadError, RvqViewerError, UnsafeFileError
from rvq_viewer.io import FeatureSource, load_quantizer
from rvq_viewer.io import containers

D = 16


def one_line(exc: BaseException, path: Path | None = None) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text, text
    if path is not None:
        assert str(path) in text, text
    return text


@pytest.fixture()
def good(tmp_path):
    """A small EnCodec-layout checkpoint and a feature file that fits it."""
    state = encodec_layers(torch.Generator().manual_seed(0), "quantizer.vq.", 2, 32, D)
    torch.save(state, tmp_path / "good.pt")
    np.save(tmp_path / "feats.npy", np.random.default_rng(0).standard_normal((64, D)).astype(np.float32))
    return tmp_path / "good.pt", tmp_path / "feats.npy"


# --- pickles that would run code ----------------------------------------------------------------------
def evil_files(folder: Path, marker: Path) -> dict[str, Path]:
    """The same attack in every container a loader reads: unpickling creates `marker`."""
    out = {}
    evil = {"quantizer.vq.layers.0._codebook.embed": torch.zeros(4, D), "x": CreatesFile(marker)}
    out["zip.pt"] = folder / "zip.pt"
    torch.save(evil, out["zip.pt"])
    out["legacy.pth"] = folder / "legacy.pth"
    torch.save(evil, out["legacy.pth"], _use_new_zipfile_serialization=False)
    out["raw.ckpt"] = folder / "raw.ckpt"
    out["raw.ckpt"].write_bytes(pickle.dumps({"weight": {"embed": RunsSystem(marker)}}, protocol=2))
    buf = io.BytesIO()
    torch.save({"weight": evil, "info": "x"}, buf)
    data = bytearray(buf.getvalue())
    data[:2] = b"03"                                    # a GPT-SoVITS v3 LoRA header
    out["sovits03.pth"] = folder / "sovits03.pth"
    out["sovits03.pth"].write_bytes(bytes(data))
    with fake_hparams_module() as HParams:             # an allowed class carrying a forbidden one
        cfg = HParams(model={"x": 1})
        cfg.trap = CreatesFile(marker)
        buf = io.BytesIO()
        torch.save({"weight": {"ssl_proj.weight": torch.zeros(2, 2, 2)}, "config": cfg}, buf)
    out["hparams.pth"] = folder / "hparams.pth"
    out["hparams.pth"].write_bytes(buf.getvalue())
    out["objects.npy"] = folder / "objects.npy"
    np.save(out["objects.npy"], np.array([CreatesFile(marker)], dtype=object), allow_pickle=True)
    out["objects.npz"] = folder / "objects.npz"
    np.savez(out["objects.npz"], codebooks=np.array([CreatesFile(marker)], dtype=object))
    return out


@pytest.fixture()
def evil(tmp_path):
    marker = tmp_path / "PWNED"
    files = evil_files(tmp_path, marker)
    assert not marker.exists(), "building the fixtures must not run them"
    return files, marker


def test_api_load_quantizer_refuses_every_code_running_pickle(evil):
    files, marker = evil
    for name, path in files.items():
        with pytest.raises(LoadError) as info:
            load_quantizer(path)
        text = one_line(info.value, path)
        assert "refused" in text, (name, text)
        assert isinstance(info.value, UnsafeFileError), name
        assert not marker.exists(), f"{name} ran code"


def test_api_feature_source_refuses_pickled_features(evil, tmp_path):
    files, marker = evil
    for name in ("zip.pt", "legacy.pth", "objects.npy", "objects.npz"):
        path = files[name]
        with pytest.raises(LoadError) as info:
            list(FeatureSource([path], D))
        assert "refused" in one_line(info.value, path), name
    listing = tmp_path / "list.txt"
    listing.write_text("zip.pt\n")
    with pytest.raises(LoadError):
        list(FeatureSource([listing], D))
    assert not marker.exists()


def test_cli_refuses_in_process(evil, good, capsys):
    files, marker = evil
    checkpoint, feats = good
    for name, path in files.items():
        assert main(["info", str(path)]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("rvq-viewer: error: ") and err.count("\n") == 1 and "refused" in err, err
    for name in ("zip.pt", "objects.npy"):
        assert main(["audit", str(checkpoint), str(files[name]), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "refused" in err, err
    assert not marker.exists()


def test_cli_subprocess_refuses_and_prints_one_line(evil):
    files, marker = evil
    out = subprocess.run([sys.executable, "-m", "rvq_viewer", "info", str(files["legacy.pth"])],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "refused" in out.stderr and "Traceback" not in out.stderr
    assert not marker.exists()


def test_config_classes_are_stood_in_without_running_them(tmp_path):
    """Lightning / OmegaConf style metadata loads as inert data; the tensors are usable."""
    import argparse
    import pathlib
    state = encodec_layers(torch.Generator().manual_seed(1), "model.quantizer.vq.", 2, 32, D)
    torch.save({"state_dict": state, "hyper_parameters": argparse.Namespace(lr=0.1, n_q=2),
                "data_dir": pathlib.PurePosixPath("/data")}, tmp_path / "last.ckpt")
    quantizer = load_quantizer(tmp_path / "last.ckpt")
    assert quantizer.n_q == 2


# --- broken files -------------------------------------------------------------------------------------
def truncations(data: bytes) -> list[bytes]:
    n = len(data)
    return [data[:k] for k in sorted({1, 2, 7, 8, 64, n // 4, n // 2, n - 100, n - 1}) if 0 < k < n]


@pytest.mark.parametrize("family", ["encodec", "gpt_sovits", "mimi", "snac", "codebooks", "dac"])
def test_truncated_checkpoints_fail_in_one_line(tmp_path, family):
    files = family_files(tmp_path / "src")
    path, _ = files[family]
    data = path.read_bytes()
    for i, cut in enumerate(truncations(data)):
        broken = path.parent / f"cut{i}{path.suffix}"
        broken.write_bytes(cut)
        with pytest.raises(LoadError) as info:
            load_quantizer(broken)
        one_line(info.value, broken)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".safetensors", ".npy", ".npz", ".bin"])
def test_zero_bytes_and_wrong_magic(tmp_path, suffix):
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(LoadError, match="file is empty"):
        load_quantizer(empty)
    for name, data in {"text": b"hello, this is not a checkpoint\n" * 4,
                       "png": b"\x89PNG\r\n\x1a\n" + bytes(64),
                       "zip": _zip_with("readme.txt", b"hi"),
                       "gz": b"\x1f\x8b\x08\x00" + bytes(40)}.items():
        path = tmp_path / f"{name}{suffix}"
        path.write_bytes(data)
        with pytest.raises(LoadError) as info:
            load_quantizer(path)
        one_line(info.value, path)


def _zip_with(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, data)
    return buf.getvalue()


def test_directory_given_as_a_checkpoint(tmp_path):
    """A folder opens only as a save_pretrained (or Hugging Face cache) folder: an empty one is refused."""
    with pytest.raises(LoadError, match="is a folder without model weights: expected a save_pretrained folder"):
        load_quantizer(tmp_path)
    assert main(["info", str(tmp_path)]) == 2


def test_pipes_and_devices_never_block(tmp_path):
    """Opening a FIFO for reading would wait forever for a writer: such paths are refused unopened."""
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    with pytest.raises(LoadError, match="not a regular file"):
        load_quantizer(fifo)
    with pytest.raises(LoadError, match="not a regular file"):
        load_quantizer("/dev/zero")
    feats = tmp_path / "feats"
    feats.mkdir()
    os.mkfifo(feats / "a.npy")
    np.save(feats / "b.npy", np.ones((4, D), np.float32))
    source = FeatureSource([feats], D)
    assert sum(len(c.frames) for c in source) == 4 and [p.name for p, _ in source.skipped] == ["a.npy"]
    with pytest.raises(LoadError, match="not a regular file"):
        FeatureSource([feats / "a.npy"], D)


def test_missing_file_and_broken_symlink(tmp_path):
    with pytest.raises(LoadError, match="no such file"):
        load_quantizer(tmp_path / "nope.pt")
    (tmp_path / "dangling.pt").symlink_to(tmp_path / "gone.pt")
    with pytest.raises(LoadError, match="broken symbolic link"):
        load_quantizer(tmp_path / "dangling.pt")


def test_unreadable_checkpoint_real_permissions(good, tmp_path):
    """A real mode-000 file. Root reads any file, so as root the loader runs without the capabilities
    that let it (util-linux's setpriv drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH)."""
    checkpoint, _ = good
    locked = tmp_path / "locked.pt"
    shutil.copy(checkpoint, locked)
    locked.chmod(0)
    code = ("import sys; from rvq_viewer import load_quantizer\n"
            "try: load_quantizer(sys.argv[1])\n"
            "except Exception as e: print(type(e).__name__, e)")
    command = [sys.executable, "-c", code, str(locked)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "util-linux's setpriv is needed to test permissions as root"
        command = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *command]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == f"LoadError {locked}: permission denied", out.stderr


def test_unreadable_files_simulated(good, monkeypatch, tmp_path):
    """As root nothing is unreadable, so the OS's answer is simulated: os.access says no, and open()
    raises PermissionError for the one file."""
    checkpoint, feats = good
    monkeypatch.setattr(containers.os, "access", lambda path, mode: Path(path) != checkpoint)
    with pytest.raises(LoadError, match="permission denied") as info:
        load_quantizer(checkpoint)
    one_line(info.value, checkpoint)
    monkeypatch.undo()
    real_open = open

    def guarded(file, *args, **kwargs):
        if Path(str(file)) == feats:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded)
    with pytest.raises(LoadError) as info:
        list(FeatureSource([feats], D))
    assert "permission denied" in one_line(info.value, feats).lower()


def test_symlink_loops_in_feature_folders_are_skipped(tmp_path):
    folder = tmp_path / "feats"
    (folder / "sub").mkdir(parents=True)
    np.save(folder / "sub" / "a.npy", np.ones((5, D), np.float32))
    (folder / "sub" / "back").symlink_to(folder, target_is_directory=True)     # a folder loop
    (folder / "self").symlink_to(folder / "self")                              # a link to itself
    (folder / "x.npy").symlink_to(folder / "y.npy")                            # x -> y -> x
    (folder / "y.npy").symlink_to(folder / "x.npy")
    (folder / "gone.npy").symlink_to(folder / "missing.npy")
    start = time.monotonic()
    source = FeatureSource([folder], D)
    frames = sum(len(c.frames) for c in source)
    assert time.monotonic() - start < 10
    assert frames == 5
    reasons = {p.name: r for p, r in source.skipped}
    assert set(reasons) >= {"x.npy", "y.npy", "gone.npy"}
    assert "symbolic links" in reasons["x.npy"] and "broken symbolic link" in reasons["gone.npy"]


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_features_exit_2_and_write_no_report(tmp_path, good, capsys, bad):
    checkpoint, _ = good
    data = np.random.default_rng(1).standard_normal((5000, D)).astype(np.float32)
    data[4321, 3] = bad
    np.save(tmp_path / "late_nan.npy", data)
    report = tmp_path / "report.json"
    report.write_text('{"previous": true}')
    code = main(["audit", str(checkpoint), str(tmp_path / "late_nan.npy"), "--json", str(report),
                 "--batch", "1000", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "frame 4321 holds NaN or infinite values" in err
    assert json.loads(report.read_text()) == {"previous": True}, "the old report must be left whole"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report.json")], "no temp file left"


def test_wrong_dimension_features_exit_2(tmp_path, good, capsys):
    checkpoint, _ = good
    np.save(tmp_path / "wide.npy", np.zeros((10, D + 3), np.float32))
    assert main(["audit", str(checkpoint), str(tmp_path / "wide.npy"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "wide.npy" in err and "dimension 16" in err and err.count("\n") == 1


# --- broken codebooks ---------------------------------------------------------------------------------
def _save(tmp_path, name, state) -> Path:
    path = tmp_path / name
    if name.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


def broken_states():
    g = torch.Generator().manual_seed(2)
    enc = lambda: encodec_layers(g, "quantizer.vq.", 3, 16, 8)  # noqa: E731
    cases = {}
    s = enc(); s["quantizer.vq.layers.1._codebook.embed"][3, 2] = float("nan"); cases["nan codebook"] = (s, "NaN")
    s = enc(); s["quantizer.vq.layers.0._codebook.embed"] = torch.zeros(0, 8); cases["K zero"] = (s, "empty")
    s = enc(); s["quantizer.vq.layers.0._codebook.embed"] = torch.zeros(16, 0); cases["D zero"] = (s, "empty")
    s = enc(); s["quantizer.vq.layers.2._codebook.embed"] = torch.randn(16, 9); cases["layer dims differ"] = (s, "disagree")
    s = enc(); s["quantizer.vq.layers.1._codebook.cluster_size"] = torch.ones(15); cases["cluster_size length"] = (s, "cluster_size")
    s = enc(); del s["quantizer.vq.layers.1._codebook.embed"]; cases["layer gap"] = (s, "not numbered")
    s = enc(); s["quantizer.vq.layers.0._codebook.embed"] = s["quantizer.vq.layers.0._codebook.embed"].long(); cases["int codebook"] = (s, "not floating point")
    s = enc(); s["quantizer.vq.layers.0.project_in.weight"] = torch.randn(8, 12); s["quantizer.vq.layers.0.project_out.weight"] = torch.randn(12, 8); cases["projection on one layer"] = (s, "input dimension")
    s = vqpytorch_layers(g, "", 2, 16, 8, proj_dim=12); s["project_in.weight"] = torch.randn(7, 12); cases["vq project_in mismatch"] = (s, "project_in")
    s = factorized_layers(g, "quantizer.", 2, 16, 4, 12, "weight_norm"); s["quantizer.quantizers.1.in_proj.weight_v"] = torch.randn(4, 10, 1); cases["dac latent mismatch"] = (s, "in_proj")
    s = mimi_layers(g, 4, 16, 8, 12); s["quantizer.rvq_rest.input_proj.weight"] = torch.randn(8, 10, 1); cases["mimi branch mismatch"] = (s, "input")
    s = mimi_layers(g, 4, 16, 8, 12); s["quantizer.rvq_rest.vq.layers.1._codebook.cluster_usage"] = torch.ones(3); cases["mimi usage length"] = (s, "cluster_usage")
    return cases


@pytest.mark.parametrize("case", list(broken_states()))
def test_broken_codebooks_fail_in_one_line(tmp_path, case):
    state, expected = broken_states()[case]
    path = _save(tmp_path, "broken.pt", state)
    with pytest.raises(LoadError) as info:
        load_quantizer(path)
    text = one_line(info.value, path)
    assert expected in text, text


# --- scale ----------------------------------------------------------------------------------------------
def _rss_anon_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_a_2gb_feature_file_streams_in_bounded_memory(tmp_path):
    """A sparse 2 GiB .npy (no disk used): read chunk by chunk through a memory map, never whole."""
    dim = 256
    rows = (2 << 30) // (4 * dim)
    path = tmp_path / "huge.npy"
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, dim))
    array[-1] = 1.0
    array.flush()
    del array
    assert path.stat().st_size > 2 << 30 and path.stat().st_blocks * 512 < 64 << 20, "the file must be sparse"
    source = FeatureSource([path], dim, chunk_frames=16384)
    assert source.total_frames() == rows
    base = _rss_anon_kb()
    peak, frames, last = base, 0, None
    start = time.monotonic()
    for chunk in source:
        frames += len(chunk.frames)
        last = chunk.frames[-1]
        peak = max(peak, _rss_anon_kb())
    assert frames == rows and float(last.sum()) == dim
    assert (peak - base) < 256 * 1024, f"anonymous memory grew by {(peak - base) // 1024} MiB"
    assert time.monotonic() - start < 60


def test_ten_thousand_small_feature_files(tmp_path):
    """Listing, sizing and streaming 10,000 files (one of which does not fit and is skipped), then the
    whole audit over them."""
    folder = tmp_path / "many"
    folder.mkdir()
    block = np.random.default_rng(3).standard_normal((10_000, 3, D)).astype(np.float32)
    for i in range(10_000):
        np.save(folder / f"{i:05d}.npy", block[i])
    np.save(folder / "04999b.npy", np.zeros((2, 3), np.float32))             # one that does not fit
    start = time.monotonic()
    source = FeatureSource([folder], D)
    assert source.total_frames() == 30_000
    frames = sum(len(chunk.frames) for chunk in source)
    elapsed = time.monotonic() - start
    assert frames == 30_000 and [p.name for p, _ in source.skipped] == ["04999b.npy"]
    assert elapsed < 20, f"{elapsed:.1f} s to stream 10,000 files"
    # The whole audit over them, with short sequences packed into full chunks (pack=True): one
    # engine step per file would cost the engine's per-chunk overhead ten thousand times.
    state = encodec_layers(torch.Generator().manual_seed(4), "quantizer.vq.", 2, 32, D)
    torch.save(state, tmp_path / "q.pt")
    source = FeatureSource([folder], D, chunk_frames=4096, pack=True)
    assert sum(1 for _ in source) == 8
    result = run_audit(load_quantizer(tmp_path / "q.pt"), source, "cpu")
    assert result.frames == 30_000 and sum(result.layers[1].counts) == 30_000


def test_errors_are_rvq_viewer_errors_with_a_path(tmp_path):
    """The error type carries the path and the reason separately for the GUI."""
    path = tmp_path / "x.pt"
    path.write_bytes(b"\x80\x02garbage")
    with pytest.raises(RvqViewerError) as info:
        load_quantizer(path)
    assert info.value.path == str(path) and info.value.reason
