"""Ctrl+C in the middle of `audit` and `report`: exit status 130, `rvq-viewer: interrupted`, no
partial output, the previous output intact, and never "terminate called without an active exception"
(the CPU workers were torn down inside torch). Three runs in a row for each, interrupted while the
workers are busy (after the progress bar has moved); a second Ctrl+C right after changes nothing."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
import torch

from fixtures_formats import encodec_layers
from test_hostile_files import ROWS, run_cli_until_progress

D = 32


@pytest.fixture()
def inputs(tmp_path):
    checkpoint = tmp_path / "q.pt"
    torch.save(encodec_layers(torch.Generator().manual_seed(0), "quantizer.vq.", 8, 512, D), checkpoint)
    np.save(tmp_path / "f.npy", np.random.default_rng(0).standard_normal((ROWS, D)).astype(np.float32))
    listing = tmp_path / "feats.txt"
    listing.write_text("f.npy\n" * 60)            # a long audit: it is interrupted long before the end
    return checkpoint, listing


def interrupt(times: int, pause: float):
    """Ctrl+C `times` times, `pause` seconds after the progress bar first moved."""
    def send(proc):
        time.sleep(pause)
        for _ in range(times):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.05)
    return send


@pytest.mark.parametrize("command", ["audit", "report"])
def test_ctrl_c_mid_run_exits_130_with_one_line_and_keeps_the_old_output(tmp_path, inputs, command):
    checkpoint, listing = inputs
    out = tmp_path / ("old.json" if command == "audit" else "old.html")
    option = "--json" if command == "audit" else "--html"
    for run, (times, pause) in enumerate(((1, 0.2), (1, 0.6), (2, 0.4))):
        out.write_text("previous")
        start = time.monotonic()
        done = run_cli_until_progress([command, str(checkpoint), str(listing), option, str(out)],
                                      interrupt(times, pause))
        assert done.returncode == 130, (run, done.returncode, done.stderr[-1500:])
        lines = [line for line in done.stderr.replace("\r", "\n").splitlines() if line.strip()]
        assert lines[-1] == "rvq-viewer: interrupted", (run, lines[-3:])
        assert all(line.startswith("audit") for line in lines[:-1]), (run, lines)   # the progress bar only
        assert "terminate" not in done.stderr and "Traceback" not in done.stderr
        assert out.read_text() == "previous", "the previous output must be left as it was"
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [], "no temporary left"
        assert time.monotonic() - start < 240


def test_a_ctrl_c_swallowed_on_the_way_is_raised_again_at_the_next_chunk():
    """The handler's KeyboardInterrupt can land in a destructor ("Exception ignored"); with SIGINT then
    ignored the command would run to the end. The next progress callback raises it again."""
    import os
    import types

    from rvq_viewer.cli import interrupt
    from rvq_viewer.cli.options import ProgressBar
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)   # as in a terminal, even when this
    previous = interrupt.install()                                     # test run was started in the background
    try:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:
            pass                                         # swallowed, as a __del__ would
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        bar = ProgressBar(types.SimpleNamespace(quiet=True))
        with pytest.raises(KeyboardInterrupt):
            bar(types.SimpleNamespace(frames_total=10, frames_done=1))
    finally:
        interrupt.restore(previous)
        assert signal.getsignal(signal.SIGINT) is previous
        signal.signal(signal.SIGINT, outer)
    ProgressBar(types.SimpleNamespace(quiet=True))(types.SimpleNamespace(frames_total=10, frames_done=1))
