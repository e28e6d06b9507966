"""`make gpu-check` keeps working: its code path runs on the CPU at the tiny size and reports every number."""

from __future__ import annotations

import json

from benchmarks.gpu_check import main


def test_gpu_check_code_path_runs_on_cpu(capsys):
    assert main(["--device", "cpu", "--preset", "tiny", "--steps", "1", "--no-compile", "--tokenizer-batch", "1",
                 "--maskgit-batch", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    for part in ("tokenizer", "maskgit"):
        assert report[part]["step_s"] > 0 and report[part]["clips_per_s"] > 0 and report[part]["tflops_per_step"] >= 0
    assert report["settings"]["preset"] == "tiny" and "multi_gpu" not in report
