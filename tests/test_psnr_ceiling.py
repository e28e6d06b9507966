"""benchmarks/psnr_ceiling.py: its lossy maps do what its docstring says."""

import torch

from benchmarks.psnr_ceiling import causal_group_mean, pooled


def test_pooling_by_one_and_a_static_video_lose_nothing():
    video = torch.rand(2, 3, 9, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert torch.allclose(pooled(video, 1), video, atol=1e-6)
    static = video[:, :, :1].expand(-1, -1, 9, -1, -1)
    assert torch.allclose(causal_group_mean(static), static)


def test_causal_groups_keep_frame_zero_and_average_each_group_of_four():
    video = torch.arange(9.0).view(1, 1, 9, 1, 1).expand(1, 1, 9, 2, 2)
    means = causal_group_mean(video)[0, 0, :, 0, 0].tolist()
    assert means == [0.0, 2.5, 2.5, 2.5, 2.5, 6.5, 6.5, 6.5, 6.5]


def test_fewer_levels_lose_more():
    video = torch.rand(1, 3, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    floats = pooled(video, 4)
    errors = [float((pooled(video, 4, levels=n) - floats).abs().mean()) for n in (3, 10, 256)]
    assert errors[0] > errors[1] > errors[2]
