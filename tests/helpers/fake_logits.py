"""A code-independent stand-in for a MaskGit's logits, and a one-call sampler run on it (tests of maskgit.sampler)."""

import torch

from maskgit.sampler import sample


class FakeLogits:
    """Code-independent logits: table `cond` for conditional rows, `uncond` for the second half of a 2B call."""

    def __init__(self, n, vocab_sizes, batch_size, seed=0, scale=2.0):
        gen = torch.Generator().manual_seed(seed)
        self.cond = [scale * torch.randn(n, v, generator=gen) for v in vocab_sizes]
        self.uncond = [scale * torch.randn(n, v, generator=gen) for v in vocab_sizes]
        self.b = batch_size
        self.rows = []

    def __call__(self, codes):
        self.rows.append(codes.shape[0])
        out = []
        for c, u in zip(self.cond, self.uncond):
            rows = [c] * self.b + ([u] * self.b if codes.shape[0] == 2 * self.b else [])
            out.append(torch.stack(rows))
        return tuple(out)


def run(fn=None, b=3, n=32, vocab=(64,), seed=0, **kwargs):
    fn = fn or FakeLogits(n, vocab, b)
    return sample(fn, b, n, generator=torch.Generator().manual_seed(seed), vocab_sizes=vocab, **kwargs)
