"""The update path's multi-process pieces: the MaskGit loss of a global batch whose processes loaded different
numbers of rows (clips that failed to decode), the DDP settings of each prepared module, and the launcher settings
that are refused (its dynamo backend)."""

from __future__ import annotations

import pytest
import torch

from maskgit.objective import masked_token_loss
from tests.helpers.commands import launch, ok
from tests.helpers.models import tiny_transformer
from trainers.rng import make_generator


def replica_gradients(model, codes, text, splits: list[int], **levers) -> torch.Tensor:
    """What W data-parallel processes holding `splits` rows each would average (DDP: mean of their gradients)."""
    total, offset, grads = sum(splits), 0, []
    for rows in splits:
        model.zero_grad(set_to_none=True)
        part = slice(offset, offset + rows)
        loss, _ = masked_token_loss(model, codes[part], (text[0][part], text[1][part]), make_generator(0, 1),
                                    rows=(offset, total), replicas=len(splits), self_cond_prob=0.0, **levers)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        offset += rows
    return torch.stack(grads).mean(0)


@pytest.mark.parametrize("levers", [{}, {"tube_prob": 0.3, "prefix_prob": 0.3, "frame_prob": 0.3}])
def test_masked_loss_of_unequal_process_shares_equals_one_process_on_the_global_batch(levers):
    """3 + 2 rows on two processes (one process's clip failed to decode) average to the gradient of one process on
    all 5 rows (scaling each process's loss by total / rows would assume equal shares and would not); also with the
    tube, prefix-frame and whole-frame masks, whose draws are made for the global batch too."""
    model = tiny_transformer()
    gen = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 16, (5, 2, 2, 2), generator=gen)
    text = (torch.randn(5, 3, 8, generator=gen), torch.ones(5, 3, dtype=torch.bool))
    if levers:  # the levers do change this batch's masks (a control: otherwise the equality below says nothing new)
        masks = [masked_token_loss(model, codes, text, make_generator(0, 1), self_cond_prob=0.0, **kw)[1].mask
                 for kw in ({}, levers)]
        assert not torch.equal(*masks)
    whole = replica_gradients(model, codes, text, [5], **levers)
    torch.testing.assert_close(replica_gradients(model, codes, text, [3, 2], **levers), whole, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(replica_gradients(model, codes, text, [1, 4], **levers), whole, rtol=1e-5, atol=1e-7)


def test_the_launchers_dynamo_backend_is_refused_with_one_line_naming_compile(monkeypatch, fresh_accelerate_state):
    from trainers.configs import RunConfig
    from trainers.run_setup import make_accelerator

    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "INDUCTOR")
    with pytest.raises(ValueError, match=r"dynamo backend.*--compile"):
        make_accelerator(RunConfig())


def test_unequal_process_shares_under_two_real_ddp_processes_equal_one_process(tmp_path):
    """The same as above with two gloo processes under torchrun (DDP averages the gradients itself)."""
    model = tiny_transformer()
    gen = torch.Generator().manual_seed(1)
    inputs = {"codes": torch.randint(0, 16, (5, 2, 2, 2), generator=gen), "embeds": torch.randn(5, 3, 8, generator=gen),
              "mask": torch.ones(5, 3, dtype=torch.bool)}
    torch.save(inputs, tmp_path / "inputs.pt")
    ok(launch("tests.distributed_worker", "unequal_rows", str(tmp_path), processes=2))
    whole = replica_gradients(model, inputs["codes"], (inputs["embeds"], inputs["mask"]), [5])
    for rank in (0, 1):
        result = torch.load(tmp_path / f"rows-{rank}.pt")
        assert result["world_size"] == 2
        torch.testing.assert_close(result["grad"], whole, rtol=1e-5, atol=1e-7)


def test_each_prepared_module_gets_its_own_ddp_settings(tmp_path, make_clip):
    """G (every weight used at every step): no unused-parameter search; the D loss: unused parameters allowed (the
    temporal discriminators on image batches) and no buffer broadcast (the frozen perceptual network's). close()
    releases the wrappers before it destroys the process group."""
    import json

    for photo in ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "brick"):
        make_clip(f"data/{photo}.mp4", num_frames=7, size=(20, 24), photo=photo)
    ok(launch("tests.distributed_worker", "ddp_settings", str(tmp_path), processes=2))
    for rank in (0, 1):
        report = json.loads((tmp_path / f"ddp-{rank}.json").read_text())
        assert report["world_size"] == 2
        assert report["g"] == ["DistributedDataParallel", False, True]
        assert report["d"] == ["DistributedDataParallel", True, False]
        # close() drops the wrappers before the process group goes (a reducer holding the group's last reference
        # destroys it with the GIL held: a rare exit hang, seen in CI), and leaves the bare modules
        assert report["wrappers_alive_at_destroy"] == [False, False]
        assert report["after_close"] == ["ReconstructStep", "TokenizerLoss"]
