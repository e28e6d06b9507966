"""`run.mixed_precision: auto`: bf16 where the device computes in bf16 natively (a CPU with AMX or AVX512-BF16, a
CUDA GPU with bf16), plain fp32 elsewhere, where torch would emulate bf16 more slowly than fp32. The CPU's
capabilities are monkeypatched, so both answers are checked on any machine; a real run resolves it on this one."""

from __future__ import annotations

import pytest
import torch

from scripts import train_tokenizer
from tests.helpers.training import reset_accelerate_state
from trainers.configs import RunConfig
from trainers.run_setup import make_accelerator, native_bf16, resolve_mixed_precision

CPUS = {"amx": {"amx_bf16": True, "avx512_bf16": False}, "avx512-bf16": {"amx_bf16": False, "avx512_bf16": True},
        "avx2 only": {"avx2": True}, "avx512 without bf16": {"avx512_f": True, "avx512_bf16": False}}


@pytest.mark.parametrize("cpu", sorted(CPUS))
def test_auto_is_bf16_exactly_on_cpus_with_bf16_arithmetic(cpu, monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: CPUS[cpu])
    expected = "bf16" if cpu in ("amx", "avx512-bf16") else "no"
    assert native_bf16(cuda=False) is (expected == "bf16")
    assert resolve_mixed_precision("auto", cuda=False) == expected


def test_auto_on_a_gpu_follows_its_bf16_support(monkeypatch):
    for supported in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        assert resolve_mixed_precision("auto", cuda=True) == ("bf16" if supported else "no")


@pytest.mark.parametrize("value", [None, "no", "bf16", "fp16"])
def test_explicit_values_pass_through(value, monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"amx_bf16": True})
    assert resolve_mixed_precision(value, cuda=False) == value


@pytest.mark.parametrize("cpu", ["amx", "avx2 only"])
def test_the_accelerator_gets_the_resolved_precision(cpu, monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: CPUS[cpu])
    reset_accelerate_state()
    try:
        acc, _ = make_accelerator(RunConfig(mixed_precision="auto"))
        assert acc.mixed_precision == ("bf16" if cpu == "amx" else "no")
    finally:
        reset_accelerate_state()


def test_a_second_trainer_in_the_process_gets_its_own_precision_not_the_first_ones(monkeypatch,
                                                                                    fresh_accelerate_state):
    """accelerate keeps one precision per process: the demo's bf16 stage one made its MaskGit (precision unset: the
    launcher's, fp32 here) train in bf16 too, and an explicit "no" after it raised accelerate's "cannot be changed"."""
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    first, _ = make_accelerator(RunConfig(mixed_precision="bf16"))
    assert first.mixed_precision == "bf16"
    assert make_accelerator(RunConfig())[0].mixed_precision == "no"  # unset: the launcher's, none here
    assert make_accelerator(RunConfig(mixed_precision="bf16"))[0].mixed_precision == "bf16"
    assert make_accelerator(RunConfig(mixed_precision="no"))[0].mixed_precision == "no"  # no ValueError
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision bf16` sets
    assert make_accelerator(RunConfig())[0].mixed_precision == "bf16"


def test_the_flag_takes_auto_and_refuses_other_words(capsys):
    parser = train_tokenizer.build_parser()
    config = train_tokenizer.make_config(parser.parse_args(["--data", "x", "--out", "y", "--mixed-precision", "auto"]))
    assert config.run.mixed_precision == "auto"
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--data", "x", "--out", "y", "--mixed-precision", "bf17"])
    assert e.value.code == 2 and "bf17" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"run\.mixed_precision must be one of"):
        RunConfig(mixed_precision="half")


def test_the_demo_trains_stage_one_at_auto_and_lfq_gan_in_fp32():
    from trainers.configs import build_config
    from trainers.demo.run import DEMO_TOKENIZERS

    assert build_config("tokenizer", "demo").run.mixed_precision == "auto"
    lfq = build_config("tokenizer", "demo", overrides={**DEMO_TOKENIZERS["lfq-gan"], "run": {
        **DEMO_TOKENIZERS["lfq-gan"]["run"], "seed": 1}})
    assert lfq.run.mixed_precision == "no" and lfq.run.seed == 1 and lfq.disc_start_step == 200
    assert build_config("maskgit", "demo").run.mixed_precision is None  # stage two: not measured, the launcher's


def test_without_torch_cpu_capabilities_the_kernel_flags_decide(monkeypatch):
    """A torch without `torch.cpu.get_capabilities` (older releases): /proc/cpuinfo's flags say the same (Linux)."""
    import builtins
    import io

    monkeypatch.delattr(torch.cpu, "get_capabilities")
    real_open = builtins.open
    for flags, expected in (("fpu avx2 avx512f amx_bf16", True), ("fpu avx2 avx512f", False)):
        cpuinfo = f"processor\t: 0\nflags\t\t: {flags}\n"
        monkeypatch.setattr(builtins, "open", lambda path, *a, cpuinfo=cpuinfo, **k: io.StringIO(cpuinfo)
                            if path == "/proc/cpuinfo" else real_open(path, *a, **k))
        assert native_bf16(cuda=False) is expected


def test_make_bench_times_both_demo_updates_in_both_precisions(monkeypatch, capsys):
    """`benchmarks.run_all.bench_precision` (make bench): one row per update (stage one's clips and still frames, the
    MaskGit) with fp32 and bf16 seconds that were measured (each update run once here), and the speed-up they give."""
    import time

    from benchmarks import run_all

    def once(fn, repeats=5):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    monkeypatch.setattr(run_all, "timed", once)
    run_all.bench_precision()
    out = capsys.readouterr().out
    assert f"computes bf16 natively: {native_bf16(cuda=False)}" in out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith(("| tokenizer", "| MaskGit"))]
    assert [row[0].strip().split(" (")[0] for row in rows] == ["tokenizer", "tokenizer's frame phase", "MaskGit"]
    for _, fp32, bf16, speedup in rows:
        assert float(fp32) > 0 and float(bf16) > 0
        # 4 significant digits per time, 3 in the speed-up: the printed ratio agrees within their rounding (< 1%),
        # however far apart the two times are (a CPU that emulates bf16 gives 0.04x)
        ratio = float(fp32) / float(bf16)
        assert abs(float(speedup.strip().rstrip("x")) - ratio) < 0.01 * ratio
