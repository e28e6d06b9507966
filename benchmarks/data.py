"""Data at scale: `python -m benchmarks.data [--files N] [--clips N] [--only startup,loader,seek,codes]`.

1. startup: `VideoFolderDataset` start-up on N small generated files (tiny PNGs in 100 folders): the first
   construction (builds the index: every file probed, threads), then a later one (reads the index, stats every
   file, probes nothing) - the target for a later start-up is <= 5 s at 100,000 files.
2. loader: clips/s of the training DataLoader (17-frame 64x64 clips from 96x128 H.264 files) with 0, 2 and 4
   workers.
3. seek: reading 17 frames starting at frame 550 of a 600-frame 256x256 H.264 clip (keyframe every 30): keyframe
   seek + decode forward vs decoding from frame 0.
4. codes: peak RSS of a process that opens N synthetic code clips (latent 5x16x16, 2^10 codes) and draws 50 batches
   of 32 through the DataLoader: shards read lazily (now) vs one int64 tensor (before; only up to 3 GiB of it),
   each in a fresh process.
5. trainer: peak RSS and wall time of `magvit2-train-maskgit` itself (tiny transformer, the test text encoder, 20
   updates of batch 8, the `tiny` recipe's 25% held-out paths) on N code clips of 5x16x16 with a unique caption
   each (so captions are embedded per batch into the bounded cache), in a fresh process.
Each part prints one JSON line; compare numbers only within one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _png_bytes() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 127, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def startup(work: Path, files: int) -> dict:
    from trainers.data.folders import VideoFolderDataset

    root = work / "startup"
    data = _png_bytes()
    for i in range(files):
        sub = root / f"d{i % 100:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i:07d}.png").write_bytes(data)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        ds = VideoFolderDataset(root, num_frames=1, image_size=8)
        times.append(time.perf_counter() - t0)
    return {"part": "startup", "files": files, "usable": len(ds), "first_s": round(times[0], 2),
            "later_s": [round(t, 2) for t in times[1:]]}


def loader(work: Path, clips: int = 48) -> dict:
    from trainers.data.batches import build_dataloader
    from trainers.data.folders import VideoFolderDataset
    from trainers.data.video_io import write_video

    root = work / "loader"
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (96, 160, 3), dtype=np.uint8)
    for i in range(clips):
        frames = np.stack([np.roll(base, 2 * t + i, axis=1)[:, :128] for t in range(48)])  # (48, 96, 128, 3)
        write_video(root / f"{i:03d}.mp4", frames, fps=24)
    ds = VideoFolderDataset(root, num_frames=17, image_size=64, hflip=True)
    out = {"part": "loader", "clips": len(ds), "cpus": os.cpu_count()}
    for workers in (0, 2, 4):
        loader = build_dataloader(ds, batch_size=8, seed=0, num_workers=workers, pin_memory=False)
        t0, n = time.perf_counter(), 0
        for batch in loader:
            n += batch["video"].shape[0]
        out[f"clips_per_s_{workers}_workers"] = round(n / (time.perf_counter() - t0), 1)
    return out


def seek(work: Path) -> dict:
    from fractions import Fraction

    import av

    from trainers.data import video_io as vio

    path = work / "long.mp4"
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (256, 1024, 3), dtype=np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(30))
        s.width, s.height, s.pix_fmt = 256, 256, "yuv420p"
        s.options = {"g": "30", "crf": "23"}
        for t in range(600):
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(base[:, t: t + 256]), format="rgb24")))
        c.mux(s.encode(None))

    def timed(fn, repeats=5):
        fn()
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t0)
        return sorted(runs)[len(runs) // 2]

    seek_s = timed(lambda: vio.read_video(path, start=550, num_frames=17))
    real = vio._read_after_seek
    vio._read_after_seek = lambda *a: None  # force the decode-from-0 path
    try:
        scan_s = timed(lambda: vio.read_video(path, start=550, num_frames=17))
    finally:
        vio._read_after_seek = real
    return {"part": "seek", "frames": 600, "start": 550, "seek_ms": round(seek_s * 1e3, 1),
            "decode_from_0_ms": round(scan_s * 1e3, 1), "speedup": round(scan_s / seek_s, 1)}


CODES_PROBE = r"""
import json, resource, sys, torch
sys.path.insert(0, sys.argv[3])
from trainers.data.batches import build_dataloader
from trainers.data.codes import CodeClips, CodeShardDataset, collate_codes
from safetensors.torch import load_file
folder, mode = sys.argv[1], sys.argv[2]
shards = CodeShardDataset(folder)
if mode == "lazy":
    clips = CodeClips.from_shards(shards)
else:  # what the trainer did before: every shard loaded and concatenated into one int64 tensor
    codes = torch.cat([load_file(f"{folder}/{s['file']}")["codes"] for s in shards.index["shards"]]).long()
    clips = CodeClips(codes, shards.captions, shards.clips.paths)
