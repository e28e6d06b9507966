"""benchmarks.diversity: the mean distance between two videos of one prompt, per prompt group."""

from __future__ import annotations

import json
import math

import numpy as np


def test_within_prompt_distance_pairs_only_videos_of_one_prompt(tmp_path, monkeypatch):
    import trainers.data.video_io as video_io
    from benchmarks.diversity import within_prompt_distance

    clips = {"a.mp4": 0.0, "b.mp4": 30.0, "c.mp4": 90.0, "d.mp4": 200.0}  # constant videos: RMS = |difference|
    monkeypatch.setattr(video_io, "read_video", lambda path: np.full((3, 4, 4, 3), clips[path.name], np.uint8))
    records = [{"file": "a.mp4", "group": "seen", "prompt": "one up"},
               {"file": "b.mp4", "group": "seen", "prompt": "one up"},
               {"file": "c.mp4", "group": "seen", "prompt": "one up"},
               {"file": "d.mp4", "group": "seen", "prompt": "two up"}]  # alone in its prompt: no pair
    (tmp_path / "samples.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    out = within_prompt_distance(tmp_path)
    assert out["seen"] == (np.mean([30.0, 90.0, 60.0]), 3)
    assert math.isnan(out["held_out"][0]) and out["held_out"][1] == 0
