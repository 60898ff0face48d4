"""Feature files: containers, layouts, folders and lists, errors that name the file, and chunking."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fixtures_formats import save_gpt_sovits
from rvq_viewer.errors import LoadError
from rvq_viewer.io import FeatureSource, load_quantizer

D = 12


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def frames_of(source: FeatureSource) -> list[np.ndarray]:
    """Concatenated frames per sequence."""
    per = defaultdict(list)
    for chunk in source:
        assert chunk.frames.dtype == torch.float32 and chunk.frames.shape[1] == source.dim
        per[chunk.sequence].append(chunk.frames.numpy())
    return [np.concatenate(per[s]) for s in sorted(per)]


@pytest.mark.parametrize("suffix", [".npy", ".pt", ".npz", ".safetensors"])
@pytest.mark.parametrize("layout", ["TD", "DT"])
def test_every_container_and_2d_layout(tmp_path, suffix, layout):
    data = rng(1).standard_normal((37, D)).astype(np.float32)
    stored = data if layout == "TD" else data.T.copy()
    path = tmp_path / f"f{suffix}"
    if suffix == ".npy":
        np.save(path, stored)
    elif suffix == ".pt":
        torch.save(torch.from_numpy(stored), path)
    elif suffix == ".npz":
        np.savez(path, feats=stored)
    else:
        save_file({"feats": torch.from_numpy(stored)}, str(path))
    source = FeatureSource([path], D, chunk_frames=10)
    assert source.total_frames() == 37
    (got,) = frames_of(source)
    np.testing.assert_array_equal(got, data)


@pytest.mark.parametrize("layout", ["BDT", "BTD"])
def test_batched_arrays_are_one_sequence_per_item(tmp_path, layout):
    data = rng(2).standard_normal((3, 20, D)).astype(np.float32)          # [B, T, D]
    stored = data if layout == "BTD" else data.transpose(0, 2, 1).copy()
    np.save(tmp_path / "b.npy", stored)
    source = FeatureSource([tmp_path / "b.npy"], D, chunk_frames=8)
    got = frames_of(source)
    assert len(got) == 3 and source.total_frames() == 60
    for b in range(3):
        np.testing.assert_array_equal(got[b], data[b])


def test_gpt_sovits_style_folder_of_1x768xT_pt(tmp_path):
    """GPT-SoVITS dumps one `[1, 768, T]` tensor per utterance in 4-cnhubert/*.pt."""
    folder = tmp_path / "4-cnhubert"
    folder.mkdir()
    lengths = [50, 31, 77]
    for i, t in enumerate(lengths):
        torch.save(torch.randn(1, 768, t, generator=torch.Generator().manual_seed(i)), folder / f"utt{i}.wav.pt")
    source = FeatureSource([folder], 768, chunk_frames=16)
    assert source.total_frames() == sum(lengths)
    got = frames_of(source)
    assert [len(g) for g in got] == lengths
    first = torch.load(folder / "utt0.wav.pt")[0].t().numpy()
    np.testing.assert_array_equal(got[0], first)


def test_ambiguous_layout_needs_and_accepts_layout(tmp_path):
    np.save(tmp_path / "sq.npy", rng(3).standard_normal((D, D)).astype(np.float32))
    with pytest.raises(LoadError, match=r"ambiguous for D=12: pass --layout \(TD or DT\)") as info:
        FeatureSource([tmp_path / "sq.npy"], D).total_frames()
    assert "sq.npy" in str(info.value)
    source = FeatureSource([tmp_path / "sq.npy"], D, layout="DT")
    (got,) = frames_of(source)
    np.testing.assert_array_equal(got, np.load(tmp_path / "sq.npy").T)
    with pytest.raises(LoadError, match="does not fit layout BDT"):
        FeatureSource([tmp_path / "sq.npy"], D, layout="BDT").total_frames()


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("no features here")
    with pytest.raises(LoadError, match="no feature files") as info:
        FeatureSource([tmp_path / "empty"], D)
    assert "empty" in str(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_frame_error_names_file_and_frame(tmp_path, bad):
    data = rng(4).standard_normal((40, D)).astype(np.float32)
    data[23, 5] = bad
    np.save(tmp_path / "ok.npy", data[:10])
    np.save(tmp_path / "bad.npy", data)
    source = FeatureSource([tmp_path], D, chunk_frames=16)
    with pytest.raises(LoadError, match=r"frame 23 holds NaN or infinite values") as info:
        list(source)
    assert str(tmp_path / "bad.npy") in str(info.value) and "\n" not in str(info.value)


def test_chunks_across_sequences_with_stride_2_match_whole_sequence_encoding(tmp_path):
    """GPT-SoVITS merges frame pairs: chunks must be cut at even frames within each sequence."""
    weights = tmp_path / "w.pth"
    g = torch.Generator().manual_seed(5)
    dim, k = 16, 48
    state = {"ssl_proj.weight": torch.randn(dim, dim, 2, generator=g) / 4, "ssl_proj.bias": torch.zeros(dim),
             "quantizer.vq.layers.0._codebook.embed": torch.randn(k, dim, generator=g),
             "quantizer.vq.layers.0._codebook.embed_avg": torch.randn(k, dim, generator=g),
             "quantizer.vq.layers.0._codebook.cluster_size": torch.rand(k, generator=g) * 5,
             "quantizer.vq.layers.0._codebook.inited": torch.ones(1)}
    save_gpt_sovits(weights, state)
    quantizer = load_quantizer(weights)
    folder = tmp_path / "feats"
    folder.mkdir()
    sequences = [torch.randn(t, dim, generator=g) for t in (33, 8, 51, 2, 19)]
    for i, seq in enumerate(sequences):
        np.save(folder / f"{i:02d}.npy", seq.numpy())
    source = FeatureSource([folder], quantizer.dim, chunk_frames=7, frame_stride=quantizer.frame_stride)
    assert source.chunk_frames == 6
    per = defaultdict(list)
    for chunk in source:
        per[chunk.sequence].append(quantizer.encode(chunk.frames))
    for i, seq in enumerate(sequences):
        assert torch.equal(torch.cat(per[i], dim=1), quantizer.encode(seq)), f"sequence {i}"


def test_text_list_relative_paths_and_comments(tmp_path):
    (tmp_path / "data" / "sub").mkdir(parents=True)
    a = rng(6).standard_normal((5, D)).astype(np.float32)
    b = rng(7).standard_normal((7, D)).astype(np.float32)
    np.save(tmp_path / "data" / "a.npy", a)
    np.save(tmp_path / "data" / "sub" / "b.npy", b)
    listing = tmp_path / "data" / "train.txt"
    listing.write_text("# features for the audit\n\nsub/b.npy   # the second\n" + str(tmp_path / "data" / "a.npy") + "\n")
    source = FeatureSource([listing], D)
    assert source.files == [tmp_path / "data" / "sub" / "b.npy", tmp_path / "data" / "a.npy"]
    got = frames_of(source)
    np.testing.assert_array_equal(got[0], b)
    np.testing.assert_array_equal(got[1], a)


def test_text_list_missing_entry_names_list_and_line(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((3, D), np.float32))
    listing = tmp_path / "list.txt"
    listing.write_text("a.npy\nmissing.npy\n")
    with pytest.raises(LoadError, match=r"list\.txt: line 2: missing\.npy: no such file"):
        FeatureSource([listing], D)


def test_npz_array_chosen_by_name(tmp_path):
    feats = rng(8).standard_normal((9, D)).astype(np.float32)
    other = rng(9).standard_normal((4, D)).astype(np.float32)
    np.savez(tmp_path / "u.npz", feats=feats, other=other, lengths=np.array([9]))
    (got,) = frames_of(FeatureSource([tmp_path / "u.npz"], D, key="feats"))
    np.testing.assert_array_equal(got, feats)
    # Without a key every array of the right dimension is a sequence; `lengths` is left out.
    got = frames_of(FeatureSource([tmp_path / "u.npz"], D))
    assert [len(g) for g in got] == [9, 4]
    with pytest.raises(LoadError, match=r"no array named 'nope' in the file \(it holds: feats, other, lengths\)"):
        FeatureSource([tmp_path / "u.npz"], D, key="nope").total_frames()


def test_safetensors_array_chosen_by_name_and_batched(tmp_path):
    x = torch.randn(2, D, 15, generator=torch.Generator().manual_seed(10))
    save_file({"hidden": x, "mask": torch.ones(2, 15)}, str(tmp_path / "f.safetensors"))
    source = FeatureSource([tmp_path / "f.safetensors"], D, key="hidden", chunk_frames=4)
    got = frames_of(source)
    assert len(got) == 2
    np.testing.assert_array_equal(got[1], x[1].t().numpy())


def test_fp16_features_are_upcast(tmp_path):
    data = rng(11).standard_normal((6, D)).astype(np.float16)
    np.save(tmp_path / "h.npy", data)
    (got,) = frames_of(FeatureSource([tmp_path / "h.npy"], D))
    np.testing.assert_array_equal(got, data.astype(np.float32))


def test_integer_arrays_are_not_features(tmp_path):
    np.save(tmp_path / "ids.npy", np.zeros((6, D), dtype=np.int64))
    with pytest.raises(LoadError, match="int64 values, not float features"):
        FeatureSource([tmp_path / "ids.npy"], D).total_frames()


def test_wrong_dimension_named_file_is_an_error(tmp_path):
    np.save(tmp_path / "f.npy", np.zeros((6, D + 1), np.float32))
    with pytest.raises(LoadError, match=r"f\.npy: features of shape \(6, 13\) have no axis of the quantizer's dimension 12"):
        list(FeatureSource([tmp_path / "f.npy"], D))


def test_bad_file_in_a_folder_is_skipped_with_a_warning(tmp_path):
    good = rng(12).standard_normal((8, D)).astype(np.float32)
    np.save(tmp_path / "a_good.npy", good)
    np.save(tmp_path / "b_wrong_dim.npy", np.zeros((5, 3), np.float32))
    (tmp_path / "c_truncated.npy").write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'")
    source = FeatureSource([tmp_path], D)
    assert source.total_frames() == 8
    (got,) = frames_of(source)
    np.testing.assert_array_equal(got, good)
    skipped = {p.name for p, _ in source.skipped}
    assert skipped == {"b_wrong_dim.npy", "c_truncated.npy"}
    lines = source.warnings()
    assert all(line.count("\n") == 0 and ": skipped: " in line for line in lines)


def test_folder_where_nothing_is_usable_is_an_error(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((5, 3), np.float32))
    np.save(tmp_path / "b.npy", np.zeros((5, 4), np.float32))
    with pytest.raises(LoadError, match="no usable feature files: all 2 were skipped"):
        FeatureSource([tmp_path], D).total_frames()


def test_big_npy_is_read_block_by_block(tmp_path):
    """A large .npy is not loaded whole, nor memory-mapped (a truncation would SIGBUS): blocks are read
    from the file on demand, in C and Fortran order alike."""
    from rvq_viewer.io.features import SMALL_NPY_BYTES, open_arrays
    from rvq_viewer.io.file_arrays import FileArray
    rows = SMALL_NPY_BYTES // (4 * D) + 10
    data = rng(30).standard_normal((rows, D)).astype(np.float32)
    for name, stored in (("big.npy", data), ("fortran.npy", np.asfortranarray(data))):
        np.save(tmp_path / name, stored)
        ((_, array),) = open_arrays(tmp_path / name)
        assert isinstance(array, FileArray) and array.shape == data.shape
        np.testing.assert_array_equal(array[rows - 7:rows - 2].numpy(), data[rows - 7:rows - 2])
        np.testing.assert_array_equal(array[:, 3:5].numpy(), data[:, 3:5])


def test_packed_chunks_hold_the_same_frames_in_order(tmp_path):
    data = [rng(20 + i).standard_normal((n, D)).astype(np.float32) for i, n in enumerate((3, 9, 1, 25, 4, 11))]
    for i, d in enumerate(data):
        np.save(tmp_path / f"{i}.npy", d)
    packed = list(FeatureSource([tmp_path], D, chunk_frames=8, pack=True))
    assert [len(c.frames) for c in packed] == [8, 8, 8, 8, 8, 8, 5]
    np.testing.assert_array_equal(np.concatenate([c.frames.numpy() for c in packed]), np.concatenate(data))
    # With frame_stride > 1 sequences are never joined.
    strided = list(FeatureSource([tmp_path], D, chunk_frames=8, frame_stride=2, pack=True))
    assert len(strided) > len(packed)
