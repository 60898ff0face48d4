"""`load_quantizer`: any supported checkpoint file -> a `Quantizer`, with the format found from its keys."""

from __future__ import annotations

from pathlib import Path

import torch

from ..quant import Quantizer
from ..errors import LoadError, RvqViewerError
from .containers import read_container, read_head
from .formats import FORMATS, Checkpoint, Format, no_codebook_reason, read_pretrained, unwrap

# Errors a format's build may raise on a checkpoint whose keys are there but whose values are odd
# (shapes that do not chain, dtypes, sizes): each becomes a one-line LoadError naming the file.
_BUILD_ERRORS = (RuntimeError, ValueError, IndexError, KeyError, TypeError, ZeroDivisionError, OverflowError,
                 AttributeError, MemoryError)


class NoQuantizerError(LoadError):
    """The file was read, and holds no quantizer (a discriminator beside its generator, a model whose
    quantizer has no codebook): a series of checkpoints skips such a file, where others hold one."""


def read_checkpoint(path: str | Path, **options) -> Checkpoint:
    """Read the file (or `save_pretrained` folder) safely and locate its model state (no format decided yet)."""
    path = Path(path)
    if path.is_dir():
        state, folder, notes = read_pretrained(path)
        ckpt = unwrap(state, path)
        ckpt.config_dir, ckpt.notes = folder, notes
    else:
        ckpt = unwrap(read_container(path), path)
        ckpt.header = read_head(path)
    ckpt.options.update(options)
    return ckpt


def detect_format(ckpt: Checkpoint, forced: str | None = None) -> Format:
    if forced:
        for fmt in FORMATS:
            if fmt.name == forced:
                return fmt
        names = ", ".join(f.name for f in FORMATS)
        raise LoadError(f"unknown format {forced!r} (known: {names})", ckpt.path)
    for fmt in FORMATS:
        try:
            if fmt.detect(ckpt):
                return fmt
            missing = fmt.partial(ckpt) if fmt.partial is not None else None
        except _BUILD_ERRORS as exc:
            raise LoadError(f"cannot tell the format ({fmt.name}): {_one_line(exc)}", ckpt.path) from None
        if missing:
            raise LoadError(missing, ckpt.path)
    reason = no_codebook_reason(ckpt)
    if reason:
        raise NoQuantizerError(reason, ckpt.path)
    sample = ", ".join(sorted(ckpt.state)[:3])
    model = ckpt.model_type()
    raise NoQuantizerError(f"no quantizer recognised among {len(ckpt.state)} tensors (e.g. {sample})"
                           + (f"; config.json names model_type '{model}'" if model else ""), ckpt.path)


def load_quantizer(path: str | Path, format: str | None = None, n_q: int | None = None,
                   skip_transform: bool = False, base: str | Path | None = None, **options) -> Quantizer:
    """Load the quantizer in `path`.

    `format` forces a family instead of detecting it; `n_q` keeps only the first n_q layers (for Mimi,
    which uses 8 of its 32 codebooks by default, it may also ask for more); `skip_transform` takes
    features as already projected (e.g. GPT-SoVITS features after ssl_proj); `base` names the base model
    a GPT-SoVITS v3/v4 LoRA export was trained from (its ssl_proj is not in the LoRA file). `path` may
    be a `save_pretrained` folder or a Hugging Face cache folder. Format options:
    `cosine` (vector-quantize-pytorch lookup, True/False, else from the config or detected), `heads`
    (vector-quantize-pytorch heads sharing one codebook), `vq_strides` (SNAC level strides, else from
    config.json beside the file or SNAC's defaults), `levels` (FSQ levels such as [8, 5, 5, 5], or a Stable
    Codec preset such as "2x15625_700bps") and `stages` (residual FSQ stages: vector-quantize-pytorch's
    ResidualFSQ, even with 1; without it a plain FSQ).

    Anything wrong with the file raises `LoadError` (or `UnsafeFileError`), one line naming the file;
    a file that holds no quantizer at all raises its subclass `NoQuantizerError`.
    """
    return open_quantizer(path, format, n_q, skip_transform, base, **options)[0]


