"""The modern-recipe runs (``experiments/*_modern.yaml``): torchvision's values, the learning
rate of their warm-up and cosine, a fit on tiny real-format data, the README's listing and the
recipe name that W&B groups them by."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from experiment_configs import EXPERIMENTS, MODERN_RUNS, SHRINK, data_args, quick, resolved

from densenet_lit.cli import run
from densenet_lit.module import DenseNetModule
from densenet_lit.recipe import MODERN, recipe_name

IMAGENET = EXPERIMENTS / "imagenet121_modern.yaml"
CIFAR = EXPERIMENTS / "cifar10plus_densenet_bc_100_12_modern.yaml"
EMA_CLASS = "lightning.pytorch.callbacks.EMAWeightAveraging"


def test_the_modern_runs():
    assert sorted([CIFAR, IMAGENET]) == MODERN_RUNS
    readme = (EXPERIMENTS / "README.md").read_text()
    for path in MODERN_RUNS:
        rows = [line for line in readme.splitlines() if f"`{path.name}`" in line]
        assert rows and "modern" in rows[0], f"{path.name} missing from experiments/README.md"


def ema_of(cfg: dict) -> dict:
    (ema,) = [c for c in cfg["trainer"]["callbacks"] if c["class_path"] == EMA_CLASS]
    return ema["init_args"]


def test_imagenet_modern_is_torchvisions_recipe(capsys):
    cfg = resolved(capsys, IMAGENET)
    model, data, trainer = cfg["model"], cfg["data"]["init_args"], cfg["trainer"]
    assert model["arch"] == "densenet121"
    assert (model["lr"], model["weight_decay"], model["norm_weight_decay"]) == (0.5, 2e-5, 0.0)
    assert (model["schedule"], model["warmup_epochs"], model["warmup_start_factor"]) == (
        "cosine",
        5,
        0.01,
    )
    assert (model["label_smoothing"], model["mixup_alpha"], model["cutmix_alpha"]) == (
        0.1,
        0.2,
        1.0,
    )
    assert model["mixup_prob"] is None and model["cutmix_prob"] is None  # 0.5 each
    assert trainer["max_epochs"] == 600 and data["batch_size"] == 1024
    assert (data["auto_augment"], data["random_erase"]) == ("ta_wide", 0.1)
    assert (data["color_jitter"], data["lighting"]) == (0.0, 0.0)  # torchvision has neither
    assert model["nesterov"] is False  # torchvision --opt sgd
    assert (data["train_crop"], data["eval_resize"], data["eval_crop"]) == (176, 232, 224)
    ema = ema_of(cfg)
    # torchvision: alpha = (1 - 0.99998) * batch 1024 * 32 steps / 600 epochs, per 32 steps
    assert ema["decay"] == pytest.approx(1 - 2e-5 * 1024 * 32 / 600, abs=1e-7)
    assert ema["update_every_n_steps"] == 32
    assert ema["update_starting_at_step"] == 0  # validation sees an average from epoch 0
    # the paper's checkpoint callback is kept (callbacks+)
    assert cfg["trainer"]["callbacks"][0]["init_args"]["filename"] == "last"


def test_cifar_modern_is_the_papers_run_with_the_modern_components(capsys):
    cfg = resolved(capsys, CIFAR)
    paper = resolved(capsys, EXPERIMENTS / "cifar10plus_densenet_bc_100_12.yaml")
    model = cfg["model"]
    for key in ("depth", "growth_rate", "lr", "weight_decay", "drop_rate"):
        assert model[key] == paper["model"][key]
    assert cfg["data"] == paper["data"] and cfg["trainer"]["max_epochs"] == 300
    assert (model["schedule"], model["warmup_epochs"], model["label_smoothing"]) == (
        "cosine",
        5,
        0.1,
    )
    assert (model["mixup_alpha"], model["cutmix_alpha"], model["norm_weight_decay"]) == (
        1.0,
        1.0,
        0.0,
    )
    ema = ema_of(cfg)
    assert (ema["decay"], ema["update_every_n_steps"]) == (0.9999, 1)
    assert ema["update_starting_at_step"] == 0
    assert [c["init_args"]["filename"] for c in cfg["trainer"]["callbacks"][:1]] == ["last"]


@pytest.mark.parametrize("path", MODERN_RUNS, ids=lambda p: p.stem)
def test_learning_rate_warms_up_then_follows_the_cosine(path, capsys):
    cfg = resolved(capsys, path)
    model_args = {k: v for k, v in cfg["model"].items() if k not in ("depth", "growth_rate")}
    model_args.update(arch="densenet_cifar", depth=10, growth_rate=4, bottleneck=None)
    module = DenseNetModule(**{**model_args, "block_config": None, "compression": None})
    epochs, per_epoch = cfg["trainer"]["max_epochs"], 6  # (epochs - 5) * 6: a multiple of 6
    module.trainer = SimpleNamespace(
        max_epochs=epochs,
        estimated_stepping_batches=epochs * per_epoch,
        num_training_batches=per_epoch,
        accumulate_grad_batches=1,
    )
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(epochs * per_epoch + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    lr, warm, total = model_args["lr"], 5 * per_epoch, epochs * per_epoch
    assert lrs[0] == pytest.approx(0.01 * lr)
    assert lrs[warm // 2] == pytest.approx(lr * (0.01 + 0.99 * 0.5))
    assert lrs[warm] == pytest.approx(lr)
    middle = warm + (total - warm) // 2
    assert lrs[middle] == pytest.approx(lr / 2)
    assert lrs[warm + (total - warm) // 3] == pytest.approx(lr / 2 * (1 + math.cos(math.pi / 3)))
    assert lrs[total] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("path", MODERN_RUNS, ids=lambda p: p.stem)
def test_modern_config_runs_fit_as_a_modern_run(path: Path, fake_data, tmp_path):
    """One step on tiny data (no warm-up: one step is shorter than it), tagged ``modern``."""
    args = ["fit", "--config", str(path), *data_args(path, fake_data), *quick(tmp_path)]
    if path.stem.startswith("imagenet"):
        args += ["--model.arch", "densenet_cifar"]
    c = run([*args, *SHRINK, "--model.warmup_epochs", "0"])
    assert c.trainer.global_step == 1
    assert recipe_name(c.model.hparams, c.datamodule.hparams, averaged=False) == MODERN
