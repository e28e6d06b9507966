import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maskgit.config import MaskGitConfig
from maskgit.presets import MASKGIT_PRESETS, maskgit_preset
from maskgit.text import TextEmbedding, TinyTextEncoder
from maskgit.transformer import MaskGitTransformer, merge_codes, split_codes
from tests.helpers.models import TEXT_DIM, tiny_maskgit_config


def tiny_model(**overrides) -> MaskGitTransformer:
    torch.manual_seed(0)
    return MaskGitTransformer(tiny_maskgit_config(**overrides)).eval()


@pytest.fixture(scope="module")
def text():
    return TinyTextEncoder(dim=TEXT_DIM).encode(["a red ball bouncing", "clouds", "a cat on a mat"])


# --- config ----------------------------------------------------------------------------------------------------


def test_config_json_round_trip_and_strictness():
    c = tiny_maskgit_config(factorize_codes=False, dropout=0.1)
    again = MaskGitConfig.from_dict(json.loads(json.dumps(c.to_dict())))
    assert again == c and again.latent_shape == (2, 4, 4)
    with pytest.raises(ValueError, match=r"unknown keys in MaskGitConfig: \['dimm'\]"):
        MaskGitConfig.from_dict({**c.to_dict(), "dimm": 3})
    # folders written by earlier versions also hold the training settings: they are ignored, not rejected
    legacy = {**c.to_dict(), "cond_drop_prob": 0.2, "label_smoothing": 0.1}
    assert MaskGitConfig.from_dict(legacy) == c
    assert "cond_drop_prob" not in c.to_dict() and "label_smoothing" not in c.to_dict()


@pytest.mark.parametrize(("field", "value", "match"), [
    ("codebook_size", 1, "codebook_size"),
    ("latent_shape", (2, 4), "latent_shape"),
    ("latent_shape", (2, 0, 4), "latent_shape"),
    ("dim", 0, "dim"),
    ("dropout", 1.5, "dropout"),
    ("factorize_codes", "yes", "factorize_codes"),
])
def test_config_validation(field, value, match):
    with pytest.raises(ValueError, match=match):
        tiny_maskgit_config(**{field: value})


def test_factorisation_rule():
    assert tiny_maskgit_config(codebook_size=2**14).vocab_sizes == (2**14,)
    assert tiny_maskgit_config(codebook_size=2**18).vocab_sizes == (512, 512)
    assert tiny_maskgit_config(codebook_size=2**19).vocab_sizes == (1024, 512)  # odd K: hi gets ceil(K/2) bits
    assert tiny_maskgit_config(codebook_size=2**10, factorize_codes=True).vocab_sizes == (32, 32)
    assert tiny_maskgit_config(codebook_size=2**18, factorize_codes=False).vocab_sizes == (2**18,)
    assert tiny_maskgit_config(codebook_size=64000).vocab_sizes == (64000,)  # FSQ-like, not a power of two
    with pytest.raises(ValueError, match="power-of-two"):
        tiny_maskgit_config(codebook_size=1000, factorize_codes=True)
    c = tiny_maskgit_config(codebook_size=2**18)
    assert c.mask_id == 2**18 and c.seq_len == 32 and c.factorized


def test_explicit_code_factors_for_fsq_levels():
    # FSQ levels (8, 5, 5, 5), most significant first
    c = tiny_maskgit_config(codebook_size=1000, code_factors=[5, 5, 5, 8])
    assert c.vocab_sizes == (5, 5, 5, 8) and c.factorized and c.code_factors == (5, 5, 5, 8)
    assert MaskGitConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert not tiny_maskgit_config(codebook_size=1000, code_factors=(1000,)).factorized
    with pytest.raises(ValueError, match="multiply to 500"):
        tiny_maskgit_config(codebook_size=1000, code_factors=(5, 5, 5, 4))
    with pytest.raises(ValueError, match="ints >= 2"):
        tiny_maskgit_config(codebook_size=1000, code_factors=(1000, 1))
    with pytest.raises(ValueError, match="factorize_codes"):
        tiny_maskgit_config(codebook_size=1000, code_factors=(5, 5, 5, 8), factorize_codes=False)


