"""The side-by-side benchmark harness (`make bench`'s reference section) on tiny configs, in our environment only: the
worker protocol, interleaving, FLOP counting through gradient penalties, the LFQ memory cap, the report's targets.
(The reference environment itself is never built by the tests.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import compare_report, reference_compare
from benchmarks.compare_worker import PREFIX
from benchmarks.lfq_codes import run_probe

ROOT = Path(__file__).resolve().parents[1]
TINY = {"image_size": 16, "frames": 5, "batch": 1, "init_dim": 8, "max_dim": 16, "codebook_size": 32,
        "layers": ["residual", "compress_space", "compress_time", "attend_time"], "lr": 1e-4, "weight_decay": 0.01}


def serve(impl: str, commands: list[str]) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "benchmarks.compare_worker", "serve", "--impl", impl, "--config",
                           json.dumps(TINY), "--threads", "1"], cwd=ROOT, input="\n".join(commands) + "\n",
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line[len(PREFIX):]) for line in done.stdout.splitlines() if line.startswith(PREFIX)]


@pytest.mark.slow
def test_worker_answers_each_command_and_counts_flops_through_the_gradient_penalty():
    replies = {impl: serve(impl, ["flops", "time iteration", "time tokenize", "time decode", "nonsense", "quit"])
               for impl in ("ours-paper", "ours-seed")}
    for impl, (ready, flops, iteration, tokenize, decode, error, bye) in replies.items():
        assert ready["ready"] and ready["impl"] == impl and ready["threads"] == 1
        assert ready["versions"]["torch"] and ready["g_params"] > 0 and ready["d_params"] > 0
        f = flops["flops"]
        assert all(f[k] > 0 for k in ("g_step", "d_step", "tokenize", "decode"))
        assert f["iteration"] == f["g_step"] + f["d_step"]
        s = iteration["seconds"]
        assert s["iteration"] == pytest.approx(s["g_step"] + s["d_step"]) and s["g_step"] > 0
        assert tokenize["seconds"]["tokenize"] > 0 and decode["seconds"]["decode"] > 0
        assert "unknown command" in error["error"] and bye == {"bye": True}
    paper, seed = replies["ours-paper"], replies["ours-seed"]
    assert seed[0]["g_params"] < paper[0]["g_params"]  # the seed-sized blocks are lighter ...
    assert seed[1]["flops"]["tokenize"] < paper[1]["flops"]["tokenize"]  # ... in FLOPs too


class FakeWorker:
    def __init__(self, name: str, log: list[str]):
        self.name, self.log = name, log

    def ask(self, command: str) -> dict:
        self.log.append(self.name)
        return {"seconds": {"tokenize": float(len(self.log))}}


def test_interleave_rotates_the_order_and_keeps_at_least_one_repeat():
    calls: list[str] = []
    workers = {n: FakeWorker(n, calls) for n in ("a", "b", "c")}
    got = reference_compare.interleave(workers, "tokenize", 3, deadline=float("inf"), log=lambda *_: None)
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert got["a"]["tokenize"]["all"] == [1.0, 6.0, 8.0] and got["a"]["tokenize"]["median"] == 6.0
    assert got["a"]["tokenize"]["n"] == 3 and (got["a"]["tokenize"]["min"], got["a"]["tokenize"]["max"]) == (1, 8)
    calls.clear()
    got = reference_compare.interleave(workers, "tokenize", 5, deadline=0.0, log=lambda *_: None)  # already past
    assert got["b"]["tokenize"]["n"] == 1 and len(calls) == 3


@pytest.mark.slow
def test_tokenizer_section_end_to_end_on_a_tiny_config(monkeypatch):
    monkeypatch.setattr(reference_compare, "CONFIG", TINY)
    out = reference_compare.bench_tokenizer(["ours-paper", "ours-seed"], None, threads=1, train_repeats=2,
                                            infer_repeats=2, budget_s=600, log=lambda *_: None)
    for side in out.values():
        assert set(side["seconds"]) == {"g_step", "d_step", "iteration", "tokenize", "decode"}
        assert all(s["n"] == 2 for s in side["seconds"].values())
        assert side["rss"]["steps"] == 3 and side["rss"]["peak_rss_mb"] >= side["rss"]["after_build_mb"] > 0
    result = {"date": "2026-12-02T00:00:00+00:00", "config": TINY, "tokenizer": out,
              "machine": {"cpu": "test", "cpu_flags": ["avx2"], "cores": 2, "threads": 1, "python": "3",
                          "load_average_before": [0.0, 0.0, 0.0]}}
    text = compare_report.report(result)
    assert "ours, seed-sized" in text and "| **tokenize** |" in text and "vs reference" not in text


def side(g_s: float, d_s: float, tok_s: float, rss: float, g_params: int = 10, flops: float = 1e9) -> dict:
    def stat(v):
        return {"median": v, "min": v, "max": v, "n": 1}

    return {"g_params": g_params, "d_params": 5, "versions": {"torch": "x"}, "settings": [],
            "seconds": {"g_step": stat(g_s), "d_step": stat(d_s), "iteration": stat(g_s + d_s), "tokenize": stat(tok_s),
                        "decode": stat(tok_s)},
            "flops": {k: flops for k in ("g_step", "d_step", "iteration", "tokenize", "decode")},
            "rss": {"peak_rss_mb": rss}}


def test_report_prints_each_ratio_against_its_target():
    limits = {"ours": {"torch": "2.13", "threads": 2, "native_bf16": False, "limits": {
        "conv3d_fp32": {"input": [2, 64, 20, 32, 32], "dtype": "float32", "best_gflops": 10.0, "median_gflops": 9.0},
        "conv3d_fp32_channels_last": {"input": [2, 64, 20, 32, 32], "dtype": "float32", "best_gflops": 20.0,
                                      "median_gflops": 18.0}}}}
    result = {"date": "d", "config": TINY, "limits": limits,
              "machine": {"cpu": "c", "cpu_flags": [], "cores": 2, "threads": 2, "python": "3",
                          "load_average_before": [1.0, 1.0, 1.0]},
              "tokenizer": {"reference": side(4.0, 8.0, 0.6, 3000), "ours-paper": side(3.0, 1.0, 0.3, 1400),
                            "ours-seed": side(2.0, 1.0, 0.3, 1600, flops=10e9)}}
    assert compare_report.conv_limit(result) == 20.0  # the best fp32 conv rate
    table = compare_report.tokenizer_table(result)
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()}
    iteration = rows["**one training iteration (G + D)**"]
    assert "3.00x faster; target >= 3x: met" in iteration and "4.00x faster; target >= 3x: met" in iteration
    assert "2.00x faster; target >= 1.5x: met" in rows["**tokenize**"]
    assert "2.00x faster; target >= 3x: not met" in rows["**tokenize**"]  # the seed-sized target is stricter
    assert "0.47x; target <= 0.5x: met" in rows["**peak RSS, 3 G steps**"]
    assert "0.53x; target <= 0.5x: not met" in rows["**peak RSS, 3 G steps**"]
    flops = compare_report.flops_table(result)
    assert "| one training iteration (G + D) | ours-seed | 10.0 | 3.00 | 3.3 | 17% (target >= 40%: not met) |" in flops
    assert "emulates bf16" in compare_report.limits_table(result)


def test_missing_reference_environment_is_one_clear_line(capsys, tmp_path):
    assert reference_compare.main(["--reference-python", str(tmp_path / "nope" / "python")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "make bench-env" in err and "--no-reference" in err


def test_lfq_probe_over_its_memory_cap_reports_out_of_memory_instead_of_taking_the_machine():
    library = run_probe("vector-quantize-pytorch", 18, cap_gb=0.25, threads=1)  # needs gigabytes at 2^18
    assert library == {"oom": True, "cap_gb": 0.25, "timed": 0}
    ours = run_probe("ours", 10, cap_gb=2.0, threads=1)
    assert not ours["oom"] and ours["n"] >= 1 and ours["median_s"] > 0 and ours["peak_rss_mb"] > 0
