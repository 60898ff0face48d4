"""Shared builders for the format tests: the peers' own quantizer modules (loaded without their heavy
package `__init__`s), and checkpoint files in each project's real layout.

Peer packages go in with `pip install --no-deps` (see scripts/bootstrap.sh): vector-quantize-pytorch,
einx, frozendict, loguru, torch-einops-utils, snac, descript-audio-codec, moshi, speechtokenizer.
For DAC, moshi and SpeechTokenizer only the quantizer source files are executed, by path, under a
stand-in package module, because their package `__init__`s import audio stacks (audiotools,
torchaudio, sentencepiece...) that are not installed here.
"""

from __future__ import annotations

import importlib.util
import io
import pickle
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch

BOOTSTRAP_HINT = ("install the parity peers: scripts/bootstrap.sh test (pip install transformers omegaconf; "
                  "pip install --no-deps vector-quantize-pytorch einx frozendict loguru torch-einops-utils snac "
                  "descript-audio-codec moshi speechtokenizer audiocraft flashy)")


def _package_root(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"the {name} package is not installed: {BOOTSTRAP_HINT}")
    return Path(list(spec.submodule_search_locations)[0])


def require(module: str):
    """Import a parity peer, failing (not skipping) with the install line when it is missing: a parity
    test that silently skips would hide a missing bootstrap step."""
    try:
        with warnings.catch_warnings():   # the peers' torch.jit.script / weight_norm deprecations
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            return importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(f"cannot import {module} ({exc}): {BOOTSTRAP_HINT}")


def load_by_path(package: str, alias: str, subpackages: list[str], modules: list[str]):
    """Execute `modules` (dotted, relative to `package`) from the installed package's files, under the
    stand-in package name `alias`, without running the package's own `__init__`. Returns the last one."""
    if f"{alias}.{modules[-1]}" in sys.modules:
        return sys.modules[f"{alias}.{modules[-1]}"]
    root = _package_root(package)
    for sub in [""] + subpackages:
        name = alias + ("." + sub if sub else "")
        module = types.ModuleType(name)
        module.__path__ = [str(root / sub.replace(".", "/"))] if sub else [str(root)]
        sys.modules[name] = module
    for mod in modules:
        name = f"{alias}.{mod}"
        path = root / (mod.replace(".", "/") + ".py")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            spec.loader.exec_module(module)
    return sys.modules[f"{alias}.{modules[-1]}"]


def dac_quantize():
    """`dac/nn/quantize.py` (descript-audio-codec 1.0.0): it imports `dac.nn.layers` by absolute name,
    so the stand-in package is registered as `dac` itself (only while nothing imported the real one)."""
    if "dac.nn.quantize" in sys.modules:
        return sys.modules["dac.nn.quantize"]
    return load_by_path("dac", "dac", ["nn"], ["nn.layers", "nn.quantize"])


def moshi_quantization():
    """moshi 0.2.13's `moshi/quantization/{base,core_vq,vq}.py`."""
    return load_by_path("moshi", "_moshi_ref", ["quantization"],
                        ["quantization.base", "quantization.core_vq", "quantization.vq"])


def flashy_modules():
    """flashy 0.0.2's `state.py` (StateManager, the solvers' checkpoint state) and `utils.py`
    (write_and_rename). Its __init__ imports dora, which needs submitit and more: the two files run by
    path under a stand-in package registered as `flashy` itself, which audiocraft's files import."""
    load_by_path("flashy", "flashy", [], ["state", "utils"])
    return sys.modules["flashy.state"], sys.modules["flashy.utils"]


def audiocraft_quantization():
    """audiocraft 1.3.0's `audiocraft/quantization/{base,core_vq,vq}.py` (installed --no-deps: it pins
    torch 2.1 and pulls xformers, spacy...); core_vq imports flashy, served by `flashy_modules`."""
    flashy_modules()
    return load_by_path("audiocraft", "_audiocraft_ref", ["quantization"],
                        ["quantization.base", "quantization.core_vq", "quantization.vq"])


def speechtokenizer_core_vq():
    """SpeechTokenizer 1.0.1's `speechtokenizer/quantization/core_vq.py` (its package __init__ imports
    the trainer, which needs beartype, accelerate, tensorboard...)."""
    return load_by_path("speechtokenizer", "_spt_ref", ["quantization"],
                        ["quantization.distrib", "quantization.core_vq"])