def test_fsq_code_factors_are_exactly_the_fsq_level_indices():
    from vector_quantize_pytorch import FSQ

    fsq = FSQ(levels=[8, 5, 5, 5])
    codes = torch.arange(1000)
    levels = fsq.indices_to_level_indices(codes)  # (1000, 4), least significant level first
    subs = split_codes(codes, (5, 5, 5, 8))
    for k, sub in enumerate(subs):
        assert torch.equal(sub, levels[:, 3 - k])
    assert torch.equal(merge_codes(subs, (5, 5, 5, 8)), codes)


# --- split / merge ---------------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 2**18 - 1), min_size=1, max_size=64))
def test_split_merge_round_trip_18_bits(values):
    codes = torch.tensor(values)
    hi, lo = split_codes(codes, (512, 512))
    assert torch.equal(hi, codes >> 9) and torch.equal(lo, codes & 511)
    assert torch.equal(merge_codes((hi, lo), (512, 512)), codes)


def test_split_merge_odd_bits_and_mask():
    codes = torch.randint(0, 2**19, (4, 100), generator=torch.Generator().manual_seed(0))
    hi, lo = split_codes(codes, (1024, 512))
    assert int(hi.max()) < 1024 and int(lo.max()) < 512
    assert torch.equal(merge_codes((hi, lo), (1024, 512)), codes)
    masked = torch.tensor([5, 2**19, -1])
    hi, lo = split_codes(masked, (1024, 512))
    assert hi.tolist() == [0, 1024, 1024] and lo.tolist() == [5, 512, 512]
    assert merge_codes((hi, lo), (1024, 512)).tolist() == [5, 2**19, 2**19]
    single = split_codes(torch.tensor([3, 64]), (64,))
    assert len(single) == 1 and single[0].tolist() == [3, 64]


# --- forward ---------------------------------------------------------------------------------------------------


def test_forward_shapes_unfactorised(text):
    model = tiny_model()
    codes = torch.randint(0, 65, (3, 32), generator=torch.Generator().manual_seed(0))
    state = torch.get_rng_state()
    logits = model(codes, text)
    assert torch.equal(torch.get_rng_state(), state)
    assert isinstance(logits, tuple) and len(logits) == 1 and logits[0].shape == (3, 32, 64)  # no mask id logit
    grid_logits = model(codes.view(3, 2, 4, 4), text)
    assert torch.allclose(grid_logits[0], logits[0], atol=1e-6)
    logits, hidden = model(codes, (text.embeds, text.mask), return_embeddings=True)
    assert hidden.shape == (3, 32, 32)


def test_forward_factorised_two_heads_of_512(text):
    model = tiny_model(codebook_size=2**18)
    assert model.vocab_sizes == (512, 512)
    assert model.net.token_emb.emb.num_embeddings == 513 and model.net.embeds["factor1_embed"].num_embeddings == 513
    codes = torch.randint(0, 2**18, (3, 32), generator=torch.Generator().manual_seed(0))
    codes[:, ::3] = 2**18
    logits = model(codes, text)
    assert len(logits) == 2 and all(lg.shape == (3, 32, 512) for lg in logits)
    hi, lo = model.split_codes(codes)
    assert torch.equal(model.merge_codes((hi, lo)), codes)


def test_fewer_latent_frames_and_bad_grids(text):
    model = tiny_model()
    one_frame = torch.randint(0, 64, (3, 16))
    assert model(one_frame, text)[0].shape == (3, 16, 64)
    assert model(torch.randint(0, 64, (3, 1, 2, 2)), text)[0].shape == (3, 4, 64)  # smaller h, w slice the tables
    with pytest.raises(ValueError, match="exceeds"):
        model(torch.randint(0, 64, (3, 48)), text)
    with pytest.raises(ValueError, match="whole number"):
        model(torch.randint(0, 64, (3, 10)), text)


def test_input_validation(text):
    model = tiny_model()
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 64\]"):
        model(torch.full((3, 32), 65), text)
    with pytest.raises(ValueError, match="text_dim"):
        model(torch.zeros(3, 32, dtype=torch.long), TextEmbedding(torch.zeros(3, 2, 8), torch.ones(3, 2).bool()))
    with pytest.raises(ValueError, match="self_condition"):
        model(torch.zeros(3, 32, dtype=torch.long), text, self_cond=torch.zeros(3, 32, 32))


