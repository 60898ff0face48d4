"""Build the nearest-code kernel for another CPU (a cross compiler), run it there (an emulator such as
qemu-user) and check its codes against addmm + argmin computed here, for every register blocking.

The test suite checks the builds this machine can run (native, AVX2, SSE2); this is for the ones it
cannot, such as the NEON build an ARM Mac or a Graviton node makes:

    apt-get install gcc-aarch64-linux-gnu qemu-user
    .venv/bin/python scripts/cross_check_kernel.py --cc aarch64-linux-gnu-gcc --run qemu-aarch64

Exit status 0 when every code of every case equals the reference, 1 otherwise.
"""

from __future__ import annotations

import argparse
import shlex
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from rvq_viewer.quant import _native
from rvq_viewer.quant.search import reference_nearest_codes
from rvq_viewer.quant.search_probe import probe_data

PANELS = (64, 512, 8192)

# Reads one case (int64 d, n, kp, panel; float32 x, w, bias) from stdin and writes every kernel's
# codes (int64 [kernels][n]) to stdout.
DRIVER = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
typedef void kernel(const float *, int64_t, int64_t, const float *, const float *, int64_t, int64_t, int64_t *);
kernel %(decls)s;
static kernel *kernels[] = {%(names)s};
static void *take(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p || fread(p, 1, bytes, stdin) != bytes) { fprintf(stderr, "short input\n"); exit(2); }
    return p;
}
int main(void) {
    int64_t *head = take(4 * sizeof(int64_t)), d = head[0], n = head[1], kp = head[2], panel = head[3];
    float *x = take(n * d * 4), *w = take(kp * d * 4), *bias = take(kp * 4);
    int64_t *out = malloc((n ? n : 1) * sizeof(int64_t));
    for (size_t i = 0; i < sizeof kernels / sizeof *kernels; i++) {
        kernels[i](x, n, d, w, bias, kp, panel, out);
        fwrite(out, sizeof(int64_t), n, stdout);
    }
    return 0;
}
"""


def cases() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, codebook, rows): odd sizes, the probe's ties, and a row of NaN."""
    out = []
    for d, k, n in [(1, 1, 7), (3, 15, 50), (8, 4096, 4099), (16, 100, 33), (33, 64, 64), (128, 1024, 301),
                    (200, 65, 11)]:
        gen = torch.Generator().manual_seed(d * 1000 + k)
        codebook, x = torch.randn(k, d, generator=gen), torch.randn(n, d, generator=gen)
        out.append((f"gaussian d={d} k={k} n={n}", codebook, x))
    codebook, x = probe_data(8, 3000)
    codebook[2999] = codebook[5]                 # a duplicate in another lane and panel than its first copy
    x[-3:] = codebook[5]
    out.append(("ties d=8 k=3000", codebook, x))
    codebook, x = probe_data(33, 700)
    out.append(("ties d=33 k=700", codebook, x))
    codebook, x = torch.randn(256, 8), torch.randn(40, 8)
    x[7] = float("nan")
    out.append(("a NaN row", codebook, x))
    return out


def build(cc: str, flags: list[str], folder: Path, static: bool) -> Path:
    """The driver and the kernel as one program (static for an emulator, which has no target libc)."""
    names = [f"nearest_{k}" for k in _native.KERNELS]
    driver = folder / "driver.c"
    driver.write_text(DRIVER % {"decls": ", ".join(names), "names": ", ".join(names)})
    binary = folder / "check"
    link = ["-static"] if static else []
    subprocess.run([cc, *flags, *link, "-o", str(binary), str(driver), str(_native.SOURCE)], check=True)
    return binary


def run_case(run: list[str], binary: Path, codebook: torch.Tensor, x: torch.Tensor, panel: int) -> torch.Tensor:
    w, bias = _native.layout(codebook)
    kp, (n, d) = bias.shape[0], x.shape
    data = struct.pack("<4q", d, n, kp, panel) + x.contiguous().numpy().tobytes() + w.numpy().tobytes() \
        + bias.numpy().tobytes()
    result = subprocess.run([*run, str(binary)], input=data, capture_output=True, check=True)
    return torch.frombuffer(bytearray(result.stdout), dtype=torch.int64).view(len(_native.KERNELS), n)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cc", required=True, help="the cross compiler, e.g. aarch64-linux-gnu-gcc")
    parser.add_argument("--flags", default="-O3",
                        help="its flags as one argument (--flags='-O3 -mcpu=neoverse-n1'; default -O3)")
    parser.add_argument("--run", default="", help="how to run the target's programs, e.g. qemu-aarch64")
    args = parser.parse_args()
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        binary = build(args.cc, shlex.split(args.flags), Path(tmp), static=bool(args.run))
        for name, codebook, x in cases():
            want = reference_nearest_codes(x, codebook)
            for panel in PANELS:
                got = run_case(shlex.split(args.run), binary, codebook, x, panel)
                for kernel, codes in zip(_native.KERNELS, got):
                    if not torch.equal(codes, want):
                        failures += 1
                        differ = int((codes != want).sum())
                        print(f"{name}, panel {panel}, {kernel}: {differ} of {x.shape[0]} codes differ")
            print(f"{name}: checked {len(_native.KERNELS)} kernels x {len(PANELS)} panels")
    print("every code equals addmm + argmin" if not failures else f"{failures} kernel runs differ")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
