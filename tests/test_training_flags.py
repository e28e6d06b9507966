"""The training flags users know from diffusers' / accelerate's scripts, on both training commands: each lands in the
run config (precedence recipe < YAML < flags), our dash spellings are the same flags, --help lists them, and the ones
that mean nothing for one trainer are refused in one line. Also: the commands' preset default is the Python API's."""

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
         "--mixed_precision", "--learning-rate", "--gradient-accumulation-steps", "--checkpoint-every", "--keep-last",
         "--output_dir", "--train_data_dir", "--pretrained_model_name_or_path", "--resolution", "--lr_scheduler",
         "--lr_warmup_steps", "--validation_prompts", "--num_train_epochs", "--use_ema", "--adam_weight_decay",
         "--max_grad_norm", "--push_to_hub", "--hub_model_id", "--logging_dir", "--caption_column", "--allow_tf32"]


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
    assert config(kind, "--report_to", "tensorboard").run.trackers() == ["tensorboard"]
    c = config(kind, "--report_to", "wandb", "--tracker_project_name", "my-proj")
    assert c.run.report_to == ("wandb",) and c.run.tracker_project_name == "my-proj" and not c.run.tensorboard
    assert config(kind, "--report_to", "tensorboard,wandb").run.trackers() == ["tensorboard", "wandb"]
    assert config(kind, "--report_to", "all").run.report_to == ("all",)
    c = config(kind, "--report_to", "none")
    assert c.run.trackers() == [] and c.run.wandb_project is None and c.run.tensorboard is False
    assert config(kind, "--report_to", "mlflow").run.report_to == ("mlflow",)  # any tracker accelerate knows
    with pytest.raises(ValueError, match="unknown tracker 'neptunez'"):
        config(kind, "--report_to", "neptunez")


def test_precedence_recipe_yaml_flags(tmp_path):
    recipe = config("tokenizer")
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("gen_optim: {lr: 0.0002}\ngrad_accum: 2\nrun: {keep_last: 5, tensorboard: true}\n")
    from_yaml = config("tokenizer", config_file=yaml_file)
    assert from_yaml.gen_optim.lr == 2e-4 and from_yaml.grad_accum == 2 and from_yaml.run.keep_last == 5
    assert from_yaml.disc_optim.lr == recipe.disc_optim.lr  # the file set only the generator's
    assert from_yaml.run.trackers() == ["tensorboard"]  # the YAML shorthand
    flags = config("tokenizer", "--learning_rate", "5e-5", "--gradient_accumulation_steps", "3", "--report_to", "wandb",
                   config_file=yaml_file)
    assert flags.gen_optim.lr == flags.disc_optim.lr == 5e-5 and flags.grad_accum == 3
    assert flags.run.keep_last == 5 and flags.run.trackers() == ["wandb"]  # the flag replaces the file's trackers


@pytest.mark.parametrize("argv,message", [
    (["--max-bad-fraction", "1.5"], "in [0, 1]"),
    (["--dataloader_num_workers", "-1"], ">= 0"),
    (["--report_to", "comet"], "unknown tracker 'comet'"),
    (["--learning_rate", "2"], "lr must be in (0, 1)"),
    (["--hub_model_id", "me/x"], "pass --push_to_hub too"),
    (["--push_to_hub"], "needs run.hub_model_id"),
    (["--push_to_hub", "--hub_model_id", "not a repo"], "'owner/name'"),
    (["--lr_scheduler", "polynomial"], "choose one of constant, constant_with_warmup, linear, cosine"),
    (["--lr_scheduler", "constant", "--lr_warmup_steps", "10"], "use constant_with_warmup"),
    (["--validation_prompts", "a cat"], "--validation_prompts does not apply to magvit2-train-tokenizer"),
    (["--caption_column", "prompt"], "--caption_column does not apply to magvit2-train-tokenizer"),
    (["--resolution", "64", "--init-from", "x"], "--resolution with --init-from"),
    (["--report_to", "comet_ml"], "--report_to comet_ml: the comet_ml package is not installed"),
])
def test_bad_values_exit_2_with_one_line(argv, message, capsys, tmp_path):
    try:
        code = train_tokenizer.main(["--data", str(tmp_path), "--out", str(tmp_path / "y"), *argv])
    except SystemExit as e:  # argparse's own checks exit from parse_args
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_resolution_is_refused_by_the_maskgit_trainer(capsys):
    code = train_maskgit.main(["--tokenizer", "x", "--codes", "x", "--out", "y", "--resolution", "64"])
    err = capsys.readouterr().err
    assert code == 2 and "--resolution does not apply to magvit2-train-maskgit" in err and "\n" not in err.strip()


