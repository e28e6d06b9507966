"""LoRA against a full fine-tune of the same MaskGit pipeline, both through `MaskGitTrainer` (what
`magvit2-train-maskgit --init-from PIPELINE [--lora-rank R]` runs): adapter size on disk against the pipeline's,
trainable parameters, optimizer-state and EMA memory, peak memory while training, and steps/s.

Each (size, method) trains in a fresh process on the same random codes (3x8x8 of the demo tokenizer's 1000 codes)
and the same base pipeline (random weights; the costs do not depend on what the weights are). Peak training memory:
on a GPU, CUDA's max_memory_allocated; on the CPU, where the allocator's RSS says little about what training holds, the
tensors that training holds at its peak: the transformer's parameters + gradients + optimizer state + EMA + the peak of
the activations autograd keeps for the backward (counted with saved_tensors_hooks, each storage once); the process's
peak RSS is printed too. The text encoder is the hash encoder 'tiny:384' (MiniLM's width, none of its memory or
time), so the numbers are the transformer's. steps/s: the median over the logged steps after the first two; the CPU
may be shared, so compare methods only within one run of this script.

    python -m benchmarks.lora [--sizes demo,medium] [--rank 16] [--targets attention] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path
from typing import Any

import torch

SIZES = {  # name: (maskgit architecture, global batch, steps)
    # the demo preset's sizes, with learned positions and no text-adaptive norms (the preset before wave 6)
    "demo": ({"dim": 128, "depth": 4, "heads": 4, "dim_head": 32, "ff_mult": 4}, 16, 20),
    "medium": ({"dim": 256, "depth": 8, "heads": 8, "dim_head": 32, "ff_mult": 4}, 8, 8),
}
TEXT = "tiny:384"
LATENT, CODEBOOK, FRAMES = (3, 8, 8), 1000, 9


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build_inputs(root: Path, size: str) -> dict[str, Path]:
    """The demo tokenizer (random weights), 64 clips of random codes with captions, and a base pipeline."""
    from magvit2 import VideoTokenizer, preset_config
    from maskgit import MaskGitConfig, MaskGitTransformer, PipelineDefaults, TextToVideoPipeline
    from maskgit.text import build_text_encoder
    from trainers.data.codes import CodeShardWriter

    torch.manual_seed(0)
    tokenizer = VideoTokenizer(preset_config("demo"))
    assert tokenizer.latent_shape(FRAMES) == LATENT and tokenizer.codebook_size == CODEBOOK
    tokenizer.save_pretrained(root / "tokenizer")
    writer = CodeShardWriter(root / "codes", codebook_size=CODEBOOK)
    g = torch.Generator().manual_seed(0)
    for i in range(64):
        caption = f"the digit {i % 10} moving {('up', 'left')[i % 2]}"
        writer.add(torch.randint(0, CODEBOOK, LATENT, generator=g), caption, f"clip{i}.mp4")
    writer.close({"tokenizer": "random demo tokenizer", "tokenizer_config": tokenizer.config.to_dict(),
                  "codebook_size": CODEBOOK, "num_frames": FRAMES, "latent_shape": list(LATENT)})
    arch = SIZES[size][0]
    transformer = MaskGitTransformer(MaskGitConfig(codebook_size=CODEBOOK, latent_shape=LATENT, text_dim=384, **arch))
    pipe = TextToVideoPipeline(tokenizer, build_text_encoder(TEXT), transformer, PipelineDefaults(num_frames=FRAMES))
    pipe.save_pretrained(root / "base")
    return {"tokenizer": root / "tokenizer", "codes": root / "codes", "base": root / "base"}


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


class SavedActivations:
    """The bytes autograd holds for the backward (tensors the forward saved; each storage once, parameters left out),
    and their peak over a run: `torch.autograd.graph.saved_tensors_hooks(acts.pack, acts.unpack)`."""

    class Handle:
        __slots__ = ("__weakref__", "tensor")

        def __init__(self, tensor: torch.Tensor) -> None:
            self.tensor = tensor

    def __init__(self, parameters) -> None:
        self.exclude = {p.untyped_storage().data_ptr() for p in parameters}
        self.refs: dict[int, list[int]] = {}  # storage -> [handles alive, bytes]
        self.current = self.peak = 0

    def pack(self, t: torch.Tensor) -> Any:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in self.exclude or t.device.type == "meta":
            return t
        entry = self.refs.setdefault(key, [0, storage.nbytes()])
        if entry[0] == 0:
            self.current += entry[1]
            self.peak = max(self.peak, self.current)
        entry[0] += 1
        handle = self.Handle(t)
        weakref.finalize(handle, self._release, key)
        return handle

    def _release(self, key: int) -> None:
        entry = self.refs[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.current -= entry[1]
            del self.refs[key]

    @staticmethod
    def unpack(handle: Any) -> torch.Tensor:
        return handle.tensor if isinstance(handle, SavedActivations.Handle) else handle


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def probe(root: Path, method: str, batch: int, steps: int, rank: int, targets: str) -> dict[str, Any]:
    """One training run in this process; returns what it measured."""
    from trainers.configs import build_config
    from trainers.logging import read_metrics
    from trainers.maskgit_trainer import MaskGitTrainer

    overrides: dict[str, Any] = {
        "text_encoder": TEXT, "data": {"batch_size": batch, "val_fraction": 0.1, "val_clips": 8},
        "run": {"max_steps": steps, "log_every": 1, "val_every": 10**6, "checkpoint_every": 10**6, "seed": 0}}
    if method == "lora":
        overrides["lora"] = {"rank": rank, "targets": targets}
    config = build_config("maskgit", "demo", overrides=overrides)
    run = root / f"run-{method}"
    trainer = MaskGitTrainer(config, root / "tokenizer", run, codes_dir=root / "codes", init_from=root / "base")
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    acts = SavedActivations(trainer.transformer.parameters())
    with torch.autograd.graph.saved_tensors_hooks(acts.pack, acts.unpack):
        trainer.fit()
    trained = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    state = {"parameters": nbytes(trainer.transformer.parameters()), "gradients": nbytes(trained),
             "optimizer": nbytes(t for s in trainer.optimizer.state.values() for t in s.values() if torch.is_tensor(t)),
             "ema": nbytes(trainer.ema.ema_model.state_dict().values()), "activations": acts.peak}
    tokens = batch * LATENT[0] * LATENT[1] * LATENT[2]
    rates = [r["tokens_per_s"] / tokens for r in read_metrics(run / "metrics.jsonl", kind="train")][2:]
    checkpoint = max((run / "checkpoints").glob("step-*"))
    return {"method": method, "trainable_params": sum(p.numel() for p in trained),
            "transformer_params": sum(p.numel() for p in trainer.transformer.parameters()),
            **{f"{k}_mb": v / 2**20 for k, v in state.items()},
            "peak_training_mb": (torch.cuda.max_memory_allocated() if cuda else sum(state.values())) / 2**20,
            "peak_process_mb": _rss_kb("VmHWM") / 1024, "cuda": cuda, "threads": torch.get_num_threads(),
            "steps_per_s": statistics.median(rates), "export_mb": folder_bytes(run / trainer.export_name) / 2**20,
            "checkpoint_mb": folder_bytes(checkpoint) / 2**20, "base_pipeline_mb": folder_bytes(root / "base") / 2**20,
            "base_transformer_mb": folder_bytes(root / "base" / "transformer") / 2**20}


def measure(size: str, rank: int, targets: str, threads: int | None = None) -> list[dict[str, Any]]:
    _, batch, steps = SIZES[size]
    with tempfile.TemporaryDirectory(prefix=f"bench-lora-{size}-") as tmp:
        root = Path(tmp)
        build_inputs(root, size)
        results = []
        for method in ("full", "lora"):
            cmd = [sys.executable, "-m", "benchmarks.lora", "--probe", method, str(root), "--batch", str(batch),
                   "--steps", str(steps), "--rank", str(rank), "--targets", targets,
                   *(["--threads", str(threads)] if threads else [])]
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
            if done.returncode:
                raise RuntimeError(f"{size}/{method} failed: {done.stderr.strip().splitlines()[-1]}")
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def report(size: str, rank: int, targets: str, results: list[dict[str, Any]]) -> None:
    full, lora = results
    arch, batch, steps = SIZES[size]
    mem = ("CUDA max_memory_allocated" if lora["cuda"] else
           "tensors: parameters + gradients + optimizer + EMA + peak saved activations")
    print(f"\n## LoRA (rank {rank}, alpha {2 * rank}, targets '{targets}') vs full fine-tune: '{size}' transformer "
          f"{json.dumps(arch)} ({full['transformer_params'] / 1e6:.2f}M params), global batch {batch}, {steps} steps, "
          f"3x8x8 codes of {CODEBOOK}, {lora['threads']} thread(s)")
    print("| measure | full fine-tune | LoRA | LoRA / full | target |\n|---|---|---|---|---|")
    rows = [
        ("trainable parameters", f"{full['trainable_params']:,}", f"{lora['trainable_params']:,}",
         lora["trainable_params"] / full["trainable_params"], "-"),
        ("export on disk (MB): pipeline folder vs RUN_DIR/lora/", f"{full['export_mb']:.2f}",
         f"{lora['export_mb']:.3f}", lora["export_mb"] / full["base_pipeline_mb"], "<= 5% of the pipeline"),
        ("  adapter vs the transformer alone (MB)", f"{full['base_transformer_mb']:.2f}", f"{lora['export_mb']:.3f}",
         lora["export_mb"] / full["base_transformer_mb"], "-"),
        ("optimizer state (MB)", f"{full['optimizer_mb']:.2f}", f"{lora['optimizer_mb']:.3f}",
         lora["optimizer_mb"] / full["optimizer_mb"], "<= 5%"),
        ("gradients (MB)", f"{full['gradients_mb']:.2f}", f"{lora['gradients_mb']:.3f}",
         lora["gradients_mb"] / full["gradients_mb"], "-"),
        ("EMA (MB)", f"{full['ema_mb']:.2f}", f"{lora['ema_mb']:.3f}", lora["ema_mb"] / full["ema_mb"], "-"),
        ("activations saved for the backward, peak (MB)", f"{full['activations_mb']:.1f}",
         f"{lora['activations_mb']:.1f}", lora["activations_mb"] / full["activations_mb"], "-"),
        (f"peak training memory (MB; {mem})", f"{full['peak_training_mb']:.1f}", f"{lora['peak_training_mb']:.1f}",
         lora["peak_training_mb"] / full["peak_training_mb"], "<= 0.7x"),
        ("checkpoint on disk (MB)", f"{full['checkpoint_mb']:.2f}", f"{lora['checkpoint_mb']:.3f}",
         lora["checkpoint_mb"] / full["checkpoint_mb"], "-"),
        ("peak RSS of the whole process (MB; CPU allocator, libraries and data included)",
         f"{full['peak_process_mb']:.0f}", f"{lora['peak_process_mb']:.0f}",
         lora["peak_process_mb"] / full["peak_process_mb"], "-"),
        ("steps/s (median)", f"{full['steps_per_s']:.2f}", f"{lora['steps_per_s']:.2f}",
         lora["steps_per_s"] / full["steps_per_s"], ">= 1.2x"),
    ]
    for name, a, b, ratio, target in rows:
        print(f"| {name} | {a} | {b} | {ratio:.3g} | {target} |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="demo,medium")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--targets", default="attention")
    p.add_argument("--threads", type=int, help="torch threads in each run (default: torch's)")
    p.add_argument("--probe", nargs=2, metavar=("METHOD", "DIR"), help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.probe:
        method, root = args.probe
        print(json.dumps(probe(Path(root), method, args.batch, args.steps, args.rank, args.targets)))
        return
    for size in args.sizes.split(","):
        report(size, args.rank, args.targets, measure(size, args.rank, args.targets, args.threads))


if __name__ == "__main__":
    main()
