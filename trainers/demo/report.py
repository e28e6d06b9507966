"""Measure a finished demo run and write `report.json` / `report.md` with plots and a contact sheet.

What is measured, and on what:
- tokenizer: the exported EMA tokenizer reconstructs every held-out real clip (`tokenizer/val`: sources never seen
  in training) -> PSNR, SSIM (of the [0, 1] frames: skimage's convention, the one published tables use), codebook
  usage (distinct codes used / codebook size over all their tokens), perplexity;
- maskgit: masked-token accuracy of the EMA transformer on held-out digit clips (the trainer's final validation,
  fixed masks at ratios 0.25-1.0);
- prompt following: videos generated from seen and held-out (digit, direction) prompts are judged by a digit
  classifier trained on the digits data (`DigitJudge`) and by the direction of the object's centre-of-mass track.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from magvit2 import VideoTokenizer
from magvit2.metrics import codebook_usage, psnr, ssim
from magvit2.pixels import to_uint8
from maskgit.pipeline import TextToVideoPipeline
from trainers.data.folders import VideoFolderDataset
from trainers.data.video_write import write_gif, write_video
from trainers.demo.judge import DigitJudge, judge_direction
from trainers.demo.report_notes import (
    STAGE_ONE,
    best_of_note,
    deadline_note,
    frame_mask_note,
    guidance_note,
    maskgit_engine_note,
    order_note,
    refine_note,
    temperature_note,
    update_shortfall,
)
from trainers.logging import read_metrics
from trainers.rng import make_generator

# the quality aims the demo is measured against (issue 18's): report.json / report.md say which are met
AIMS = {"tokenizer.psnr_db": 22.0, "tokenizer.codebook_usage": 0.60,
        **{f"prompt_following.{group}.{key}": aim for group, digit in (("seen", 0.80), ("held_out", 0.50))
           for key, aim in (("digit_acc", digit), ("direction_acc", 0.95), ("frame_consistency", 0.90))}}


@torch.no_grad()
def center_clip_batches(dataset: VideoFolderDataset, batch_size: int):
    """(items, video (b, c, t, h, w) in [-1, 1]) over every clip of `dataset`, in order, from frame 0 of epoch 0."""
    for start in range(0, len(dataset), batch_size):
        items = [dataset[(0, i, -1)] for i in range(start, min(start + batch_size, len(dataset)))]
        yield items, torch.stack([it["video"] for it in items])


def evaluate_tokenizer(tokenizer_dir: Path, val_dir: Path, num_frames: int, batch_size: int = 8) -> dict[str, Any]:
    """Reconstruction quality of the tokenizer on every clip of a held-out folder (center crops from frame 0)."""
    tokenizer = VideoTokenizer.from_pretrained(tokenizer_dir).eval()
    dataset = VideoFolderDataset(val_dir, num_frames=num_frames, image_size=tokenizer.config.image_size,
                                 random_crop=False, include_images=False)
    psnrs, ssims, codes, sources = [], [], [], []
    for items, video in center_clip_batches(dataset, batch_size):
        out = tokenizer.reconstruct(video)
        recon = out.recon.clamp(-1, 1)
        psnrs.append(psnr(recon, video)), ssims.append(ssim(recon, video)), codes.append(out.codes.flatten())
        sources += [it["caption"] or it["path"] for it in items]
    psnr_all, ssim_all = torch.cat(psnrs), torch.cat(ssims)
    usage, perplexity = codebook_usage(torch.cat(codes), tokenizer.codebook_size)
    per_source: dict[str, list[float]] = {}
    for source, value in zip(sources, psnr_all.tolist()):
        per_source.setdefault(source, []).append(value)
    return {"psnr_db": float(psnr_all.mean()), "ssim": float(ssim_all.mean()), "ssim_range": [0.0, 1.0],
            "codebook_usage": float(usage),
            "perplexity": float(perplexity), "codebook_size": tokenizer.codebook_size, "clips": len(dataset),
            "tokens": int(sum(c.numel() for c in codes)), "num_frames": num_frames,
            "image_size": list(tokenizer.config.image_size),
            "psnr_db_by_source": {k: float(np.mean(v)) for k, v in sorted(per_source.items())}}


@torch.no_grad()
def digit_legibility(tokenizer_dir: Path, digits_dir: Path, judge: DigitJudge, num_frames: int,
                     batch_size: int = 16) -> dict[str, Any]:
    """How often the judge reads the right digit in held-out digit clips and in the tokenizer's reconstructions of
    them: the ceiling that prompt following can reach with this tokenizer."""
    tokenizer = VideoTokenizer.from_pretrained(tokenizer_dir).eval()
    records = {json.loads(line)["file_name"]: json.loads(line)
               for line in (digits_dir / "metadata.jsonl").read_text().splitlines() if line.strip()}
    dataset = VideoFolderDataset(digits_dir, num_frames=num_frames, image_size=tokenizer.config.image_size,
                                 random_crop=False, include_images=False)
    hits = {"truth": 0, "recon": 0}
    consistent = {"truth": 0, "recon": 0}
    for items, video in center_clip_batches(dataset, batch_size):
        recon = tokenizer(video).clamp(-1, 1)
        for it, clip, rec in zip(items, video, recon):
            digit = records[it["path"]]["digit"]
            for key, frames in (("truth", clip), ("recon", rec)):
                hits[key] += judge.judge_digit(frames)[0] == digit
                consistent[key] += judge.frame_consistent(frames)
    n = len(dataset)
    return {"clips": n, "ground_truth_digit_acc": hits["truth"] / n, "reconstructed_digit_acc": hits["recon"] / n,
            "ground_truth_frame_consistency": consistent["truth"] / n,
            "reconstructed_frame_consistency": consistent["recon"] / n}


def judged_jobs(prompts: dict, per_seen: int, per_heldout: int) -> list[tuple[str, dict]]:
    """(group, prompt record) per video to generate, in order: `per_seen` per seen prompt, then `per_heldout` per
    held-out prompt (prompts: the data's prompts.json, "seen" / "heldout" lists)."""
    return [(group, p) for group, n in (("seen", per_seen), ("held_out", per_heldout))
            for p in prompts["seen" if group == "seen" else "heldout"] for _ in range(n)]


@torch.no_grad()
def generate_and_judge(pipeline_dir: Path | TextToVideoPipeline, prompts: dict, out_dir: Path, judge: DigitJudge,
                       per_seen: int, per_heldout: int, seed: int, batch_size: int = 16, **settings: Any
                       ) -> tuple[dict[str, Any], list[dict]]:
    """Generate `per_seen` videos per seen prompt and `per_heldout` per held-out prompt; judge each one. The pipeline
    is a folder or one already loaded (e.g. with a LoRA adapter); `settings`: sampling settings for the pipeline call
    (default: the pipeline's own)."""
    pipeline = (pipeline_dir if isinstance(pipeline_dir, TextToVideoPipeline)
                else TextToVideoPipeline.from_pretrained(pipeline_dir))
    pipeline.defaults = pipeline.settings(**settings)
    jobs = judged_jobs(prompts, per_seen, per_heldout)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        videos = pipeline([p["prompt"] for _, p in chunk], generator=make_generator(seed, start),
                          output_type="pt").frames
        for offset, ((group, p), video) in enumerate(zip(chunk, videos)):
            index = start + offset
            frames = to_uint8(video)  # (t, h, w, 3)
            name = f"{index:03d}-{group}-{p['digit']}-{p['direction']}"
            write_video(out_dir / f"{name}.mp4", frames, fps=pipeline.defaults.fps)
            write_gif(out_dir / f"{name}.gif", frames, fps=pipeline.defaults.fps)
            digit, digit_conf = judge.judge_digit(frames)
            direction, dir_conf = judge_direction(frames)
            per_frame = judge.frame_predictions(frames)  # one digit per frame where an object is visible
            consistent = judge.frame_consistent(frames)
            records.append({"file": f"{name}.mp4", "group": group, "prompt": p["prompt"], "digit": p["digit"],
                            "direction": p["direction"], "judged_digit": int(digit), "judged_direction": direction,
                            "digit_confidence": float(digit_conf), "direction_confidence": float(dir_conf),
                            "frame_digits": per_frame.tolist(), "frame_consistent": bool(consistent)})
    (out_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    scores = {}
    for group in ("seen", "held_out"):
        rows = [r for r in records if r["group"] == group]
        digit_ok = [r["judged_digit"] == r["digit"] for r in rows]
        dir_ok = [r["judged_direction"] == r["direction"] for r in rows]
        scores[group] = {"digit_acc": float(np.mean(digit_ok)), "direction_acc": float(np.mean(dir_ok)),
                         "joint_acc": float(np.mean([a and b for a, b in zip(digit_ok, dir_ok)])),
                         "frame_consistency": float(np.mean([r["frame_consistent"] for r in rows])), "n": len(rows)}
    settings = pipeline.settings()
    scores["settings"] = {"num_inference_steps": settings.num_inference_steps,
                          "guidance_scale": settings.guidance_scale, "temperature": settings.temperature,
                          "choice_temperature": settings.choice_temperature, "refine_steps": settings.refine_steps,
                          "refine_ratio": settings.refine_ratio, "refine_unit": settings.refine_unit,
                          "refine_temperature": settings.refine_temperature,
                          "refine_guidance_scale": settings.refine_guidance_scale, "best_of": settings.best_of,
                          "unmask_order": settings.unmask_order, "seed": seed}
    return scores, records


def contact_sheet(records: list[dict], sample_dir: Path, path: Path, frames_shown: int = 5, scale: int = 2) -> Path:
    """One PNG: a row per generated video (evenly spaced frames), labelled with its prompt and the judges' verdict."""
    from trainers.data.video_io import read_video

    rows = []
    for r in records:
        video = read_video(sample_dir / r["file"])  # (t, h, w, 3)
        picks = np.linspace(0, len(video) - 1, frames_shown).round().astype(int)
        strip = np.concatenate([np.pad(video[i], ((1, 1), (1, 1), (0, 0))) for i in picks], axis=1)
        rows.append((strip, r))
    h, w = rows[0][0].shape[:2]
    label_w = 260
    sheet = Image.new("RGB", (w * scale + label_w, h * scale * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (strip, r) in enumerate(rows):
        sheet.paste(Image.fromarray(strip).resize((w * scale, h * scale), Image.NEAREST), (0, i * h * scale))
        ok = "ok" if r["judged_digit"] == r["digit"] and r["judged_direction"] == r["direction"] else "x"
        text = f"[{r['group']}] {r['prompt'].removeprefix('the ').removeprefix('digit ')}\n -> {r['judged_digit']} " \
               f"{r['judged_direction']} ({ok})"
        draw.text((w * scale + 6, i * h * scale + 4), text, fill=(0, 0, 0))
    sheet.save(path)
    return path


def showcase_gif(records: list[dict], sample_dir: Path, path: Path, per_row: int = 5, scale: int = 3,
                 fps: float = 4) -> tuple[Path, list[dict]]:
    """An animated GIF tiling generated videos: the first seen-prompt video of each digit, then the first
    held-out one of each digit, `per_row` per row, upscaled `scale`x. Returns the path and the records shown
    (in reading order, so a caption can list the prompts)."""
    from trainers.data.video_io import read_video

    shown, taken = [], set()
    for group in ("seen", "held_out"):
        for r in records:
            if r["group"] == group and (group, r["digit"]) not in taken:
                taken.add((group, r["digit"]))
                shown.append(r)
    videos = [read_video(sample_dir / r["file"]) for r in shown]  # each (t, h, w, 3)
    t, h, w, _ = videos[0].shape
    rows = -(-len(videos) // per_row)
    pad = 2
    grid = np.full((t, rows * (h + pad) + pad, per_row * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, video in enumerate(videos):
        top, left = pad + (i // per_row) * (h + pad), pad + (i % per_row) * (w + pad)
        grid[:, top : top + h, left : left + w] = video
    grid = grid.repeat(scale, axis=1).repeat(scale, axis=2)
    write_gif(path, grid, fps=fps)
    return path, shown


def plot_curves(run_dir: Path, keys: list[str], path: Path, title: str) -> Path | None:
    """Loss curves from a run's metrics.jsonl (train records; the last record per step wins after a resume)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_step = {r["step"]: r for r in read_metrics(run_dir / "metrics.jsonl", kind="train")}
    val = {r["step"]: r for r in read_metrics(run_dir / "metrics.jsonl", kind="val")}
    if not by_step:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2))
    for ax, key in zip(np.atleast_1d(axes), keys):
        steps = sorted(s for s in by_step if key in by_step[s])
        ax.plot(steps, [by_step[s][key] for s in steps], lw=1, label="train")
        vkey = key.removeprefix("generator.")
        vsteps = sorted(s for s in val if vkey in val[s])
        if vsteps:
            ax.plot(vsteps, [val[s][vkey] for s in vsteps], "o-", lw=1, label="validation")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def environment() -> dict[str, Any]:
    import os

    from magvit2.serialization import package_version

    return {"package": package_version(), "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "processor": platform.processor() or "unknown",
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def aims_met(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{key: {"value", "aim", "met"}} for every `AIMS` key (dotted paths into the report)."""
    out = {}
    for key, target in AIMS.items():
        value: Any = report
        for part in key.split("."):
            value = value[part]
        out[key] = {"value": value, "aim": target, "met": bool(value >= target)}
    return out


def shortfall_args(report: dict[str, Any]) -> tuple[dict[str, int], float, dict[str, Any]]:
    """`update_shortfall`'s arguments from a report: each stage's updates (stage one: on clips), the training
    minutes, and what the deadline gave each stage."""
    steps = {"tokenizer": report["tokenizer"]["steps"], "maskgit": report["maskgit"]["steps"]}
    settings = report["settings"]
    return steps, settings["minutes_budget"], settings.get("training_minutes_given") or {}


def write_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """report.json (everything) and report.md (the tables people read)."""
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    tok, mg, pf, mins = report["tokenizer"], report["maskgit"], report["prompt_following"], report["minutes"]
    legible = pf["legibility"]
    lines = [
        "# magvit2-maskgit demo report", "",
        f"Trained on this machine ({report['environment']['cpu_count']} CPU cores, torch "
        f"{report['environment']['torch']}, no downloads): a MagViT2 tokenizer"
        f"{' (bf16 autocast)' if tok.get('mixed_precision') == 'bf16' else ''} for {tok.get('image_steps', 0)} "
        f"steps on still frames and {tok['steps']} on clips "
        f"({mins['tokenizer']:.1f} min), then a text-conditioned MaskGit{maskgit_engine_note(mg)} on its codes for "
        f"{mg['steps']} steps "
        f"({mins['maskgit']:.1f} min). Total wall time {mins['total']:.1f} min.{deadline_note(report['settings'])}"
        f"{'' if report['settings'].get('tiny') else update_shortfall(*shortfall_args(report))}",
        "",
        "## Tokenizer (held-out real clips)", "",
        STAGE_ONE[report["settings"].get("tokenizer", "fsq")], "",
        f"{tok['clips']} clips of {tok['num_frames']} frames at {tok['image_size'][0]}x{tok['image_size'][1]} from "
        "sources never seen in training (photos with camera moves, and real video when the Debian clips are "
        f"present), {tok['tokens']} tokens.", "",
        "| metric | value |", "|---|---|",
        f"| PSNR | {tok['psnr_db']:.2f} dB |",
        f"| SSIM (of the [0, 1] frames, skimage's convention: Gaussian 11, sigma 1.5) | {tok['ssim']:.3f} |",
        f"| codebook usage | {tok['codebook_usage']:.1%} of {tok['codebook_size']} codes |",
        f"| perplexity | {tok['perplexity']:.0f} |", "",
        "| held-out source | PSNR (dB) |", "|---|---|",
        *[f"| {k} | {v:.2f} |" for k, v in tok["psnr_db_by_source"].items()], "",
        "## MaskGit (held-out digit clips)", "",
        f"Masked-token accuracy of the EMA model, fixed masks: **{mg['val_token_accuracy']:.1%}** (mean over mask "
        f"ratios {', '.join(mg['accuracy_by_ratio'])}: "
        f"{', '.join(f'{v:.1%}' for v in mg['accuracy_by_ratio'].values())}); validation loss {mg['val_loss']:.3f}; "
        f"{mg['steps']} updates on {mg['train_clips']:,} training clips{frame_mask_note(mg.get('frame_mask_prob'))}.",
        "", "## Prompt following", "",
        f"Videos generated from prompts ({pf['settings']['num_inference_steps']} steps"
        f"{refine_note(pf['settings'])}, guidance "
        f"{guidance_note(pf['settings']['guidance_scale'])}{temperature_note(pf['settings'])}"
        f"{best_of_note(pf['settings'])}{order_note(pf['settings'])}), judged by a digit "
        "classifier trained on the digits data (its own "
        f"accuracy on unseen handwriting: {pf['judge']['digit_val_accuracy']:.1%}) and by the direction of the "
        "centre-of-mass track. Held-out prompts pair a digit with a direction it never moves in during training.", "",
        "| prompts | videos | digit accuracy | direction accuracy | both | frame consistency |",
        "|---|---|---|---|---|---|",
        *[f"| {g.replace('_', '-')} | {pf[g]['n']} | {pf[g]['digit_acc']:.1%} | {pf[g]['direction_acc']:.1%} | "
          f"{pf[g]['joint_acc']:.1%} | {pf[g]['frame_consistency']:.1%} |" for g in ("seen", "held_out")],
        "| chance | | 10% | 25% | 2.5% | |", "",
        "Frame consistency: the share of videos whose judged digit is the same in every frame (the judge reads each "
        "frame on its own; a frame where it finds no object counts as inconsistent).", "",
        f"The ceiling this tokenizer sets: the judge reads the right digit in {legible['ground_truth_digit_acc']:.1%} "
        f"of {legible['clips']} held-out digit clips and in {legible['reconstructed_digit_acc']:.1%} of the "
        "tokenizer's reconstructions of them; the same digit in every frame in "
        f"{legible['ground_truth_frame_consistency']:.1%} of the clips and "
        f"{legible['reconstructed_frame_consistency']:.1%} of the reconstructions.", "",
        "![generated](samples/showcase.gif)", "",
        "Prompts, row by row: " + "; ".join(f"{i + 1}. {p}" for i, p in enumerate(report["showcase"]["prompts"])),
        "", "Every sample, with the judges' verdicts: `samples/contact_sheet.png`.", "",
        "## Aims", "", "| quantity | measured | aim | met |", "|---|---|---|---|",
        *[f"| {k} | {v['value'] if not isinstance(v['value'], float) else round(v['value'], 3)} | {v['aim']} | "
          f"{'yes' if v['met'] else 'no'} |" for k, v in report["aims"].items()], "",
        "## Minutes per stage", "", "| stage | minutes |", "|---|---|",
        *[f"| {k} | {v:.2f} |" for k, v in mins.items()], "",
        "Loss curves: `tokenizer_curves.png`, `maskgit_curves.png`. Raw numbers: `report.json`.", "",
    ]
    (out_dir / "report.md").write_text("\n".join(lines))
    return out_dir / "report.json", out_dir / "report.md"
