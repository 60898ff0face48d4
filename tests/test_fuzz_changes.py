"""Property-based fuzzing of feature files that change while they are read (hypothesis).

Whatever happens to the file between two chunks (cut to any length, grown, overwritten in part,
replaced by another file, deleted), in any format and layout read block by block, `FeatureSource`
either goes on streaming finite float32 frames of the asked dimension or raises one `LoadError` line
naming the file. It never dies of a signal (these files used to be memory-mapped: a cut was SIGBUS).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from rvq_viewer.errors import LoadError
from rvq_viewer.io import FeatureSource
from rvq_viewer.io.features import SMALL_NPY_BYTES

FUZZ = settings(max_examples=int(os.environ.get("RVQ_FUZZ_EXAMPLES", "40")), deadline=None,
                derandomize=not os.environ.get("RVQ_FUZZ_RANDOM"), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
D = 32
ROWS = SMALL_NPY_BYTES // (4 * D) + 4096          # a .npy this large is read block by block
_ROOT = Path(tempfile.mkdtemp(prefix="rvq-fuzz-changes-"))
_DATA = np.random.default_rng(0).standard_normal((ROWS, D)).astype(np.float32)


def _original(suffix: str, layout: str) -> Path:
    """One file per format and layout, written once and copied for each example."""
    path = _ROOT / f"original-{layout}{suffix}"
    if not path.exists():
        array = _DATA if layout == "TD" else np.ascontiguousarray(_DATA.T)
        if suffix == ".npy":
            np.save(path, array)
        elif suffix == ".safetensors":
            save_file({"feats": torch.from_numpy(array)}, str(path))
        else:
            torch.save({"feats": torch.from_numpy(array)}, path)
    return path


@st.composite
def changes(draw):
    return {
        "suffix": draw(st.sampled_from([".npy", ".safetensors", ".pt"])),
        "layout": draw(st.sampled_from(["TD", "DT"])),
        "chunk": draw(st.sampled_from([512, 4096, 20_000])),
        "after": draw(st.integers(0, 4)),
        "kind": draw(st.sampled_from(["truncate", "grow", "overwrite", "replace", "delete"])),
        "where": draw(st.floats(0, 1)),
        "length": draw(st.integers(1, 1 << 16)),
        "fill": draw(st.sampled_from([b"\x00", b"\xff", b"\x7f"])),
    }


def _change(path: Path, change: dict) -> None:
    size = path.stat().st_size
    at = int(change["where"] * size)
    if change["kind"] == "truncate":
        os.truncate(path, at)
    elif change["kind"] == "grow":
        with open(path, "ab") as fh:
            fh.write(change["fill"] * change["length"])
    elif change["kind"] == "overwrite":
        with open(path, "r+b") as fh:
            fh.seek(at)
            fh.write(change["fill"] * min(change["length"], size - at))
    elif change["kind"] == "replace":
        other = path.with_name("other" + path.suffix)
        other.write_bytes(path.read_bytes()[: max(1, at)])
        os.replace(other, path)
    else:
        path.unlink()


@FUZZ
@given(change=changes())
def test_a_file_changing_while_read_streams_or_fails_in_one_line(change):
    path = _ROOT / f"feats{change['suffix']}"
    shutil.copyfile(_original(change["suffix"], change["layout"]), path)
    source = FeatureSource([path], D, chunk_frames=change["chunk"], layout=change["layout"])
    frames = 0
    try:
        for index, chunk in enumerate(source):
            assert chunk.frames.dtype == torch.float32 and chunk.frames.shape[1] == D
            assert torch.isfinite(chunk.frames).all()
            frames += len(chunk.frames)
            if index == change["after"]:
                _change(path, change)
    except LoadError as exc:
        text = str(exc)
        assert text.startswith(str(path)) and "\n" not in text, text
        return
    assert frames == ROWS
