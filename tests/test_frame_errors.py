"""benchmarks.frame_errors: counting where and how generated videos lose frame consistency."""

import json

from benchmarks.frame_errors import frame_errors, latent_frame, main


def test_latent_frames_of_a_causal_tokenizer():
    assert [latent_frame(i, 4) for i in range(9)] == [0, 1, 1, 1, 1, 2, 2, 2, 2]


def test_wrong_frames_are_counted_against_the_majority_and_the_direction_prior():
    seen = {(d, "up") for d in range(1, 10)}  # every digit but 0 moves up in training
    records = [
        {"frame_digits": [3] * 9, "frame_consistent": True, "direction": "up"},
        {"frame_digits": [3, 3, 3, 3, 3, 9, 9, 3, 3], "frame_consistent": False, "direction": "up"},
        {"frame_digits": [0, 7, 7, 7, 7, 7, 7, 7, 7], "frame_consistent": False, "direction": "up"},
    ]
    c = frame_errors(records, seen)
    assert (c["videos"], c["inconsistent"], c["wrong_frames"]) == (3, 2, 3)
    assert c["by_frame"] == {5: 1, 6: 1, 0: 1} and c["by_latent_frame"] == {2: 2, 0: 1}
    assert c["wrong_per_video"] == {2: 1, 1: 1} and c["pairs"][(3, 9)] == 2
    assert c["seen_with_direction"] == 2  # the two 9s move up in training; the 0 does not
    # chance: 8 of the 9 digits other than 3 move up (0 does not); 8 of 9 other than 7 likewise
    assert abs(c["chance_seen_with_direction"] - 3 * 8 / 9) < 1e-9


def test_command_reads_judged_folders(tmp_path, capsys):
    (tmp_path / "judged").mkdir()
    rows = [{"group": "seen", "frame_digits": [1, 1, 8], "frame_consistent": False, "direction": "left"},
            {"group": "held_out", "frame_digits": [2, 2, 2], "frame_consistent": True, "direction": "up"}]
    (tmp_path / "judged/samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "prompts.json").write_text(json.dumps({"seen": [{"digit": 8, "direction": "left"}]}))
    assert main(["--prompts", str(tmp_path / "prompts.json"), str(tmp_path / "judged")]) == 0
    out = capsys.readouterr().out
    assert "seen: 1 of 1 videos frame-inconsistent, 1 wrong frames" in out
    assert "held_out: 0 of 1 videos" in out and "seen moving the prompt's direction in training: 100.0%" in out
