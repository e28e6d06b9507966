"""benchmarks/frame_score.py: the pair statistic counts only same-prompt pairs that differ, ties as half."""

import math

from benchmarks.frame_score import pair_agreement


def test_pairs_within_a_prompt_where_one_is_good():
    records = [{"prompt": "a", "ok": True, "score": 2.0}, {"prompt": "a", "ok": False, "score": 1.0},
               {"prompt": "a", "ok": False, "score": 3.0},  # beats the good one: one win, one loss for "a"
               {"prompt": "b", "ok": True, "score": 0.5}, {"prompt": "b", "ok": False, "score": 0.5},  # a tie
               {"prompt": "c", "ok": True, "score": 9.0}]  # no partner: not counted
    share, pairs = pair_agreement(records, lambda r: r["ok"])
    assert pairs == 3 and share == (1 + 0 + 0.5) / 3
    assert pair_agreement([{"prompt": "a", "ok": True, "score": 1.0}] * 2, lambda r: r["ok"])[1] == 0
    assert math.isnan(pair_agreement([], lambda r: r["ok"])[0])