# --- checkpoints in real layouts ----------------------------------------------------------------------
def fill_encodec_rvq(rvq, generator: torch.Generator, scale: float = 1.0) -> None:
    """Give a fresh EnCodec-family RVQ random codebooks and mark them initialised (fresh modules have
    all-zero codebooks and would run k-means in forward)."""
    for layer in rvq.layers:
        cb = layer._codebook
        cb.embed.copy_(torch.randn(cb.embed.shape, generator=generator) * scale)
        cb.embed_avg.copy_(cb.embed)
        cb.cluster_size.copy_(torch.rand(cb.cluster_size.shape, generator=generator) * 10)
        cb.inited.fill_(1.0)


def fake_hparams_module():
    """A module `utils` with a class `HParams`, as GPT-SoVITS pickles its config. Use as a context:
    the module exists only while saving, so loading cannot import it."""

    class _Ctx:
        def __enter__(self):
            self.saved = sys.modules.get("utils")
            module = types.ModuleType("utils")

            class HParams:
                def __init__(self, **kwargs):
                    for k, v in kwargs.items():
                        setattr(self, k, HParams(**v) if isinstance(v, dict) else v)

                def __getitem__(self, key):
                    return getattr(self, key)

            HParams.__module__ = "utils"
            HParams.__qualname__ = "HParams"
            module.HParams = HParams
            sys.modules["utils"] = module
            return HParams

        def __exit__(self, *exc):
            if self.saved is None:
                sys.modules.pop("utils", None)
            else:
                sys.modules["utils"] = self.saved
            return False

    return _Ctx()


def save_gpt_sovits(path: Path, state: dict, magic: bytes | None = None, info: str = "8epoch_1234iteration"):
    """GPT-SoVITS `process_ckpt.savee` wrapper: every tensor fp16, pickled `utils.HParams` config, info;
    `magic` overwrites the zip's "PK" like `my_save2` does for v3/v4 LoRA and v2Pro files."""
    with fake_hparams_module() as HParams:
        config = HParams(model={"semantic_frame_rate": "25hz", "version": "v2"}, data={"sampling_rate": 32000})
        package = {"weight": {k: v.half() for k, v in state.items()}, "config": config, "info": info}
        buf = io.BytesIO()
        torch.save(package, buf)
    data = bytearray(buf.getvalue())
    if magic is not None:
        data[:2] = magic
    Path(path).write_bytes(bytes(data))


