"""Stage-two code shards read lazily: narrow dtypes on disk, the same items and batches as the in-memory loader
(0 and 2 workers), selections are views, and the trainer's split works on them."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from trainers.data.batches import build_dataloader
from trainers.data.codes import (
    CodeClips,
    CodeShardDataset,
    CodeShardWriter,
    ShardCodeClips,
    collate_codes,
    split_code_clips,
)


def _write(folder, n, codebook, shard_size=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    writer = CodeShardWriter(folder, shard_size, codebook_size=codebook)
    codes = torch.randint(0, codebook, (n, 2, 3, 4), generator=gen)
    for i in range(n):
        writer.add(codes[i], f"caption {i % 5}", f"file{i // 2}.mp4", clip=i % 2)
    writer.close({"codebook_size": codebook, "num_frames": 5, "latent_shape": [2, 3, 4]})
    return codes


def _in_memory(folder) -> CodeClips:
    """Today's loader: every shard loaded and concatenated into one int64 tensor."""
    ds = CodeShardDataset(folder)
    codes = torch.cat([load_file(str(folder / s["file"]))["codes"] for s in ds.index["shards"]]).long()
    return CodeClips(codes, ds.captions, [r["path"] for r in ds.records])


@pytest.mark.parametrize(("codebook", "dtype"), [(64, "I16"), (2**15, "I16"), (2**18, "I32")])
def test_shards_use_the_narrowest_dtype_and_read_back_exactly(tmp_path, codebook, dtype):
    codes = _write(tmp_path / "codes", 23, codebook)
    with safe_open(str(tmp_path / "codes" / "codes-00000.safetensors"), "pt") as f:
        assert str(f.get_slice("codes").get_dtype()) == dtype
    ds = CodeShardDataset(tmp_path / "codes")
    assert torch.equal(ds.codes, codes) and ds[(0, 9, -1)]["codes"].dtype == torch.long
    assert torch.equal(ds[(0, 9, -1)]["codes"], codes[9])


@pytest.mark.parametrize("workers", [0, 2])
def test_lazy_shards_give_the_same_batches_as_the_in_memory_loader(tmp_path, workers):
    _write(tmp_path / "codes", 30, 1000)
    lazy = CodeClips.from_shards(CodeShardDataset(tmp_path / "codes"))
    assert isinstance(lazy, ShardCodeClips) and not hasattr(lazy, "_codes")
    eager = _in_memory(tmp_path / "codes")
    for epoch in range(2):
        batches = []
        for clips, w in ((eager, 0), (lazy, workers)):
            loader = build_dataloader(clips, 4, seed=3, num_workers=w, collate_fn=collate_codes)
            loader.batch_sampler.set_position(epoch, 1)
            batches.append(list(loader))
        assert len(batches[0]) == len(batches[1]) == 30 // 4 - 1
        for a, b in zip(*batches):
            assert torch.equal(a["codes"], b["codes"]) and a["codes"].dtype == b["codes"].dtype == torch.long
            assert a["caption"] == b["caption"] and a["path"] == b["path"] and torch.equal(a["index"], b["index"])
            assert (a["epoch"], a["batch_index"]) == (b["epoch"], b["batch_index"])


def test_split_and_select_on_lazy_shards_match_in_memory(tmp_path):
    _write(tmp_path / "codes", 30, 64)
    lazy = CodeClips.from_shards(CodeShardDataset(tmp_path / "codes"))
    eager = _in_memory(tmp_path / "codes")
    (lt, lv), (et, ev) = split_code_clips(lazy, 0.2, 1), split_code_clips(eager, 0.2, 1)
    assert isinstance(lt, ShardCodeClips) and lt.paths == et.paths and lv.paths == ev.paths
    assert torch.equal(lt.codes, et.codes) and torch.equal(lv.codes, ev.codes)
    part = lv.select(range(min(3, len(lv))))
    assert torch.equal(part.codes, ev.codes[:3]) and part.latent_shape == (2, 3, 4)
    assert lt._files  # read from the shard files, not from a copy
    assert lt.__getstate__()["_files"] == {}  # workers open their own  # workers open their own maps
