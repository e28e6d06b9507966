"""LoRA adapters in a pipeline (maskgit.lora, maskgit.lora_loader): weight 0, unload and disable give the base's
outputs exactly; fused equals unfused within 1e-5 and unfusing restores the base bit for bit; adapters compose and
switch; an adapter of another base is refused with one line naming both; the adapter folder round-trips, peft's own
PeftModel reads it, and Hub ids / LoRA run folders resolve; push_to_hub's card names the base; without peft every
entry point says how to install it in one line; magvit2-generate --lora PATH[:WEIGHT]."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch

from maskgit.lora import LoraAdapter, LoraSettings, adapter_parameters, add_lora, base_state_dict, weights_sha256
from maskgit.text import TinyTextEncoder
from tests.helpers.hub import put_in_cache
from tests.helpers.models import TEXT_DIM, build_pipeline, gen


def make_adapter(pipe, seed: int = 1, settings: LoraSettings | None = None, name: str = "tiny-base") -> LoraAdapter:
    """An adapter for `pipe`'s transformer with random (non-zero) B, so it changes the outputs."""
    settings = settings or LoraSettings(rank=4, targets="attention+ff")
    model = copy.deepcopy(pipe.transformer)
    base = {"name_or_path": name, "transformer_sha256": weights_sha256(base_state_dict(model))}
    add_lora(model, settings)
    weights = adapter_parameters(model)
    g = torch.Generator().manual_seed(seed)
    tensors = {k: torch.randn(v.shape, generator=g) * 0.3 for k, v in weights.items()}
    return LoraAdapter(settings.peft_config(name), tensors, base, training={"step": 3})


@pytest.fixture
def pipe():
    pipe = build_pipeline()
    pipe.name_or_path = "tiny-base"
    return pipe


def logits(pipe) -> torch.Tensor:
    """The transformer's logits on fixed half-masked codes and prompts (eval mode)."""
    g = torch.Generator().manual_seed(0)
    n = pipe.transformer.config.seq_len
    codes = torch.randint(0, pipe.transformer.config.codebook_size, (2, n), generator=g)
    codes[:, ::2] = pipe.transformer.mask_id
    text = TinyTextEncoder(dim=TEXT_DIM).encode(["a red ball", "a cup of coffee"])
    pipe.transformer.eval()
    with torch.no_grad():
        return pipe.transformer(codes, text)[0]


def latents(pipe) -> torch.Tensor:
    return pipe(["a red ball", "a dog"], generator=gen(3), output_type="latent").frames


def state(pipe) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in pipe.transformer.state_dict().items()}


def test_weight_zero_disable_and_unload_give_the_base_outputs_exactly(pipe):
    base_logits, base_latents, base_state = logits(pipe), latents(pipe), state(pipe)
    name = pipe.load_lora_weights(make_adapter(pipe), adapter_name="digits")
    assert name == "digits" and pipe.get_active_adapters() == ["digits"]
    assert pipe.get_list_adapters() == {"transformer": ["digits"]}
    with_lora = logits(pipe)
    assert (with_lora - base_logits).abs().max() > 1e-3  # the adapter does something
    pipe.set_adapters("digits", adapter_weights=0.0)
    assert torch.equal(logits(pipe), base_logits)
    assert torch.equal(latents(pipe), base_latents)
    pipe.set_adapters(["digits"], [1.0])
    assert torch.equal(logits(pipe), with_lora)
    pipe.disable_lora()
    assert torch.equal(logits(pipe), base_logits) and pipe.get_active_adapters() == []
    pipe.enable_lora()
    assert torch.equal(logits(pipe), with_lora)
    pipe.unload_lora_weights()
    after = state(pipe)
    assert after.keys() == base_state.keys() and all(torch.equal(after[k], base_state[k]) for k in after)
    assert torch.equal(logits(pipe), base_logits) and torch.equal(latents(pipe), base_latents)
    assert not hasattr(pipe.transformer, "peft_config") and pipe.get_list_adapters() == {}
    assert all(p.requires_grad for p in pipe.transformer.parameters())  # the base's flags are back


def test_fused_equals_unfused_and_unfuse_restores_the_base_bit_for_bit(pipe):
    base_state = state(pipe)
    pipe.load_lora_weights(make_adapter(pipe), adapter_name="a", weight=0.7)
    unfused = logits(pipe)
    pipe.fuse_lora()
    fused = logits(pipe)
    assert (fused - unfused).abs().max() <= 1e-5
    assert not torch.equal(pipe.transformer.state_dict()["heads.0.weight"], torch.zeros(1))  # (sanity)
    changed = [k for k, v in base_state_dict(pipe.transformer).items() if not torch.equal(v, base_state[k])]
    assert changed and all(k.endswith("weight") for k in changed)  # the update is in the base weights now
    with pytest.raises(ValueError, match="unfuse_lora"):
        pipe.load_lora_weights(make_adapter(build_pipeline(), seed=2), adapter_name="b")
    pipe.unfuse_lora()
    assert all(torch.equal(v, base_state[k]) for k, v in base_state_dict(pipe.transformer).items())
    assert torch.equal(logits(pipe), unfused)
    # fuse + unload keeps the update in the weights (diffusers' way to save a merged pipeline)
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    assert (logits(pipe) - unfused).abs().max() <= 1e-5


