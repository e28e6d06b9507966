"""CaptionBank: all captions embedded once when they fit the cache; beyond it, per batch into a bounded LRU cache
with the same embeddings."""

from __future__ import annotations

import torch

from maskgit.text import TinyTextEncoder
from trainers.data.captions import CaptionBank


class Counting(TinyTextEncoder):
    def __init__(self):
        super().__init__(dim=8)
        self.encoded: list[str] = []

    def encode(self, prompts):
        self.encoded += list(prompts)
        return super().encode(prompts)


CAPTIONS = [f"clip number {i} of a cat" for i in range(40)]


def test_small_sets_are_embedded_once_at_construction():
    enc = Counting()
    bank = CaptionBank(enc.encode, CAPTIONS + CAPTIONS[:5], cache_size=100)
    assert not bank.lazy and sorted(enc.encoded) == sorted(CAPTIONS) and len(bank) == 40
    enc.encoded.clear()
    bank.embed(CAPTIONS[3:9])
    assert enc.encoded == []


def test_large_sets_embed_per_batch_with_a_bounded_cache_and_the_same_embeddings():
    eager = CaptionBank(TinyTextEncoder(dim=8).encode, CAPTIONS, cache_size=1000)
    enc = Counting()
    bank = CaptionBank(enc.encode, CAPTIONS, cache_size=10)
    assert bank.lazy and enc.encoded == [] and len(bank) == 0  # nothing embedded at start-up
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        batch = [CAPTIONS[i] for i in torch.randint(0, 40, (6,), generator=gen).tolist()]
        (got, got_mask), (want, want_mask) = bank.embed(batch), eager.embed(batch)
        assert torch.equal(got_mask, want_mask) and torch.allclose(got, want, atol=1e-6)
        assert len(bank) <= 10
    enc.encoded.clear()
    bank.embed(batch)
    assert enc.encoded == []  # the last batch is still cached


def test_the_caption_bank_knows_no_model():
    """Data code -> no model code: importing the bank imports nothing from maskgit (the trainer passes `encode`)."""
    import subprocess
    import sys

    code = ("import sys, trainers.data.captions; bad = sorted(m for m in sys.modules if m.split('.')[0] == 'maskgit'); "
            "assert not bad, bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
