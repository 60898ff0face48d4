"""scripts/cross_check_kernel.py, the check of builds this machine cannot run, run here on a build it can
(the host's compiler, no emulator): it must pass a right kernel and catch a wrong one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rvq_viewer.quant import _native

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "cross_check_kernel.py"


@pytest.fixture(scope="module")
def compiler():
    found = _native._compiler()
    if found is None:
        pytest.skip("no C compiler on this machine")
    return found


def check(compiler: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--cc", compiler, "--flags=-O2", *extra],
                          capture_output=True, text=True, timeout=300)


def test_the_kernel_passes(compiler):
    done = check(compiler)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every code equals addmm + argmin" in done.stdout


def test_a_kernel_with_the_ties_the_wrong_way_fails(compiler, tmp_path):
    # A compiler wrapper that builds a copy of the kernel whose lane merge prefers the higher code.
    source = _native.SOURCE.read_text().replace("(v == m && j < i)", "(v == m && j > i)")
    assert "j > i" in source
    wrong = tmp_path / "nearest.c"
    wrong.write_text(source)
    wrapper = tmp_path / "cc"
    wrapper.write_text(f'#!/bin/sh\nexec {compiler} $(echo "$@" | sed "s#{_native.SOURCE}#{wrong}#")\n')
    wrapper.chmod(0o755)
    done = check(str(wrapper))
    assert done.returncode == 1
    assert "codes differ" in done.stdout
