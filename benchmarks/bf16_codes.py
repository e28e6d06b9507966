"""bf16 generation against fp32: the fraction of sampled codes that are identical, same prompts and generators.

`python -m benchmarks.bf16_codes [--steps N] [--device cpu|cuda]`: a pipeline at the demo preset sizes (tokenizer
`demo`: 32x32, 9 frames -> 3x8x8 codes of 1000 FSQ codes; transformer `demo`: 128 x 4; the bundled MiniLM text
encoder), first UNTRAINED, then after N training updates of the transformer (the package's objective, AdamW) on
the codes of 8 captioned camera pans over real photos, so that its logits are peaked as a trained model's are.
Each pipeline generates with its fp32 weights and with `.to(torch.bfloat16)` (tokenizer quantizer stays fp32);
printed: agreement of the codes, sampling (the pipeline's defaults: temperature 1, choice temperature 4.5,
guidance 3) and greedy, with config, versions and machine.

Why untrained and trained differ: an untrained transformer's logits are nearly flat, so bf16 rounding reorders
near-ties and a changed token changes what every later step sees; a trained model's logits separate the top code
from the rest by far more than bf16's rounding, so the trajectories agree.
"""

from __future__ import annotations

import argparse
import copy
import platform
import time

import torch

from magvit2 import VideoTokenizer, preset_config
from maskgit import MaskGitConfig, MaskGitTransformer, PipelineDefaults, TextToVideoPipeline, build_text_encoder
from maskgit.objective import masked_token_loss
from maskgit.presets import maskgit_preset

PROMPTS = ["an astronaut in a white suit", "a cup of coffee", "a cat looking up", "a rocket on the launch pad",
           "a man with a camera", "a handful of coins", "the moon", "a brick wall"]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "brick")


def demo_pipeline(seed: int = 0, text_encoder: str = "default") -> TextToVideoPipeline:
    """An untrained pipeline at the demo preset sizes (deterministic in `seed`)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        tokenizer = VideoTokenizer(preset_config("demo")).eval()
        encoder = build_text_encoder(text_encoder)
        transformer = MaskGitTransformer(MaskGitConfig(
            codebook_size=tokenizer.codebook_size, latent_shape=tokenizer.latent_shape(9), text_dim=encoder.dim,
            **maskgit_preset("demo"))).eval()
    return TextToVideoPipeline(tokenizer, encoder, transformer, PipelineDefaults(num_frames=9))


def pan_codes(pipe: TextToVideoPipeline) -> torch.Tensor:
    """Codes (8, 3, 8, 8) of 9-frame camera pans over scikit-image photos."""
    from tests.helpers.media import real_pan_clip

    video = torch.cat([real_pan_clip(9, 32, photo=p) for p in PHOTOS])  # (8, 3, 9, 32, 32)
    return pipe.tokenizer.tokenize(video)


def train(pipe: TextToVideoPipeline, steps: int, seed: int = 0) -> float:
    """`steps` updates of the transformer on the captioned pan codes; returns the last loss."""
    codes = pan_codes(pipe).flatten(1)  # (8, n)
    text = pipe.text_encoder.encode(PROMPTS)
    model = pipe.transformer.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.98))
    generator = torch.Generator().manual_seed(seed)
    loss = float("nan")
    for _ in range(steps):
        out, _stats = masked_token_loss(model, codes, text, generator, cond_drop_prob=0.1,
                                        grid=tuple(pipe.transformer.config.latent_shape))
        opt.zero_grad(set_to_none=True)
        out.backward()
        opt.step()
        loss = float(out.detach())
    model.eval()
    return loss


def agreement(pipe: TextToVideoPipeline, seeds: int = 2, prompts: list[str] = PROMPTS, **kwargs) -> float:
    """Fraction of equal codes between the fp32 pipeline and a bf16 copy of it (same generators, one per video)."""
    def codes(p: TextToVideoPipeline) -> torch.Tensor:
        return torch.cat([p(prompts, generator=[torch.Generator().manual_seed(1000 * s + i)
                                               for i in range(len(prompts))], output_type="latent",
                            **kwargs).frames for s in range(seeds)])

    half = copy.deepcopy(pipe).to(torch.bfloat16)  # a copy: casting back would leave the fp32 weights rounded
    return float((codes(pipe) == codes(half)).float().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300, help="training updates before the trained measurement")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {platform.machine()} {platform.processor() or ''}, device {args.device}, "
          f"{torch.get_num_threads()} threads")
    pipe = demo_pipeline().to(args.device)
    print(f"pipeline: tokenizer demo {pipe.tokenizer.config.image_size}, codes {tuple(pipe.tokenizer.latent_shape(9))} "
          f"of {pipe.tokenizer.codebook_size}; transformer demo {pipe.transformer.config.dim} x "
          f"{pipe.transformer.config.depth}; text encoder {pipe.text_encoder.name_or_path}; {len(PROMPTS)} prompts x "
          "2 seeds")
    for label in ("untrained", f"trained {args.steps} updates"):
        if label != "untrained":
            start = time.perf_counter()
            loss = train(pipe, args.steps)
            print(f"trained {args.steps} updates in {time.perf_counter() - start:.0f} s, last loss {loss:.3f}")
        sampled = agreement(pipe)
        greedy = agreement(pipe, temperature=0.0, choice_temperature=0.0)
        print(f"{label}: bf16 codes equal to fp32 on {sampled:.2%} of tokens (sampling: temperature 1, choice "
              f"temperature 4.5, guidance 3), {greedy:.2%} (greedy)")


if __name__ == "__main__":
    main()
