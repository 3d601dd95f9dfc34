"""validate, test and predict of a checkpoint: recipe values that differ from the checkpoint's
are a note (only the network is evaluated), network arguments that differ are an error; fit
refuses both, as it continues the checkpoint's network and recipe."""

from __future__ import annotations

import logging

import pytest

from densenet_lit.cli import run
from densenet_lit.cli.preflight import CheckpointMismatchError, check_checkpoint_args
from densenet_lit.models.spec import is_network_arg

# the note's logger (Lightning's rank_zero_info): its level is set here, as another tool run in
# the same process (the bench) may have raised the "lightning.pytorch" loggers' level
NOTE_LOGGER = "lightning.pytorch.utilities.rank_zero"

# the checkpoint's recipe; the configs below give the module's defaults (0.5, 0.75) and 0.1
TRAINED_RECIPE = {"milestones": "[2]", "lr": 0.05}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint trained with ``--model.milestones [2] --model.lr 0.05`` and its root."""
    from cli_args import QUICK, cli_args

    root = tmp_path_factory.mktemp("recipe") / "runs"
    c = run(cli_args("fit", root, model=TRAINED_RECIPE, trainer=QUICK, name="exp"))
    return c.run_dir / "checkpoints" / "last.ckpt", root


def test_recipe_arguments_are_the_non_network_ones():
    for name in ("arch", "depth", "growth_rate", "bottleneck", "compression", "drop_rate"):
        assert is_network_arg(name)
    assert is_network_arg("block_config", ("densenet_imagenet",))
    assert not is_network_arg("block_config")  # not an argument of the CIFAR network
    for name in ("lr", "milestones", "schedule", "momentum", "weight_decay", "gamma", "top5"):
        assert not is_network_arg(name)
    assert not is_network_arg("memory_efficient")  # runtime: neither network nor recipe


def test_validate_with_other_recipe_values_notes_them(trained, run_args, caplog):
    ckpt, _ = trained
    caplog.set_level(logging.INFO, logger=NOTE_LOGGER)
    c = run(run_args("--ckpt_path", str(ckpt), subcommand="validate"))
    assert c.trainer.callback_metrics["val/error"] >= 0
    (note,) = [r.getMessage() for r in caplog.records if "recipe values" in r.getMessage()]
    assert "\n" not in note and note.startswith("Note: validate evaluates")
    assert "model.milestones: [0.5, 0.75] (checkpoint [2.0])" in note
    assert "model.lr: 0.1 (checkpoint 0.05)" in note


@pytest.mark.parametrize("stage", ["test", "predict"])
def test_evaluation_stages_note_recipe_values(trained, stage, caplog):
    ckpt, _ = trained
    caplog.set_level(logging.INFO, logger=NOTE_LOGGER)
    shapes = check_checkpoint_args(str(ckpt), {"lr": 0.2, "weight_decay": 0.0}, stage=stage)
    assert shapes["model.classifier.weight"] == (10, shapes["model.classifier.weight"][1])
    (note,) = [r.getMessage() for r in caplog.records if "recipe values" in r.getMessage()]
    assert f"Note: {stage} evaluates" in note and "model.lr: 0.2 (checkpoint 0.05)" in note
    assert "model.weight_decay: 0.0 (checkpoint 0.0001)" in note


@pytest.mark.parametrize("stage", ["validate", "test", "predict"])
def test_evaluation_stages_refuse_other_network_arguments(trained, stage):
    ckpt, _ = trained
    given = {"growth_rate": 6, "lr": 0.2}
    with pytest.raises(CheckpointMismatchError) as error:
        check_checkpoint_args(str(ckpt), given, stage=stage)
    assert "model.growth_rate: given 6, checkpoint 4" in str(error.value)
    assert "model.lr" not in str(error.value)  # the recipe is only noted


def test_fit_refuses_other_recipe_values(trained, run_args):
    ckpt, _ = trained
    with pytest.raises(CheckpointMismatchError, match=r"model.milestones: given \[0.5, 0.75\]"):
        run(run_args("--ckpt_path", str(ckpt)))
