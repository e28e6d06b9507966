"""Rank-0 work longer than the process-group timeout (an index build of a large folder): with a forced 3 s timeout a
process waiting in a barrier is killed (the negative control), one waiting through `trainers.rank_zero` is not, and
one whose rank 0 shows no sign of life gives up with a TimeoutError naming what it waited for. A 2-process training
run whose rank 0 takes 25 s over the index survives a 9 s timeout (not shorter: on a loaded 2-core runner the
training's own collectives may lag a few seconds). The timeout comes from --dist-timeout-minutes."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from tests.helpers.commands import launch, ok, world_size_of


@pytest.mark.timeout(300)
def test_a_barrier_times_out_where_waiting_on_the_store_survives(tmp_path):
    got = {}
    for how in ("barrier", "on_main", "silent"):
        ok(launch("tests.distributed_worker", how, str(tmp_path), processes=2, timeout=120))
        got[how] = [json.loads((tmp_path / f"{how}-{rank}.json").read_text()) for rank in (0, 1)]
        assert [r["world_size"] for r in got[how]] == [2, 2], how
    assert "timed out" in got["barrier"][1].get("error", "").lower()  # what NCCL's watchdog does, on gloo
    assert [r.get("value") for r in got["on_main"]] == ["built", "built"]
    assert not any("error" in r for r in got["on_main"])
    error = got["silent"][1].get("error", "")
    assert error.startswith("TimeoutError: ") and "rank 0 to finish a 10 s job" in error and "no sign of life" in error


@pytest.mark.timeout(400)
def test_two_process_training_survives_a_slow_index_build_under_a_short_timeout(tmp_path, make_clip):
    for photo in ("astronaut", "coffee", "chelsea", "rocket"):
        make_clip(f"data/{photo}.mp4", num_frames=9, size=(20, 24), photo=photo)
    run = tmp_path / "run"
    ok(launch("scripts.train_tokenizer", "--data", str(tmp_path / "data"), "--out", str(run), "--preset", "tiny",
              "--max-steps", "2", "--batch-size", "1", "--num-frames", "5", "--num-workers", "0",
              "--dist-timeout-minutes", "0.15", processes=2, faults=("--slow-index", "25"), timeout=360))
    assert world_size_of(run) == 2 and (run / "tokenizer" / "model.safetensors").is_file()
    assert (tmp_path / "data" / ".magvit2" / "index.json").is_file()


def test_the_timeout_flag_reaches_the_process_group():
    from scripts._cli import training_flag_overrides
    from scripts.train_tokenizer import build_parser, make_config
    from trainers.configs import RunConfig
    from trainers.run_setup import process_group_kwargs

    args = build_parser().parse_args(["--data", "d", "--out", "o", "--dist-timeout-minutes", "0.05"])
    assert training_flag_overrides(args)["run"]["dist_timeout_minutes"] == 0.05
    config = make_config(args)
    assert process_group_kwargs(config.run).timeout == timedelta(seconds=3)
    assert RunConfig().dist_timeout_minutes >= 60  # generous by default (NCCL's own: 10 minutes)
    with pytest.raises(ValueError, match="dist_timeout_minutes must be > 0"):
        RunConfig(dist_timeout_minutes=0)
