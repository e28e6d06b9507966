"""Checkpoints (R2, R3, R7, R10, R14): atomic, verified, pruned, NaN-refusing; exact optimizer/RNG round trips."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest
import safetensors.torch
import torch

from magvit2.serialization import atomic_dir
from trainers import checkpointing as ckpt
from trainers.checkpointing import (
    CheckpointCorruptError,
    CheckpointManager,
    CheckpointNotFoundError,
    CheckpointWriteError,
    NonFiniteCheckpointError,
)


def _tensors(seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return {
        "model": {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g).to(torch.bfloat16),
                  "count": torch.tensor(7), "mask": torch.tensor([True, False])},
        "ema": {"w": torch.randn(4, 3, generator=g), "step": torch.tensor(3.0)},
    }


def _dirs(manager: CheckpointManager) -> list[str]:
    return sorted(p.name for p in manager.dir.iterdir())


def test_round_trip_is_exact(tmp_path):
    manager = CheckpointManager(tmp_path)
    tensors = _tensors()
    state = {"step": 12, "epoch": 1, "sampler": {"epoch": 1, "batch_index": 3}, "lr": 1e-4, "name": "x"}
    path = manager.save(12, tensors, state)
    assert path == tmp_path / "checkpoints" / "step-00000012"
    assert sorted(p.name for p in path.iterdir()) == ["COMPLETE.json", "ema.safetensors", "model.safetensors",
                                                      "state.json"]
    marker = json.loads((path / "COMPLETE.json").read_text())
    assert marker["step"] == 12 and set(marker["files"]) == {"ema.safetensors", "model.safetensors", "state.json"}
    loaded, loaded_state = manager.load("latest")
    assert loaded_state == state
    for group, group_tensors in tensors.items():
        for key, t in group_tensors.items():
            assert loaded[group][key].dtype == t.dtype and torch.equal(loaded[group][key], t)
    assert manager.resolve(12) == path == manager.resolve(str(path))


def test_latest_ignores_incomplete_and_resolve_errors(tmp_path, caplog):
    manager = CheckpointManager(tmp_path)
    with pytest.raises(CheckpointNotFoundError, match="no complete checkpoint in"):
        manager.resolve("latest")
    manager.save(1, _tensors(), {"step": 1})
    manager.save(2, _tensors(), {"step": 2})
    (manager.dir / "step-00000002" / "COMPLETE.json").unlink()  # deleted marker -> skipped
    (manager.dir / "step-00000003").mkdir()  # a crash left a bare directory
    assert manager.latest() == manager.dir / "step-00000001"
    assert "ignoring incomplete checkpoint" in caplog.text
    with pytest.raises(CheckpointCorruptError, match=r"step-00000002 is not a complete checkpoint"):
        manager.load(manager.dir / "step-00000002")
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        manager.resolve(tmp_path / "elsewhere")


def test_truncated_or_flipped_file_is_named(tmp_path):
    manager = CheckpointManager(tmp_path)
    path = manager.save(5, _tensors(), {"step": 5})
    model_file = path / "model.safetensors"
    data = model_file.read_bytes()
    model_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointCorruptError, match=r"model.safetensors has \d+ bytes but COMPLETE.json records"):
        manager.load(path)
    flipped = bytearray(data)
    flipped[-1] ^= 0xFF
    model_file.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointCorruptError, match=r"model.safetensors does not match the sha256"):
        manager.load(path)


def test_keep_last_prunes_only_older_complete_checkpoints(tmp_path):
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointManager(tmp_path, keep_last=0)
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in range(1, 6):
        manager.save(step, _tensors(step), {"step": step})
    assert _dirs(manager) == ["step-00000004", "step-00000005"]
    manager.save(5, _tensors(50), {"step": 5, "again": True})  # re-saving a step replaces it atomically
    assert _dirs(manager) == ["step-00000004", "step-00000005"] and manager.load(5)[1]["again"] is True
    manager.save(2, _tensors(2), {"step": 2})  # an older step saved last is never pruned on its own save
    assert _dirs(manager) == ["step-00000002", "step-00000005"]
    assert manager.resolve("step-00000002") == manager.dir / "step-00000002"


def test_enospc_keeps_previous_checkpoint_and_removes_staging(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path)
    previous = manager.save(1, _tensors(), {"step": 1})
    before = {p.name: p.read_bytes() for p in previous.iterdir()}
    real_save = safetensors.torch.save_file
    calls = []

    def failing_save(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:  # the second file of the new checkpoint: disk full
            real_save(tensors, filename, metadata=metadata)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save)
    with pytest.raises(CheckpointWriteError, match=r"no space left on the device while writing checkpoint "
                                                   r"step-00000002 .*checkpoint is step-00000001 \(intact\)") as info:
        manager.save(2, _tensors(1), {"step": 2})
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert _dirs(manager) == ["step-00000001"]  # no final dir, no staging dir
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before
    assert manager.latest() == previous


def test_non_finite_tensors_are_refused_before_writing(tmp_path):
    manager = CheckpointManager(tmp_path)
    bad = _tensors()
    bad["ema"]["w"][1, 2] = float("nan")
    with pytest.raises(NonFiniteCheckpointError, match=r"step-00000004.*ema/w \(nan=1, inf=0\)"):
        manager.save(4, bad, {"step": 4})
    assert not manager.dir.exists() or _dirs(manager) == []
    with pytest.raises(TypeError):
        manager.save(4, _tensors(), {"not json": object()})


def test_stale_staging_dirs_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    root = tmp_path / "checkpoints"
    (root / f"step-00000007.tmp-{dead.pid}").mkdir(parents=True)
    (root / f"step-00000008.tmp-{os.getpid()}").mkdir()  # a live process's staging dir: left alone
    (root / "my-notes").mkdir()  # not ours: left alone
    manager = CheckpointManager(tmp_path)
    assert _dirs(manager) == ["my-notes", f"step-00000008.tmp-{os.getpid()}"]


def _train(model, optimizer, scheduler, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 4, generator=g)
        loss = (model(x) - x.sum(dim=1, keepdim=True)).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()


def _build():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 1))
    unused = torch.nn.Parameter(torch.zeros(2))  # never gets a gradient -> no optimizer state
    optimizer = torch.optim.AdamW([
        {"params": model[0].parameters(), "lr": 1e-2},
        {"params": [*model[2].parameters(), unused], "lr": 3e-3, "betas": (0.8, 0.95), "weight_decay": 0.0},
    ])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 5))
    return model, optimizer, scheduler


def test_adamw_and_scheduler_state_round_trip_exactly(tmp_path):
    model, optimizer, scheduler = _build()
    _train(model, optimizer, scheduler, 3, seed=1)
    opt_tensors, opt_meta = ckpt.flatten_state(optimizer.state_dict())
    manager = CheckpointManager(tmp_path)
    manager.save(3, {"model": model.state_dict(), "optimizer": opt_tensors},
                 {"optimizer": opt_meta, "scheduler": scheduler.state_dict()})

    fresh_model, fresh_opt, fresh_sched = _build()
    tensors, state = manager.load("latest")
    fresh_model.load_state_dict(tensors["model"])
    fresh_opt.load_state_dict(ckpt.unflatten_state(tensors["optimizer"], state["optimizer"]))
    fresh_sched.load_state_dict(state["scheduler"])
    restored = fresh_opt.state_dict()
    original = optimizer.state_dict()
    assert restored["param_groups"] == original["param_groups"]
    assert restored["state"].keys() == original["state"].keys()
    for pid, entry in original["state"].items():
        for key, value in entry.items():
            assert torch.equal(restored["state"][pid][key], value), (pid, key)
    assert fresh_sched.state_dict() == scheduler.state_dict()

    _train(model, optimizer, scheduler, 1, seed=2)
    _train(fresh_model, fresh_opt, fresh_sched, 1, seed=2)
    for a, b in zip(model.parameters(), fresh_model.parameters()):
        assert torch.equal(a, b)


def test_flatten_state_refuses_unknown_types():
    with pytest.raises(TypeError, match=r"at a\.b"):
        ckpt.flatten_state({"a": {"b": object()}})
    tensors, meta = ckpt.flatten_state({"t": (1, 2.5, None), 3: torch.ones(1), "s": "x"})
    assert ckpt.unflatten_state(tensors, json.loads(json.dumps(meta))) == {"t": (1, 2.5, None), 3: torch.ones(1),
                                                                           "s": "x"}


def test_atomic_dir_replaces_and_survives_failures(tmp_path):
    dest = tmp_path / "tokenizer"

    def writer(text):
        def write(d):
            (d / "config.json").write_text(text)
        return write

    atomic_dir(writer("v1"), dest)
    atomic_dir(writer("v2"), dest)
    assert (dest / "config.json").read_text() == "v2"

    def broken(d):
        (d / "config.json").write_text("half")
        raise RuntimeError("crash while exporting")

    with pytest.raises(RuntimeError, match="crash while exporting"):
        atomic_dir(broken, dest)
    assert (dest / "config.json").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer"]