@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_diffusers_flags_map_onto_the_config(kind):
    module, _ = COMMANDS[kind]
    required = (["--train_data_dir", "clips", "--output_dir", "run"] if kind == "tokenizer" else
                ["--tokenizer", "tok", "--train_data_dir", "clips", "--output_dir", "run"])
    args = module.build_parser().parse_args([*required, "--pretrained_model_name_or_path", "base/model"])
    assert args.data == ["clips"] and args.out == "run" and args.init_from == "base/model"
    c = config(kind, "--lr_scheduler", "cosine", "--lr_warmup_steps", "10", "--adam_weight_decay", "0.01",
               "--max_grad_norm", "0.5", "--num_train_epochs", "3", "--use_ema", "--push_to_hub", "--hub_model_id",
               "me/model", "--logging_dir", "tb", "--allow_tf32")
    optims = (c.gen_optim, c.disc_optim) if kind == "tokenizer" else (c.optim,)
    assert all((o.schedule, o.warmup_steps, o.weight_decay, o.max_grad_norm) == ("cosine", 10, 0.01, 0.5)
               for o in optims)
    recipe = config(kind)
    assert c.run.max_epochs == 3 and c.run.max_steps == recipe.run.max_steps  # steps from the data, at start
    assert c.run.push_to_hub and c.run.hub_model_id == "me/model" and c.run.logging_dir == "tb" and c.run.allow_tf32
    assert c.ema == recipe.ema  # --use_ema: the EMA is always on (and exported)
    assert config(kind, "--num_train_epochs", "3", "--max_train_steps", "7").run.max_epochs is None  # steps win
    constant = config(kind, "--lr_scheduler", "constant")
    assert all(o.schedule == "constant" and o.warmup_steps == 0 for o in ((constant.optim,) if kind == "maskgit"
                                                                          else (constant.gen_optim,)))
    linear = config(kind, "--lr_scheduler", "linear")
    assert (linear.optim if kind == "maskgit" else linear.gen_optim).schedule == "linear"
    if kind == "tokenizer":
        assert config(kind, "--resolution", "64").tokenizer == {"image_size": [64, 64]}
    else:
        assert config(kind, "--caption_column", "prompt").data.caption_column == "prompt"


def test_linear_schedule_decays_to_the_floor():
    from trainers.optim import OptimConfig, lr_at

    c = OptimConfig(lr=1e-3, warmup_steps=10, schedule="linear", min_lr_ratio=0.1)
    assert lr_at(c, 9, 110) == pytest.approx(1e-3) and lr_at(c, 60, 110) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert lr_at(c, 110, 110) == pytest.approx(1e-4)


@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_the_commands_default_preset_is_the_python_apis(kind):
    """`magvit2-train-tokenizer --data clips --out run` trained the 16x16, 5-frame test model while the Python API
    (VideoTokenizerTrainer) defaults to base: now both train base, and --help says what each preset is."""
    import inspect

    from trainers.api import VideoTokenizerTrainer
    from trainers.configs import build_config

    module, required = COMMANDS[kind]
    assert module.build_parser().parse_args(required).preset == "base"
    assert inspect.signature(VideoTokenizerTrainer).parameters["preset"].default == "base"
    assert inspect.signature(build_config).parameters["preset"].default == "base"
    c = config(kind)
    assert c.preset == "base" and c.data.num_frames == 17
    if kind == "tokenizer":
        assert c.run.max_steps == 200_000
