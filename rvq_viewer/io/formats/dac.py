"""Factorised, L2-normalised residual VQ: Descript Audio Codec (DAC) and SNAC.

Per layer `P.quantizers.{i}.`: a weight-normed 1x1 conv `in_proj` (Din -> Dc, with bias), the table
`codebook.weight [K, Dc]` and a 1x1 conv `out_proj` (Dc -> Din). Weight norm is stored as
`weight_g`/`weight_v` (DAC, torch.nn.utils.weight_norm), as `parametrizations.weight.original0/1` (SNAC,
torch.nn.utils.parametrizations.weight_norm) or as a plain `weight` (converted files).

Encode, per layer: z_e = in_proj(residual); the code is the nearest unit codeword to z_e/|z_e| (both
sides L2-normalised, F.normalize eps 1e-12); the layer's output is out_proj(raw codeword) and the
residual, in the latent space Din, loses it. SNAC first average-pools the residual by the level's
stride s and repeats the output s times, so level i codes T/s_i frames.

There are no EMA statistics in either format: usage comes from encoding alone.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict

import torch
import torch.nn.functional as F

from ...quant import Quantizer
from ...quant.search import nearest_codes, squared_norms
from ...errors import LoadError
from .base import Checkpoint, Format, check_codebook, float_tensor, layer_indices

CODEBOOK_KEY = re.compile(r"^(?P<prefix>(?:.*\.)?)quantizers\.(?P<index>\d+)\.codebook\.weight$")
SNAC_DEFAULT_STRIDES = {4: [8, 4, 2, 1], 3: [4, 2, 1]}   # 32/44 kHz models and the 24 kHz model


def find_prefixes(state: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = defaultdict(list)
    for key, value in state.items():
        match = CODEBOOK_KEY.match(key)
        if match and isinstance(value, torch.Tensor):
            base = f"{match['prefix']}quantizers.{match['index']}.in_proj."
            if any(base + name in state for name in ("weight_v", "weight", "parametrizations.weight.original1")):
                found[match["prefix"]].append(int(match["index"]))
    return {prefix: sorted(indices) for prefix, indices in found.items()}


def _weight_style(state, prefix: str) -> str:
    keys = [k for k in state if k.startswith(prefix + "quantizers.")]
    if any(".parametrizations.weight.original" in k for k in keys):
        return "parametrizations"
    if any(k.endswith(".weight_v") for k in keys):
        return "weight_norm"
    return "plain"


class FactorizedQuantizer(Quantizer):
    """DAC / SNAC rule; `codebooks[i]` is the raw table, lookups use its L2-normalised copy.

    Multi-rate (SNAC): `layer_strides[i]` residual frames make one code of layer i. `iter_layers`
    yields layer i's codes at its own rate (T / s_i) but outputs and residuals at the base rate, so
    residual norms compare across layers; `encode` returns a list of per-layer code tensors of
    different lengths, `decode` takes such a list. `frame_stride` is the least common multiple of the
    strides: features are cut, and sequences trimmed, at multiples of it (SNAC pads audio so its
    latents always are).
    """

    plain_residual = False

    def __init__(self, *args, in_proj: list[tuple], out_proj: list[tuple], strides: list[int],
                 multi_rate: bool, **kwargs):
        self.in_proj, self.out_proj, self.strides, self.multi_rate = in_proj, out_proj, strides, multi_rate
        super().__init__(*args, **kwargs)
        self._normed = [F.normalize(c, p=2, dim=1) for c in self.codebooks]
        self._normed_sq = [squared_norms(c) for c in self._normed]

    @property
    def layer_strides(self) -> list[int]:
        return list(self.strides[: self.n_q])

    def prepare(self, frames: torch.Tensor) -> torch.Tensor:
        frames = frames.to(self.device, torch.float32)
        usable = frames.shape[0] - frames.shape[0] % self.frame_stride
        return frames[:usable]

    def lookup(self, layer: int, residual: torch.Tensor) -> torch.Tensor:
        stride = self.strides[layer]
        if stride > 1:
            residual = F.avg_pool1d(residual.t().unsqueeze(0), stride, stride).squeeze(0).t()
        weight, bias = self.in_proj[layer]
        z_e = F.normalize(F.linear(residual, weight, bias), p=2, dim=1)
        return nearest_codes(z_e, self._normed[layer], self._normed_sq[layer])

    def layer_output(self, layer: int, codes: torch.Tensor) -> torch.Tensor:
        weight, bias = self.out_proj[layer]
        out = F.linear(self.codebooks[layer][codes], weight, bias)
        stride = self.strides[layer]
        return out.repeat_interleave(stride, dim=0) if stride > 1 else out

    def encode(self, frames: torch.Tensor, n_q: int | None = None):
        """Frames [N, dim] -> codes [n_q, N] (DAC), or a list of n_q tensors [N / s_i] (SNAC)."""
        latent = self.prepare(frames)
        codes = [step.codes for step in self.iter_layers(latent, n_q)]
        return codes if self.multi_rate else torch.stack(codes)

    @torch.no_grad()
    def decode(self, codes) -> torch.Tensor:
        out = None
        for index, layer_codes in enumerate(codes):
            part = self.layer_output(index, layer_codes.to(self.device))
            out = part if out is None else out + part
        return out

    def truncate(self, n_q: int) -> None:
        super().truncate(n_q)
        self.in_proj, self.out_proj = self.in_proj[:n_q], self.out_proj[:n_q]
        self._normed, self._normed_sq = self._normed[:n_q], self._normed_sq[:n_q]
        self.strides = self.strides[:n_q]
        self.frame_stride = _lcm(self.strides)

    def _move(self, device):
        self.in_proj = [tuple(None if t is None else t.to(device) for t in p) for p in self.in_proj]
        self.out_proj = [tuple(None if t is None else t.to(device) for t in p) for p in self.out_proj]
        self._normed = [t.to(device) for t in self._normed]
        self._normed_sq = [t.to(device) for t in self._normed_sq]

    def summary(self) -> dict:
        out = super().summary()
        out["dead_code_rule"] = "none (no EMA statistics in this format)"
        if self.multi_rate:
            out["layer_strides"] = self.layer_strides
        return out


def _lcm(values: list[int]) -> int:
    out = 1
    for v in values:
        out = out * v // math.gcd(out, v)
    return out


def conv1x1(ckpt: Checkpoint, base: str, out_dim: int | None, in_dim: int | None, what: str) -> tuple:
    """The effective weight [out, in] and bias of a (weight-normed) 1x1 Conv1d at `base`."""
    state = ckpt.state
    if base + "weight_v" in state or base + "parametrizations.weight.original1" in state:
        v_key, g_key = ((base + "weight_v", base + "weight_g") if base + "weight_v" in state else
                        (base + "parametrizations.weight.original1", base + "parametrizations.weight.original0"))
        v = float_tensor(ckpt, v_key, (out_dim, in_dim, 1), f"{what} direction (v)")
        g = float_tensor(ckpt, g_key, (int(v.shape[0]), 1, 1), f"{what} magnitude (g)")
        weight = torch._weight_norm(v, g, 0)
        if not torch.isfinite(weight).all():
            raise LoadError(f"{what}: weight norm of a zero direction (v has an all-zero row)", ckpt.path)
    else:
        weight = float_tensor(ckpt, base + "weight", None, what)
        if weight.ndim == 2:
            weight = weight.unsqueeze(-1)
        if (weight.ndim != 3 or weight.shape[2] != 1 or (out_dim is not None and weight.shape[0] != out_dim)
                or (in_dim is not None and weight.shape[1] != in_dim)):
            raise LoadError(f"{what} weight has shape {list(weight.shape)}, expected "
                            f"[{out_dim or '*'}, {in_dim or '*'}, 1]", ckpt.path)
    bias = float_tensor(ckpt, base + "bias", (int(weight.shape[0]),), f"{what} bias", required=False)
    return weight[:, :, 0].contiguous(), bias


def _build(ckpt: Checkpoint, fmt: str) -> Quantizer:
    prefixes = find_prefixes(ckpt.state)
    prefix = max(prefixes, key=lambda p: (len(prefixes[p]), -len(p)))
    indices = layer_indices(prefixes[prefix], f"quantizer '{prefix}'", ckpt.path)
    tables, in_proj, out_proj = [], [], []
    latent_dim = None
    for i in indices:
        base = f"{prefix}quantizers.{i}."
        table = ckpt.tensor(base + "codebook.weight")
        check_codebook(table, i, ckpt.path)
        table = table.float()
        k, dc = (int(s) for s in table.shape)
        w_in, b_in = conv1x1(ckpt, base + "in_proj.", dc, latent_dim, f"layer {i} in_proj")
        latent_dim = int(w_in.shape[1])
        w_out, b_out = conv1x1(ckpt, base + "out_proj.", latent_dim, dc, f"layer {i} out_proj")
        tables.append(table)
        in_proj.append((w_in, b_in))
        out_proj.append((w_out, b_out))
    notes = ["no EMA statistics in this format: usage comes from encoding alone"]
    style = _weight_style(ckpt.state, prefix)
    notes.append({"parametrizations": "weight norm stored as parametrizations (original0/1)",
                  "weight_norm": "weight norm stored as weight_g / weight_v",
                  "plain": "plain 1x1 conv weights (weight norm already folded in)"}[style])
    if fmt == "snac":
        strides = _snac_strides(ckpt, len(indices), notes)
    else:
        strides = [1] * len(indices)
        meta = ckpt.meta.get("metadata")
        if isinstance(meta, dict) and isinstance(meta.get("kwargs"), dict):
            kw = meta["kwargs"]
            shown = {k: kw[k] for k in ("sample_rate", "n_codebooks", "codebook_size", "codebook_dim", "latent_dim")
                     if isinstance(kw.get(k), (int, float, list))}
            if shown:
                notes.append("DAC kwargs: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return FactorizedQuantizer(format=fmt, codebooks=tables, input_dim=latent_dim, notes=notes,
                               source=str(ckpt.path), in_proj=in_proj, out_proj=out_proj, strides=strides,
                               multi_rate=fmt == "snac", frame_stride=_lcm(strides))


def _snac_strides(ckpt: Checkpoint, n: int, notes: list[str]) -> list[int]:
    strides = ckpt.options.get("vq_strides")
    where = "asked for"
    if strides is None:
        strides, where = ckpt.config_value("vq_strides"), "from the checkpoint's metadata"
    if strides is None:
        strides, where = ckpt.sidecar_config().get("vq_strides"), "from config.json beside the file"
    if strides is None:
        strides = SNAC_DEFAULT_STRIDES.get(n)
        where = f"SNAC's default for {n} levels (no config.json with vq_strides beside the file)"
        if strides is None:
            strides = [1] * n
            where = "unknown (no vq_strides found): assumed 1"
    if (not isinstance(strides, (list, tuple)) or len(strides) != n
            or not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 4096 for s in strides)):
        raise LoadError(f"vq_strides {strides!r} do not fit {n} quantizer levels", ckpt.path)
    notes.append(f"level strides {list(strides)} ({where}): codes per level at 1/stride of the latent rate")
    return list(strides)


def _is_snac(ckpt: Checkpoint) -> bool:
    prefixes = find_prefixes(ckpt.state)
    if not prefixes:
        return False
    meta = ckpt.meta.get("metadata")
    if isinstance(meta, dict) and "kwargs" in meta:   # an audiotools (DAC) package
        return False
    if ckpt.options.get("vq_strides") is not None:
        return True
    prefix = max(prefixes, key=lambda p: len(prefixes[p]))
    if _weight_style(ckpt.state, prefix) == "parametrizations":
        return True
    return isinstance(ckpt.sidecar_config().get("vq_strides"), list)


def _partial(ckpt: Checkpoint) -> str | None:
    """DAC-layout codebooks (`quantizers.N.codebook.weight`) without the in_proj every lookup needs."""
    for key in ckpt.state:
        match = CODEBOOK_KEY.match(key)
        if match:
            return (f"a DAC-style codebook ({key}) without its in_proj ({match['prefix']}quantizers."
                    f"{match['index']}.in_proj.weight / weight_v): the lookup cannot be rebuilt")
    return None


DAC = Format("dac", "Descript Audio Codec ({'state_dict', 'metadata'}; weight-normed in_proj, L2-normalised lookup)",
             lambda ckpt: bool(find_prefixes(ckpt.state)), lambda ckpt: _build(ckpt, "dac"), _partial)
SNAC = Format("snac", "SNAC (DAC-style lookup with parametrized weight norm, levels pooled by their stride)",
              _is_snac, lambda ckpt: _build(ckpt, "snac"))
