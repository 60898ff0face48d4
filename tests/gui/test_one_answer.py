"""One pipeline, one answer: the command line's JSON, the Python API, the window's Diagnosis panel and the
HTML report (the CLI's and the window's export) give the same verdicts and the same per-layer numbers.

The quantizer's layer 1 is a scaled copy of layer 0 and the frames sit on the codes of both, so layer 1's
code is layer 0's: the redundancy verdict (a layer-pair statistic, which only some clients gathered once)
must appear everywhere, with the usage verdicts of the layers K leaves idle.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

import rvq_viewer
from rvq_viewer.cli import main as cli

from .conftest import wait_views

K, D, N = 64, 8, 60_000
NUMBERS = ("used", "utilization", "perplexity", "entropy", "rel_error", "snr_db")


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mirrored")
    rng = np.random.default_rng(4)
    table = rng.normal(size=(K, D)).astype(np.float32) * 3
    third = rng.normal(size=(K, D)).astype(np.float32) * 0.05     # an unrelated, barely used last stage
    codes = rng.integers(0, K // 2, N)                            # half the codes never get a frame
    frames = 1.5 * table[codes] + 0.01 * rng.normal(size=(N, D)).astype(np.float32)
    state = {}
    for i, embed in enumerate((table, 0.5 * table, third)):
        base = f"quantizer.vq.layers.{i}._codebook."
        state.update({base + "embed": torch.from_numpy(np.ascontiguousarray(embed)), base + "inited": torch.ones(1),
                      base + "cluster_size": torch.full((K,), 5.0), base + "embed_avg": torch.from_numpy(embed.copy())})
    torch.save(state, folder / "mirrored.pt")
    np.save(folder / "frames.npy", frames.astype(np.float32))
    return folder / "mirrored.pt", folder / "frames.npy"


def keys(verdicts) -> set[tuple]:
    """(rule, layer, severity) of every verdict, dicts (JSON) or Verdicts alike."""
    out = set()
    for v in verdicts:
        get = v.get if isinstance(v, dict) else lambda name, _v=v: getattr(_v, name)
        out.add((get("id"), get("layer"), get("severity")))
    return out


def numbers(layers) -> list[dict]:
    out = []
    for r in layers:
        get = r.get if isinstance(r, dict) else lambda name, _r=r: getattr(_r, name)
        row = {name: get(name) for name in NUMBERS}
        row["dead"] = len(get("dead_codes"))
        row["counts"] = list(np.asarray(get("counts")).tolist())
        out.append(row)
    return out


def html_verdicts(text: str) -> set[tuple]:
    """(rule, layer, severity) of the verdicts an HTML report lists (all but `ok` and the summary)."""
    found = set()
    for key, severity in re.findall(r'<tr id="v-([a-z_]+@[a-z0-9]+)"><td class="n">[^<]*</td><td><span class="badge"'
                                    r'[^>]*>([a-z]+)</span>', text):
        rule, layer = key.split("@")
        found.add((rule, None if layer == "all" else int(layer), severity))
    return found


def html_numbers(text: str) -> list[list[str]]:
    table = text.split("<h2>Per-layer metrics</h2>", 1)[1].split("</table>", 1)[0]
    return [re.findall(r'<td class="n">([^<]*)</td>', row) for row in table.split("<tr>")[2:]]


def test_the_cli_the_api_the_window_and_the_reports_agree(window, qtbot, mirrored, tmp_path, capsys):
    checkpoint, features = mirrored
    # 1. The command line, as a training pipeline calls it.
    assert cli(["audit", str(checkpoint), str(features), "--json", str(tmp_path / "cli.json"), "--quiet",
                "--device", "cpu"]) == 0
    capsys.readouterr()
    report = json.loads((tmp_path / "cli.json").read_text())
    want = keys(report["verdicts"])
    assert ("redundant_stage", 1, "warning") in want, sorted(want)
    assert any(rule == "low_utilization" for rule, _, _ in want), sorted(want)

    # 2. The Python API.
    outcome = rvq_viewer.audit(checkpoint, [features], device="cpu")
    assert keys(outcome.verdicts) == want
    assert numbers(outcome.result.layers) == numbers(report["layers"])

    # 3. The window: the Diagnosis panel and the numbers every view draws.
    window.set_device("cpu")
    window.open(checkpoint, [features])
    wait_views(qtbot, window)
    qtbot.waitUntil(lambda: window.diagnosis.verdicts is not None, timeout=10_000)
    assert keys(window.diagnosis.verdicts) == want
    assert numbers(window.snapshot.result.layers) == numbers(report["layers"])
    marks = {row: window.overview.table.item(row, 10).text() for row in range(3)}
    assert "warning" in marks[1] and "so far" not in marks[1]           # the final diagnosis' mark
    # ... and the JSON the window exports (Ctrl+E) is the command line's.
    window.exporter.export_json(tmp_path / "window.json")
    exported = json.loads((tmp_path / "window.json").read_text())
    assert keys(exported["verdicts"]) == want and numbers(exported["layers"]) == numbers(report["layers"])

    # 4. The HTML reports: the command line's and the window's export.
    assert cli(["report", str(checkpoint), str(features), "--html", str(tmp_path / "cli.html"), "--quiet",
                "--device", "cpu"]) == 0
    with qtbot.waitSignal(window.exporter.report_written, timeout=30_000):
        assert window.exporter.export_html(tmp_path / "window.html")
    listed = {k for k in want if k[2] != "ok" and k[0] != "summary"}
    cli_html, window_html = (tmp_path / "cli.html").read_text(), (tmp_path / "window.html").read_text()
    assert html_verdicts(cli_html) == listed == html_verdicts(window_html)
    rows = html_numbers(cli_html)
    assert rows == html_numbers(window_html)
    for row, layer in zip(rows, report["layers"]):
        assert row[1] == f"{layer['used']} / {K}" and row[3] == f"{layer['perplexity']:.1f}"
        assert row[5] == str(len(layer["dead_codes"]))