def test_two_adapters_compose_and_switch(pipe):
    a, b = make_adapter(pipe, seed=1), make_adapter(pipe, seed=2, settings=LoraSettings(rank=2))
    only_a = build_pipeline()
    only_a.load_lora_weights(a, adapter_name="a", weight=0.5)
    pipe.load_lora_weights(a, adapter_name="a", weight=0.5)
    pipe.load_lora_weights(b, adapter_name="b")
    assert pipe.get_active_adapters() == ["a", "b"]
    both = logits(pipe)
    assert not torch.equal(both, logits(only_a))
    pipe.set_adapters(["a"], adapter_weights=[0.5])
    assert torch.equal(logits(pipe), logits(only_a))
    pipe.set_adapters(["a", "b"], [0.5, 1.0])
    assert torch.equal(logits(pipe), both)
    pipe.delete_adapters("b")
    assert pipe.get_list_adapters() == {"transformer": ["a"]} and torch.equal(logits(pipe), logits(only_a))
    with pytest.raises(ValueError, match="no LoRA adapter named 'c'"):
        pipe.set_adapters("c")
    with pytest.raises(ValueError, match="already loaded"):
        pipe.load_lora_weights(a, adapter_name="a")
    with pytest.raises(ValueError, match="adapter_weights for 1"):
        pipe.set_adapters(["a"], [1.0, 2.0])


def test_an_adapter_of_another_base_is_refused_with_one_line_naming_both(pipe):
    other = build_pipeline(seed=1)
    adapter = make_adapter(other, name="runs/other/pipeline")
    before = state(pipe)
    with pytest.raises(ValueError) as e:
        pipe.load_lora_weights(adapter)
    message = str(e.value)
    assert "\n" not in message and "runs/other/pipeline" in message and "tiny-base" in message
    assert adapter.base["transformer_sha256"][:12] in message
    assert weights_sha256(before)[:12] in message
    assert state(pipe).keys() == before.keys() and pipe.get_list_adapters() == {}  # nothing was changed
    pipe.load_lora_weights(adapter, check_base=False)  # the caller may insist


def test_adapter_folder_round_trip_run_folders_hub_ids_and_peft_reads_it(pipe, tmp_path, hub_cache):
    from peft import PeftModel

    adapter = make_adapter(pipe)
    folder = adapter.save_pretrained(tmp_path / "run" / "lora")
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                        "base_pipeline.json"]
    record = json.loads((folder / "base_pipeline.json").read_text())
    assert record["base"] == adapter.base and record["adapter"]["rank"] == 4 and record["training"] == {"step": 3}
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-base"
    for source in (folder, tmp_path / "run"):  # the adapter folder or its LoRA run folder
        loaded = LoraAdapter.from_pretrained(source)
        assert loaded.weights.keys() == adapter.weights.keys()
        assert all(torch.equal(loaded.weights[k], adapter.weights[k]) for k in adapter.weights)
    pipe.load_lora_weights(tmp_path / "run")
    ours = logits(pipe)
    pipe.unload_lora_weights()
    peft_model = PeftModel.from_pretrained(copy.deepcopy(pipe.transformer), str(folder)).eval()
    n = pipe.transformer.config.seq_len
    codes = torch.randint(0, 64, (2, n), generator=torch.Generator().manual_seed(0))
    codes[:, ::2] = pipe.transformer.mask_id
    text = TinyTextEncoder(dim=TEXT_DIM).encode(["a red ball", "a cup of coffee"])
    with torch.no_grad():
        assert torch.equal(peft_model(codes, text)[0], ours)  # peft's own loader gives the same model
    put_in_cache(hub_cache, "me/tiny-lora", folder)
    pipe.load_lora_weights("me/tiny-lora", adapter_name="hub")
    assert torch.equal(logits(pipe), ours)


def test_damaged_adapter_folders_are_refused_naming_the_file(pipe, tmp_path):
    folder = make_adapter(pipe).save_pretrained(tmp_path / "lora")
    (folder / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match=r"adapter_model\.safetensors"):
        LoraAdapter.from_pretrained(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"is not a LoRA adapter: no base_pipeline\.json"):
        LoraAdapter.from_pretrained(tmp_path / "empty")
    small = make_adapter(pipe, settings=LoraSettings(rank=2))
    small.weights = {k: v for k, v in list(small.weights.items())[1:]}
    with pytest.raises(ValueError, match="does not fit this transformer: missing"):
        pipe.load_lora_weights(small)
    assert pipe.get_list_adapters() == {} and "lora_A" not in str(list(pipe.transformer.state_dict()))


