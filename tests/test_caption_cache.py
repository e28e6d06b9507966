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
    bank = CaptionBank(enc, CAPTIONS + CAPTIONS[:5], cache_size=100)
    assert not bank.lazy and sorted(enc.encoded) == sorted(CAPTIONS) and len(bank) == 40
    enc.encoded.clear()
    bank.embed(CAPTIONS[3:9])
    assert enc.encoded == []


def test_large_sets_embed_per_batch_with_a_bounded_cache_and_the_same_embeddings():
    eager = CaptionBank(TinyTextEncoder(dim=8), CAPTIONS, cache_size=1000)
    enc = Counting()
    bank = CaptionBank(enc, CAPTIONS, cache_size=10)
    assert bank.lazy and enc.encoded == [] and len(bank) == 0  # nothing embedded at start-up
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        batch = [CAPTIONS[i] for i in torch.randint(0, 40, (6,), generator=gen).tolist()]
        got, want = bank.embed(batch), eager.embed(batch)
        assert torch.equal(got.mask, want.mask) and torch.allclose(got.embeds, want.embeds, atol=1e-6)
        assert len(bank) <= 10
    enc.encoded.clear()
    bank.embed(batch)
    assert enc.encoded == []  # the last batch is still cached