class CreatesFile:
    """Unpickling this calls `open(marker, 'w')`: a file appears if any loader runs pickled code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class RunsSystem:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def evil_pickle_bytes(marker: Path, protocol: int = 2) -> bytes:
    return pickle.dumps({"quantizer.vq.layers.0._codebook.embed": CreatesFile(marker)}, protocol=protocol)


# --- one small real-layout file per family (random tensors in each project's documented keys) --------
def _rand(g: torch.Generator, *shape, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * scale


def encodec_layers(g: torch.Generator, prefix: str, n_q: int, k: int, d: int, hf: bool = False) -> dict:
    cb = "codebook" if hf else "_codebook"
    state = {}
    for i in range(n_q):
        base = f"{prefix}layers.{i}.{cb}."
        embed = _rand(g, k, d)
        state.update({base + "inited": torch.ones(1), base + "cluster_size": torch.rand(k, generator=g) * 5,
                      base + "embed": embed, base + "embed_avg": embed.clone()})
    return state


def _weight_norm_conv(g, base: str, out_dim: int, in_dim: int, style: str) -> dict:
    v = _rand(g, out_dim, in_dim, 1, scale=in_dim ** -0.5)
    gain = v.flatten(1).norm(dim=1).reshape(out_dim, 1, 1) * (1 + 0.1 * torch.rand(out_dim, 1, 1, generator=g))
    bias = _rand(g, out_dim, scale=0.1)
    if style == "weight_norm":
        return {base + "weight_g": gain, base + "weight_v": v, base + "bias": bias}
    if style == "parametrizations":
        return {base + "parametrizations.weight.original0": gain, base + "parametrizations.weight.original1": v,
                base + "bias": bias}
    return {base + "weight": torch._weight_norm(v, gain, 0), base + "bias": bias}


def factorized_layers(g, prefix: str, n_q: int, k: int, dc: int, din: int, style: str) -> dict:
    state = {}
    for i in range(n_q):
        base = f"{prefix}quantizers.{i}."
        state.update(_weight_norm_conv(g, base + "in_proj.", dc, din, style))
        state.update(_weight_norm_conv(g, base + "out_proj.", din, dc, style))
        state[base + "codebook.weight"] = _rand(g, k, dc)
    return state


def mimi_layers(g, n_q: int, k: int, d: int, din: int, hf: bool = False) -> dict:
    state = {}
    branches = (("semantic_residual_vector_quantizer.", "acoustic_residual_vector_quantizer.") if hf
                else ("rvq_first.", "rvq_rest."))
    for b, branch in enumerate(branches):
        prefix = "quantizer." + branch
        state[prefix + "input_proj.weight"] = _rand(g, d, din, 1, scale=din ** -0.5)
        state[prefix + "output_proj.weight"] = _rand(g, din, d, 1, scale=d ** -0.5)
        for i in range(1 if b == 0 else n_q - 1):
            base = prefix + (f"layers.{i}.codebook." if hf else f"vq.layers.{i}._codebook.")
            usage = torch.rand(k, generator=g) * 4 + 0.05
            state[base + ("initialized" if hf else "_initialized")] = torch.ones(1)
            state[base + "cluster_usage"] = usage
            state[base + ("embed_sum" if hf else "embedding_sum")] = _rand(g, k, d) * usage[:, None]
    return state


def vqpytorch_layers(g, prefix: str, n_q: int, k: int, d: int, proj_dim: int | None = None) -> dict:
    state = {}
    if proj_dim is not None:
        state.update({prefix + "project_in.weight": _rand(g, d, proj_dim, scale=proj_dim ** -0.5),
                      prefix + "project_in.bias": torch.zeros(d),
                      prefix + "project_out.weight": _rand(g, proj_dim, d, scale=d ** -0.5),
                      prefix + "project_out.bias": torch.zeros(proj_dim)})
    for i in range(n_q):
        base = f"{prefix}layers.{i}._codebook."
        embed = _rand(g, 1, k, d)
        state.update({base + "initted": torch.tensor(True), base + "cluster_size": torch.rand(1, k, generator=g) * 4,
                      base + "embed_avg": embed.clone(), base + "embed": embed})
    return state


def family_files(root: Path, seed: int = 0) -> dict[str, tuple[Path, str]]:
    """name -> (file, format `info` must name) for a small file of every supported family."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    root = Path(root)
    out: dict[str, tuple[Path, str]] = {}

    def put(name, fmt, filename, obj, folder=None):
        where = root / (folder or name)
        where.mkdir(parents=True, exist_ok=True)
        path = where / filename
        if filename.endswith(".safetensors"):
            save_file({k: v.contiguous() for k, v in obj.items()}, str(path))
        else:
            torch.save(obj, path)
        out[name] = (path, fmt)
        return path

    # GPT-SoVITS export (fp16, pickled utils.HParams, v4 magic) and a training checkpoint.
    sov = encodec_layers(g, "quantizer.vq.", 1, 64, 32)
    sov.update({"ssl_proj.weight": _rand(g, 32, 32, 2, scale=0.2), "ssl_proj.bias": _rand(g, 32, scale=0.1),
                "enc_p.ssl_proj.weight": _rand(g, 8, 8, 1)})
    (root / "gpt_sovits").mkdir(parents=True, exist_ok=True)
    save_gpt_sovits(root / "gpt_sovits" / "voice_e8_s1234.pth", sov, magic=b"04")
    out["gpt_sovits"] = (root / "gpt_sovits" / "voice_e8_s1234.pth", "gpt-sovits")
    put("gpt_sovits_G", "gpt-sovits", "G_1234.pth", {"model": sov, "iteration": 1234, "learning_rate": 1e-4,
                                                     "optimizer": {"state": {}, "param_groups": []}})
    # EnCodec family.
    enc = encodec_layers(g, "quantizer.vq.", 4, 64, 16)
    enc["encoder.model.0.conv.conv.weight_v"] = _rand(g, 8, 1, 7)
    put("encodec", "encodec", "encodec_24khz.th", enc)
    put("audiocraft", "audiocraft", "compression_state_dict.bin",
        {"best_state": {"model": enc}, "xp.cfg": "sample_rate: 32000\n", "version": "1.3.0", "exported": True})
    put("encodec_lightning", "encodec", "last.ckpt", {"state_dict": {"model." + k: v for k, v in enc.items()},
                                                       "epoch": 1, "global_step": 10})
    hf = encodec_layers(g, "quantizer.", 4, 64, 16, hf=True)
    hf["encoder.layers.0.conv.weight_v"] = _rand(g, 8, 1, 7)
    put("encodec_hf", "encodec-hf", "model.safetensors", hf)
    xcodec = {k.replace("quantizer.layers.", "quantizer.quantizers."): v
              for k, v in encodec_layers(g, "quantizer.", 3, 64, 16, hf=True).items()}
    xcodec["fc.weight"] = _rand(g, 16, 16)
    path = put("xcodec", "xcodec", "model.safetensors", xcodec)
    (path.parent / "config.json").write_text('{"model_type": "xcodec", "codebook_size": 64}')
    wav_hf = {k.replace("quantizer.layers.0.", "quantizer."): v
              for k, v in encodec_layers(g, "quantizer.", 1, 64, 16, hf=True).items()}
    wav_hf["encoder.layers.0.conv.weight"] = _rand(g, 4, 1, 7)
    put("wavtokenizer_hf", "wavtokenizer", "model.safetensors", wav_hf)
    spt = encodec_layers(g, "quantizer.vq.", 4, 64, 24)
    spt.update({"transform.weight": _rand(g, 12, 24), "transform.bias": torch.zeros(12),
                "encoder.model.0.conv.conv.weight": _rand(g, 8, 1, 7)})
    put("speechtokenizer", "speechtokenizer", "SpeechTokenizer.pt", spt)
    wav = encodec_layers(g, "feature_extractor.encodec.quantizer.vq.", 1, 128, 16)
    wav.update({"backbone.embed.weight": _rand(g, 8, 16, 7), "head.out.weight": _rand(g, 10, 8)})
    put("wavtokenizer", "wavtokenizer", "wavtokenizer_small.ckpt",
        {"state_dict": wav, "epoch": 5, "global_step": 1000, "pytorch-lightning_version": "1.8.6"})
    # vector-quantize-pytorch.
    put("vqpytorch", "vector-quantize-pytorch", "rvq.pt", vqpytorch_layers(g, "rq.", 3, 32, 8, proj_dim=16))
    # DAC (audiotools package) and SNAC (HF bare state + config.json).
    dac = factorized_layers(g, "quantizer.", 4, 64, 8, 32, "weight_norm")
    dac["encoder.block.0.weight_v"] = _rand(g, 8, 1, 7)
    put("dac", "dac", "weights_16khz.pth", {"state_dict": dac, "metadata": {"kwargs": {
        "encoder_dim": 8, "latent_dim": 32, "n_codebooks": 4, "codebook_size": 64, "codebook_dim": 8}}})
    snac = factorized_layers(g, "quantizer.", 3, 64, 8, 32, "parametrizations")
    snac["encoder.block.0.parametrizations.weight.original0"] = _rand(g, 8, 1, 1)
    path = put("snac", "snac", "pytorch_model.bin", snac)
    (path.parent / "config.json").write_text('{"sampling_rate": 24000, "encoder_dim": 8, "latent_dim": 32, '
                                             '"codebook_size": 64, "codebook_dim": 8, "vq_strides": [4, 2, 1]}')
    # Mimi (moshi safetensors, HF names) and a single moshi RVQ.
    mimi = mimi_layers(g, 12, 64, 16, 24)
    mimi["encoder.model.0.conv.conv.weight"] = _rand(g, 8, 1, 7)
    put("mimi", "mimi", "tokenizer-e351c8d8-checkpoint125.safetensors", mimi)
    put("mimi_hf", "mimi", "model.safetensors", mimi_layers(g, 12, 64, 16, 24, hf=True), folder="mimi_hf")
    single = {}
    for i in range(3):
        base = f"vq.layers.{i}._codebook."
        single.update({base + "_initialized": torch.ones(1), base + "cluster_usage": torch.rand(64, generator=g) + 0.5,
                       base + "embedding_sum": _rand(g, 64, 16)})
    single["input_proj.weight"] = _rand(g, 16, 24, 1)
    put("moshi_rvq", "moshi-rvq", "rvq.pt", {"model": single})
    # Plain codebooks.
    (root / "codebooks").mkdir(parents=True, exist_ok=True)
    import numpy as np
    np.save(root / "codebooks" / "codebooks.npy", _rand(g, 3, 32, 8).numpy())
    out["codebooks"] = (root / "codebooks" / "codebooks.npy", "codebooks")
    return out
