"""LFQ vs FSQ under a fixed CPU time budget: which quantizer lets the demo tokenizer learn digit shapes in minutes?

Trains the `demo` tokenizer architecture from scratch for `--minutes` on the demo's training clips (moving digits +
real photo clips, 9 frames, 32x32, batch 8, Adam 1e-3; reconstruction + the quantizer's own aux loss), once per
quantizer, then reports on held-out data: digit PSNR, the share of reconstructed digit clips the demo's digit judge
reads correctly (its accuracy on the originals is ~98%), held-out photo PSNR and codebook usage.

    python -m benchmarks.quantizer_budget --minutes 5      # needs `python -m scripts.build_demo_data --out data/demo`

Measured on 2 CPU cores (torch 2.13 CPU), 5 minutes each, seed 0 (with the earlier demo digits: 14 px, free
sub-pixel positions, travelling 14 px):
    LFQ 2^10 (entropy 0.1, commitment 0.25)  643 steps  digit PSNR 19.1  digits read 19%  photo PSNR 14.6  usage 82%
    FSQ (8, 5, 5, 5) = 1000 codes             672 steps  digit PSNR 22.0  digits read 65%  photo PSNR 16.8  usage 40%
    FSQ (7, 5, 5, 5, 5) = 4375 codes          685 steps  digit PSNR 22.2  digits read 59%  photo PSNR 16.8  usage 21%
The same runs at 2 minutes are noisy across seeds (digit shapes appear around then); LFQ's entropy/commitment terms
slow early shape learning, and the package default stays LFQ (paper defaults) for long GPU runs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from magvit2 import VideoTokenizer, preset_config
from magvit2.metrics import codebook_usage, psnr
from magvit2.pixels import to_uint8
from trainers.data.folders import VideoFolderDataset
from trainers.demo.judge import DigitJudge

QUANTIZERS = {
    "lfq-2^10": dict(use_fsq=False, fsq_levels=None, codebook_size=2**10),
    "fsq-8555": dict(use_fsq=True, fsq_levels=(8, 5, 5, 5), codebook_size=None),
    "fsq-75555": dict(use_fsq=True, fsq_levels=(7, 5, 5, 5, 5), codebook_size=None),
}


def load(folder: Path, frames: int) -> tuple[torch.Tensor, VideoFolderDataset]:
    ds = VideoFolderDataset(folder, num_frames=frames, image_size=32, random_crop=False, include_images=False)
    return torch.stack([ds[(0, i, -1)]["video"] for i in range(len(ds))]), ds


def run(name: str, data: Path, minutes: float, seed: int, frames: int = 9) -> dict:
    torch.manual_seed(seed)
    train = torch.cat([load(data / "digits/train", frames)[0], load(data / "tokenizer/train", frames)[0]])
    val, val_ds = load(data / "digits/val", frames)
    meta = {json.loads(line)["file_name"]: json.loads(line)
            for line in (data / "digits/val/metadata.jsonl").read_text().splitlines()}
    tok = VideoTokenizer(preset_config("demo", **QUANTIZERS[name]))
    opt = torch.optim.Adam(tok.parameters(), lr=1e-3, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(seed)
    step, start = 0, time.monotonic()
    while time.monotonic() - start < minutes * 60:
        x = train[torch.randint(0, len(train), (8,), generator=gen)]
        out = tok.reconstruct(x, step=step)
        loss = (out.recon - x).square().mean() + out.quantizer.aux_loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tok.parameters(), 1.0)
        opt.step()
        step += 1
    tok.eval()
    judge = DigitJudge(seed=0)
    read, psnrs = 0, []
    with torch.no_grad():
        for i, path in enumerate(val_ds.paths):
            recon = tok(val[i : i + 1]).clamp(-1, 1)
            psnrs.append(float(psnr(recon, val[i : i + 1])))
            read += judge.judge_digit(to_uint8(recon[0]))[0] == meta[path]["digit"]
        photos, _ = load(data / "tokenizer/val", frames)
        out = tok.reconstruct(photos)
        photo_psnr = psnr(out.recon.clamp(-1, 1), photos)
    return {"quantizer": name, "steps": step, "digit_psnr_db": float(np.mean(psnrs)),
            "digits_read": read / len(val_ds), "photo_psnr_db": float(photo_psnr.mean()),
            "codebook_usage": float(codebook_usage(out.codes, tok.codebook_size)[0])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=Path("data/demo"))
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quantizers", nargs="+", default=list(QUANTIZERS), choices=list(QUANTIZERS))
    args = p.parse_args()
    print(f"# quantizer under a {args.minutes}-minute CPU budget (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)")
    for name in args.quantizers:
        print(json.dumps(run(name, args.data, args.minutes, args.seed)), flush=True)


if __name__ == "__main__":
    main()
