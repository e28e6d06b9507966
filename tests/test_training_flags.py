"""The training flags users know from diffusers' / accelerate's scripts, on both training commands: each lands in the
run config (precedence recipe < YAML < flags), our dash spellings are the same flags, and --help lists them."""

from __future__ import annotations

import pytest

from scripts import train_maskgit, train_tokenizer

COMMANDS = {
    "tokenizer": (train_tokenizer, ["--data", "x", "--out", "y"]),
    "maskgit": (train_maskgit, ["--tokenizer", "x", "--codes", "x", "--out", "y"]),
}

FLAGS = ["--learning_rate", "--gradient_accumulation_steps", "--dataloader_num_workers", "--num-workers",
         "--checkpointing_steps", "--checkpoints_total_limit", "--resume_from_checkpoint", "--report_to",
         "--tracker_project_name", "--max-bad-fraction", "--max_train_steps", "--train_batch_size",
         "--mixed_precision", "--learning-rate", "--gradient-accumulation-steps", "--checkpoint-every", "--keep-last"]


def config(kind, *flags, config_file=None):
    module, required = COMMANDS[kind]
    extra = ["--config", str(config_file)] if config_file else []
    return module.make_config(module.build_parser().parse_args([*required, *extra, *flags]))


@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_every_flag_in_help(kind, capsys):
    module, _ = COMMANDS[kind]
    with pytest.raises(SystemExit):
        module.build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in FLAGS:
        assert flag in text, flag


@pytest.mark.parametrize("kind", sorted(COMMANDS))
@pytest.mark.parametrize("spelling", ["diffusers", "ours"])
def test_flags_land_in_the_config(kind, spelling):
    names = {"diffusers": ["--learning_rate", "--gradient_accumulation_steps", "--dataloader_num_workers",
                           "--checkpointing_steps", "--checkpoints_total_limit", "--max_bad_fraction"],
             "ours": ["--learning-rate", "--gradient-accumulation-steps", "--num-workers", "--checkpoint-every",
                      "--keep-last", "--max-bad-fraction"]}[spelling]
    values = ["3e-4", "4", "3", "250", "7", "0.2"]
    c = config(kind, *[x for pair in zip(names, values) for x in pair])
    optims = (c.gen_optim, c.disc_optim) if kind == "tokenizer" else (c.optim,)
    assert all(o.lr == 3e-4 for o in optims)
    assert c.grad_accum == 4 and c.data.num_workers == 3 and c.data.max_bad_fraction == 0.2
    assert c.run.checkpoint_every == 250 and c.run.keep_last == 7


@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_resume_alias_and_report_to(kind):
    module, required = COMMANDS[kind]
    args = module.build_parser().parse_args([*required, "--resume_from_checkpoint", "latest"])
    assert args.resume == "latest"
    assert config(kind, "--report_to", "tensorboard").run.tensorboard is True
    c = config(kind, "--report_to", "wandb", "--tracker_project_name", "my-proj")
    assert c.run.wandb_project == "my-proj" and c.run.tensorboard is False
    c = config(kind, "--report_to", "all")
    assert c.run.wandb_project == "magvit2" and c.run.tensorboard is True
    c = config(kind, "--report_to", "none")
    assert c.run.wandb_project is None and c.run.tensorboard is False
    with pytest.raises(ValueError, match="--report_to wandb"):
        config(kind, "--tracker_project_name", "p")


def test_precedence_recipe_yaml_flags(tmp_path):
    recipe = config("tokenizer")
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("gen_optim: {lr: 0.0002}\ngrad_accum: 2\nrun: {keep_last: 5, tensorboard: true}\n")
    from_yaml = config("tokenizer", config_file=yaml_file)
    assert from_yaml.gen_optim.lr == 2e-4 and from_yaml.grad_accum == 2 and from_yaml.run.keep_last == 5
    assert from_yaml.disc_optim.lr == recipe.disc_optim.lr  # the file set only the generator's
    flags = config("tokenizer", "--learning_rate", "5e-5", "--gradient_accumulation_steps", "3", "--report_to", "wandb",
                   config_file=yaml_file)
    assert flags.gen_optim.lr == flags.disc_optim.lr == 5e-5 and flags.grad_accum == 3
    assert flags.run.keep_last == 5 and flags.run.tensorboard is False and flags.run.wandb_project == "magvit2"


@pytest.mark.parametrize("argv,message", [
    (["--max-bad-fraction", "1.5"], "in [0, 1]"),
    (["--dataloader_num_workers", "-1"], ">= 0"),
    (["--report_to", "comet"], "invalid choice"),
    (["--learning_rate", "2"], "lr must be in (0, 1)"),
    (["--tracker_project_name", "p"], "--report_to wandb"),
])
def test_bad_values_exit_2_with_one_line(argv, message, capsys):
    try:
        code = train_tokenizer.main(["--data", "x", "--out", "y", *argv])
    except SystemExit as e:  # argparse's own checks exit from parse_args
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
