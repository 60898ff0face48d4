"""Property-based fuzzing of every loader's container and keys (hypothesis).

Whatever the bytes or the keys, `load_quantizer` either returns a consistent quantizer (it encodes
frames of its dimension into codes inside its codebooks) or raises the project's own error type with a
one-line message; `FeatureSource` either streams finite float32 frames of the asked dimension or raises
`LoadError`. Anything else (an IndexError, a RuntimeError, a crash) fails the test.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from fixtures_formats import family_files
from rvq_viewer.errors import RvqViewerError
from rvq_viewer.io import FeatureSource, load_quantizer, read_checkpoint

# A fixed, modest run in the suite; RVQ_FUZZ_EXAMPLES=2000 RVQ_FUZZ_RANDOM=1 explores further.
FUZZ = settings(max_examples=int(os.environ.get("RVQ_FUZZ_EXAMPLES", "40")), deadline=None,
                derandomize=not os.environ.get("RVQ_FUZZ_RANDOM"), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SUFFIXES = [".pt", ".pth", ".ckpt", ".bin", ".th", ".safetensors", ".npy", ".npz"]
HEADS = [b"", b"PK\x03\x04", b"\x80\x02", b"\x80\x04\x95", b"\x93NUMPY\x01\x00", b"03", b"04",
         b"\x10\x00\x00\x00\x00\x00\x00\x00{\"", b"\x1f\x8b"]

_ROOT = Path(tempfile.mkdtemp(prefix="rvq-fuzz-"))
_FAMILIES = family_files(_ROOT / "families")
_STATES = {name: read_checkpoint(path) for name, (path, _) in _FAMILIES.items()}


def check_consistent(quantizer) -> None:
    assert quantizer.n_q >= 1 and all(k >= 1 for k in quantizer.codebook_sizes)
    stride = max(1, quantizer.frame_stride)
    frames = torch.randn(4 * stride, quantizer.dim, generator=torch.Generator().manual_seed(0))
    codes = quantizer.encode(frames)
    layers = codes if isinstance(codes, list) else list(codes)
    assert len(layers) == quantizer.n_q
    for layer, k in zip(layers, quantizer.codebook_sizes):
        assert layer.dtype == torch.long
        if layer.numel():
            assert 0 <= int(layer.min()) and int(layer.max()) < k


def load_or_error(path: Path) -> None:
    try:
        quantizer = load_quantizer(path)
    except RvqViewerError as exc:
        text = str(exc)
        assert text and "\n" not in text, text
        return
    check_consistent(quantizer)


def write(data: bytes, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(suffix=suffix, dir=_ROOT)
    with open(fd, "wb") as fh:
        fh.write(data)
    return Path(name)


@FUZZ
@given(head=st.sampled_from(HEADS), body=st.binary(max_size=600), suffix=st.sampled_from(SUFFIXES))
def test_any_bytes_load_or_fail_cleanly(head, body, suffix):
    path = write(head + body, suffix)
    try:
        load_or_error(path)
    finally:
        path.unlink()


@st.composite
def byte_mutations(draw):
    name = draw(st.sampled_from(sorted(_FAMILIES)))
    data = bytearray(_FAMILIES[name][0].read_bytes())
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "zero"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            data = data[:pos]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "zero":
            data[pos:pos + draw(st.integers(1, 64))] = bytes(min(64, len(data) - pos))
    return name, bytes(data)


@FUZZ
@given(mutation=byte_mutations())
def test_mutated_files_load_or_fail_cleanly(mutation):
    name, data = mutation
    original = _FAMILIES[name][0]
    folder = Path(tempfile.mkdtemp(dir=_ROOT))
    path = folder / original.name
    path.write_bytes(data)
    if (original.parent / "config.json").exists():
        (folder / "config.json").write_bytes((original.parent / "config.json").read_bytes())
    load_or_error(path)


def _odd_tensor(draw, like: torch.Tensor) -> torch.Tensor:
    kind = draw(st.sampled_from(["shape", "dtype", "nan", "inf", "empty", "scalar", "huge", "bool", "fp16"]))
    if kind == "shape":
        dims = draw(st.lists(st.integers(0, 9), min_size=0, max_size=4))
        return torch.randn(*dims) if dims else torch.randn(())
    if kind == "dtype":
        return like.to(draw(st.sampled_from([torch.int64, torch.int8, torch.uint8, torch.float64])))
    if kind == "nan":
        out = like.clone().float()
        if out.numel():
            out.view(-1)[draw(st.integers(0, out.numel() - 1))] = float("nan")
        return out
    if kind == "inf":
        return like.float() * float("inf")
    if kind == "empty":
        return like.reshape(-1)[:0]
    if kind == "scalar":
        return torch.tensor(draw(st.floats(allow_nan=True, allow_infinity=True)))
    if kind == "huge":
        return like.float() * 1e38
    if kind == "bool":
        return like != 0
    return like.half()


@st.composite
def key_mutations(draw):
    name = draw(st.sampled_from(sorted(_STATES)))
    state = dict(_STATES[name].state)
    keys = sorted(state)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["drop", "replace", "rename", "add"]))
        key = draw(st.sampled_from(keys))
        if kind == "drop":
            state.pop(key, None)
        elif kind == "replace" and key in state:
            state[key] = _odd_tensor(draw, state[key])
        elif kind == "rename" and key in state:
            new = key.replace(draw(st.sampled_from(["0", "1", "layers", "embed", "_codebook", "weight"])),
                              draw(st.sampled_from(["7", "", "x", "layers.0"])), 1)
            state[new] = state.pop(key)
        else:
            state[key + draw(st.sampled_from(["_extra", ".bias", "s"]))] = torch.randn(3)
    container = draw(st.sampled_from(["pt", "safetensors", "wrapped"]))
    return name, state, container


@FUZZ
@given(mutation=key_mutations())
def test_mutated_keys_load_or_fail_cleanly(mutation):
    name, state, container = mutation
    folder = Path(tempfile.mkdtemp(dir=_ROOT))
    source = _FAMILIES[name][0]
    if (source.parent / "config.json").exists():
        (folder / "config.json").write_bytes((source.parent / "config.json").read_bytes())
    if container == "safetensors":
        path = folder / "m.safetensors"
        try:
            save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        except Exception:  # noqa: BLE001 - safetensors cannot store some oddities; use torch then
            path = folder / "m.pt"
            torch.save(state, path)
    elif container == "wrapped":
        path = folder / "m.ckpt"
        torch.save({"state_dict": state, "epoch": 1, **_STATES[name].meta}, path)
    else:
        path = folder / "m.pt"
        torch.save(state, path)
    load_or_error(path)


# --- features -------------------------------------------------------------------------------------------
def stream_or_error(paths, dim: int) -> None:
    try:
        source = FeatureSource(paths, dim, chunk_frames=7)
        source.total_frames()
        for chunk in source:
            assert chunk.frames.dtype == torch.float32 and chunk.frames.shape[1] == dim
            assert torch.isfinite(chunk.frames).all()
    except RvqViewerError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(head=st.sampled_from(HEADS), body=st.binary(max_size=400),
       suffix=st.sampled_from([".npy", ".npz", ".pt", ".safetensors", ".txt"]))
def test_any_feature_bytes_stream_or_fail_cleanly(head, body, suffix):
    path = write(head + body, suffix)
    try:
        stream_or_error([path], 4)
    finally:
        path.unlink()


@st.composite
def feature_arrays(draw):
    shape = draw(st.lists(st.integers(0, 6), min_size=0, max_size=4))
    dtype = draw(st.sampled_from([np.float32, np.float16, np.float64, np.int32, np.bool_, np.complex64]))
    values = draw(st.sampled_from(["normal", "nan", "inf", "zeros"]))
    array = np.random.default_rng(0).standard_normal(shape) if shape else np.float64(1.0)
    array = np.asarray(array)
    if values == "nan" and array.size:
        array.flat[0] = np.nan
    elif values == "inf" and array.size:
        array.flat[-1] = np.inf
    elif values == "zeros":
        array = np.zeros_like(array)
    with np.errstate(invalid="ignore"):
        return array.astype(dtype)


@FUZZ
@given(array=feature_arrays(), suffix=st.sampled_from([".npy", ".npz", ".pt", ".safetensors"]),
       dim=st.integers(1, 6))
def test_any_array_streams_or_fails_cleanly(array, suffix, dim):
    folder = Path(tempfile.mkdtemp(dir=_ROOT))
    path = folder / f"f{suffix}"
    try:
        if suffix == ".npy":
            np.save(path, array)
        elif suffix == ".npz":
            np.savez(path, a=array, b=array)
        elif suffix == ".pt":
            torch.save(torch.from_numpy(np.ascontiguousarray(array)), path)
        else:
            save_file({"a": torch.from_numpy(np.ascontiguousarray(array))}, str(path))
    except Exception:  # noqa: BLE001 - a container that cannot hold this array is not under test
        return
    stream_or_error([path], dim)
    stream_or_error([folder], dim)


def test_fuzz_inputs_cover_every_family():
    assert len(_FAMILIES) >= 15


@pytest.mark.parametrize("protocol", [0, 1, 2, 4, 5])
def test_pickles_of_plain_data_in_every_protocol(tmp_path, protocol):
    """Hand-made pickles (not torch.save) of plain containers: no tensors, one clean error."""
    path = tmp_path / "p.pt"
    path.write_bytes(pickle.dumps({"a": [1, 2.0, "x", (None, True)], "b": {"c": b"\x00"}}, protocol=protocol))
    with pytest.raises(RvqViewerError, match="no tensors|not a checkpoint|cannot read|corrupt"):
        load_quantizer(path)
    buf = io.BytesIO()
    pickle.dump(list(range(10)), buf, protocol=protocol)
    path.write_bytes(buf.getvalue())
    with pytest.raises(RvqViewerError):
        load_quantizer(path)
