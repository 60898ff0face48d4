"""Overhead of `rvq_viewer.monitor.CodebookMonitor` on a training step, as a ratio (goal: under 1%).

A small codec's training step (Conv1d encoder, EMA residual quantizer as EnCodec's, Conv1d decoder,
Adam) runs `--steps` steps without the monitor and `--steps` steps with it attached with its defaults
(a window every 100 steps, a codebook snapshot every 10 windows, the background writer), in interleaved
rounds; the best round of each is kept (on a shared machine other processes only slow a round down).
Also printed, timed in isolation and steadier than the end-to-end ratio on a shared machine: what the
training thread itself spends, counting each step's codes and closing each window (copying counts and
state off the device), over the step time. The writer thread runs niced on another core.

    .venv/bin/python benchmarks/monitor.py                 # K=1024 n_q=8 and K=65,536 n_q=1, CPU
    .venv/bin/python benchmarks/monitor.py --device cuda   # the same on a GPU
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rvq_viewer.monitor import CodebookMonitor  # noqa: E402
from rvq_viewer.monitor.adapters import extract  # noqa: E402
from rvq_viewer.quant import ResidualVectorQuantization  # noqa: E402

# (K, n_q, D, items per batch): the large codebook's EMA update (a one-hot [frames, K]) dominates its step.
CONFIGS = {"K=1024 n_q=8": dict(k=1024, n_q=8, dim=64, batch=4), "K=65536 n_q=1": dict(k=65536, n_q=1, dim=32, batch=2)}


class Codec(torch.nn.Module):
    def __init__(self, k: int, n_q: int, dim: int):
        super().__init__()
        self.encoder = torch.nn.Conv1d(dim, dim, 3, padding=1)
        self.quantizer = ResidualVectorQuantization(num_quantizers=n_q, dim=dim, codebook_size=k, kmeans_init=False)
        self.decoder = torch.nn.Conv1d(dim, dim, 3, padding=1)

    def forward(self, x):
        out = self.quantizer(self.encoder(x))
        return torch.nn.functional.mse_loss(self.decoder(out.quantized), x) + out.losses.sum()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_steps(model, optimizer, batches, device) -> float:
    sync(device)
    start = time.perf_counter()
    for x in batches:
        optimizer.zero_grad(set_to_none=True)
        model(x).backward()
        optimizer.step()
    sync(device)
    return (time.perf_counter() - start) / len(batches)


def training_thread_costs(model, x, device, repeats: int = 50) -> tuple[float, float]:
    """Seconds the training thread spends (counting one step's codes, closing one window: copying the
    counts and the module's state off the device and queueing them), the step's output reused."""
    with tempfile.TemporaryDirectory() as tmp:
        monitor = CodebookMonitor(tmp, every=10**9, queue_size=10**6)
        monitor.attach(model.quantizer)
        with torch.no_grad():
            out = model.quantizer(model.encoder(x))
        monitor._observe(model.quantizer, out)             # reads the module once (its first call)
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            monitor._add(0, extract(monitor.adapter, model.quantizer, out, *monitor._tables))
        sync(device)
        hook = (time.perf_counter() - start) / repeats
        closes = []
        for step in range(1, 6):
            monitor._add(step, extract(monitor.adapter, model.quantizer, out, *monitor._tables))
            start = time.perf_counter()
            monitor._close_window()
            closes.append(time.perf_counter() - start)
        monitor.close()
    return hook, min(closes)


def bench(name: str, k: int, n_q: int, dim: int, batch: int, args, device) -> None:
    torch.manual_seed(0)
    model = Codec(k, n_q, dim).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(batch, dim, args.frames, generator=g).to(device) for _ in range(8)]
    batches = (batches * (args.steps // len(batches) + 1))[: args.steps]
    run_steps(model, optimizer, batches[:5], device)                 # warm-up
    plain, monitored = [], []
    run_dir = Path(tempfile.mkdtemp(prefix="rvq-monitor-bench-"))
    try:
        for round_ in range(args.rounds):
            plain.append(run_steps(model, optimizer, batches, device))
            monitor = CodebookMonitor(run_dir / f"round{round_}").attach(model.quantizer)
            monitored.append(run_steps(model, optimizer, batches, device))
            monitor.close()
        size = sum(p.stat().st_size for p in run_dir.rglob("*.sqlite")) / args.rounds
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    step, with_monitor = min(plain), min(monitored)
    hook, close = training_thread_costs(model, batches[0], device)
    per_step = hook + close / 100                       # the default window: 100 steps
    frames = batch * args.frames
    print(f"{name:>14} D={dim} {frames} frames/step: step {step * 1e3:8.2f} ms, with monitor {with_monitor * 1e3:8.2f} ms "
          f"-> ratio {with_monitor / step:.4f} ({(with_monitor / step - 1) * 100:+.2f}%)\n"
          f"{'':>14} training thread: hook {hook * 1e6:.0f} us per step + window close {close * 1e3:.2f} ms per 100 steps "
          f"= {per_step / step * 100:.3f}% of a step; database {size / 1e6:.2f} MB per {args.steps} steps")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=110, help="steps per round (at least 100: a window closes)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: a step on shared cores is steadier without OpenMP barriers)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--frames", type=int, default=150, help="frames per item (150: 2 s at 75 Hz)")
    p.add_argument("--only", choices=list(CONFIGS), help="one configuration")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for name, config in CONFIGS.items():
        if args.only is None or args.only == name:
            bench(name, **config, args=args, device=device)
            sys.stdout.flush()


if __name__ == "__main__":
    main()
