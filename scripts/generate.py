"""`magvit2-generate`: prompts -> videos with a trained text-to-video pipeline (argument parsing and a call).

Examples:
    magvit2-generate --model runs/maskgit --prompt "a red digit moving left" --prompt "a blue one moving up"
    magvit2-generate --model runs/maskgit/pipeline --prompt-file prompts.txt --seed 1 --format gif --batch-size 8
    magvit2-generate --model me/tiny-t2v --prompt "the camera pans right" --prime-video clip.mp4 --prime-frames 5
    magvit2-generate --model runs/maskgit --prompt "waves" --num-frames 33 --num-videos-per-prompt 4
    magvit2-generate --model runs/maskgit --lora runs/lora-digits:0.8 --prompt "a seven drifting upward"
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from maskgit.sampler import REFINE_UNITS, UNMASK_ORDERS
from scripts._cli import ArgumentParser, nonnegative_int, positive_float, positive_int, run


def nonnegative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0; got {text}")
    return value


def seed_int(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**63); got {text}")
    return value

DESCRIPTION = """Generate videos from prompts with a TextToVideoPipeline (MagViT2 tokenizer + text encoder +
MaskGit transformer). Videos go to OUT_DIR/NNN-<prompt>.mp4|gif and one JSON line per video (prompt, seed, file,
settings) is appended to OUT_DIR/samples.jsonl. Unset sampling options come from the pipeline's saved defaults.
Video j of a run (prompt-major) uses seed = --seed + j, and is exactly what Python gives with
pipe(prompt, generator=torch.Generator().manual_seed(seed), ...) and the same settings, whatever --batch-size."""


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="magvit2-generate", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="PATH",
                   help="a pipeline folder (holds pipeline.json), a MaskGit run folder (uses RUN_DIR/pipeline/), or a "
                        "Hugging Face Hub repo id (owner/name; the cache first, HF_HUB_OFFLINE=1 honoured)")
    p.add_argument("--prompt", action="extend", nargs="+", metavar="TEXT",
                   help="prompt(s); repeat the flag or pass several")
    p.add_argument("--prompt-file", metavar="FILE", help="UTF-8 text file, one prompt per line (blank lines skipped)")
    p.add_argument("--negative-prompt", metavar="TEXT",
                   help="replaces the null text in the unconditional half of guidance (default: none)")
    p.add_argument("--num-frames", type=positive_int, metavar="N",
                   help="frames per video, 1 + k*f for the tokenizer's time compression f (default: the pipeline's, "
                        "else the longest the model generates at once); longer videos chain overlapping windows, "
                        "each primed on the last latent frames of the previous one")
    p.add_argument("--window-overlap", type=positive_int, metavar="T",
                   help="latent frames each window after the first is primed on (default: half a window)")
    p.add_argument("--num-videos-per-prompt", type=positive_int, default=1, metavar="R",
                   help="videos per prompt, each with its own seed")
    p.add_argument("--batch-size", type=positive_int, default=8, metavar="B",
                   help="videos generated together in one forward per decoding step (does not change the videos)")
    p.add_argument("--steps", type=positive_int, metavar="S", help="MaskGIT decoding steps (default: pipeline's, 12)")
    p.add_argument("--guidance-scale", type=nonnegative_float, nargs="+", metavar="G",
                   help="classifier-free guidance: uncond + G*(cond - uncond), G >= 0; 1 = none, 0 = unconditional; "
                        "two numbers START END ramp linearly over the steps (default: pipeline's, 3.0)")
    p.add_argument("--temperature", type=float, metavar="T",
                   help="token sampling temperature, 0 = greedy (default: pipeline's, 1.0)")
    p.add_argument("--choice-temperature", type=float, metavar="C",
                   help="Gumbel noise on the re-masking confidence, annealed C*(1-r) (default: pipeline's, 4.5)")
    p.add_argument("--top-k", type=positive_int, metavar="K",
                   help="sample among the K most likely codes (default: pipeline's, all)")
    p.add_argument("--unmask-order", choices=UNMASK_ORDERS,
                   help="which sampled codes each step keeps: the most confident (MaskGIT), random ones, the "
                        "earliest latent frame's first, or the next in a shifted Halton order over the latent grid "
                        "(default: pipeline's, confidence)")
    p.add_argument("--refine-steps", type=nonnegative_int, metavar="R",
                   help="refinement rounds after decoding: each redraws a random share of the codes given the rest "
                        "and keeps the more likely one, one model pass each; 0 = none (default: pipeline's)")
    p.add_argument("--refine-ratio", type=positive_float, metavar="P",
                   help="share of the codes each refinement round redraws, in (0, 1] (default: pipeline's, 0.125)")
    p.add_argument("--refine-unit", choices=REFINE_UNITS,
                   help="what a refinement round redraws: a random share of the codes (token), every code of one "
                        "latent frame given the others (frame), or of the frame the model finds least likely given "
                        "the others (worst_frame) (default: pipeline's)")
    p.add_argument("--refine-temperature", type=nonnegative_float, metavar="T",
                   help="temperature of the refinement redraws; 0 = the most likely code (default: pipeline's, "
                        "else --temperature)")
    p.add_argument("--refine-guidance-scale", type=nonnegative_float, metavar="G",
                   help="classifier-free guidance of the refinement rounds; 1 = none (default: pipeline's, else the "
                        "last step's --guidance-scale)")
    p.add_argument("--best-of", type=positive_int, metavar="N",
                   help="decode each video N times and keep the one whose latent frames the model finds most likely "
                        "given each other (N decodes; default: pipeline's, 1)")
    p.add_argument("--seed", type=seed_int, default=0,
                   help="base seed: video j uses torch.Generator().manual_seed(seed + j), recorded in samples.jsonl")
    p.add_argument("--out-dir", default="samples", metavar="DIR", help="output folder (default: samples)")
    p.add_argument("--format", choices=("mp4", "gif"), default="mp4", help="video format (default: mp4)")
    p.add_argument("--fps", type=positive_float, metavar="F", help="frame rate of the files (default: pipeline's, 8)")
    p.add_argument("--prime-video", metavar="FILE",
                   help="video or image whose first frames are kept and continued (image-to-video)")
    p.add_argument("--prime-frames", type=positive_int, metavar="N",
                   help="how many frames of --prime-video to keep, 1 + j*f (default: the most that leave one latent "
                        "frame of the first window to generate)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="weights and activations of the three models (the tokenizer's quantizer stays float32)")
    p.add_argument("--lora", action="append", type=lora_spec, default=[], metavar="PATH[:WEIGHT]",
                   help="a LoRA adapter (folder, LoRA run folder or Hub id) trained on this pipeline, at WEIGHT "
                        "(default 1.0); repeat to combine adapters (needs the [lora] extra)")
    p.add_argument("--device", metavar="DEVICE", help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    p.add_argument("--allow-outside-paths", action="store_true",
                   help="follow a text-encoder folder or a symlinked tokenizer/ or transformer/ that lies outside the "
                        "pipeline folder (refused by default; use only for pipelines you trust)")
    p.add_argument("--allow-pickle-text-encoder", action="store_true",
                   help="let the text encoder load pytorch_model.bin (a pickle) when it has no safetensors weights")
    return p


def _guidance(values: list[float] | None) -> float | tuple[float, float] | None:
    if values is None or len(values) == 1:
        return None if values is None else values[0]
    if len(values) != 2:
        raise ValueError(f"--guidance-scale takes one number or two (START END of a ramp); got {len(values)}")
    return (values[0], values[1])


def lora_spec(text: str) -> tuple[str, float]:
    """'PATH' or 'PATH:WEIGHT' -> (path, weight)."""
    path, _, weight = text.rpartition(":")
    try:
        return (path, float(weight)) if path else (text, 1.0)
    except ValueError:
        return text, 1.0


def _generate(args: argparse.Namespace) -> None:
    from maskgit.pipeline import TextToVideoPipeline
    from trainers.commands.generate import generate_to_files, load_prime_video, resolve_device
    from trainers.data.captions import read_prompts
    from trainers.model_sources import pipeline_dir

    prompts = read_prompts(args.prompt, args.prompt_file)
    if args.prime_frames is not None and args.prime_video is None:
        raise ValueError("--prime-frames needs --prime-video")
    device = resolve_device(args.device)
    model_dir = pipeline_dir(args.model)  # errors name --model
    pipeline = TextToVideoPipeline.from_pretrained(args.model, device=device, torch_dtype=args.dtype,
                                                   allow_outside_paths=args.allow_outside_paths,
                                                   allow_pickle_text_encoder=args.allow_pickle_text_encoder)
    for i, (path, weight) in enumerate(args.lora):
        pipeline.load_lora_weights(path, adapter_name=f"lora{i}", weight=weight)
    settings = pipeline.settings(num_frames=args.num_frames, num_inference_steps=args.steps,
                                 guidance_scale=_guidance(args.guidance_scale), temperature=args.temperature,
                                 choice_temperature=args.choice_temperature, top_k=args.top_k, fps=args.fps,
                                 unmask_order=args.unmask_order, refine_steps=args.refine_steps,
                                 refine_ratio=args.refine_ratio, refine_unit=args.refine_unit,
                                 refine_temperature=args.refine_temperature,
                                 refine_guidance_scale=args.refine_guidance_scale, best_of=args.best_of)
    prime = None if args.prime_video is None else load_prime_video(args.prime_video, pipeline, settings.num_frames,
                                                                    args.prime_frames)
    record = {"model": str(model_dir), "model_arg": str(args.model), "prime_video": args.prime_video,
              "device": str(device), "dtype": args.dtype,
              **({"lora": [{"path": p, "weight": w} for p, w in args.lora]} if args.lora else {})}
    paths = generate_to_files(pipeline, prompts, settings, args.out_dir, seed=args.seed, fmt=args.format,
                              negative_prompt=args.negative_prompt, prime_video=prime, record=record,
                              batch_size=args.batch_size, num_videos_per_prompt=args.num_videos_per_prompt,
                              window_overlap=args.window_overlap)
    for path in paths:
        print(path)


def main(argv: Sequence[str] | None = None) -> int:
    return run(_generate, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