def test_check_compatible_vocab_mismatch():
    model = tiny_model()
    model.check_compatible(64, (2, 4, 4))
    model.check_compatible(64, (1, 4, 4))
    with pytest.raises(ValueError, match="codebook_size 1024 != transformer codebook_size 64"):
        model.check_compatible(1024, (2, 4, 4))
    with pytest.raises(ValueError, match="exceeds"):
        model.check_compatible(64, (3, 4, 4))


def test_dropped_rows_see_only_the_null_embedding(text):
    model = tiny_model()
    codes = torch.randint(0, 65, (3, 32), generator=torch.Generator().manual_seed(1))
    drop = torch.tensor([True, False, True])
    mixed = model(codes, text, drop)[0]
    uncond = model(codes, None)[0]
    garbage = TextEmbedding(torch.randn(3, 9, TEXT_DIM, generator=torch.Generator().manual_seed(2)),
                            torch.ones(3, 9, dtype=torch.bool))
    garbage_dropped = model(codes, garbage, torch.ones(3, dtype=torch.bool))[0]
    assert torch.allclose(mixed[drop], uncond[drop], atol=1e-5)
    assert torch.allclose(mixed[drop], garbage_dropped[drop], atol=1e-5)
    assert not torch.allclose(mixed[1], uncond[1], atol=1e-3)  # the kept row does use its text


def test_gradients_reach_null_text_and_positions(text):
    model = tiny_model()
    model.train()
    codes = torch.randint(0, 65, (3, 32))
    logits = model(codes, text, torch.tensor([True, False, False]))[0]
    logits.logsumexp(-1).sum().backward()
    for p in (model.null_text, model.pos_t, model.pos_h, model.pos_w, model.net.token_emb.emb.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_self_condition_input(text):
    model = tiny_model(self_condition=True)
    codes = torch.randint(0, 65, (3, 32))
    base = model(codes, text)[0]
    with torch.no_grad():  # the projection is zero-initialised: a no-op at first, then it matters
        model.self_cond_proj[1].weight.normal_(generator=torch.Generator().manual_seed(0))
    fed = model(codes, text, self_cond=torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(1)))[0]
    assert base.shape == fed.shape and not torch.allclose(base, fed)


# --- persistence and presets -----------------------------------------------------------------------------------


def test_save_and_from_pretrained_round_trip(text, tmp_path):
    model = tiny_model(factorize_codes=True, self_condition=True).train()
    folder = model.save_pretrained(tmp_path / "transformer")
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "README.md"}  # + model card
    payload = json.loads((folder / "config.json").read_text())
    assert payload["_kind"] == "MaskGitTransformer" and payload["config"] == model.config.to_dict()
    loaded = MaskGitTransformer.from_pretrained(folder)
    assert isinstance(loaded, MaskGitTransformer) and not loaded.training and loaded.config == model.config
    codes = torch.randint(0, 65, (3, 32), generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        for a, b in zip(model(codes, text), loaded(codes, text)):
            assert torch.equal(a, b)


def test_from_pretrained_refuses_other_weights_and_kinds(tmp_path):
    folder = tiny_model().save_pretrained(tmp_path / "a")
    bigger = tiny_model(dim=64).state_dict()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in bigger.items()}, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=r"model\.safetensors: the weights do not match .* has shape"):
        MaskGitTransformer.from_pretrained(folder)
    payload = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**payload, "_kind": "VideoTokenizer"}))
    with pytest.raises(ValueError, match="not a 'MaskGitTransformer'"):
        MaskGitTransformer.from_pretrained(folder)


def test_presets():
    assert list(MASKGIT_PRESETS) == ["tiny", "demo", "base", "paper"]
    assert maskgit_preset("base") == {"dim": 768, "depth": 12, "heads": 12, "dim_head": 64, "ff_mult": 4,
                                      "position_encoding": "both", "text_adaptive_norm": True}
    assert all(maskgit_preset(name)["text_adaptive_norm"] for name in ("demo", "base", "paper"))
    copy = maskgit_preset("tiny")
    copy["dim"] = 999
    assert MASKGIT_PRESETS["tiny"]["dim"] == 32  # a copy, not the table itself
    for name in MASKGIT_PRESETS:
        config = tiny_maskgit_config(**maskgit_preset(name))
        assert config.dim == MASKGIT_PRESETS[name]["dim"]
    with pytest.raises(ValueError, match="tiny, demo, base, paper"):
        maskgit_preset("huge")
