"""A small corpus of every feature container and a checkpoint, for the sharded-audit tests, and the check
that two accumulators hold the same statistics (exact counts, float sums to rounding)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

K, D, LAYERS = 64, 16, 3


def write_checkpoint(path: Path, seed: int = 0) -> Path:
    """An EnCodec-layout RVQ (K=64, D=16, 3 layers) whose last layer is barely used."""
    rng = np.random.default_rng(seed)
    state = {}
    for i in range(LAYERS):
        embed = rng.normal(size=(K, D)).astype(np.float32) * (2.0 / (i + 1))
        base = f"quantizer.vq.layers.{i}._codebook."
        state.update({base + "embed": torch.from_numpy(embed), base + "inited": torch.ones(1),
                      base + "cluster_size": torch.full((K,), 5.0), base + "embed_avg": torch.from_numpy(embed.copy())})
    torch.save(state, path)
    return path


def write_corpus(folder: Path, seed: int = 1, scale: int = 1) -> Path:
    """A folder of .npy (small and large), .npz (two arrays and a lengths vector), a [B, T, D] .pt and a
    .safetensors file, with lengths that are no multiple of any chunk, and one unreadable file."""
    from safetensors.torch import save_file

    rng = np.random.default_rng(seed)

    def frames(n):
        return (rng.normal(size=(n, D)) * 2).astype(np.float32)

    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "a_long.npy", frames(23_003 * scale))
    for i, n in enumerate((311, 5, 2_048, 7_777)):
        np.save(folder / f"b_short_{i}.npy", frames(n))
    np.savez(folder / "c_pair.npz", first=frames(3_001), second=frames(1_999).T.copy(),
             lengths=np.array([3, 4], dtype=np.int64))
    torch.save(torch.from_numpy(np.stack([frames(2_500) for _ in range(3)])), folder / "d_batch.pt")
    save_file({"feats": torch.from_numpy(frames(4_099))}, str(folder / "e_tensor.safetensors"))
    (folder / "f_broken.npy").write_bytes(b"\x93NUMPY garbage")
    return folder


def same_statistics(a, b, rel: float = 1e-9) -> None:
    """Every count equal, every float sum equal to rounding: the audit of the same frames."""
    assert a.frames == b.frames
    norms_a = [a.input] + [layer.residual for layer in a.layers]
    norms_b = [b.input] + [layer.residual for layer in b.layers]
    for x, y in zip(norms_a, norms_b):
        assert x.count == y.count
        np.testing.assert_array_equal(x.histogram.counts, y.histogram.counts)
        assert x.sum == pytest.approx(y.sum, rel=rel)
        assert x.sum_sq == pytest.approx(y.sum_sq, rel=rel)
    for x, y in zip(a.layers, b.layers):
        np.testing.assert_array_equal(x.counts, y.counts)
    assert (a.pairs is None) == (b.pairs is None)
    if a.pairs is None:
        return
    assert a.pairs.frames == b.pairs.frames
    for pair in range(len(a.pairs.pairs)):
        for x, y in zip(a.pairs.joint(pair), b.pairs.joint(pair)):
            np.testing.assert_array_equal(x, y)
    assert (a.pairs.moments is None) == (b.pairs.moments is None)
    for x, y in zip(a.pairs.moments or [], b.pairs.moments or []):
        assert x.count == y.count, "the input moments took other rows"
        np.testing.assert_allclose(x.total, y.total, rtol=rel, atol=rel * np.abs(x.total).max())
        np.testing.assert_allclose(x.outer, y.outer, rtol=rel, atol=rel * np.abs(x.outer).max())


def same_numbers(x, y, where: str = "") -> None:
    """Equal structures: ints and strings exactly, floats to rounding."""
    if isinstance(x, dict):
        assert x.keys() == y.keys(), where
        for key in x:
            same_numbers(x[key], y[key], f"{where}.{key}")
    elif isinstance(x, (list, tuple)):
        assert len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y)):
            same_numbers(u, v, f"{where}[{i}]")
    elif isinstance(x, float):
        assert x == pytest.approx(y, rel=1e-9, abs=1e-12, nan_ok=True), where
    else:
        assert x == y, where


def same_outcome(a, b) -> None:
    """Two `AuditOutcome`s: the same numbers per layer and the same verdicts."""
    ra, rb = a.result.to_dict(), b.result.to_dict()
    ra.pop("complete"), rb.pop("complete")
    same_numbers(ra, rb)
    assert a.verdicts is not None and b.verdicts is not None
    assert [(v.id, v.layer, v.severity) for v in a.verdicts] == [(v.id, v.layer, v.severity) for v in b.verdicts]
    assert a.warnings == b.warnings[:len(a.warnings)]


def last_accumulator(items):
    """The outcome and the accumulator of the last progress of an `iter_audit_run`."""
    last = None
    for item in items:
        if hasattr(item, "accumulator"):
            last = item.accumulator
        else:
            return item, last
    raise AssertionError("no outcome")