def test_save_pretrained_refuses_live_lora_layers(pipe, tmp_path):
    pipe.load_lora_weights(make_adapter(pipe))
    with pytest.raises(ValueError, match="unload_lora_weights"):
        pipe.save_pretrained(tmp_path / "p")


def test_settings_and_targets_are_checked(pipe):
    with pytest.raises(ValueError, match="rank"):
        LoraSettings(rank=0)
    with pytest.raises(ValueError, match="not a valid regex"):
        LoraSettings(targets="(")
    assert LoraSettings(rank=8).lora_alpha == 16.0 and LoraSettings(rank=8, alpha=8).lora_alpha == 8.0
    model = copy.deepcopy(pipe.transformer)
    with pytest.raises(ValueError, match="matches no module"):
        add_lora(model, LoraSettings(targets=r".*\.nothing$"))
    with pytest.raises(ValueError, match="not linear layers"):
        add_lora(model, LoraSettings(targets=r"net\.attn_layers\.layers\.0\.1"))
    names = add_lora(model, LoraSettings(rank=2))
    assert names and all(n.split(".")[-1] in ("to_q", "to_k", "to_v", "to_out") for n in names)
    assert {p.requires_grad for n, p in model.named_parameters() if "lora_" not in n} == {False}


def test_push_to_hub_writes_a_card_naming_the_base(pipe, hub_uploads):
    adapter = make_adapter(pipe, name="me/tiny-pipeline")
    adapter.push_to_hub("me/tiny-lora")
    up = hub_uploads["upload"]
    assert up["files"] == ["README.md", "adapter_config.json", "adapter_model.safetensors", "base_pipeline.json"]
    card = up["readme"]
    assert "base_model: me/tiny-pipeline" in card and "me/tiny-pipeline" in card.split("---", 2)[2]
    assert adapter.base["transformer_sha256"][:16] in card and "load_lora_weights('me/tiny-lora'" in card


def test_without_peft_every_entry_point_says_how_to_install_it(pipe, tmp_path, monkeypatch, capsys):
    from scripts.generate import main as generate

    folder = make_adapter(pipe).save_pretrained(tmp_path / "lora")
    pipe.save_pretrained(tmp_path / "pipe")
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError
    for call in (lambda: pipe.load_lora_weights(folder), lambda: LoraAdapter.from_pretrained(folder),
                 lambda: LoraSettings().peft_config()):
        with pytest.raises(ImportError, match=r"pip install 'magvit2-maskgit\[lora\]'"):
            call()
    code = generate(["--model", str(tmp_path / "pipe"), "--prompt", "a dog", "--lora", str(folder), "--out-dir",
                     str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "magvit2-maskgit[lora]" in err and "Traceback" not in err


def test_magvit2_generate_applies_adapters_with_weights(pipe, tmp_path):
    from scripts.generate import main as generate

    pipe.save_pretrained(tmp_path / "pipe")
    folder = make_adapter(pipe).save_pretrained(tmp_path / "lora")
    outs = {}
    for name, extra in (("base", []), ("zero", ["--lora", f"{folder}:0"]), ("lora", ["--lora", f"{folder}:0.8"]),
                        ("twice", ["--lora", str(folder), "--lora", f"{tmp_path}/lora:0.5"])):
        out = tmp_path / name
        assert generate(["--model", str(tmp_path / "pipe"), "--prompt", "a red ball", "--out-dir", str(out),
                         "--device", "cpu", "--seed", "4", *extra]) == 0
        outs[name] = (sorted(out.glob("*.mp4"))[0].read_bytes(),
                      json.loads((out / "samples.jsonl").read_text().splitlines()[0]))
    assert outs["zero"][0] == outs["base"][0] and outs["lora"][0] != outs["base"][0]
    assert outs["lora"][1]["lora"] == [{"path": str(folder), "weight": 0.8}]
    assert [x["weight"] for x in outs["twice"][1]["lora"]] == [1.0, 0.5]


def test_magvit2_generate_lora_errors_are_one_line(pipe, tmp_path, capsys):
    from scripts.generate import main as generate

    pipe.save_pretrained(tmp_path / "pipe")
    other = make_adapter(build_pipeline(seed=5), name="elsewhere").save_pretrained(tmp_path / "other")
    for spec, match in ((str(other), "was trained on elsewhere"), (str(tmp_path / "nope"), "does not exist")):
        code = generate(["--model", str(tmp_path / "pipe"), "--prompt", "x", "--lora", spec, "--out-dir",
                         str(tmp_path / "o"), "--device", "cpu"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and match in err, err
    assert not list(Path(tmp_path / "o").glob("*.mp4")) if (tmp_path / "o").exists() else True
