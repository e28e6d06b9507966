"""Side by side with the seed, magvit2-pytorch 0.5.1, on this machine in one interleaved run (`make bench`).

The reference runs in its own environment (`.venv-reference`: torch 2.14.1 + magvit2-pytorch 0.5.1 from PyPI, built by
`make bench-env`; never part of this package's dependencies). Each tokenizer lives in a worker subprocess
(`benchmarks/compare_worker.py`) started in its own environment, and the workers take turns: every repeat times the
reference, our paper-style model and our seed-sized model one after another (the order rotates), so all three see the
same machine load. Sections:

- limits: conv3d / matmul GFLOP/s of this CPU on the threads used (the yardstick for "fraction of the limit");
- tokenizer: the seed README's layer list at 64x64, 17 frames, batch 2, init_dim 32, max_dim 128, 2^10 codes,
  perceptual loss off: parameters, G step, D step, training iteration, tokenize, decode (median, min-max, n), FLOPs
  and GFLOP/s, peak RSS of 3 G steps (a fresh process each);
- lfq: `benchmarks.lfq_codes`; maskgit: `benchmarks.maskgit_speed`.

Results go to `runs/bench/reference_compare.json`; `--table FILE` prints the tables again from such a file.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.compare_report import report
from benchmarks.compare_worker import PREFIX

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "benchmarks" / "compare_worker.py"
REFERENCE_PYTHON = ROOT / ".venv-reference" / "bin" / "python"
SECTIONS = ("limits", "tokenizer", "lfq", "maskgit")
SEED_LAYERS = ["residual", "compress_space", ["consecutive_residual", 2], "compress_space",
               ["consecutive_residual", 2], "linear_attend_space", "compress_space", ["consecutive_residual", 2],
               "attend_space", "compress_time", ["consecutive_residual", 2], "compress_time",
               ["consecutive_residual", 2], "attend_time"]  # the seed README's list
CONFIG = {"image_size": 64, "frames": 17, "batch": 2, "init_dim": 32, "max_dim": 128, "codebook_size": 2**10,
          "layers": SEED_LAYERS, "lr": 1e-4, "weight_decay": 0.01}


class Worker:
    """A `compare_worker.py serve` subprocess: one JSON command line in, one `@@bench` JSON line out."""

    def __init__(self, impl: str, python: Path, threads: int):
        self.impl = impl
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in close())
        cmd = [*_worker_cmd(impl, python), "serve", "--impl", impl, "--config", json.dumps(CONFIG),
               "--threads", str(threads)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, bufsize=1)

    def read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                reply = json.loads(line[len(PREFIX):])
                if "error" in reply:
                    raise RuntimeError(f"{self.impl} worker: {reply['error']}")
                return reply
        self.stderr.seek(0)
        tail = "\n".join(self.stderr.read().strip().splitlines()[-15:])
        raise RuntimeError(f"{self.impl} worker exited (code {self.proc.wait()}):\n{tail}")

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(RuntimeError, OSError):
                self.ask("quit")
            self.proc.wait(timeout=60)
        self.stderr.close()


def _worker_cmd(impl: str, python: Path) -> list[str]:
    if impl == "reference":  # isolated: nothing of ours importable there, only its own environment
        return [str(python), "-I", str(WORKER)]
    return [sys.executable, "-m", "benchmarks.compare_worker"]  # from ROOT: this working tree's package


def _run_json(cmd: list[str], timeout: float) -> dict:
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(PREFIX)]
    if done.returncode or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-10:])
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed (exit code {done.returncode}):\n{tail}")
    return json.loads(lines[-1][len(PREFIX):])


def _stats(values: list[float]) -> dict:
    s = sorted(values)
    mid = len(s) // 2
    median = s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
    return {"median": median, "min": s[0], "max": s[-1], "n": len(s), "all": values}


def bench_limits(impls: list[str], python: Path, threads: int) -> dict:
    envs = {"ours": "ours-paper", "reference": "reference"}
    return {env: _run_json([*_worker_cmd(impl, python), "limits", "--threads", str(threads)], timeout=900)
            for env, impl in envs.items() if impl in impls}


def interleave(workers: dict[str, Worker], op: str, repeats: int, deadline: float, log) -> dict[str, dict]:
    """Time `op` on every worker per repeat, rotating the order; stop adding repeats once the next one would pass
    `deadline` (time.monotonic()). At least one repeat always runs."""
    names = list(workers)
    samples: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    round_s = 0.0
    for r in range(repeats):
        if r and time.monotonic() + round_s > deadline:
            log(f"  {op}: stopped after {r} of {repeats} repeats (time budget)")
            break
        t0 = time.monotonic()
        for name in names[r % len(names):] + names[: r % len(names)]:
            for key, seconds in workers[name].ask(f"time {op}")["seconds"].items():
                samples[name].setdefault(key, []).append(seconds)
        round_s = time.monotonic() - t0
        log(f"  {op} repeat {r + 1}: " + ", ".join(f"{n} {samples[n][op][-1]:.2f} s" for n in names))
    return {n: {key: _stats(v) for key, v in figs.items()} for n, figs in samples.items()}


def bench_tokenizer(impls: list[str], python: Path, threads: int, train_repeats: int, infer_repeats: int,
                    budget_s: float, log) -> dict:
    workers = {impl: Worker(impl, python, threads) for impl in impls}  # they build at the same time
    out: dict = {impl: {} for impl in impls}
    try:
        for impl, w in workers.items():
            ready = w.read()
            out[impl].update({k: ready[k] for k in ("g_params", "d_params", "settings", "versions", "threads")})
            log(f"  {impl}: built in {ready['build_s']:.1f} s, {ready['g_params'] / 1e6:.2f}M / "
                f"{ready['d_params'] / 1e6:.2f}M params")
        for impl, w in workers.items():  # warm-up: one FLOP-counted pass of every operation (the same kernels and
            out[impl]["flops"] = w.ask("flops")["flops"]  # shapes), then one plain pass of the cheap ones
            for op in ("tokenize", "decode"):
                w.ask(f"time {op}")
            log(f"  {impl}: warmed up, {out[impl]['flops']['iteration'] / 1e9:.0f} GFLOP per iteration")
        deadline = time.monotonic() + budget_s  # for the timed repeats; 3/4 of it for the training iterations
        seconds = interleave(workers, "iteration", train_repeats, deadline - 0.25 * budget_s, log)
        for op in ("tokenize", "decode"):
            got = interleave(workers, op, infer_repeats, deadline, log)
            for impl in impls:
                seconds[impl].update(got[impl])
        for impl in impls:
            out[impl]["seconds"] = seconds[impl]
    finally:
        for w in workers.values():
            w.close()
    for impl in impls:  # peak memory: a fresh process each
        out[impl]["rss"] = _run_json([*_worker_cmd(impl, python), "rss", "--impl", impl, "--config",
                                      json.dumps(CONFIG), "--threads", str(threads), "--steps", "3"], timeout=1800)
        log(f"  {impl}: peak RSS {out[impl]['rss']['peak_rss_mb']:,.0f} MB over 3 G steps")
    return out


def machine(threads: int) -> dict:
    cpu, flags = platform.processor() or "unknown", []
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), cpu)
        flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return {"cpu": cpu, "cpu_flags": [f for f in wanted if f in flags], "cores": os.cpu_count(), "threads": threads,
            "python": platform.python_version(), "load_average_before": list(os.getloadavg())}


def run(sections: tuple[str, ...], python: Path | None, threads: int, train_repeats: int, infer_repeats: int,
        budget_minutes: float, lfq_cap_gb: float, log=print) -> dict:
    import torch

    torch.set_num_threads(threads)
    impls = [*(["reference"] if python is not None else []), "ours-paper", "ours-seed"]
    result: dict = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                    "machine": machine(threads), "config": CONFIG, "sections": list(sections)}
    t0 = time.monotonic()
    if "limits" in sections:
        log("measuring the machine's conv3d / matmul limits ...")
        result["limits"] = bench_limits(impls, python, threads)
    if "tokenizer" in sections:
        log("tokenizer: ours vs reference, interleaved ...")
        result["tokenizer"] = bench_tokenizer(impls, python, threads, train_repeats, infer_repeats,
                                              budget_minutes * 60, log)
    if "lfq" in sections:
        from benchmarks.lfq_codes import bench_lfq

        log("LFQ loss at 2^10 / 2^14 / 2^18 codes ...")
        result["lfq"] = {"cap_gb": lfq_cap_gb, "rows": bench_lfq(lfq_cap_gb, threads)}
    if "maskgit" in sections:
        from benchmarks.maskgit_speed import bench_maskgit

        log("MaskGit training step and sampling ...")
        result["maskgit"] = bench_maskgit()
    result["machine"]["load_average_after"] = list(os.getloadavg())
    result["wall_s"] = time.monotonic() - t0
    return result


def write_json(result: dict, path: Path) -> None:
    from magvit2.serialization import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Side-by-side speed and memory against magvit2-pytorch 0.5.1.")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    p.add_argument("--reference-python", type=Path, default=REFERENCE_PYTHON,
                   help="python of the reference environment (default: .venv-reference, built by `make bench-env`)")
    p.add_argument("--no-reference", action="store_true", help="only our models (no reference environment)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads in every process")
    p.add_argument("--train-repeats", type=int, default=3, help="interleaved repeats of the training iteration")
    p.add_argument("--infer-repeats", type=int, default=5, help="interleaved repeats of tokenize and decode")
    p.add_argument("--budget-minutes", type=float, default=5.0,
                   help="time for the tokenizer section's timed repeats (after builds and warm-ups); a repeat that "
                        "would end past it is not started (n says how many ran)")
    p.add_argument("--lfq-cap-gb", type=float, default=8.0, help="memory one LFQ probe may add (default 8 GB)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "reference_compare.json")
    p.add_argument("--table", type=Path, metavar="JSON", help="print the tables of a saved result and exit")
    args = p.parse_args(argv)
    if args.table is not None:
        print(report(json.loads(args.table.read_text(encoding="utf-8"))))
        return 0
    sections = tuple(s for s in args.sections.split(",") if s)
    if unknown := sorted(set(sections) - set(SECTIONS)):
        p.error(f"unknown sections {unknown}; expected a subset of {','.join(SECTIONS)}")
    python = None if args.no_reference else args.reference_python
    if python is not None and not python.exists():
        print(f"error: no reference environment at {python}; build it with `make bench-env` "
              f"(or pass --no-reference)", file=sys.stderr)
        return 2
    result = run(sections, python, args.threads, args.train_repeats, args.infer_repeats, args.budget_minutes,
                 args.lfq_cap_gb)
    write_json(result, args.out)
    print(report(result))
    print(f"\nwritten: {args.out} (tables again: python -m benchmarks.reference_compare --table {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
