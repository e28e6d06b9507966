"""LFQ loss forward + backward on 1,280 tokens (a 1 x 5 x 16 x 16 latent, width 64) at 2^10 / 2^14 / 2^18 codes:
ours (`magvit2.quantize.LFQuantizer`: exact factorised entropy) vs `vector_quantize_pytorch.LFQ` (a tokens x codes
matrix), both in our environment, each (implementation, size) in a fresh subprocess.

The subprocess caps its own address space (RLIMIT_AS) at what it holds after building plus `cap_gb`, so a size that
needs more fails with "out of memory" inside that process instead of pushing the shared machine into swap or the
OOM killer. Run alone: `python -m benchmarks.lfq_codes [--cap-gb 8]`.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

from benchmarks.compare_worker import peak_rss_mb

IMPLS = ("ours", "vector-quantize-pytorch")
BITS = (10, 14, 18)
DIM, GRID = 64, (5, 16, 16)  # 1,280 tokens
PREFIX = "@@lfq "


def _vm_size_bytes() -> int:
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmSize:"))
    return kib * 1024


def probe(impl: str, bits: int, cap_gb: float, max_repeats: int = 3, budget_s: float = 20.0) -> dict:
    """Runs in the subprocess: build, cap the address space, warm up, time up to `max_repeats` runs."""
    import torch

    torch.manual_seed(0)
    if impl == "ours":
        from magvit2 import TokenizerConfig
        from magvit2.quantize import LFQuantizer

        q = LFQuantizer(DIM, TokenizerConfig(image_size=8, codebook_size=2**bits, layers=("residual",))).train()
        loss_of = lambda x: q(x).aux_loss  # noqa: E731
    else:
        from vector_quantize_pytorch import LFQ

        q = LFQ(dim=DIM, codebook_size=2**bits, entropy_loss_weight=0.1, commitment_loss_weight=0.25,
                channel_first=True).train()
        loss_of = lambda x: q(x)[2]  # noqa: E731
    x = (torch.randn(1, DIM, *GRID) * 0.1).requires_grad_()
    limit = _vm_size_bytes() + int(cap_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    before = peak_rss_mb()
    times: list[float] = []
    try:
        for i in range(max_repeats + 1):  # run 0 is the warm-up
            t0 = time.perf_counter()
            loss_of(x).backward()
            x.grad = None
            if i:
                times.append(time.perf_counter() - t0)
            if i and sum(times) > budget_s:
                break
    except (RuntimeError, MemoryError) as e:
        if "alloc" not in str(e).lower() and not isinstance(e, MemoryError):
            raise
        return {"oom": True, "cap_gb": cap_gb, "timed": len(times)}
    peak = peak_rss_mb()
    return {"oom": False, "seconds": times, "median_s": statistics.median(times), "min_s": min(times),
            "max_s": max(times), "n": len(times), "peak_rss_mb": peak, "added_mb": peak - before}


def run_probe(impl: str, bits: int, cap_gb: float, threads: int, timeout: float = 600) -> dict:
    """One probe in a fresh process of this interpreter; failures come back as {"error": ...}."""
    cmd = [sys.executable, "-m", "benchmarks.lfq_codes", "--probe", impl, str(bits), "--cap-gb", str(cap_gb),
           "--threads", str(threads)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(PREFIX)]
    if done.returncode or not lines:
        tail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return {"error": f"exit code {done.returncode}: {tail}"}
    return json.loads(lines[-1][len(PREFIX):])


def bench_lfq(cap_gb: float = 8.0, threads: int = 2) -> list[dict]:
    """All sizes, ours and the library's alternating; returns rows {impl, bits, ...probe result}."""
    rows = []
    for bits in BITS:
        for impl in IMPLS:
            rows.append({"impl": impl, "bits": bits, **run_probe(impl, bits, cap_gb, threads)})
    return rows


def lfq_table(rows: list[dict]) -> str:
    out = [f"LFQ loss forward+backward, {GRID[0] * GRID[1] * GRID[2]:,} tokens ({GRID[0]}x{GRID[1]}x{GRID[2]}), "
           f"width {DIM}, training mode; each in a fresh process (median of n after a warm-up)",
           "| codes | ours: s (min-max, n) | ours: peak RSS / added | vector-quantize-pytorch LFQ: s | "
           "its peak RSS / added | speed-up (library s / ours s) |", "|---|---|---|---|---|---|"]
    for bits in BITS:
        by = {r["impl"]: r for r in rows if r["bits"] == bits}
        cells, med = [], {}
        for impl in IMPLS:
            r = by.get(impl, {"error": "not run"})
            if r.get("error"):
                cells += [f"failed: {r['error']}", ""]
            elif r["oom"]:
                cells += [f"out of memory (needs > {r['cap_gb']:g} GB more)", ""]
            else:
                med[impl] = r["median_s"]
                cells += [f"{r['median_s']:.3f} ({r['min_s']:.3f}-{r['max_s']:.3f}, {r['n']})",
                          f"{r['peak_rss_mb']:,.0f} / +{r['added_mb']:,.0f} MB"]
        if len(med) == 2:
            ratio = f"{med[IMPLS[1]] / med['ours']:.2f}x"
        elif "ours" in med:
            ratio = "only ours runs"
        else:
            ratio = "-"
        out.append(f"| 2^{bits} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="LFQ loss at 2^10 / 2^14 / 2^18 codes: ours vs vector-quantize-pytorch")
    p.add_argument("--probe", nargs=2, metavar=("IMPL", "BITS"), help=argparse.SUPPRESS)  # the subprocess side
    p.add_argument("--cap-gb", type=float, default=8.0, help="memory a probe may add beyond its model (default 8)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    args = p.parse_args(argv)
    import os

    import torch

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    if args.probe:
        impl, bits = args.probe[0], int(args.probe[1])
        print(PREFIX + json.dumps(probe(impl, bits, args.cap_gb)), flush=True)
        return
    print(lfq_table(bench_lfq(args.cap_gb, threads)))


if __name__ == "__main__":
    main()
