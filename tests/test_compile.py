"""`run.compile` on the CPU: the compiled MaskGit update computes the eager one's losses and weights (inductor's C++
kernels, no graph break at the transformer's code check), and a machine without a C++ compiler trains eagerly with
one warning instead of failing at its first step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers.training import make_stage_two, maskgit_trainer, weights_after_update
from trainers.logging import read_metrics


@pytest.fixture(scope="module")
def stage_two(tmp_path_factory) -> dict[str, Path]:
    return make_stage_two(tmp_path_factory.mktemp("stage2"))


def losses(run: Path) -> list[float]:
    return [row["loss"] for row in read_metrics(run / "metrics.jsonl") if "loss" in row and "step" in row]


def test_the_compiled_maskgit_update_equals_the_eager_one(stage_two, tmp_path, monkeypatch, one_thread):
    runs, weights = {}, {}
    for name, flags in (("eager", ()), ("compiled", ("--compile",))):
        runs[name] = maskgit_trainer(stage_two, tmp_path / name, "--max-steps", "3", *flags)
        weights[name] = weights_after_update(monkeypatch, runs[name], runs[name].transformer, 3)
    assert isinstance(runs["compiled"].model, torch._dynamo.eval_frame.OptimizedModule)
    assert not isinstance(runs["eager"].model, torch._dynamo.eval_frame.OptimizedModule)
    start = {k: v.clone() for k, v in runs["compiled"].transformer.state_dict().items()}
    for run in runs.values():
        run.fit()
    # one graph: the transformer's code-range check does not split it (a data-dependent branch would)
    explanation = torch._dynamo.explain(runs["compiled"].transformer)(torch.zeros(2, 3 * 8 * 8, dtype=torch.long), None)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    eager, compiled = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert len(eager) == len(compiled) >= 3  # one per update, and the final validation's
    assert compiled == pytest.approx(eager, rel=1e-4)
    assert any(not torch.equal(start[k], weights["compiled"][k]) for k in start)  # it trained
    for k, v in weights["eager"].items():
        assert torch.allclose(weights["compiled"][k], v, atol=1e-4), k


def test_without_a_cpp_compiler_the_run_trains_eagerly_with_a_warning(stage_two, tmp_path, monkeypatch, caplog):
    import torch._inductor.cpp_builder as cpp_builder

    def no_compiler():
        raise RuntimeError("Failed to find a working C++ compiler. Tried: ['g++']")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    run = maskgit_trainer(stage_two, tmp_path / "run", "--max-steps", "1", "--compile")
    assert not isinstance(run.model, torch._dynamo.eval_frame.OptimizedModule)
    assert "no C++ compiler for torch.compile's CPU kernels (Failed to find a working C++ compiler" in caplog.text
    assert run.fit()["step"] == 1


def test_compile_and_no_compile_set_run_compile_over_the_recipe():
    from scripts import train_maskgit

    def config(*flags: str):
        args = train_maskgit.build_parser().parse_args(["--tokenizer", "x", "--codes", "x", "--out", "y", "--preset",
                                                        "demo", *flags])
        return train_maskgit.make_config(args).run

    assert config().compile is False  # the demo recipe trains eagerly (waves 21-22)
    assert config("--compile").compile is True and config("--no-compile").compile is False
    assert config("--compile", "--no-compile").compile is False  # the last flag wins, as argparse does
    assert config("--no-compile", "--compile").compile is True
