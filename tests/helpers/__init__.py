"""What several test files share, by topic; fixtures live in tests/conftest.py (pytest finds them by name).

- `media`: real test media from scikit-image photos (camera pans as uint8 frames or [-1, 1] tensors)
- `models`: tiny transformers, the tiny pipeline, and test doubles of the MaskGit model
- `hub`: huggingface_hub's cache layout, built offline
- `training`: in-process trainers on the `tiny` presets and the stage-two data they train on
- `commands`: commands run in a subprocess (under torchrun too) or in-process, and their one-line errors
- `artefacts`: checkpoints and run outputs: writing, rewriting and reading them

Test files import from here, never from one another (tests/test_self_contained.py checks it).
"""
