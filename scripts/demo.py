"""The demo behind `make demo`: train both stages on bundled real data, generate videos from text, write a report."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from scripts._cli import ArgumentParser, HelpFormatter, positive_float, run


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="magvit2-demo", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--out", default="runs/demo", help="run folder (must be new or empty)")
    p.add_argument("--data", default="data/demo", help="where the demo data is built (reused when up to date)")
    p.add_argument("--minutes", type=positive_float, default=12.0,
                   help="training minutes: 40%% tokenizer (a third of it on still frames, then clips from the "
                        "inflated image model), 60%% MaskGit (step caps scale with it)")
    p.add_argument("--debian-clips", default="data/debian_clips", help="real clips from scripts/fetch_demo_clips.sh")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", choices=("fsq", "lfq-gan"), default="fsq",
                   help="stage one: FSQ codes without the GAN (what learns fastest in these minutes), or the paper's "
                        "LFQ codes with the entropy and adversarial losses")
    p.add_argument("--finish-by", type=positive_float, default=None, metavar="EPOCH_SECONDS",
                   help="a deadline for the whole demo (seconds since the epoch, as `date +%%s` prints): each training "
                        "stage gets at most what fits before it. `make demo` passes 15 minutes from its own start "
                        "(the install included) unless DEMO_MINUTES is set")
    p.add_argument("--tiny", action="store_true", help="a seconds-long run of the same pipeline (tests)")
    return p


def main_(args: argparse.Namespace) -> None:
    from trainers.demo.run import run_demo

    report = run_demo(args.out, args.data, args.minutes, args.debian_clips, args.seed, args.tiny, args.tokenizer,
                      args.finish_by)
    pf = report["prompt_following"]
    print(f"tokenizer: PSNR {report['tokenizer']['psnr_db']:.2f} dB, usage {report['tokenizer']['codebook_usage']:.1%}"
          f"; maskgit token accuracy {report['maskgit']['val_token_accuracy']:.1%}; prompt following seen digit "
          f"{pf['seen']['digit_acc']:.0%} direction {pf['seen']['direction_acc']:.0%}, held-out digit "
          f"{pf['held_out']['digit_acc']:.0%} direction {pf['held_out']['direction_acc']:.0%}")
    print(f"report: {args.out}/report.md")
    app = Path(sys.executable).with_name("magvit2-app")  # the venv's console script, also without activating it
    command = [str(app) if app.is_file() else "magvit2-app", "--model", str(Path(args.out) / "maskgit")]
    print(f"open the app on this pipeline: {shlex.join(command)}")


def main(argv: list[str] | None = None) -> int:
    return run(main_, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
