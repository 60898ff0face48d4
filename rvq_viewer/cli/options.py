"""The options every command shares, and the `AuditSpec` they describe: the command line builds its specs
here, so `audit` and `report` read and audit the same way as each other and as the app."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Iterator

from ..pipeline import CHUNK_FRAMES, AuditSpec, LoadOptions
from ..pipeline.cluster import dask_client
from .interrupt import raise_if_pressed


def add_load_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="quantizer checkpoint (.pt/.pth/.ckpt/.safetensors/.npy/.npz)")
    add_load_flags(parser)


def add_load_flags(parser: argparse.ArgumentParser) -> None:
    """How a checkpoint is read (format, layers, FSQ levels...): every command that loads one."""
    parser.add_argument("--format", help="force a checkpoint format instead of detecting it")
    parser.add_argument("--n-q", type=int, help="use the first N layers (Mimi: 8 of 32 by default, up to 32)")
    parser.add_argument("--skip-transform", action="store_true",
                        help="features are already projected (e.g. GPT-SoVITS features after ssl_proj)")
    parser.add_argument("--base", type=Path, metavar="S2G",
                        help="GPT-SoVITS v3/v4 LoRA export: the base model it was trained from (s2Gv3.pth, "
                             "s2Gv4.pth), whose ssl_proj the LoRA file lacks")
    lookup = parser.add_mutually_exclusive_group()
    lookup.add_argument("--cosine", dest="cosine", action="store_true", default=None,
                        help="vector-quantize-pytorch: cosine-similarity codebooks (default: from config or detected)")
    lookup.add_argument("--euclidean", dest="cosine", action="store_false", help="vector-quantize-pytorch: Euclidean")
    parser.add_argument("--heads", type=int, help="vector-quantize-pytorch: heads sharing one codebook")
    parser.add_argument("--vq-strides", type=_strides, help="SNAC level strides, e.g. 4,2,1 (default: config.json)")
    parser.add_argument("--levels", type=_levels,
                        help="FSQ levels, e.g. 8,5,5,5 (vector-quantize-pytorch FSQ stores none), or a Stable Codec "
                             "preset: 1x46656_400bps, 2x15625_700bps, 4x729_1000bps")
    parser.add_argument("--stages", type=int, help="residual FSQ stages (vector-quantize-pytorch ResidualFSQ)")


def add_audit_options(parser: argparse.ArgumentParser) -> None:
    """How features are read and encoded: shared by `audit` and `report`."""
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--batch", type=int, default=CHUNK_FRAMES,
                        help=f"frames per chunk (default: {CHUNK_FRAMES})")
    parser.add_argument("--layout", choices=["TD", "DT", "BDT", "BTD"],
                        help="axis order of the feature arrays when their shape is ambiguous")
    parser.add_argument("--key", help="array name inside .npz / .safetensors / .pt dict feature files")
    parser.add_argument("--ema-threshold", type=float, help="EMA dead-code threshold (default: the format's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--dask", metavar="ADDRESS",
                        help="audit the corpus in shards on Dask: local or local:N (a LocalCluster of N worker "
                             "processes, one thread each) or a scheduler such as tcp://host:8786; the feature "
                             "files must be at the same path on every worker (needs rvq-viewer[dask])")


def _strides(text: str) -> tuple[int, ...]:
    try:
        strides = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 4,2,1, got {text!r}") from None
    if not strides or min(strides) < 1:
        raise argparse.ArgumentTypeError(f"strides must be positive integers, got {text!r}")
    return strides


def _levels(text: str) -> tuple[int, ...] | str:
    """8,5,5,5 as integers; anything else (a Stable Codec preset name) as it is, for the loader to check."""
    try:
        levels = tuple(int(s) for s in text.split(","))
    except ValueError:
        return text
    if min(levels) < 2:
        raise argparse.ArgumentTypeError(f"levels must be integers >= 2, got {text!r}")
    return levels


def load_options(args) -> LoadOptions:
    return LoadOptions(format=args.format, n_q=args.n_q, skip_transform=args.skip_transform, cosine=args.cosine,
                       heads=args.heads, vq_strides=args.vq_strides, base=args.base,
                       levels=getattr(args, "levels", None), stages=getattr(args, "stages", None))


def spec_from_args(args, checkpoint: str | Path | None = None, features: list | None = None,
                   pairs: bool = True) -> AuditSpec:
    """The audit the command line asks for (another checkpoint or feature set with the same options)."""
    return AuditSpec(checkpoint=Path(checkpoint or args.checkpoint),
                     features=tuple(Path(f) for f in (features if features is not None else args.features)),
                     load=load_options(args), layout=args.layout, key=args.key, chunk_frames=args.batch,
                     device=args.device, pairs=pairs, ema_threshold=args.ema_threshold)


@contextlib.contextmanager
def executor_from_args(args) -> Iterator[object]:
    """The Dask client `--dask` asks for (closed afterwards, with the cluster it started), or None."""
    if getattr(args, "dask", None) is None:
        yield None
        return
    with dask_client(args.dask) as client:
        yield client


class ProgressBar:
    """A tqdm bar on stderr fed with `AuditProgress` (nothing when --quiet)."""

    def __init__(self, args, label: str = ""):
        self.quiet = args.quiet
        self.label = label
        self.bar = None

    def __call__(self, progress) -> None:
        raise_if_pressed()                  # a Ctrl+C whose KeyboardInterrupt was swallowed on the way
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=progress.frames_total, unit="frames", unit_scale=True, file=sys.stderr,
                            desc=" ".join(filter(None, ["audit", self.label])))
        self.bar.update(progress.frames_done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
