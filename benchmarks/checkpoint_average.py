"""A trained run's export with its weights replaced by the mean of its last checkpoints' online weights (post hoc,
no training): the check of whether a wider average than the run's EMA helps (docs/experiments.md, wave 22).

    python -m benchmarks.checkpoint_average runs/exp/maskgit-x runs/exp/maskgit-x-avg3 --last 3
    python -m benchmarks.checkpoint_average runs/exp/tokenizer-x runs/exp/tokenizer-x-avg3 --last 3

A MaskGit run (RUN/pipeline) gives OUT/pipeline, its transformer averaged; a tokenizer run (RUN/tokenizer) gives
OUT/tokenizer. `--last 1` is the last online weights (the run without its EMA). Judge the result with
`benchmarks.quality sample --pipeline OUT/pipeline` or `evaluate_tokenizer`.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

# what each kind of run exports, and where: (export folder, weights file in it, the checkpoint's online weights)
KINDS = {"pipeline": ("pipeline", "transformer/model.safetensors", "transformer.safetensors"),
         "tokenizer": ("tokenizer", "model.safetensors", "tokenizer.safetensors")}


def average_checkpoints(run: Path, out: Path, last: int) -> list[str]:
    """Write OUT/<export> = RUN/<export> with the mean (in float64) of the last `last` checkpoints' online weights;
    returns the checkpoints averaged. The averaged tensors must be the exported model's, key for key."""
    kind = next((k for k, (folder, _, _) in KINDS.items() if (run / folder).is_dir()), None)
    if kind is None:
        raise ValueError(f"{run} holds neither pipeline/ nor tokenizer/: not a MaskGit or tokenizer run")
    folder, weights, online = KINDS[kind]
    checkpoints = sorted(p for p in (run / "checkpoints").glob("step-*") if (p / online).is_file())[-last:]
    if len(checkpoints) < last:
        raise ValueError(f"{run}: asked for the last {last} checkpoints; found {len(checkpoints)}")
    states = [load_file(p / online) for p in checkpoints]
    exported = load_file(run / folder / weights)
    if any(set(s) != set(exported) for s in states):
        raise ValueError(f"{run}: the checkpoints' tensors are not the exported model's")
    mean = {k: torch.stack([s[k].double() for s in states]).mean(0).to(exported[k].dtype) for k in exported}
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new folder")
    shutil.copytree(run / folder, out / folder)
    save_file(mean, out / folder / weights, metadata={"format": "pt"})
    return [p.name for p in checkpoints]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--last", type=int, default=3, help="how many of the last checkpoints to average (1: no EMA)")
    a = p.parse_args(argv)
    print(a.out, "<- mean of", average_checkpoints(a.run, a.out, a.last))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
