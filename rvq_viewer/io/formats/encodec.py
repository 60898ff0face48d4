"""EnCodec-family RVQs (EnCodec, audiocraft, GPT-SoVITS, SpeechTokenizer, WavTokenizer, HF transformers
EnCodec): Euclidean lookup, residual minus the codeword, buffers `inited`, `cluster_size`, `embed`,
`embed_avg` per layer.

The quantizer may sit under any prefix (a bare RVQ, `quantizer.vq.`, a whole model, a Lightning module).
The original module tree names a layer's buffers `layers.{i}._codebook.*`; HF transformers' port names
them `layers.{i}.codebook.*`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import torch

from ...quant import DeadCodeRule, Quantizer
from ...errors import LoadError
from .base import Checkpoint, Format, check_codebook, check_same_dim, flag_value, float_tensor, layer_indices

ENCODEC_RULE = DeadCodeRule("absolute", 2.0, "EnCodec-family")


@dataclass(frozen=True)
class Layout:
    """How one project names an EnCodec-rule RVQ's layers: layer i's buffers are
    `{prefix}{layer}{codebook}.{inited, cluster_size, embed, embed_avg}`, with `{i}` in `layer` the
    layer number, and its optional Linear projections `{prefix}{layer}project_in / project_out`."""

    layer: str        # "layers.{i}." ; "" for a lone VectorQuantization (one layer)
    codebook: str     # "_codebook" (original module tree) or "codebook" (HF transformers' ports)

    @property
    def pattern(self) -> re.Pattern:
        layer = re.escape(self.layer).replace(r"\{i\}", r"(?P<index>\d+)")
        return re.compile(rf"^(?P<prefix>(?:.*\.)?){layer}{re.escape(self.codebook)}\.embed$")

    def base(self, prefix: str, index: int) -> str:
        return prefix + self.layer.format(i=index)

    def key(self, prefix: str, index: int, buffer: str) -> str:
        return f"{self.base(prefix, index)}{self.codebook}.{buffer}"


ORIGINAL = Layout("layers.{i}.", "_codebook")      # EnCodec, audiocraft, GPT-SoVITS, SpeechTokenizer...
HF_LAYERS = Layout("layers.{i}.", "codebook")      # transformers EncodecModel
HF_QUANTIZERS = Layout("quantizers.{i}.", "codebook")   # transformers XcodecModel, HiggsAudioV2Tokenizer
HF_SINGLE = Layout("", "codebook")                 # transformers WavTokenizerEncoderModel (one VQ)
_NUMBERED = re.compile(r"(?:^|\.)(?:layers|quantizers)\.\d+\.$")


def find_sites(state: dict[str, torch.Tensor], layout: Layout = ORIGINAL) -> dict[str, list[int]]:
    """Prefixes under which `layout`'s 2-D `embed` tables live, with their layer indices."""
    found: dict[str, list[int]] = defaultdict(list)
    pattern = layout.pattern
    for key, value in state.items():
        match = pattern.match(key)
        if not match or not isinstance(value, torch.Tensor) or value.ndim != 2:
            continue
        if layout.layer:
            found[match["prefix"]].append(int(match["index"]))
        elif not _NUMBERED.search(match["prefix"]):   # a lone VQ, not a layer of one of the layouts above
            found[match["prefix"]].append(0)
    return {prefix: sorted(indices) for prefix, indices in found.items()}


