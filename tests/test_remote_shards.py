"""Packed shards read from a URL (an HTTP server on loopback, file://) or a `pipe:` command: fetched once into the
shard cache (only what is missing), then trained on like a local packed folder."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest

from trainers.commands import pack as pack_module
from trainers.data.remote import fetch_shards, is_remote
from trainers.data.shards import ShardDataset, read_manifest


@pytest.fixture
def packed_folder(captioned_media, tmp_path) -> Path:
    out = tmp_path / "packed"
    pack_module.pack_folder(captioned_media, out, shard_size=3)
    return out


@pytest.fixture
def server(packed_folder):
    """An HTTP server on 127.0.0.1 serving the packed folder; yields its URL and the paths it was asked for."""
    asked: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            asked.append(self.path)

    handler = functools.partial(Handler, directory=str(packed_folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", asked
    httpd.shutdown()
    httpd.server_close()


def same_dataset(a: Path, b: Path) -> None:
    x, y = (ShardDataset(f, num_frames=5, image_size=16, max_bad_fraction=0.5) for f in (a, b))
    assert x.paths == y.paths and x.captions == y.captions
    for i in range(len(x)):
        assert (x[(0, i, -1)]["video"] == y[(0, i, -1)]["video"]).all()


def test_http_source_is_fetched_once_and_reads_like_the_local_folder(packed_folder, server, tmp_path):
    url, asked = server
    assert is_remote(url) and not is_remote(str(packed_folder))
    local = fetch_shards(url, cache=tmp_path / "cache")
    shards = [s["file"] for s in read_manifest(packed_folder)["shards"]]
    assert len(shards) >= 2 and sorted(p.name for p in local.glob("*.tar")) == sorted(shards)
    same_dataset(packed_folder, local)
    asked.clear()
    (local / shards[0]).unlink()  # a restart fetches only what is missing (and the manifest)
    assert fetch_shards(url, cache=tmp_path / "cache") == local
    assert sorted(asked) == sorted(["/shards.json", f"/{shards[0]}"])


def test_file_url_and_pipe_sources(packed_folder, tmp_path):
    same_dataset(packed_folder, fetch_shards(packed_folder.as_uri() + "/", cache=tmp_path / "a"))
    same_dataset(packed_folder, fetch_shards(f"pipe:cat {packed_folder}/{{file}}", cache=tmp_path / "b"))


def test_bad_sources_fail_with_one_clear_message(packed_folder, server, tmp_path):
    url, _ = server
    with pytest.raises(ValueError, match=r"cannot fetch .*/nope/shards.json"):
        fetch_shards(url + "nope/", cache=tmp_path / "c")
    with pytest.raises(ValueError, match="failed with exit code"):
        fetch_shards(f"pipe:cat {tmp_path}/missing/{{file}}", cache=tmp_path / "c")
    with pytest.raises(ValueError, match=r"\{file\}"):
        fetch_shards("pipe:cat x", cache=tmp_path / "c")


def test_the_tokenizer_trains_on_shards_at_a_url(server, tmp_path, monkeypatch, one_thread):
    from scripts import train_tokenizer

    url, _ = server
    monkeypatch.setenv("MAGVIT2_SHARD_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    code = train_tokenizer.main(["--data", url, "--out", str(run), "--preset", "tiny", "--max-steps", "2",
                                 "--batch-size", "2", "--num-workers", "0", "--max-bad-fraction", "0.5"])
    assert code == 0 and (run / "tokenizer" / "model.safetensors").is_file()
    assert any((tmp_path / "cache").glob("*/shards.json"))


def test_shards_split_across_two_processes_with_two_workers_each_no_duplicate_no_loss(packed_folder):
    """torchrun, 2 processes x 2 DataLoader workers: every global batch of the epoch is split between the processes,
    so together they read each sample of the epoch's batches exactly once."""
    import json

    from tests.helpers.commands import launch, ok
    from trainers.data.batches import ResumableBatchSampler

    ok(launch("tests.distributed_worker", "shards", str(packed_folder.parent), processes=2))
    reports = [json.loads((packed_folder.parent / f"shards-{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in reports] == [2, 2]
    ranks = [r["batches"] for r in reports]
    assert len(ranks[0]) == len(ranks[1]) > 0 and all(len(b) == 2 for r in ranks for b in r)
    dataset = ShardDataset(packed_folder, num_frames=5, image_size=16, max_bad_fraction=0.5)
    expected = ResumableBatchSampler(dataset.kinds, 4, seed=0).epoch_batches(0)
    assert [a + b for a, b in zip(*ranks)] == expected  # rank 0 the first half, rank 1 the second, no dup, no loss


def _serve(folder: Path, delay: float, status: int | None = None):
    """An HTTP server on loopback serving `folder`, sleeping `delay` s per request (a slow link) and answering
    `status` instead of the file when given (a failing server). Returns (url, server)."""
    import time

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(delay)
            if status is not None:
                self.send_error(status, "injected failure")
                return
            super().do_GET()

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}/", httpd


# a process-group timeout far shorter than the download (a process left waiting in a collective would time out), but
# not so short that the training's own collectives, lagging on a loaded 2-core runner, trip it
SHORT_TIMEOUT = ("--dist-timeout-minutes", "0.15")  # 9 s


def _train_two_processes(url: str, tmp_path: Path, timeout: int = 300):
    from tests.helpers.commands import launch

    run = tmp_path / "run"
    result = launch("scripts.train_tokenizer", "--data", url, "--out", str(run), "--preset", "tiny",
                    "--max-steps", "2", "--batch-size", "1", "--num-workers", "0", "--max-bad-fraction", "0.5",
                    *SHORT_TIMEOUT, processes=2, env={"MAGVIT2_SHARD_CACHE": str(tmp_path / "cache")},
                    timeout=timeout)
    return run, result


@pytest.mark.timeout(360)
def test_two_processes_train_from_a_slow_server(packed_folder, tmp_path):
    """torchrun, 2 processes: local rank 0 downloads (5 s per request: the manifest and 2+ shards, 15+ s in all,
    over the 9 s process-group timeout) while rank 1 waits for it without a collective; both then train."""
    from tests.helpers.commands import ok, world_size_of

    url, httpd = _serve(packed_folder, delay=5.0)
    try:
        run, result = _train_two_processes(url, tmp_path)
    finally:
        httpd.shutdown()
        httpd.server_close()
    ok(result)
    assert world_size_of(run) == 2 and (run / "tokenizer" / "model.safetensors").is_file()
    [cached] = (tmp_path / "cache").glob("*/shards.json")
    shards = [s["file"] for s in read_manifest(packed_folder)["shards"]]
    assert len(shards) >= 2 and sorted(p.name for p in cached.parent.glob("*.tar")) == sorted(shards)


@pytest.mark.timeout(200)
def test_two_processes_stop_together_with_one_line_when_the_server_fails(packed_folder, tmp_path):
    """The download fails on local rank 0: rank 1 (which never fetched anything) stops too, with the same line."""
    url, httpd = _serve(packed_folder, delay=1.0, status=503)
    try:
        _, result = _train_two_processes(url, tmp_path, timeout=180)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "magvit2-train-tokenizer: error:" in line]
    assert len(lines) == 2 and len(set(lines)) == 1, result.stderr[-3000:]  # one per process (world size 2), alike
    assert "cannot fetch" in lines[0] and "shards.json" in lines[0]
    assert result.stderr.count("Traceback") == 1 and "ChildFailedError" in result.stderr  # torchrun's only
