"""Folders as users point at them: what transformers' `save_pretrained` writes (config.json with
model.safetensors, or shards and model.safetensors.index.json), and Hugging Face cache folders
(`models--org--name/snapshots/<hash>/`).

The folders are written by transformers' own `save_pretrained` (5.24, from the registry). No cache can
be downloaded here, so the cache layout (blobs, snapshot links, refs/main) is re-created by hand; that it
is the real layout is shown by transformers' own `from_pretrained(..., local_files_only=True)` reading
it back.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings

import pytest
import torch

from fixtures_formats import family_files
from fixtures_transformers import frames, randomise_codebooks, small, their_codes, transformers
from rvq_viewer.errors import LoadError
from rvq_viewer.io import load_quantizer
from rvq_viewer.io.checkpoints import NoQuantizerError


@pytest.fixture(scope="module")
def encodec():
    return randomise_codebooks(transformers.EncodecModel(small("encodec")), 11)


def save(model, folder, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(folder, **kwargs)
    return folder


def expected_codes(model, x):
    return their_codes(lambda h: model.quantizer.encode(h), x)


def test_sharded_save_pretrained_folder(tmp_path, encodec):
    folder = save(encodec, tmp_path / "sharded", max_shard_size="8KB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 2 and not (folder / "model.safetensors").exists()
    quantizer = load_quantizer(folder)
    assert any(f"{len(shards)} shards listed by model.safetensors.index.json" in n for n in quantizer.notes)
    assert any("config.json: model_type encodec" in n for n in quantizer.notes)
    x = frames(16)
    assert torch.equal(quantizer.encode(x), expected_codes(encodec, x))


def hub_cache(tmp_path, folder, repo="facebook/encodec_tiny", commit="0123456789abcdef0123456789abcdef01234567"):
    """The Hugging Face cache layout of one downloaded revision: files stored once in blobs/ under
    their hash, linked from snapshots/<commit>/, and refs/main naming the commit."""
    cache = tmp_path / "hub"
    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    (repo_dir / "blobs").mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for item in folder.iterdir():
        data = item.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / item.name)
    (repo_dir / "refs" / "main").write_text(commit)
    return cache, repo_dir, snapshot


def test_hugging_face_cache_folders(tmp_path, encodec):
    cache, repo_dir, snapshot = hub_cache(tmp_path, save(encodec, tmp_path / "saved"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reread = transformers.EncodecModel.from_pretrained("facebook/encodec_tiny", cache_dir=cache,
                                                           local_files_only=True)
    assert torch.equal(reread.quantizer.layers[0].codebook.embed, encodec.quantizer.layers[0].codebook.embed)
    x = frames(16)
    expected = expected_codes(encodec, x)
    for path in (repo_dir, repo_dir / "snapshots", snapshot, snapshot / "model.safetensors"):
        quantizer = load_quantizer(path)
        assert quantizer.format == "encodec-hf"
        assert torch.equal(quantizer.encode(x), expected)
    assert any("snapshot 0123456789ab (refs/main)" in n for n in load_quantizer(repo_dir).notes)


def test_cache_folder_with_several_snapshots_and_no_ref(tmp_path, encodec):
    _, repo_dir, snapshot = hub_cache(tmp_path, save(encodec, tmp_path / "saved"))
    (repo_dir / "refs" / "main").unlink()
    shutil.copytree(snapshot, snapshot.parent / ("f" * 40), symlinks=True)
    with pytest.raises(LoadError, match="2 snapshots and no refs/main naming one: open one of"):
        load_quantizer(repo_dir)
    # A ref naming a snapshot that is not there does not pick one at random either.
    (repo_dir / "refs" / "main").write_text("e" * 40)
    with pytest.raises(LoadError, match="2 snapshots"):
        load_quantizer(repo_dir)


def test_cache_snapshot_whose_blob_is_missing(tmp_path, encodec):
    _, repo_dir, snapshot = hub_cache(tmp_path, save(encodec, tmp_path / "saved"))
    (snapshot / "model.safetensors").resolve().unlink()
    with pytest.raises(LoadError, match=r"model\.safetensors: broken symbolic link"):
        load_quantizer(repo_dir)


def test_shard_index_that_points_outside_the_folder_is_refused(tmp_path, encodec):
    folder = save(encodec, tmp_path / "sharded", max_shard_size="8KB")
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "../elsewhere.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(LoadError, match="not a file in this folder"):
        load_quantizer(folder)


def test_shard_index_listing_a_tensor_its_shards_lack(tmp_path, encodec):
    folder = save(encodec, tmp_path / "sharded", max_shard_size="8KB")
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["quantizer.layers.99.codebook.embed"] = next(iter(index["weight_map"].values()))
    index_path.write_text(json.dumps(index))
    with pytest.raises(LoadError, match="the index lists 1 tensors its shards lack"):
        load_quantizer(folder)
    index_path.write_text("{not json")
    with pytest.raises(LoadError, match="not valid JSON"):
        load_quantizer(folder)


def test_snac_repository_folder_reads_vq_strides_from_its_config(tmp_path):
    """SNAC's repositories hold pytorch_model.bin and a config.json with vq_strides."""
    path, _ = family_files(tmp_path)["snac"]
    quantizer = load_quantizer(path.parent)
    assert quantizer.format == "snac" and quantizer.layer_strides == [4, 2, 1]
    assert any("pytorch_model.bin + config.json" in n for n in quantizer.notes)


def test_a_folder_of_a_model_without_a_quantizer_names_its_model_type(tmp_path):
    config = transformers.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, vocab_size=50)
    save(transformers.BertModel(config), tmp_path / "bert")
    with pytest.raises(NoQuantizerError, match="no quantizer recognised .*config.json names model_type 'bert'"):
        load_quantizer(tmp_path / "bert")
