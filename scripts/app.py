"""`magvit2-app`: a browser app on a trained pipeline (argument parsing and one call).

Examples:
    magvit2-app --model runs/demo/maskgit
    magvit2-app --model runs/maskgit/pipeline --port 7861 --out-dir samples/app
    magvit2-app --tokenizer converted/open-magvit2-video      # the Tokenizer tab only
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from scripts._cli import ArgumentParser, HelpFormatter, positive_int, run

DESCRIPTION = """Serve a page with a Generate tab (prompt -> video, the unmasking shown step by step, the
samples.jsonl record and the magvit2-generate command that reproduces it) and a Tokenizer tab (a clip or image ->
its reconstruction, PSNR/SSIM, code map and codebook usage). Works offline; one generation at a time. Needs the
`app` extra: pip install 'magvit2-maskgit[app]'."""


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="magvit2-app", description=DESCRIPTION, formatter_class=HelpFormatter,
                       epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model", metavar="RUN_DIR|PIPELINE_DIR",
                   help="a pipeline folder (pipeline.json), a MaskGit run folder (uses RUN_DIR/pipeline/), or a "
                        "tokenizer folder (the Tokenizer tab only)")
    p.add_argument("--tokenizer", metavar="PATH",
                   help="tokenizer folder or tokenizer run folder for the Tokenizer tab (default: the pipeline's), "
                        "e.g. a converted Open-MAGVIT2 tokenizer")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; anything but a loopback address lets other machines use the app")
    p.add_argument("--port", type=positive_int, default=7860, help="port to bind")
    p.add_argument("--device", metavar="DEVICE", help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    p.add_argument("--out-dir", default="samples", metavar="DIR",
                   help="where videos (NNN-<prompt>.mp4 and .gif), samples.jsonl, unmasking views and "
                        "reconstructions are written (the same files and log as magvit2-generate)")
    p.add_argument("--queue-size", type=positive_int, default=8, metavar="N",
                   help="requests that may wait while one runs; more are refused with a 'queue is full' message")
    p.add_argument("--model-switch", choices=("auto", "on", "off"), default="auto",
                   help="whether the page may load other model folders (auto: only on a loopback --host)")
    p.add_argument("--max-upload", default="200mb", metavar="SIZE", help="largest upload the Tokenizer tab accepts")
    p.add_argument("--allow-outside-paths", action="store_true",
                   help="follow a text-encoder folder or symlinked parts that lie outside the pipeline folder")
    p.add_argument("--allow-pickle-text-encoder", action="store_true",
                   help="let the text encoder load pytorch_model.bin (a pickle) when it has no safetensors weights")
    return p


def _serve(args: argparse.Namespace) -> None:
    from trainers.app.launch import run_app

    if args.model is None and args.tokenizer is None:
        raise ValueError("pass --model RUN_DIR|PIPELINE_DIR (and/or --tokenizer PATH)")
    run_app(args.model, args.tokenizer, host=args.host, port=args.port, device=args.device, out_dir=args.out_dir,
            queue_size=args.queue_size, model_switch=args.model_switch, allow_outside_paths=args.allow_outside_paths,
            allow_pickle_text_encoder=args.allow_pickle_text_encoder, max_upload=args.max_upload)


def main(argv: Sequence[str] | None = None) -> int:
    return run(_serve, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
