"""What one process of a torchrun-launched test does (tests/test_distributed.py, tests/test_remote_shards.py).
Usage: python -m tests.distributed_worker entropy|shards|unequal_rows|ddp_settings|horizon|barrier|on_main|silent
DIR."""

from __future__ import annotations

import sys
import weakref
from pathlib import Path

import torch
import torch.distributed as dist


def entropy(folder: Path) -> None:
    """This process's half of the tokens through the LFQ entropy; saves the value and the gradient of its half."""
    from magvit2.config import TokenizerConfig
    from magvit2.quantize import LFQuantizer

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    inputs = torch.load(folder / "inputs.pt")
    quantizer = LFQuantizer(8, TokenizerConfig(image_size=16, codebook_size=2**10)).train()
    quantizer.load_state_dict(inputs["state"])
    n = inputs["z"].shape[0] // world
    z = inputs["z"][rank * n : (rank + 1) * n].clone().requires_grad_(True)
    _, value = quantizer.entropies(z)
    value.backward()
    torch.save({"world_size": world, "entropy": float(value), "grad": z.grad}, folder / f"entropy-{rank}.pt")
    dist.destroy_process_group()


def shards(folder: Path) -> None:
    """One epoch of a packed folder through the prepared loader (global batches of 4, 2 workers per process):
    saves the sample indices this process got, batch by batch."""
    import json

    from accelerate import Accelerator, DataLoaderConfiguration

    from trainers.data.batches import build_dataloader
    from trainers.data.shards import ShardDataset

    acc = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(split_batches=True))
    dataset = ShardDataset(folder / "packed", num_frames=5, image_size=16, max_bad_fraction=0.5)
    loader = acc.prepare(build_dataloader(dataset, 4, seed=0, num_workers=2))
    got = [batch["index"].tolist() for batch in loader]
    report = {"world_size": acc.num_processes, "batches": got, "num_samples": len(dataset)}
    (folder / f"shards-{acc.process_index}.json").write_text(json.dumps(report))
    acc.end_training()


def unequal_rows(folder: Path) -> None:
    """The MaskGit loss under real DDP when this process loaded fewer rows than the other (rank 0: 3 rows, rank 1:
    2 of a 5-row global batch): saves the averaged gradient DDP leaves on each process."""
    from accelerate import Accelerator

    from maskgit.objective import masked_token_loss
    from tests.helpers.models import tiny_transformer
    from trainers.rng import make_generator

    acc = Accelerator(cpu=True)
    rank, world = acc.process_index, acc.num_processes
    inputs = torch.load(folder / "inputs.pt")
    model = acc.prepare(tiny_transformer())
    part = slice(0, 3) if rank == 0 else slice(3, 5)
    codes, text = inputs["codes"][part], (inputs["embeds"][part], inputs["mask"][part])
    loss, _ = masked_token_loss(model, codes, text, make_generator(0, 1), rows=(part.start, 5), replicas=world,
                                self_cond_prob=0.0, config=acc.unwrap_model(model).config)
    loss.backward()
    grad = torch.cat([p.grad.flatten() for p in acc.unwrap_model(model).parameters() if p.grad is not None])
    torch.save({"world_size": world, "grad": grad}, folder / f"rows-{rank}.pt")
    del model  # the DDP reducer before the process group, as trainers.process_group.ProcessGroupRun.close does
    acc.free_memory()
    acc.end_training()


def ddp_settings(folder: Path) -> None:
    """A tiny tokenizer trainer under torchrun: which DDP settings each prepared module got."""
    import json

    from trainers.configs import build_config
    from trainers.tokenizer_trainer import TokenizerTrainer

    config = build_config("tokenizer", "tiny", overrides={"run": {"max_steps": 1}})
    t = TokenizerTrainer(config, [folder / "data"], folder / "run")
    report = {"world_size": t.world_size,
              "g": [type(t.g_forward).__name__, t.g_forward.find_unused_parameters, t.g_forward.broadcast_buffers],
              "d": [type(t.d_forward).__name__, t.d_forward.find_unused_parameters, t.d_forward.broadcast_buffers]}
    wrappers = [weakref.ref(t.g_forward), weakref.ref(t.d_forward)]
    end_training = t.accelerator.end_training

    def record_then_end() -> None:  # were the DDP wrappers (and their reducers) gone before the group was destroyed?
        report["wrappers_alive_at_destroy"] = [w() is not None for w in wrappers]
        end_training()

    t.accelerator.end_training = record_then_end
    t.fit()
    t.close()
    report["after_close"] = [type(t.g_forward).__name__, type(t.d_forward).__name__]
    (folder / f"ddp-{t.rank}.json").write_text(json.dumps(report))


def horizon(folder: Path) -> None:
    """A tiny tokenizer trainer under torchrun with `run.schedule_horizon: max_minutes` whose clock (monkeypatched:
    `minutes` from the step count) runs twice as fast on process 1: saves the horizon and last step each process
    ended with."""
    import json

    import trainers.base
    from trainers.configs import build_config
    from trainers.tokenizer_trainer import TokenizerTrainer

    run = {"max_steps": 1000, "max_minutes": 1.0, "schedule_horizon": "max_minutes", "val_every": 1000,
           "checkpoint_every": 1000}
    t = TokenizerTrainer(build_config("tokenizer", "tiny", overrides={"run": run}), [folder / "data"], folder / "run")
    per_step = 0.05 * (1 + t.rank)  # minutes per update as this process sees them

    class StepClock:
        def minutes(self) -> float:
            return t.step * per_step

    trainers.base.Clock = StepClock
    t.fit()
    report = {"world_size": t.world_size, "horizon": t.horizon.steps, "step": t.step}
    (folder / f"horizon-{t.rank}.json").write_text(json.dumps(report))
    t.close()


def waiting(how: str, folder: Path) -> None:
    """Rank 0 works 10 s alone under a 3 s process-group timeout while rank 1 waits: in a barrier (`barrier`: the
    negative control), through `trainers.rank_zero.on_main` (`on_main`), or for a rank 0 that shows no sign of life
    (`silent`: its heartbeat and result never come). Saves what each process got."""
    import datetime
    import json
    import os
    import time

    from trainers import rank_zero

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=3))
    rank = dist.get_rank()
    outcome: dict = {"world_size": dist.get_world_size()}

    def work() -> str:
        time.sleep(10)
        return "built"

    try:
        if how == "barrier":
            if rank == 0:
                work()
            dist.barrier()
            outcome["value"] = "built"
        else:
            if how == "silent" and rank == 0:
                rank_zero._work = lambda store, key, work, share, beat_every: work()  # no heartbeat, no result
            outcome["value"] = rank_zero.on_main(work, "a 10 s job", share=lambda result: result)
    except Exception as e:
        outcome["error"] = f"{type(e).__name__}: {e}"
    (folder / f"{how}-{rank}.json").write_text(json.dumps(outcome))
    os._exit(0)  # after a timed-out collective, tearing the process group down can hang


if __name__ == "__main__":
    if sys.argv[1] in ("barrier", "on_main", "silent"):
        waiting(sys.argv[1], Path(sys.argv[2]))
    else:
        {"entropy": entropy, "shards": shards, "unequal_rows": unequal_rows,
         "ddp_settings": ddp_settings, "horizon": horizon}[sys.argv[1]](Path(sys.argv[2]))
