"""GPT-SoVITS v3/v4 LoRA exports: the codebook from the LoRA file, ssl_proj from the base model.

GPT-SoVITS is not a package on the registry, so its writer is re-created here in a few lines, as its
own code does it: `s2_train_v3_lora.py` freezes ssl_proj and the quantizer (`freeze_quantizer`),
saves every state-dict entry whose name is not a frozen parameter (so buffers, the codebook among
them, are kept and ssl_proj is not), each `.half()`, through `process_ckpt.savee` ({"weight",
"config": utils.HParams, "info": "<epoch>epoch_<step>iteration", "lora_rank"}) and `my_save2`, which
overwrites the zip's "PK" with b"03" (v3) or b"04" (v4). The quantizer inside is EnCodec's own
`core_vq.ResidualVectorQuantization` (PyPI encodec 0.1.1), whose code GPT-SoVITS's core_vq copies;
the expected codes are GPT-SoVITS's `extract_latent`: that quantizer on ssl_proj's output.
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict

import numpy as np
import pytest
import torch

from fixtures_formats import fake_hparams_module, fill_encodec_rvq
from peers import encodec_core_vq
from rvq_viewer import audit
from rvq_viewer.cli import main
from rvq_viewer.errors import LoadError
from rvq_viewer.io import load_quantizer
from rvq_viewer.pipeline import LoadOptions

DIM, BINS = 48, 128
HEADERS = {"v3": b"03", "v4": b"04"}


class Synthesizer(torch.nn.Module):
    """The parts of GPT-SoVITS's SynthesizerTrnV3 that matter here, under its own attribute names:
    ssl_proj (25 Hz: kernel 2, stride 2), the quantizer (`quantizer.vq` is the RVQ), a text encoder
    and the flow-matching decoder LoRA trains."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.ssl_proj = torch.nn.Conv1d(DIM, DIM, 2, stride=2)
        self.quantizer = torch.nn.Module()
        self.quantizer.vq = encodec_core_vq().ResidualVectorQuantization(num_quantizers=1, dim=DIM,
                                                                         codebook_size=BINS)
        fill_encodec_rvq(self.quantizer.vq, torch.Generator().manual_seed(seed), scale=0.5)
        self.enc_p = torch.nn.Linear(DIM, 8)
        self.cfm = torch.nn.Module()
        self.cfm.to_q = torch.nn.Linear(8, 8)
        self.cfm.to_q_lora_A = torch.nn.Parameter(torch.randn(4, 8))
        # Exported weights are fp16: keep every value one that fp16 holds, so fp32 references are exact.
        with torch.no_grad():
            for tensor in list(self.parameters()) + list(self.buffers()):
                tensor.copy_(tensor.half().float())
        self.eval()

    def extract_latent(self, frames: torch.Tensor) -> torch.Tensor:
        """GPT-SoVITS's extract_latent on HuBERT frames [T, 768]: codes [n_q, T / 2]."""
        with torch.no_grad():
            return self.quantizer.vq.encode(self.ssl_proj(frames.t().unsqueeze(0)))[:, 0]

    def freeze_for_lora(self) -> set[str]:
        """freeze_quantizer + peft's frozen base weights: the names `no_grad_names` collects."""
        for module in (self.ssl_proj, self.quantizer, self.cfm.to_q):
            for p in module.parameters():
                p.requires_grad = False
        return {name for name, p in self.named_parameters() if not p.requires_grad}


def savee(state: dict, path, info: str, header: bytes | None = None, lora_rank: int | None = None,
          version: str = "v3") -> None:
    """process_ckpt.savee, with my_save2's header bytes for LoRA exports."""
    with fake_hparams_module() as HParams:
        package = OrderedDict(weight={k: v.half() for k, v in state.items() if "enc_q" not in k},
                              config=HParams(model={"semantic_frame_rate": "25hz", "version": version},
                                             train={"lora_rank": lora_rank}), info=info)
        if lora_rank:
            package["lora_rank"] = lora_rank
        buf = io.BytesIO()
        torch.save(package, buf)
    data = buf.getvalue()
    path.write_bytes(header + data[2:] if header else data)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """s2Gv3.pth (the base) and a LoRA export trained from it, whose EMA codebook moved on."""
    root = tmp_path_factory.mktemp("sovits_lora")
    model = Synthesizer(0)
    savee(model.state_dict(), root / "s2Gv3.pth", "pretrained")
    trained = Synthesizer(0)
    fill_encodec_rvq(trained.quantizer.vq, torch.Generator().manual_seed(5), scale=0.5)   # EMA updates
    with torch.no_grad():
        for buf in trained.quantizer.vq.buffers():
            buf.copy_(buf.half().float())
    no_grad_names = trained.freeze_for_lora()
    sim_ckpt = {k: v for k, v in trained.state_dict().items() if k not in no_grad_names}
    assert "ssl_proj.weight" not in sim_ckpt and "quantizer.vq.layers.0._codebook.embed" in sim_ckpt
    for version, header in HEADERS.items():
        savee(sim_ckpt, root / f"voice_e8_s96_l32_{version}.pth", "8epoch_96iteration", header, lora_rank=32,
              version=version)
    x = torch.randn(301, DIM, generator=torch.Generator().manual_seed(9))
    return root, trained, x


