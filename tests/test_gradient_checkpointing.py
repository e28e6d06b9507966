"""Activation checkpointing (`--gradient-checkpointing`) gives the same losses and gradients, with the same parameter
names, for the tokenizer's blocks and the MaskGit transformer's layers."""

from __future__ import annotations

import copy

import torch

import magvit2.torch_utils as torch_utils
from magvit2 import VideoTokenizer, preset_config
from maskgit import MaskGitConfig, MaskGitTransformer, maskgit_preset
from maskgit.text import TinyTextEncoder
from tests.helpers.media import real_pan_clip


def count_checkpoints(monkeypatch) -> list[int]:
    """A counter of checkpointed block calls (so the test fails if checkpointing silently did nothing)."""
    calls = [0]
    real = torch_utils.checkpoint

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(torch_utils, "checkpoint", counting)
    return calls


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_tokenizer_gradient_checkpointing_same_loss_and_gradients(monkeypatch):
    calls = count_checkpoints(monkeypatch)
    torch.manual_seed(0)
    plain = VideoTokenizer(preset_config("tiny")).train()
    checkpointed = copy.deepcopy(plain).set_gradient_checkpointing()
    video = real_pan_clip(5, 16).repeat(2, 1, 1, 1, 1)  # (2, 3, 5, 16, 16)
    losses = []
    for model in (plain, checkpointed):
        out = model.reconstruct(video, step=0)
        loss = (out.recon - video).pow(2).mean() + out.quantizer.aux_loss
        loss.backward()
        losses.append(loss.detach())
    assert torch.equal(losses[0], losses[1])
    assert calls[0] == len(plain.encoder_layers) + len(plain.decoder_layers)  # every block, once per forward
    a, b = grads(plain), grads(checkpointed)
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-7, msg=name)
    assert plain.state_dict().keys() == checkpointed.state_dict().keys()
    checkpointed.set_gradient_checkpointing(False)
    assert "forward" not in checkpointed.encoder_layers[0].__dict__


def test_transformer_gradient_checkpointing_same_loss_and_gradients(monkeypatch):
    calls = count_checkpoints(monkeypatch)
    torch.manual_seed(0)
    config = MaskGitConfig(codebook_size=64, latent_shape=(2, 4, 4), text_dim=32, **maskgit_preset("tiny"))
    plain = MaskGitTransformer(config).train()
    checkpointed = copy.deepcopy(plain).set_gradient_checkpointing()
    codes = torch.randint(0, 64, (3, 32), generator=torch.Generator().manual_seed(1))
    codes[:, ::3] = config.mask_id
    text = TinyTextEncoder(dim=32).encode(["a cat", "two dogs", ""])
    losses = []
    for model in (plain, checkpointed):
        (logits,) = model(codes, text, grid=(2, 4, 4))
        loss = logits.float().logsumexp(-1).mean()
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=0)
    assert calls[0] == len(plain.net.attn_layers.layers)  # self-attn, cross-attn, FF of each layer
    a, b = grads(plain), grads(checkpointed)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-7, msg=name)