def find_rvq_prefixes(state: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    """Prefixes under which `layers.{i}._codebook.embed` tables (2-D) live, with their layer indices."""
    return find_sites(state, ORIGINAL)


def find_hf_prefixes(state: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    """The same for HF transformers' EncodecModel names, `layers.{i}.codebook.embed`."""
    return find_sites(state, HF_LAYERS)


def main_prefix(ckpt: Checkpoint, prefixes: dict[str, list[int]] | None = None) -> str:
    """The RVQ with the most layers; a model holding several names them all in a note."""
    prefixes = find_rvq_prefixes(ckpt.state) if prefixes is None else prefixes
    if not prefixes:
        raise LoadError("no EnCodec-style codebooks (layers.N._codebook.embed) found", ckpt.path)
    return max(prefixes, key=lambda p: (len(prefixes[p]), -len(p)))


class ProjectedQuantizer(Quantizer):
    """EnCodec rule with per-layer `project_in` / `project_out` Linear layers (when codebook_dim != dim)."""

    plain_residual = False

    def __init__(self, *args, projections: list[tuple | None], **kwargs):
        self.projections = projections
        super().__init__(*args, **kwargs)

    def lookup(self, layer, residual):
        proj = self.projections[layer]
        if proj is not None:
            residual = torch.nn.functional.linear(residual, proj[0], proj[1])
        return super().lookup(layer, residual)

    def layer_output(self, layer, codes):
        out = super().layer_output(layer, codes)
        proj = self.projections[layer]
        return out if proj is None else torch.nn.functional.linear(out, proj[2], proj[3])

    def truncate(self, n_q):
        super().truncate(n_q)
        self.projections = self.projections[:n_q]

    def _move(self, device):
        self.projections = [None if p is None else tuple(t.to(device) if t is not None else None for t in p)
                            for p in self.projections]


def build_encodec_rvq(ckpt: Checkpoint, prefix: str, fmt: str, layout: Layout = ORIGINAL, **kwargs) -> Quantizer:
    """Read the codebooks under `prefix`; refuse layers whose k-means init never ran."""
    sites = find_sites(ckpt.state, layout)
    if prefix not in sites:
        raise LoadError(f"no codebooks under '{prefix}'", ckpt.path)
    indices = layer_indices(sites[prefix], f"quantizer '{prefix}'", ckpt.path)
    tables, sizes, projections = [], [], []
    for i in indices:
        table = ckpt.tensor(layout.key(prefix, i, "embed"))
        check_codebook(table, i, ckpt.path)
        if flag_value(ckpt.state.get(layout.key(prefix, i, "inited"))) is False:
            raise LoadError(f"layer {i} has no trained codebook (inited = 0: k-means init never ran); "
                            "nothing to audit", ckpt.path)
        tables.append(table.float())
        k = int(table.shape[0])
        sizes.append(float_tensor(ckpt, layout.key(prefix, i, "cluster_size"), (k,), f"layer {i} cluster_size",
                                  required=False))
        projections.append(_projection(ckpt, layout.base(prefix, i), int(table.shape[1]), i))
    check_same_dim(tables, ckpt.path)
    dims = {int(p[0].shape[1]) for p in projections if p is not None}
    if len(dims) > 1 or (dims and any(p is None for p in projections)):
        raise LoadError("layers disagree on their input dimension (project_in)", ckpt.path)
    cluster_size = sizes if all(s is not None for s in sizes) else None
    notes = list(kwargs.pop("notes", []))
    if cluster_size is None and any(s is not None for s in sizes):
        notes.append("cluster_size missing in some layers: EMA statistics ignored")
    others = [p for p in sites if p != prefix]
    if others:
        notes.append(f"using the quantizer at '{prefix}'; also found: {', '.join(others)}")
    rule = _stored_dead_code_rule(ckpt)
    if rule is not None:
        kwargs.setdefault("dead_code_rule", rule)
        notes.append(f"dead-code rule from the checkpoint's config: {rule.describe()}")
    kwargs.setdefault("dead_code_rule", ENCODEC_RULE)
    common = dict(format=fmt, codebooks=tables, cluster_size=cluster_size, notes=notes,
                  source=str(ckpt.path), **kwargs)
    if dims:
        if common.get("transform") is not None:
            raise LoadError("a transform and per-layer projections together are not supported", ckpt.path)
        return ProjectedQuantizer(projections=projections, input_dim=dims.pop(), **common)
    return Quantizer(**common)


def _stored_dead_code_rule(ckpt: Checkpoint) -> DeadCodeRule | None:
    """The threshold a run was trained with, where its checkpoint records it (rvq-viewer's trainer
    writes `config.threshold_ema_dead_code` and `config.threshold_relative`)."""
    config = ckpt.meta.get("config")
    value = config.get("threshold_ema_dead_code") if isinstance(config, dict) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        return None
    return DeadCodeRule("relative" if config.get("threshold_relative") else "absolute", float(value))


def _projection(ckpt: Checkpoint, base: str, codebook_dim: int, layer: int) -> tuple | None:
    if base + "project_in.weight" not in ckpt.state and base + "project_out.weight" not in ckpt.state:
        return None
    w_in = float_tensor(ckpt, base + "project_in.weight", (codebook_dim, None), f"layer {layer} project_in")
    dim = int(w_in.shape[1])
    b_in = float_tensor(ckpt, base + "project_in.bias", (codebook_dim,), required=False)
    w_out = float_tensor(ckpt, base + "project_out.weight", (dim, codebook_dim), f"layer {layer} project_out")
    b_out = float_tensor(ckpt, base + "project_out.bias", (dim,), required=False)
    return (w_in, b_in, w_out, b_out)


# --- detection -------------------------------------------------------------------------------------
def _speechtokenizer_prefix(ckpt: Checkpoint) -> str | None:
    for prefix in find_rvq_prefixes(ckpt.state):
        if prefix.endswith("quantizer.vq."):
            root = prefix[: -len("quantizer.vq.")]
            weight = ckpt.state.get(root + "transform.weight")
            if isinstance(weight, torch.Tensor) and weight.ndim == 2:
                return prefix
    return None


def _wavtokenizer_site(ckpt: Checkpoint) -> tuple[str, Layout] | None:
    """WavTokenizer's own Lightning names, or transformers' `WavTokenizerEncoderModel` (one VQ,
    `quantizer.codebook.*`; `encoder_model.quantizer.codebook.*` in a whole WavTokenizerModel)."""
    for prefix in find_rvq_prefixes(ckpt.state):
        if prefix.endswith("feature_extractor.encodec.quantizer.vq."):
            return prefix, ORIGINAL
    singles = find_sites(ckpt.state, HF_SINGLE)
    if singles:
        return min(singles, key=len), HF_SINGLE
    return None


def _is_audiocraft(ckpt: Checkpoint) -> bool:
    return bool(find_rvq_prefixes(ckpt.state)) and (
        "xp.cfg" in ckpt.meta or "best_state" in ckpt.wrappers or "fsdp_best_state" in ckpt.wrappers)


def _build_encodec(ckpt: Checkpoint) -> Quantizer:
    return build_encodec_rvq(ckpt, main_prefix(ckpt), "encodec")


def _build_audiocraft(ckpt: Checkpoint) -> Quantizer:
    notes = ["audiocraft compression checkpoint" + (" (exported)" if ckpt.meta.get("exported") else "")]
    if ckpt.wrappers[:1] in (["best_state"], ["fsdp_best_state"]) and "model" in ckpt.meta:
        notes.append(f"training checkpoint: the quantizer of {'.'.join(ckpt.wrappers)} (what audiocraft's "
                     "own loader takes), not the latest `model`")
    elif ckpt.wrappers[:1] == ["model"] and "best_state" in ckpt.meta:
        notes.append("training checkpoint with no best state saved yet: the latest `model`")
    config = ckpt.meta.get("xp.cfg")
    if isinstance(config, dict):
        shown = {k: config[k] for k in ("sample_rate", "channels") if isinstance(config.get(k), (int, float))}
        if shown:
            notes.append("xp.cfg: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    version = ckpt.meta.get("version")
    if isinstance(version, str):
        notes.append(f"audiocraft version {version[:40]}")
    return build_encodec_rvq(ckpt, main_prefix(ckpt), "audiocraft", notes=notes)


def _build_speechtokenizer(ckpt: Checkpoint) -> Quantizer:
    prefix = _speechtokenizer_prefix(ckpt)
    notes = ["the `transform` Linear (RVQ-1 output to HuBERT space, a distillation head) is not part of "
             "encoding and is not applied", "RVQ-1 (layer 0) is the semantic layer distilled from HuBERT"]
    return build_encodec_rvq(ckpt, prefix, "speechtokenizer", notes=notes)


def _build_wavtokenizer(ckpt: Checkpoint) -> Quantizer:
    prefix, layout = _wavtokenizer_site(ckpt)
    notes = []
    if layout is HF_SINGLE:
        model = ckpt.model_type()
        notes.append(f"HF transformers names ({prefix}codebook.*, one VQ): "
                     + (f"config.json model_type '{model}'" if model else
                        "no config.json names the model; taken as WavTokenizerEncoderModel's layout"))
    return build_encodec_rvq(ckpt, prefix, "wavtokenizer", layout, notes=notes)


def _build_hf(ckpt: Checkpoint) -> Quantizer:
    prefixes = find_hf_prefixes(ckpt.state)
    prefix = main_prefix(ckpt, prefixes)
    return build_encodec_rvq(ckpt, prefix, "encodec-hf", HF_LAYERS,
                             notes=["HF transformers EncodecModel names (quantizer.layers.N.codebook.*)"])


# transformers models whose quantizer is `quantizers.N.codebook.*` with EnCodec's lookup.
XCODEC_MODELS = {"xcodec": "XcodecModel", "higgs_audio_v2_tokenizer": "HiggsAudioV2TokenizerModel"}


def _xcodec_prefix(ckpt: Checkpoint) -> str | None:
    sites = find_sites(ckpt.state, HF_QUANTIZERS)
    return max(sites, key=lambda p: (len(sites[p]), -len(p))) if sites else None


def _build_xcodec(ckpt: Checkpoint) -> Quantizer:
    prefix = _xcodec_prefix(ckpt)
    model = ckpt.model_type()
    if model in XCODEC_MODELS:
        notes = [f"transformers {XCODEC_MODELS[model]} (config.json model_type '{model}')"]
    else:
        projected = ckpt.state.get(HF_QUANTIZERS.base(prefix, 0) + "project_in.weight") is not None
        notes = [f"no config.json names the model{f' ({model!r})' if model else ''}: taken as "
                 + ("HiggsAudioV2TokenizerModel's layout (per-layer project_in / project_out)" if projected
                    else "XcodecModel's layout") + f" ({prefix}quantizers.N.codebook.*, EnCodec lookup)"]
    return build_encodec_rvq(ckpt, prefix, "xcodec", HF_QUANTIZERS, notes=notes)


ENCODEC = Format("encodec", "EnCodec-layout RVQ (EnCodec, a bare RVQ state dict, any prefix)",
                 lambda ckpt: bool(find_rvq_prefixes(ckpt.state)), _build_encodec)
AUDIOCRAFT = Format("audiocraft", "audiocraft compression model ({'best_state', 'xp.cfg'} export or "
                    "training checkpoint)", _is_audiocraft, _build_audiocraft)
SPEECHTOKENIZER = Format("speechtokenizer", "SpeechTokenizer (EnCodec RVQ with a `transform` Linear beside it)",
                         lambda ckpt: _speechtokenizer_prefix(ckpt) is not None, _build_speechtokenizer)
WAVTOKENIZER = Format("wavtokenizer", "WavTokenizer Lightning checkpoint (feature_extractor.encodec.quantizer) "
                      "or transformers WavTokenizer(Encoder)Model (quantizer.codebook.*)",
                      lambda ckpt: _wavtokenizer_site(ckpt) is not None, _build_wavtokenizer)
ENCODEC_HF = Format("encodec-hf", "HF transformers EncodecModel (quantizer.layers.N.codebook.embed)",
                    lambda ckpt: bool(find_hf_prefixes(ckpt.state)), _build_hf)
XCODEC = Format("xcodec", "transformers XcodecModel / HiggsAudioV2TokenizerModel (quantizer.quantizers.N.codebook.*)",
                lambda ckpt: _xcodec_prefix(ckpt) is not None, _build_xcodec)
