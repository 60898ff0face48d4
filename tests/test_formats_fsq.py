"""FSQ families against the peers' own modules: vector-quantize-pytorch's FSQ / ResidualFSQ /
GroupedResidualFSQ, transformers' X-Codec2, S3Tokenizer v2 and Stable Codec's posthoc bottleneck, each
saved the way its users save it, and the codes compared with the module's own."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from fixtures_families import (module_indices, s3tokenizer_model, save_in_model, stable_codec_bottleneck,
                               xcodec2_model)
from fixtures_formats import require

vqp = require("vector_quantize_pytorch")

import rvq_viewer  # noqa: E402
from rvq_viewer.cli import main  # noqa: E402
from rvq_viewer.errors import LoadError  # noqa: E402
from rvq_viewer.io import load_quantizer  # noqa: E402
from rvq_viewer.pipeline import LoadOptions, load_checkpoint  # noqa: E402


def frames(n: int, dim: int, seed: int = 1, scale: float = 2.0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("kwargs", [
    dict(levels=[8, 5, 5, 5], dim=32),
    dict(levels=[7, 5, 5, 5, 5], dim=24),
    dict(levels=[8, 6, 5], dim=40, num_codebooks=2),                  # two codebooks share the grid
    dict(levels=[5, 5, 5, 5], dim=16, orthogonal_rotation=True),      # a persistent orthogonal_rot
    dict(levels=[4, 4, 4, 4, 4, 4, 4, 4], dim=8),                     # no projection at all
], ids=["8555", "75555", "two-codebooks", "rotation", "no-projection"])
def test_fsq_parity_inside_a_model(tmp_path, kwargs):
    torch.manual_seed(0)
    fsq = vqp.FSQ(**kwargs)
    path = save_in_model(fsq, kwargs["dim"], tmp_path / "model.pt")
    quantizer = load_quantizer(path, levels=kwargs["levels"])
    assert quantizer.format == "fsq" and quantizer.family.name == "fsq" and quantizer.n_q == 1
    heads = kwargs.get("num_codebooks", 1)
    assert quantizer.codes_per_frame == heads and quantizer.cells == fsq.codebook_size
    x = frames(400, kwargs["dim"])
    ref = module_indices(fsq, x)[0].long()                              # [T] or [T, heads]
    if heads > 1:
        ref = (ref + torch.arange(heads) * fsq.codebook_size).reshape(-1)   # table t's codes are t*K + k
    assert torch.equal(quantizer.encode(x)[0], ref)


@pytest.mark.parametrize("levels,stages", [([8, 5, 5, 5], 3), ([3, 3, 3, 3, 3, 3], 4), ([8, 5, 5, 5], 1)])
def test_residual_fsq_parity(tmp_path, levels, stages):
    torch.manual_seed(1)
    rfsq = vqp.ResidualFSQ(levels=levels, num_quantizers=stages, dim=32)
    path = save_in_model(rfsq, 32, tmp_path / "model.ckpt", wrap="state_dict", extra={"epoch": 3})
    quantizer = rvq_viewer.load_quantizer(path, levels=levels, stages=stages)      # the public API
    assert quantizer.n_q == stages and quantizer.codebook_size == rfsq.codebook_size
    x = frames(500, 32)
    assert torch.equal(quantizer.encode(x), module_indices(rfsq, x)[0].t().long())


def test_grouped_residual_fsq_parity(tmp_path):
    torch.manual_seed(2)
    grouped = vqp.GroupedResidualFSQ(levels=[5, 5, 5], num_quantizers=2, dim=32, groups=2)
    path = save_in_model(grouped, 32, tmp_path / "model.pt")
    quantizer = load_checkpoint(path, LoadOptions(levels=(5, 5, 5), stages=2))
    assert quantizer.n_tables == 2 and quantizer.table_names() == ["group 0", "group 1"]
    x = frames(300, 32)
    ref = module_indices(grouped, x)                                    # [groups, 1, T, stages]
    ref = ref[:, 0].permute(2, 1, 0).long() + torch.arange(2) * 125     # [stages, T, groups]
    assert torch.equal(quantizer.encode(x), ref.reshape(2, -1))


def test_levels_from_the_files_own_config(tmp_path):
    torch.manual_seed(3)
    fsq = vqp.FSQ(levels=[7, 5, 5, 5, 5], dim=24)
    path = save_in_model(fsq, 24, tmp_path / "m.pt", wrap="model", extra={"config": {"levels": [7, 5, 5, 5, 5]}})
    quantizer = load_quantizer(path)
    x = frames(200, 24)
    assert torch.equal(quantizer.encode(x)[0], module_indices(fsq, x)[0].long())
    assert "the file's config" in quantizer.notes[0]


def test_missing_levels_is_one_line_that_names_the_option(tmp_path, capsys):
    torch.manual_seed(4)
    path = save_in_model(vqp.ResidualFSQ(levels=[8, 5, 5, 5], num_quantizers=2, dim=32), 32, tmp_path / "m.pt")
    with pytest.raises(LoadError, match=r"--levels .*--stages") as info:
        load_quantizer(path)
    assert "'quantizer.'" in str(info.value) and "\n" not in str(info.value)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("rvq-viewer: error: ") and "--levels 8,5,5,5 for 4 dims" in err
    assert main(["info", str(path), "--levels", "8,5,5,5", "--stages", "2", "--json"]) == 0
    info_json = json.loads(capsys.readouterr().out)
    assert info_json["family"] == "fsq" and info_json["levels"] == [8, 5, 5, 5] and info_json["stages"] == 2


def test_levels_that_do_not_fit_or_do_not_apply(tmp_path):
    torch.manual_seed(5)
    path = save_in_model(vqp.FSQ(levels=[8, 5, 5, 5], dim=32), 32, tmp_path / "m.pt")
    with pytest.raises(LoadError, match="levels give 3 dims"):
        load_quantizer(path, levels=[8, 5, 5])
    with pytest.raises(LoadError, match="integers >= 2"):
        load_quantizer(path, levels=[8, 1, 5, 5])
    lfq = save_in_model(vqp.LFQ(dim=32, codebook_size=2 ** 8), 32, tmp_path / "lfq.pt")
    with pytest.raises(LoadError, match="levels and stages are FSQ settings"):
        load_quantizer(lfq, levels=[8, 5, 5, 5])
    with pytest.raises(LoadError, match="cells per table"):
        load_quantizer(path, levels=[64, 64, 64, 64])


def test_xcodec2_from_transformers(tmp_path):
    model = xcodec2_model()
    model.save_pretrained(tmp_path / "xcodec2")
    x = frames(400, 48, scale=1.0)
    with torch.no_grad():
        _, indices = model.quantizer(x.unsqueeze(0))
    quantizer = load_quantizer(tmp_path / "xcodec2" / "model.safetensors")
    assert quantizer.format == "xcodec2" and quantizer.cells == 65536
    assert "from config.json" in " ".join(quantizer.notes)
    assert torch.equal(quantizer.encode(x)[0], indices[0, :, 0].long())
    # Without config.json: X-Codec2's published default levels, said in a note.
    bare = tmp_path / "bare" / "model.safetensors"
    bare.parent.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(bare))
    again = load_quantizer(bare)
    assert torch.equal(again.encode(x)[0], indices[0, :, 0].long())
    assert "default levels" in " ".join(again.notes)


def test_s3tokenizer_v2_parity(tmp_path):
    model = s3tokenizer_model()
    torch.save(model.state_dict(), tmp_path / "speech_tokenizer_v2.pt")
    quantizer = load_quantizer(tmp_path / "speech_tokenizer_v2.pt")
    assert quantizer.format == "s3tokenizer" and quantizer.cells == 3 ** 8
    hidden = frames(600, 64, scale=0.5)
    assert torch.equal(quantizer.encode(hidden)[0], model.quantizer.encode(hidden.unsqueeze(0))[0].long())


@pytest.mark.parametrize("preset,stages", [
    ("1x46656_400bps", [([6] * 6, 1.0)]),
    ("2x15625_700bps", [([5] * 6, 1.0), ([5] * 6, 0.25)]),
    ("4x729_1000bps", [([3] * 6, 1.0), ([3] * 6, 0.5), ([3] * 6, 0.25), ([3] * 6, 0.125)]),
])
def test_stable_codec_presets_parity(tmp_path, preset, stages):
    bottleneck = stable_codec_bottleneck()(stages)
    latents = frames(800, 6, scale=1.5)
    ids = bottleneck.encode(latents.t().unsqueeze(0))                   # per stage [1, T, 1]
    torch.save({"state_dict": {"encoder.layers.0.weight": torch.zeros(4, 4)}}, tmp_path / "stable_codec.ckpt")
    quantizer = load_quantizer(tmp_path / "stable_codec.ckpt", levels=preset)
    assert quantizer.format == "stable-codec" and quantizer.n_q == len(stages) and quantizer.dim == 6
    assert torch.equal(quantizer.encode(latents), torch.stack([i[0, :, 0] for i in ids]))


def test_a_series_of_fsq_checkpoints_is_read_with_the_levels_given(tmp_path, capsys):
    for step in (100, 200):
        torch.manual_seed(step)
        save_in_model(vqp.FSQ(levels=[8, 5, 5, 5], dim=32), 32, tmp_path / f"fsq_{step}.pt")
    feats = tmp_path.parent / "feats.npy"
    import numpy as np
    np.save(feats, frames(600, 32, scale=1.0).numpy())
    out = tmp_path.parent / "events.json"
    assert main(["events", str(tmp_path), str(feats), "--levels", "8,5,5,5", "--json", str(out)]) == 0
    assert "2 checkpoints" in capsys.readouterr().out
    summaries = json.loads(out.read_text())["summaries"]
    assert [s["step"] for s in summaries] == [100, 200] and all(0 < s["used"] <= 1000 for s in summaries)
    # Without the levels the series cannot be read: said in one line, as for one checkpoint.
    assert main(["events", str(tmp_path), str(feats)]) == 2
    assert "levels" in capsys.readouterr().err
