"""The command line as a user runs it: a subprocess, its exit status, stdout, stderr and files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rvq_viewer.locations import demo_paths
from rvq_viewer.quant import ResidualVectorQuantization
from rvq_viewer.io import save_checkpoint


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rvq_viewer", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    rvq = ResidualVectorQuantization(num_quantizers=2, dim=8, codebook_size=16, kmeans_init=False)
    save_checkpoint(root / "q.pt", rvq, step=7)
    np.save(root / "f.npy", np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32))
    return root


def test_info_names_format_and_shape(small):
    out = run("info", str(small / "q.pt"))
    assert out.returncode == 0, out.stderr
    assert "encodec" in out.stdout and "n_q             2" in out.stdout
    assert "codebook_size   16" in out.stdout and "ema_statistics  True" in out.stdout
    data = json.loads(run("info", str(small / "q.pt"), "--json").stdout)
    assert (data["format"], data["n_q"], data["codebook_size"], data["dim"]) == ("encodec", 2, 16, 8)


def test_audit_writes_json_and_table(small):
    out_json = small / "report.json"
    out = run("audit", str(small / "q.pt"), str(small / "f.npy"), "--json", str(out_json), "--device", "cpu")
    assert out.returncode == 0, out.stderr
    report = json.loads(out_json.read_text())
    assert report["frames"] == 500 and len(report["layers"]) == 2
    assert sum(report["layers"][0]["counts"]) == 500
    assert "used/K" in out.stdout and "perplexity" in out.stdout
    assert "frames" in out.stderr  # the progress bar goes to stderr


@pytest.mark.parametrize("make_bad,expect", [
    (lambda d: d / "missing.npy", "no such file"),
    (lambda d: (d / "empty").mkdir(exist_ok=True) or d / "empty", "no feature files"),
    (lambda d: np.save(d / "nan.npy", np.full((4, 8), np.nan, np.float32)) or d / "nan.npy", "NaN"),
    (lambda d: np.save(d / "dim.npy", np.zeros((4, 5), np.float32)) or d / "dim.npy", "dimension 8"),
])
def test_bad_features_exit_2_with_one_line_and_no_output(small, make_bad, expect):
    bad = make_bad(small)
    out_json = small / "never.json"
    out = run("audit", str(small / "q.pt"), str(bad), "--json", str(out_json), "--quiet")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0] and str(bad) in lines[0]
    assert "Traceback" not in out.stderr
    assert not out_json.exists()
    assert not list(small.glob(".never.json*")), "no temporary file left behind"


def test_bad_checkpoint_exit_2(small):
    junk = small / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    out = run("info", str(junk))
    assert out.returncode == 2 and str(junk) in out.stderr and "Traceback" not in out.stderr
    torch.save({"nothing": "here"}, small / "notensor.pt")
    out = run("info", str(small / "notensor.pt"))
    assert out.returncode == 2 and "no tensors" in out.stderr


def test_uninitialised_codebook_is_refused(small):
    rvq = ResidualVectorQuantization(num_quantizers=1, dim=8, codebook_size=16, kmeans_init=True)
    save_checkpoint(small / "fresh.pt", rvq)
    out = run("info", str(small / "fresh.pt"))
    assert out.returncode == 2 and "inited = 0" in out.stderr


def test_demo_shows_the_collapsed_quantizer_collapsed(tmp_path):
    healthy, features = demo_paths()
    collapsed = healthy.with_name("collapsed.pt")
    reports = {}
    for name, ckpt in (("healthy", healthy), ("collapsed", collapsed)):
        out = run("audit", str(ckpt), *map(str, features), "--json", str(tmp_path / f"{name}.json"), "--quiet")
        assert out.returncode == 0, out.stderr
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
    for good, bad in zip(reports["healthy"]["layers"], reports["collapsed"]["layers"]):
        assert good["utilization"] > 0.8 > 0.3 > bad["utilization"]
        assert good["perplexity"] > 3 * bad["perplexity"]
        assert len(bad["dead_codes"]) > len(good["dead_codes"])
