"""Encode throughput: rvq-viewer against what users would otherwise run, same data, same process.

For each shape (D, K, n_q) a random Gaussian codebook per layer and Gaussian frames; frames/s through
all n_q layers (residual = residual - codeword after each) for:

  rvq-viewer        `rvq_viewer.analysis.audit.engine.encode_frames`: the audit's engine, codes only
  rvq-viewer audit  `run_audit` on the same frames saved as a .npy: reading, codes and every statistic
  EnCodec ref       EnCodec's `ResidualVectorQuantization.encode` (encodec 0.1.1 core_vq; GPT-SoVITS's
                    core_vq is the same code), given all frames at once or in chunks of 16384, the
                    faster of the two
  torch chunked     blocked `torch.addmm` + `argmin`, 8192 rows a block (rvq-viewer before this engine)
  faiss             faiss-cpu `IndexFlatL2` per layer, k=1 (skipped when faiss is not installed)
  GEMM alone        x @ E^T per layer in blocks of 8192 rows (torch's default float32 BLAS), no argmin,
                    no residual: what the arithmetic alone costs that way

Every method is run `--rounds` times, interleaved, and its best round is kept (other processes on a
shared machine only ever slow a round down). Codes are checked against the EnCodec reference: any
frame that differs must differ at a near-tie (the two codes' float64 distances within 1e-5 relative).

    .venv/bin/python benchmarks/encode.py                # ~2-4 minutes on 2 cores
    .venv/bin/python benchmarks/encode.py --full         # the anchors' sizes (100k/100k/50k frames)
    .venv/bin/python benchmarks/encode.py --shapes 128x65536x1 --frames 5000

Targets (perf-anchors.md): rvq-viewer >= 3x the EnCodec reference and >= faiss at every shape.
Prints a table and the ratios on stdout; --json PATH writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from rvq_viewer.analysis.audit import run_audit  # noqa: E402
from rvq_viewer.analysis.audit.engine import encode_frames  # noqa: E402
from rvq_viewer.quant import Quantizer  # noqa: E402
from rvq_viewer.io import FeatureSource  # noqa: E402

# (D, K, n_q, frames in the default run, frames with --full): the table in perf-anchors.md.
SHAPES = [(768, 1024, 1, 50_000, 100_000), (128, 1024, 8, 50_000, 100_000), (256, 2048, 8, 20_000, 50_000)]


def machine() -> dict:
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": model, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "faiss": None}
    try:
        import faiss
        info["faiss"] = faiss.__version__
    except ImportError:
        pass
    return info


def loadavg() -> str:
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


# --- the methods ---------------------------------------------------------------------------------------

def encodec_reference(codebooks: list[torch.Tensor]):
    from peers import encodec_core_vq
    cv = encodec_core_vq()
    k, d = codebooks[0].shape
    rvq = cv.ResidualVectorQuantization(num_quantizers=len(codebooks), dim=d, codebook_size=k,
                                        kmeans_init=False)
    for layer, table in zip(rvq.layers, codebooks):
        layer._codebook.embed.copy_(table)
        layer._codebook.inited.fill_(1)
    rvq.eval()
    return rvq


def run_encodec(rvq, x: torch.Tensor, chunk: int | None) -> torch.Tensor:
    with torch.no_grad():
        if chunk is None:
            return rvq.encode(x.t().unsqueeze(0))[:, 0]
        return torch.cat([rvq.encode(x[s:s + chunk].t().unsqueeze(0))[:, 0]
                          for s in range(0, x.shape[0], chunk)], dim=1)


def run_torch_chunked(x: torch.Tensor, codebooks, norms, block: int = 8192) -> torch.Tensor:
    residual, out = x, []
    for table, sq in zip(codebooks, norms):
        codes = torch.empty(x.shape[0], dtype=torch.long)
        for s in range(0, x.shape[0], block):
            scores = torch.addmm(sq, residual[s:s + block], table.t(), alpha=-2.0)
            codes[s:s + block] = scores.argmin(dim=1)
        residual = residual - table[codes]
        out.append(codes)
    return torch.stack(out)


def faiss_indexes(codebooks):
    import faiss
    indexes = []
    for table in codebooks:
        index = faiss.IndexFlatL2(table.shape[1])
        index.add(np.ascontiguousarray(table.numpy()))
        indexes.append(index)
    return indexes


def run_faiss(x: torch.Tensor, codebooks, indexes) -> torch.Tensor:
    residual = np.ascontiguousarray(x.numpy())
    out = []
    for table, index in zip(codebooks, indexes):
        _, found = index.search(residual, 1)
        codes = found[:, 0]
        residual = residual - table.numpy()[codes]
        out.append(torch.from_numpy(codes.astype(np.int64)))
    return torch.stack(out)


def run_gemm(x: torch.Tensor, codebooks, block: int = 8192) -> None:
    out = torch.empty(min(block, x.shape[0]), codebooks[0].shape[0])
    for table in codebooks:
        t = table.t()
        for s in range(0, x.shape[0], block):
            rows = x[s:s + block]
            torch.mm(rows, t, out=out[:rows.shape[0]])


# --- agreement -----------------------------------------------------------------------------------------

def check_codes(name: str, got: torch.Tensor, ref: torch.Tensor, x: torch.Tensor, codebooks) -> dict:
    """Frames whose codes differ from the reference, and whether each first difference is a near-tie."""
    differ = (got != ref).any(dim=0)
    bad = differ.nonzero().flatten()
    not_ties = 0
    for frame in bad.tolist()[:200]:
        residual = x[frame].double()
        for layer, table in enumerate(codebooks):
            a, b = int(ref[layer, frame]), int(got[layer, frame])
            if a != b:
                da = float(((residual - table[a].double()) ** 2).sum())
                db = float(((residual - table[b].double()) ** 2).sum())
                if abs(da - db) > 1e-5 * max(da, db, 1e-30):
                    not_ties += 1
                break
            residual = residual - table[a].double()
    return {"method": name, "frames_differing": int(bad.numel()), "agreement": 1.0 - bad.numel() / x.shape[0],
            "non_tie_differences": not_ties}


# --- the run -------------------------------------------------------------------------------------------

def bench_shape(d: int, k: int, n_q: int, n: int, rounds: int, seed: int, with_faiss: bool,
                with_audit: bool) -> dict:
    gen = torch.Generator().manual_seed(seed)
    codebooks = [torch.randn(k, d, generator=gen) for _ in range(n_q)]
    norms = [c.pow(2).sum(1) for c in codebooks]
    x = torch.randn(n, d, generator=gen)
    quantizer = Quantizer(format="bench", codebooks=codebooks)
    rvq = encodec_reference(codebooks)
    indexes = faiss_indexes(codebooks) if with_faiss else None

    tmp = tempfile.TemporaryDirectory(prefix="rvq-bench-")
    path = Path(tmp.name) / "frames.npy"
    if with_audit:
        np.save(path, x.numpy())

    methods = {
        "rvq-viewer": lambda: encode_frames(quantizer, x),
        "EnCodec ref (all at once)": lambda: run_encodec(rvq, x, None),
        "EnCodec ref (16384-frame chunks)": lambda: run_encodec(rvq, x, 16384),
        "torch addmm+argmin chunked": lambda: run_torch_chunked(x, codebooks, norms),
        "GEMM alone": lambda: run_gemm(x, codebooks),
    }
    if with_faiss:
        methods["faiss IndexFlatL2"] = lambda: run_faiss(x, codebooks, indexes)
    if with_audit:
        methods["rvq-viewer audit (file, codes + stats)"] = lambda: run_audit(
            quantizer, FeatureSource([path], dim=d), device="cpu")

    # Warm-up (plans, faiss, oneDNN kernels) on a slice, then interleaved timed rounds.
    small = x[:4096]
    encode_frames(quantizer, small)
    if with_faiss:
        run_faiss(small, codebooks, indexes)
    best: dict[str, float] = {}
    codes: dict[str, torch.Tensor] = {}
    loads = [loadavg()]
    for _ in range(rounds):
        for name, fn in methods.items():
            start = time.perf_counter()
            result = fn()
            elapsed = time.perf_counter() - start
            best[name] = max(best.get(name, 0.0), n / elapsed)
            if isinstance(result, torch.Tensor) and name not in codes:
                codes[name] = result
            result = None
        loads.append(loadavg())
    tmp.cleanup()

    ref_name = max(("EnCodec ref (all at once)", "EnCodec ref (16384-frame chunks)"), key=lambda m: best[m])
    ref = codes["EnCodec ref (all at once)"]
    agreement = [check_codes(m, c, ref, x, codebooks) for m, c in codes.items() if not m.startswith("EnCodec")]
    fps = {"rvq-viewer": best["rvq-viewer"], "EnCodec ref": best[ref_name],
           "torch chunked": best["torch addmm+argmin chunked"], "GEMM alone": best["GEMM alone"]}
    if with_faiss:
        fps["faiss"] = best["faiss IndexFlatL2"]
    if with_audit:
        fps["rvq-viewer audit"] = best["rvq-viewer audit (file, codes + stats)"]
    ratio_ref = fps["rvq-viewer"] / fps["EnCodec ref"]
    ratio_faiss = fps["rvq-viewer"] / fps["faiss"] if with_faiss else None
    return {"shape": {"D": d, "K": k, "n_q": n_q, "frames": n}, "fps": fps, "all": best,
            "encodec_ref_mode": ref_name, "ratio_vs_encodec": ratio_ref, "ratio_vs_faiss": ratio_faiss,
            "target_3x_encodec": ratio_ref >= 3.0,
            "target_ge_faiss": None if ratio_faiss is None else ratio_faiss >= 1.0,
            "agreement": agreement, "loadavg": loads}


def parse_shapes(text: str, frames: int | None) -> list[tuple[int, int, int, int]]:
    shapes = []
    for part in text.split(","):
        d, k, n_q = (int(v) for v in part.lower().split("x"))
        shapes.append((d, k, n_q, frames or 20_000))
    return shapes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="the anchors' frame counts (100k/100k/50k)")
    parser.add_argument("--shapes", help="DxKxNQ[,DxKxNQ...] instead of the anchor table")
    parser.add_argument("--frames", type=int, help="frames per shape (overrides the defaults)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per method (best kept)")
    parser.add_argument("--no-audit", action="store_true", help="skip the full-audit column")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)

    if args.shapes:
        shapes = parse_shapes(args.shapes, args.frames)
    else:
        shapes = [(d, k, q, args.frames or (full if args.full else quick)) for d, k, q, quick, full in SHAPES]
    try:
        import faiss  # noqa: F401
        with_faiss = True
    except ImportError:
        with_faiss = False
        print("faiss-cpu is not installed: the faiss column is skipped (pip install faiss-cpu)", file=sys.stderr)

    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
          f"({info['torch_threads']} threads), faiss {info['faiss']}, python {info['python']}")
    results = []
    for d, k, n_q, n in shapes:
        print(f"... D={d} K={k} n_q={n_q} N={n}", file=sys.stderr, flush=True)
        results.append(bench_shape(d, k, n_q, n, args.rounds, args.seed, with_faiss, not args.no_audit))

    cols = ["rvq-viewer", "rvq-viewer audit", "EnCodec ref", "torch chunked", "faiss", "GEMM alone"]
    cols = [c for c in cols if any(c in r["fps"] for r in results)]
    print()
    print("frames/s through all layers (best of %d rounds)" % args.rounds)
    print(f"| {'shape (D, K, n_q, N)':<24} | " + " | ".join(f"{c:>16}" for c in cols) + " |")
    print("|" + "-" * 26 + "|" + "|".join("-" * 18 for _ in cols) + "|")
    for r in results:
        s = r["shape"]
        label = f"{s['D']}, {s['K']}, {s['n_q']}, {s['frames']}"
        print(f"| {label:<24} | " + " | ".join(f"{r['fps'].get(c, float('nan')):>16,.0f}" for c in cols) + " |")
    print()
    all_met = True
    for r in results:
        s = r["shape"]
        line = (f"D={s['D']} K={s['K']} n_q={s['n_q']}: rvq-viewer / EnCodec ref = {r['ratio_vs_encodec']:.2f}x "
                f"(target >= 3x: {'met' if r['target_3x_encodec'] else 'NOT met'})")
        all_met &= r["target_3x_encodec"]
        if r["ratio_vs_faiss"] is not None:
            line += (f"; rvq-viewer / faiss = {r['ratio_vs_faiss']:.2f}x "
                     f"(target >= 1x: {'met' if r['target_ge_faiss'] else 'NOT met'})")
            all_met &= r["target_ge_faiss"]
        print(line)
        for a in r["agreement"]:
            print(f"    codes vs EnCodec ref, {a['method']}: agreement {a['agreement']:.6f}, "
                  f"{a['frames_differing']} frames differ, {a['non_tie_differences']} not at a near-tie")
        print(f"    EnCodec ref timed as: {r['encodec_ref_mode']}; load average during the rounds: "
              f"{' '.join(r['loadavg'])}")
    print()
    print("all targets met" if all_met else "some targets NOT met")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
