import socket
import time

import pytest
import torch

import maskgit.text_hf as text_hf
from maskgit.text import TextEmbedding, TinyTextEncoder, build_text_encoder
from maskgit.text_hf import HFTextEncoder, TextEncoderNotFoundError, default_text_encoder

MISSING = "no-such-org-xyz/no-such-model-xyz"


@pytest.fixture(scope="module")
def minilm():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        return default_text_encoder()


# --- TextEmbedding ---------------------------------------------------------------------------------------------


def test_text_embedding_validates_and_pads():
    with pytest.raises(ValueError, match="bool"):
        TextEmbedding(torch.zeros(2, 3, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"\(b, m\)"):
        TextEmbedding(torch.zeros(2, 3, 4), torch.ones(2, 4, dtype=torch.bool))
    a = TextEmbedding(torch.ones(1, 2, 4), torch.ones(1, 2, dtype=torch.bool))
    b = TextEmbedding(torch.ones(1, 5, 4), torch.ones(1, 5, dtype=torch.bool))
    both = TextEmbedding.cat([a, b])
    assert both.embeds.shape == (2, 5, 4)
    assert both.mask.sum(-1).tolist() == [2, 5]
    assert torch.all(both.embeds[0, 2:] == 0)
    assert a.expand(3).embeds.shape == (3, 2, 4)
    with pytest.raises(ValueError, match="does not match"):
        both.expand(3)


# --- TinyTextEncoder -------------------------------------------------------------------------------------------


def test_tiny_encoder_shapes_mask_determinism():
    state = torch.get_rng_state()
    enc = TinyTextEncoder(dim=16)
    out = enc.encode(["a red ball", "", "clouds moving over a mountain range"])
    assert torch.equal(torch.get_rng_state(), state)
    assert out.embeds.shape == (3, 7, 16) and out.mask.dtype == torch.bool
    assert out.mask.sum(-1).tolist() == [4, 1, 7]  # BOS + words; "" keeps its BOS token
    assert torch.all(out.embeds[~out.mask] == 0)
    again = TinyTextEncoder(dim=16).encode(["a red ball", "", "clouds moving over a mountain range"])
    assert torch.equal(out.embeds, again.embeds) and torch.equal(out.mask, again.mask)
    other = TinyTextEncoder(dim=16).encode(["a blue ball"]).embeds[0]
    assert not torch.equal(other, out.embeds[0, :4])
    assert torch.equal(other[:2], out.embeds[0, :2])  # same words at the same place -> same embedding
    with pytest.raises(ValueError, match="list of str"):
        enc.encode("a plain string")


def test_build_text_encoder_specs():
    assert isinstance(build_text_encoder("tiny"), TinyTextEncoder)
    tiny = build_text_encoder("tiny:16")
    assert tiny.dim == 16 and tiny.spec == "tiny:16"
    with pytest.raises(ValueError, match="tiny"):
        build_text_encoder("tiny:big")


# --- MiniLM default (offline) ----------------------------------------------------------------------------------


def test_default_minilm_offline(minilm):
    assert minilm.dim == 384 and minilm.spec == "default"
    assert not minilm.training
    assert not any(p.requires_grad for p in minilm.parameters())
    prompts = ["a red ball", "time-lapse of clouds moving over a mountain range at sunset"]
    out = minilm.encode(prompts)
    assert out.embeds.shape[0] == 2 and out.embeds.shape[2] == 384 and out.mask.dtype == torch.bool
    alone = [minilm.encode([p]) for p in prompts]
    lengths = [a.embeds.shape[1] for a in alone]
    assert out.mask.sum(-1).tolist() == lengths and out.embeds.shape[1] == max(lengths)
    assert lengths[0] < lengths[1]
    short = out.embeds[0, : lengths[0]]
    assert torch.allclose(short, alone[0].embeds[0], atol=1e-4)  # padding does not change real tokens
    assert torch.all(out.embeds[0, lengths[0]:] == 0)
    minilm.train()
    assert not minilm.training  # always frozen


def test_build_minilm_aliases(monkeypatch, minilm):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = build_text_encoder("minilm", max_length=8)
    assert enc.dim == 384 and enc.max_length == 8
    assert enc.encode(["one two three four five six seven eight nine ten"]).embeds.shape[1] == 8


def test_local_t5_directory_uses_t5_encoder(tmp_path, minilm, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=len(minilm.tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    T5EncoderModel(config).save_pretrained(tmp_path)
    minilm.tokenizer.save_pretrained(tmp_path)
    enc = HFTextEncoder(str(tmp_path), max_length=16)
    assert type(enc.model).__name__ == "T5EncoderModel" and enc.dim == 16
    out = enc.encode(["a red ball", "a much longer prompt about a red ball"])
    assert out.embeds.shape[::2] == (2, 16) and out.mask.sum(-1)[0] < out.mask.sum(-1)[1]


# --- failing fast ----------------------------------------------------------------------------------------------


def test_missing_hub_name_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(TextEncoderNotFoundError, match="local directory") as err:
        HFTextEncoder(MISSING)
    assert time.perf_counter() - start < 5
    assert "HF_HUB_OFFLINE" in str(err.value)


@pytest.mark.parametrize("how", ["socket", "probe"])
def test_missing_hub_name_fails_fast_online(monkeypatch, how):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    calls = []
    if how == "socket":
        def refuse(address, timeout=None, *args, **kwargs):
            calls.append((address, timeout))
            raise OSError("network unreachable (test)")

        monkeypatch.setattr(socket, "create_connection", refuse)
    else:
        monkeypatch.setattr(text_hf, "hub_reachable", lambda timeout=2.0: calls.append(timeout) or False)
    start = time.perf_counter()
    with pytest.raises(TextEncoderNotFoundError, match="local directory") as err:
        build_text_encoder(MISSING)
    assert time.perf_counter() - start < 5
    assert "unreachable" in str(err.value) and calls
    if how == "socket":
        assert calls[0][0] == ("huggingface.co", 443) and calls[0][1] <= 2.0


def test_missing_local_dir_fails_fast(tmp_path):
    with pytest.raises(TextEncoderNotFoundError, match="no such directory"):
        HFTextEncoder(str(tmp_path / "nope" / "model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextEncoderNotFoundError, match=r"config\.json"):
        HFTextEncoder(str(tmp_path / "empty"))


def test_cached_hub_name_skips_probe(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name: "/cache/config.json")
    monkeypatch.setattr(text_hf, "hub_reachable", lambda timeout=2.0: pytest.fail("probed a cached name"))
    assert text_hf.resolve_hf_source("org/cached-model") == "org/cached-model"