loader = build_dataloader(clips, 32, seed=0, collate_fn=collate_codes)
for i, batch in zip(range(50), loader):
    pass
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))
"""


def codes(work: Path, clips: int) -> dict:
    import torch

    from trainers.data.codes import write_shard

    folder = work / "codes"
    folder.mkdir(parents=True, exist_ok=True)
    shard_size, shards = 65536, []
    gen = torch.Generator().manual_seed(0)
    for k, start in enumerate(range(0, clips, shard_size)):
        n = min(shard_size, clips - start)
        block = torch.randint(0, 1024, (n, 5, 16, 16), generator=gen, dtype=torch.int16)
        records = [{"path": f"v{(start + i) // 4}.mp4", "caption": f"clip {(start + i) % 1000}", "clip": 0}
                   for i in range(n)]
        shards.append(write_shard(folder, k, block, records))
    index = {"format_version": 1, "codebook_size": 1024, "num_frames": 17, "latent_shape": [5, 16, 16],
             "shards": shards, "num_clips": clips}
    (folder / "index.json").write_text(json.dumps(index))
    out = {"part": "codes", "clips": clips, "disk_mb": sum(p.stat().st_size for p in folder.iterdir()) // 2**20}
    modes = ("lazy", "int64") if clips * 1280 * 8 <= 3 * 2**30 else ("lazy",)  # int64 over 3 GiB: skipped
    for mode in modes:
        res = subprocess.run([sys.executable, "-c", CODES_PROBE, str(folder), mode, str(REPO)], capture_output=True,
                             text=True)
        out[f"{mode}_peak_rss_mb"] = json.loads(res.stdout)["peak_rss_mb"] if res.returncode == 0 else res.stderr[-300:]
    return out


TRAINER_PROBE = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[3])
from scripts.train_maskgit import main
start = time.time()
code = main(["--tokenizer", sys.argv[1] + "/tok", "--codes", sys.argv[1] + "/codes", "--out", sys.argv[2],
             "--preset", "tiny", "--max-steps", "20", "--batch-size", "8", "--config", sys.argv[1] + "/cfg.yaml"])
print(json.dumps({"exit": code, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                  "seconds": round(time.time() - start, 1)}))
"""


def trainer(work: Path, clips: int) -> dict:
    """The MaskGit trainer on `clips` code clips (5x16x16 from a 4x-time, 4x-space tokenizer, 2^10 codes)."""
    import torch

    from magvit2 import VideoTokenizer, preset_config
    from trainers.data.codes import write_shard

    root = work / "trainer"
    layers = ("residual", "compress_space", "compress_space", "compress_time", "compress_time")
    tokenizer = VideoTokenizer(preset_config("tiny", image_size=64, codebook_size=1024, layers=layers))
    tokenizer.save_pretrained(root / "tok")
    folder, shards = root / "codes", []
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    for k, start in enumerate(range(0, clips, 65536)):
        n = min(65536, clips - start)
        block = torch.randint(0, 1024, (n, 5, 16, 16), generator=gen, dtype=torch.int16)
        records = [{"path": f"v{(start + i) // 4}.mp4", "caption": f"clip number {start + i}", "clip": 0}
                   for i in range(n)]
        shards.append(write_shard(folder, k, block, records))
    index = {"format_version": 1, "codebook_size": 1024, "num_frames": 17, "latent_shape": [5, 16, 16],
             "tokenizer_config": tokenizer.config.to_dict(), "shards": shards, "num_clips": clips}
    (folder / "index.json").write_text(json.dumps(index))
    (root / "cfg.yaml").write_text("run:\n  val_every: 1000\n  checkpoint_every: 1000\ndata:\n  val_clips: 4\n")
    res = subprocess.run([sys.executable, "-c", TRAINER_PROBE, str(root), str(root / "run"), str(REPO)],
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    probe = json.loads(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 else {"error": res.stderr[-300:]}
    return {"part": "trainer", "clips": clips, **probe}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=100_000, help="files for the start-up part")
    p.add_argument("--clips", type=int, default=1_000_000, help="code clips for the memory part")
    p.add_argument("--only", default="startup,loader,seek,codes,trainer", help="comma-separated parts")
    args = p.parse_args(argv)
    print(json.dumps({"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}))
    work = Path(tempfile.mkdtemp(prefix="magvit2-bench-data-"))
    try:
        for part in args.only.split(","):
            result = {"startup": lambda: startup(work, args.files), "loader": lambda: loader(work),
                      "seek": lambda: seek(work), "codes": lambda: codes(work, args.clips),
                      "trainer": lambda: trainer(work, args.clips)}[part]()
            print(json.dumps(result), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
