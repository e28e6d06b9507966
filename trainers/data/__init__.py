"""Data for both stages: video I/O, folder datasets, the resumable batch sampler, code shards, captions and prompts."""
