"""The HTML report (self-contained, charts as inline SVG) and the `report` command."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import numpy as np
import torch

from rvq_viewer import cli
from rvq_viewer.analysis.audit import run_audit
from rvq_viewer.locations import demo_paths
from rvq_viewer.analysis.compare import compare
from rvq_viewer.quant import DeadCodeRule, Quantizer
from rvq_viewer.analysis.diagnosis import diagnose
from rvq_viewer.io import FeatureSource
from rvq_viewer.report import render_html, write_html
from rvq_viewer.report.svg import Axis

DEMO = demo_paths()[0].parent


def make_quantizer(*codebooks, cluster_size=None) -> Quantizer:
    return Quantizer(format="plain", codebooks=[torch.as_tensor(np.asarray(c), dtype=torch.float32) for c in codebooks],
                     cluster_size=None if cluster_size is None else
                     [torch.as_tensor(np.asarray(c), dtype=torch.float32) for c in cluster_size],
                     dead_code_rule=DeadCodeRule())


def collapsed_case(tmp_path, k=128, d=8, n=6000):
    rng = np.random.default_rng(0)
    table = rng.normal(size=(k, d)) * 3
    second = rng.normal(size=(k, d)) * 0.3
    frames = table[rng.integers(0, 6, n)] + second[rng.integers(0, k, n)] + 0.05 * rng.normal(size=(n, d))
    q = make_quantizer(table, second, cluster_size=[np.r_[np.full(6, 100.0), np.zeros(k - 6)], np.full(k, 5.0)])
    path = tmp_path / "features.npy"
    np.save(path, frames.astype(np.float32))
    source = FeatureSource([path], d)
    result = run_audit(q, source, "cpu", pairs=True)
    pairs = result.pairs
    return q, result, pairs, diagnose(result, q, pairs)


def assert_self_contained(html: str) -> None:
    lower = html.lower()
    for needle in ("<script", "<link", "<img", "<iframe", "src=", "@import", "url(http", 'href="http', "href='http"):
        assert needle not in lower, needle
    # Every chart is well-formed SVG (a browser would drop a broken one silently).
    svgs = re.findall(r"<svg\b.*?</svg>", html, flags=re.S)
    assert svgs
    for svg in svgs:
        ET.fromstring(svg)


def test_report_of_a_collapsed_quantizer(tmp_path):
    q, result, pairs, verdicts = collapsed_case(tmp_path)
    out = write_html(tmp_path / "out" / "report.html", result, q, verdicts, pairs=pairs, title="toy <run> & co")
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert_self_contained(html)
    assert "toy &lt;run&gt; &amp; co" in html and "toy <run>" not in html
    assert "Collapsed: layer 0" in html
    for v in verdicts:
        if v.rank >= 2 and v.id != "summary":
            assert f'id="v-{v.key}"' in html            # each finding has an anchor the layer tags link to
    assert "Rules and thresholds" in html and "UTIL_COLLAPSE" in html
    assert html.count("<svg") == 3 + 2 * len(result.layers)   # overview (usage, SNR, redundancy) + 2 per layer
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]   # atomic write left no temp file


def test_report_without_quantizer_or_pairs_still_renders(tmp_path):
    q, result, _, _ = collapsed_case(tmp_path)
    verdicts = diagnose(result)
    html = render_html(result, None, verdicts)
    assert_self_contained(html)
    assert html.count("<svg") == 2 + len(result.layers)        # no redundancy chart, no centroid charts


def test_large_codebook_report_stays_small(tmp_path):
    """K = 8192: big scatters become density grids and rank curves are sampled, so the file stays small."""
    rng = np.random.default_rng(1)
    table = rng.normal(size=(8192, 4))
    q = make_quantizer(table)
    path = tmp_path / "f.npy"
    np.save(path, rng.normal(size=(3000, 4)).astype(np.float32))
    result = run_audit(q, FeatureSource([path], 4), "cpu")
    html = render_html(result, q, diagnose(result, q))
    assert_self_contained(html)
    assert len(html) < 1_000_000 and "<code>few_frames</code>" in html


def test_report_with_a_comparison(tmp_path):
    q, result, pairs, verdicts = collapsed_case(tmp_path)
    rng = np.random.default_rng(5)
    qb = make_quantizer(rng.normal(size=(128, 8)) * 3, rng.normal(size=(128, 8)) * 0.3)
    path = tmp_path / "features.npy"
    result_b = run_audit(qb, FeatureSource([path], 8), "cpu")
    comparison = compare(result, result_b, q, qb, "run <a>", "run b")
    html = render_html(result, q, verdicts, comparison, pairs, verdicts_b=diagnose(result_b, qb))
    assert_self_contained(html)
    assert "Comparison: two quantizers" in html and "run &lt;a&gt;" in html
    assert html.count("one PCA for both") == 2


def test_axis_ticks():
    assert [t for _, t in Axis(0, 1).ticks()] == ["0", "0.2", "0.4", "0.6", "0.8", "1"]
    assert [t for _, t in Axis(1, 1e6, log=True).ticks()] == ["1", "10", "100", "1000", "10000", "1e5", "1e6"]
    assert Axis(5, 5).hi > Axis(5, 5).lo


# --- the command ----------------------------------------------------------------------------------------
def test_report_command_fails_on_collapse_with_status_3(tmp_path, capsys):
    out = tmp_path / "collapsed.html"
    code = cli.main(["report", str(DEMO / "collapsed.pt"), str(DEMO / "heldout.npy"), "--html", str(out),
                     "--json", str(tmp_path / "c.json"), "--fail-on", "collapse", "--quiet", "--device", "cpu"])
    assert code == 3
    stdout = capsys.readouterr().out
    assert "[collapse] all: Collapsed" in stdout and str(out) in stdout
    html = out.read_text(encoding="utf-8")
    assert_self_contained(html)
    assert "Redundancy between consecutive layers" in html
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["verdicts"][0]["severity"] == "collapse" and len(data["layers"]) == 4


def test_report_command_compares_healthy_with_collapsed(tmp_path, capsys):
    out = tmp_path / "cmp.html"
    code = cli.main(["report", str(DEMO / "healthy.pt"), str(DEMO / "heldout.npy"), "--html", str(out),
                     "--compare", str(DEMO / "collapsed.pt"), "--fail-on", "collapse", "--quiet", "--no-pairs",
                     "--n-q", "2"])
    assert code == 0                                  # A (healthy) decides the status
    html = out.read_text(encoding="utf-8")
    assert "Healthy: no collapse or warning" in html and "Comparison: two quantizers" in html
    assert "Redundancy between consecutive layers" not in html    # --no-pairs
    assert "util A" in capsys.readouterr().out


def test_report_command_bad_input_is_status_2(tmp_path, capsys):
    missing = tmp_path / "missing.npy"
    assert cli.main(["report", str(DEMO / "healthy.pt"), str(missing), "--html", str(tmp_path / "r.html"),
                     "--quiet"]) == 2
    assert cli.main(["report", str(DEMO / "healthy.pt"), str(DEMO / "heldout.npy"), "--html",
                     str(tmp_path / "r.pdf"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("rvq-viewer: error:") == 2 and not (tmp_path / "r.html").exists()