def open_quantizer(path: str | Path, format: str | None = None, n_q: int | None = None,
                   skip_transform: bool = False, base: str | Path | None = None,
                   **options) -> tuple[Quantizer, Checkpoint]:
    """`load_quantizer`, and the checkpoint it came from (its metadata says when it was saved)."""
    ckpt = read_checkpoint(path, skip_transform=skip_transform, n_q=n_q, base=base, **options)
    return build_quantizer(ckpt, format, n_q, base), ckpt


def quantizer_from_state(state: dict, label: str | Path, format: str | None = None, **options) -> Quantizer:
    """The quantizer of a live module's state dict (`module.state_dict()`), read as a checkpoint file of
    that state would be: what `rvq_viewer.monitor` sees of the module it watches. `label` names it in
    messages."""
    ckpt = unwrap({k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, Path(label))
    ckpt.options.update(options)
    return build_quantizer(ckpt, format, options.get("n_q"))


def build_quantizer(ckpt: Checkpoint, format: str | None = None, n_q: int | None = None,
                    base: str | Path | None = None) -> Quantizer:
    """The quantizer of a located state (see `load_quantizer`)."""
    path = ckpt.path
    options = ckpt.options
    fmt = detect_format(ckpt, format)
    if format:
        try:
            fits = fmt.detect(ckpt)
        except _BUILD_ERRORS:
            fits = False
        if not fits:
            raise LoadError(f"not a {fmt.name} checkpoint: its keys do not have that layout "
                            f"(detected: {_detected_name(ckpt)})", ckpt.path)
    try:
        quantizer = fmt.build(ckpt)
        if quantizer.family.name != "fsq" and (options.get("levels"), options.get("stages")) != (None, None):
            raise LoadError(f"levels and stages are FSQ settings, and this is a {quantizer.format} checkpoint: "
                            "leave them out", ckpt.path)
        if n_q is not None:
            if isinstance(n_q, bool) or not isinstance(n_q, int) or not 1 <= n_q <= quantizer.n_q:
                raise LoadError(f"n_q={n_q} asked, the quantizer has {quantizer.n_q} layers", path)
            quantizer.truncate(n_q)
        _self_check(quantizer, ckpt)
    except RvqViewerError:
        raise
    except _BUILD_ERRORS as exc:
        raise LoadError(f"not a consistent {fmt.name} quantizer: {_one_line(exc)}", ckpt.path) from None
    if base is not None and quantizer.format != "gpt-sovits":
        raise LoadError("a base model is only used for GPT-SoVITS LoRA exports; this checkpoint is "
                        f"{quantizer.format}", ckpt.path)
    quantizer.notes[:0] = ckpt.notes + _config_notes(ckpt)
    return quantizer


def _config_notes(ckpt: Checkpoint) -> list[str]:
    """What a save_pretrained folder's config.json says that the tensors do not."""
    if ckpt.config_dir is None:
        return []
    config = ckpt.sidecar_config()
    shown = [f"{k} {config[k]}" for k in ("model_type", "sampling_rate", "frame_rate")
             if isinstance(config.get(k), (str, int, float)) and not isinstance(config.get(k), bool)]
    return ["config.json: " + ", ".join(shown)] if shown else []


def _detected_name(ckpt: Checkpoint) -> str:
    try:
        return detect_format(ckpt).name
    except LoadError:
        return "none"


def _self_check(quantizer: Quantizer, ckpt: Checkpoint) -> None:
    """Encode a few frames once, so a checkpoint whose tensors do not chain fails here, at load."""
    if quantizer.n_q == 0:
        raise LoadError("the quantizer has no layers", ckpt.path)
    stride = max(1, int(quantizer.frame_stride))
    frames = torch.linspace(-1.0, 1.0, 2 * stride * quantizer.dim).reshape(2 * stride, quantizer.dim)
    try:
        codes = quantizer.encode(frames)
    except _BUILD_ERRORS as exc:
        raise LoadError(f"the {quantizer.format} tensors do not fit together: {_one_line(exc)}", ckpt.path) from None
    layers = codes if isinstance(codes, list) else list(codes)
    sizes = quantizer.codebook_sizes
    for index, layer_codes in enumerate(layers):
        if layer_codes.numel() and (int(layer_codes.min()) < 0 or int(layer_codes.max()) >= sizes[index]):
            raise LoadError(f"layer {index} gives codes outside its codebook", ckpt.path)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:200] if text else type(exc).__name__)
