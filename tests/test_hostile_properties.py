"""Property-based tests (hypothesis) of the parsers that read untrusted files: configs, checkpoint manifests,
metadata.jsonl and YAML. Whatever they are fed, they build well-typed values or raise the one error class that the
commands turn into a one-line exit 2; never another exception. Bounded examples, no deadline; seconds."""

from __future__ import annotations

import contextlib
import json

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from magvit2.serialization import config_from_dict
from tests.helpers.artefacts import rewrite, saved_checkpoint
from trainers import checkpointing as ckpt
from trainers.configs import RunConfig, build_config
from trainers.data.folders import load_captions

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                 max_size=3), max_leaves=8)


@PROPERTY
@given(st.dictionaries(st.sampled_from(["max_steps", "seed", "max_minutes", "compile", "nonfinite", "bogus"]),
                       JSON, max_size=3))
def test_run_config_parser_builds_well_typed_configs_or_says_why(data):
    try:
        config = config_from_dict(RunConfig, data)
    except ValueError:
        return
    for name in ("max_steps", "seed", "log_every"):
        value = getattr(config, name)
        assert isinstance(value, int) and not isinstance(value, bool)
    assert isinstance(config.compile, bool)
    assert config.max_minutes is None or (isinstance(config.max_minutes, (int, float))
                                          and config.max_minutes == config.max_minutes)


@PROPERTY
@given(JSON, st.booleans())
def test_checkpoint_marker_parser_loads_or_raises_checkpoint_errors(tmp_path_factory, value, whole):
    manager = saved_checkpoint(tmp_path_factory.mktemp("ck"))
    marker = manager.latest() / "COMPLETE.json"
    if whole:
        marker.write_text(json.dumps(value))
    else:
        rewrite(marker, lambda m: m.update(files=value))
    with contextlib.suppress(ckpt.CheckpointError):
        manager.load("latest")


@PROPERTY
@given(st.lists(st.one_of(JSON, st.fixed_dictionaries({"file_name": JSON, "text": JSON})), min_size=1, max_size=4))
def test_metadata_parser_gives_string_captions_or_raises_value_errors(tmp_path_factory, records):
    root = tmp_path_factory.mktemp("meta")
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    try:
        captions = load_captions(root, ["a.mp4"])
    except ValueError:
        return
    assert all(isinstance(k, str) and isinstance(v, str) and not k.startswith(("/", "../")) for k, v in
               captions.items())


def test_yaml_files_from_hypothesis_never_crash_build_config(tmp_path):
    @PROPERTY
    @given(st.dictionaries(st.sampled_from(["run", "data", "tokenizer", "gen_optim", "grad_accum"]), JSON, max_size=2))
    def check(data):
        path = tmp_path / "h.yaml"
        path.write_text(yaml.safe_dump(data))
        with contextlib.suppress(ValueError):
            build_config("tokenizer", "tiny", path)

    check()