@pytest.mark.parametrize("version", ["v3", "v4"])
def test_lora_export_with_its_base_model_gives_gpt_sovits_codes(run, version):
    root, trained, x = run
    lora = root / f"voice_e8_s96_l32_{version}.pth"
    assert lora.read_bytes()[:2] == HEADERS[version]
    quantizer = load_quantizer(lora, base=root / "s2Gv3.pth")
    assert quantizer.format == "gpt-sovits" and quantizer.frame_stride == 2 and quantizer.dim == DIM
    assert any(f"{version} LoRA export (LoRA rank 32): ssl_proj from the base model s2Gv3.pth" in n
               for n in quantizer.notes)
    codes = quantizer.encode(x)
    assert codes.shape == (1, 150)
    assert torch.equal(codes, trained.extract_latent(x))
    # The codebook is the LoRA file's (GPT-SoVITS loads the LoRA file over the base), not the base's.
    assert not torch.equal(quantizer.codebooks[0], load_quantizer(root / "s2Gv3.pth").codebooks[0])


@pytest.mark.parametrize("version, example", [("v3", "s2Gv3.pth"), ("v4", "s2Gv4.pth")])
def test_lora_export_without_a_base_refuses_raw_hubert_frames(run, version, example, capsys):
    root, _, _ = run
    lora = root / f"voice_e8_s96_l32_{version}.pth"
    with pytest.raises(LoadError, match=rf"GPT-SoVITS {version} LoRA export \(LoRA rank 32\) holds no ssl_proj .* "
                                        rf"raw {DIM}-dim HuBERT frames cannot be projected: name the base model "
                                        rf"\(--base {example}\), or pass --skip-transform"):
        load_quantizer(lora)
    assert main(["info", str(lora)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rvq-viewer: error: ") and "--base" in err[0]


def test_lora_export_takes_frames_already_through_ssl_proj(run):
    root, trained, x = run
    quantizer = load_quantizer(root / "voice_e8_s96_l32_v3.pth", skip_transform=True)
    assert quantizer.format == "gpt-sovits" and quantizer.frame_stride == 1
    assert any("no ssl_proj in the file and no base model named; features are taken as already through "
               "ssl_proj (25hz per its config)" in n for n in quantizer.notes)
    with torch.no_grad():
        projected = trained.ssl_proj(x.t().unsqueeze(0))[0].t()
    assert torch.equal(quantizer.encode(projected), trained.extract_latent(x))


def test_audit_through_the_pipeline_and_the_cli_with_a_base(run, tmp_path, capsys):
    root, trained, x = run
    lora, base = root / "voice_e8_s96_l32_v3.pth", root / "s2Gv3.pth"
    np.save(tmp_path / "hubert.npy", x.t().unsqueeze(0).numpy())     # GPT-SoVITS's [1, 768, T] dumps
    outcome = audit(lora, [tmp_path / "hubert.npy"], load=LoadOptions(base=base), device="cpu")
    counts = np.bincount(trained.extract_latent(x)[0].numpy(), minlength=BINS)
    assert outcome.quantizer.format == "gpt-sovits"
    assert outcome.result.layers[0].counts.tolist() == counts.tolist()
    out = tmp_path / "report.json"
    assert main(["audit", str(lora), str(tmp_path / "hubert.npy"), "--base", str(base), "--json", str(out),
                 "--quiet", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert json.loads(out.read_text())["layers"][0]["counts"] == counts.tolist()
    # the base model is an input too: an output over it is refused before anything is written
    before = base.read_bytes()
    assert main(["audit", str(lora), str(tmp_path / "hubert.npy"), "--base", str(base), "--json", str(base),
                 "--quiet", "--device", "cpu"]) == 2
    assert "--json is an input file" in capsys.readouterr().err and base.read_bytes() == before


def test_a_base_without_ssl_proj_is_refused_naming_the_base(run):
    root, _, _ = run
    other = root / "voice_e8_s96_l32_v4.pth"
    with pytest.raises(LoadError, match=rf"{other}: not a GPT-SoVITS base model: it has no ssl_proj.weight"):
        load_quantizer(root / "voice_e8_s96_l32_v3.pth", base=other)


def test_a_file_with_its_own_ssl_proj_keeps_it_and_says_so(run):
    root, _, x = run
    model = Synthesizer(0)
    quantizer = load_quantizer(root / "s2Gv3.pth", base=root / "voice_e8_s96_l32_v3.pth")
    assert any("not used: this file has its own ssl_proj" in n for n in quantizer.notes)
    assert torch.equal(quantizer.encode(x), model.extract_latent(x))
