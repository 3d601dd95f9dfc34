"""Every experiment config parses, matches the paper's recipe, and runs fit on tiny real-format data."""

from __future__ import annotations

import importlib
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from crops import crop_offsets
from experiment_configs import EXPERIMENTS, RUNS, SHRINK, data_args, quick, resolved

from densenet_lit.analysis.costs import network_cost
from densenet_lit.cli import run
from densenet_lit.data.transforms import normalize
from densenet_lit.models.spec import network_spec
from densenet_lit.module import DenseNetModule
from densenet_lit.paper import CIFAR_MODELS, IMAGENET_MODELS

# Figure 4 (left), one config per run; sweep.yaml is the same sweep for `wandb sweep`
SWEEP = sorted(p for p in (EXPERIMENTS / "sweep_c10plus").glob("*.yaml") if p.name != "sweep.yaml")

# SPEC.md section 2: (global batch, epochs, {epoch: lr}) per recipe; step schedules are
# checked on both sides of every milestone.
RECIPES = {
    "cifar": (64, 300, {0: 0.1, 149: 0.1, 150: 0.01, 224: 0.01, 225: 0.001, 299: 0.001}),
    "svhn": (64, 40, {0: 0.1, 19: 0.1, 20: 0.01, 29: 0.01, 30: 0.001, 39: 0.001}),
    "imagenet": (256, 90, {0: 0.1, 29: 0.1, 30: 0.01, 59: 0.01, 60: 0.001, 89: 0.001}),
    "imagenet161": (
        128,
        100,
        {0: 0.1, 29: 0.1, 30: 0.01, 59: 0.01, 60: 0.001, 89: 0.001, 90: 1e-4, 99: 1e-4},
    ),
    "cosine": (256, 90, None),
    "imagenette": (256, 30, {0: 0.1, 14: 0.1, 15: 0.01, 24: 0.01, 25: 0.001, 29: 0.001}),
}
NOT_IN_THE_PAPER = {"demo_digits", "imagenette121"}  # examples, with no paper error to match


def recipe_of(path: Path) -> str | None:
    name = path.stem
    if name.startswith("cifar"):
        return "cifar"
    if name.startswith("svhn"):
        return "svhn"
    if name == "imagenet161":
        return "imagenet161"
    if name.startswith("imagenette"):
        return "imagenette"
    if name.startswith("imagenet"):
        return "cosine" if "cosine" in name else "imagenet"
    return None  # the demo


# ---------------------------------------------------------------------- the set of runs
def test_one_config_per_paper_run():
    names = {p.stem for p in RUNS}
    expected = set(NOT_IN_THE_PAPER)
    benchmarks = {"c10": "cifar10", "c10+": "cifar10plus", "c100": "cifar100"}
    benchmarks |= {"c100+": "cifar100plus", "svhn": "svhn"}
    for m in CIFAR_MODELS:
        expected |= {f"{benchmarks[b]}_{m.key}" for b in m.errors}
    expected |= {"imagenet" + m.key.removeprefix("densenet") for m in IMAGENET_MODELS}
    assert "imagenet121" in names
    assert names == expected


def test_readme_lists_every_run_with_the_papers_error():
    readme = (EXPERIMENTS / "README.md").read_text()
    for path in RUNS:
        if path.stem in NOT_IN_THE_PAPER:
            assert path.stem == "demo_digits" or f"{path.stem}.yaml" in readme
            continue
        first_line = path.read_text().splitlines()[0]
        error = re.search(r"(\d+\.\d+)% ", first_line).group(1)
        rows = [line for line in readme.splitlines() if f"{path.stem}.yaml" in line]
        assert rows, f"{path.name} missing from experiments/README.md"
        assert any(error in row for row in rows), f"{path.name}: {error}% not in its README row"


@pytest.mark.parametrize("path", RUNS, ids=lambda p: p.stem)
def test_config_matches_the_paper(path, capsys):
    cfg = resolved(capsys, path)
    model, data, trainer = cfg["model"], cfg["data"], cfg["trainer"]
    recipe = recipe_of(path)
    first = cfg["trainer"]["callbacks"][0]
    assert first["class_path"] == "lightning.pytorch.callbacks.ModelCheckpoint"
    assert first["init_args"]["filename"] == "last" and first["init_args"]["monitor"] is None
    assert model["lr"] == 0.1 and model["momentum"] == 0.9 and model["nesterov"]
    assert model["weight_decay"] == 1e-4 and model["dampening"] == 0
    if recipe is None:
        return
    batch, epochs, _ = RECIPES[recipe]
    assert data["init_args"]["batch_size"] == batch
    assert trainer["max_epochs"] == epochs
    if recipe in ("cifar", "svhn"):
        key = path.stem.split("_", 1)[1]
        (row,) = [m for m in CIFAR_MODELS if m.key == key]
        defaults = {"bottleneck": True, "compression": 0.5}  # DenseNetModule's for densenet_cifar
        for arg, value in row.model_kwargs.items():
            given = model[arg] if model[arg] is not None else defaults[arg]
            assert given == value, arg
        augmented = path.stem.split("_")[0].endswith("plus")
        assert data["init_args"].get("augment", False) == augmented
        assert model["drop_rate"] == (0.0 if augmented else 0.2)  # dropout only without "+"
        dataset = path.stem.split("_")[0].removesuffix("plus")
        assert data["class_path"].lower().endswith(f"{dataset}datamodule")
        if recipe == "svhn":
            assert data["init_args"]["val_size"] == 6000 and cfg["run"]["test_ckpt"] == "best"
        else:
            assert data["init_args"]["val_size"] == 0 and cfg["run"]["test_after_fit"]
    else:
        assert data["class_path"] == "densenet_lit.data.ImageNetDataModule"
        if path.stem in NOT_IN_THE_PAPER:
            return
        (row,) = [
            m for m in IMAGENET_MODELS if "imagenet" + m.key.removeprefix("densenet") == path.stem
        ]
        assert model["arch"] == row.arch and model["depth"] is None
        for arg, value in row.model_kwargs.items():  # densenet_imagenet: blocks and k
            given = tuple(model[arg]) if arg == "block_config" else model[arg]
            assert given == value, arg
        assert (model["schedule"] == "cosine") == ("cosine" in path.stem)


# one "+" run per data set: test_config_matches_the_paper checks that every "+" run has
# its data set's module with augment: true (the padding is the module's, not a config key)
AUGMENTED = [EXPERIMENTS / f"{d}plus_densenet_bc_100_12.yaml" for d in ("cifar10", "cifar100")]


@pytest.mark.parametrize("path", AUGMENTED, ids=lambda p: p.stem)
def test_augmented_cifar_configs_crop_from_images_padded_by_4(path, capsys):
    """The "+" augmentation of the paper: the data module of the config cuts each training
    image (mirrored or not) from the image zero-padded by 4 pixels, at offsets that cover
    0..8 in both axes."""
    data = resolved(capsys, path)["data"]
    module_name, _, class_name = data["class_path"].rpartition(".")
    datamodule = getattr(importlib.import_module(module_name), class_name)(**data["init_args"])
    torch.manual_seed(0)
    images = torch.randint(0, 256, (2000, 3, 6, 6), dtype=torch.uint8)
    batch = (images, torch.zeros(2000, dtype=torch.long))
    out, _ = datamodule.transform_batch(batch, train=True)
    x = normalize(images, datamodule.mean, datamodule.std)
    offsets = crop_offsets(out, x, x.flip(-1), padding=4)
    assert set(offsets[:, 0].tolist()) == set(offsets[:, 1].tolist()) == set(range(9))


@pytest.mark.parametrize("path", RUNS, ids=lambda p: p.stem)
def test_learning_rate_around_each_milestone(path, capsys):
    """The optimizer and scheduler built from the config give SPEC.md's learning rates."""
    recipe = recipe_of(path)
    cfg = resolved(capsys, path)
    network = ("depth", "growth_rate", "block_config")
    model_args = {k: v for k, v in cfg["model"].items() if k not in network}
    model_args.update(arch="densenet_cifar", depth=10, growth_rate=4)  # the recipe, tiny net
    model_args.update(bottleneck=None, compression=None)
    module = DenseNetModule(**model_args)
    epochs = cfg["trainer"]["max_epochs"]
    steps = 10
    module.trainer = SimpleNamespace(max_epochs=epochs, estimated_stepping_batches=epochs * steps)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]
    if recipe == "cosine":
        assert sched["interval"] == "step"
        lrs = []
        for _ in range(epochs * steps + 1):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched["scheduler"].step()
        total = epochs * steps
        assert lrs[0] == pytest.approx(0.1)
        assert lrs[total // 2] == pytest.approx(0.05)
        assert lrs[total] == pytest.approx(0.0, abs=1e-12)
        assert lrs[total // 3] == pytest.approx(0.05 * (1 + math.cos(math.pi / 3)))
        return
    assert sched["interval"] == "epoch"
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched["scheduler"].step()
    expected = RECIPES[recipe][2] if recipe else {0: 0.1}
    for epoch, lr in expected.items():
        assert lrs[epoch] == pytest.approx(lr), f"epoch {epoch}"


# ------------------------------------------------------------------------- fit them all
@pytest.mark.parametrize("path", RUNS, ids=lambda p: p.stem)
def test_config_runs_fit(path, fake_data, tmp_path):
    args = ["fit", "--config", str(path), *data_args(path, fake_data), *quick(tmp_path)]
    if "densenet_imagenet" in path.read_text():  # shrunk: 1 layer per block, k = 4
        args += ["--model.block_config", "[1, 1, 1, 1]", "--model.growth_rate", "4"]
    else:
        if path.stem.startswith("imagenet"):
            args += ["--model.arch", "densenet_cifar"]  # shrunk: a small CIFAR-style network
        args += SHRINK
    c = run(args)
    assert c.trainer.global_step == 1
    assert c.model.hparams.num_classes == c.datamodule.num_classes
    if c.config.fit.run.test_after_fit:
        assert "test/error" in c.trainer.callback_metrics


@pytest.mark.slow
@pytest.mark.parametrize("name", ["imagenet121", "imagenette121"])
def test_imagenet_config_runs_fit_with_its_own_network(name, fake_data, tmp_path):
    path = EXPERIMENTS / f"{name}.yaml"
    c = run(["fit", "--config", str(path), *data_args(path, fake_data), *quick(tmp_path)])
    assert c.trainer.global_step == 1
    assert c.model.hparams.arch == "densenet121"
    # one output per class folder of the (fake, 3-class) data; top-5 only from 1,000 classes
    assert c.model.model.classifier.out_features == 3 and not c.model.top5


# ------------------------------------------------------------------ the Figure 4 (left) sweep
def test_sweep_has_each_variant_at_each_depth():
    """DenseNet, -B, -C and -BC (k=12) at depths 40, 70 and 100 on C10+."""
    variants = ("densenet_", "densenet_b_", "densenet_c_", "densenet_bc_")
    expected = {f"cifar10plus_{v}{depth}_12" for v in variants for depth in (40, 70, 100)}
    assert {p.stem for p in SWEEP} == expected


@pytest.mark.parametrize("path", SWEEP, ids=lambda p: p.stem)
def test_sweep_config_is_its_network_with_the_c10plus_recipe(path, capsys):
    cfg = resolved(capsys, path)
    model, data, trainer = cfg["model"], cfg["data"], cfg["trainer"]
    spec = network_spec(model)
    network = spec.kwargs
    assert spec.key == path.stem.removeprefix("cifar10plus_")
    assert data["class_path"] == "densenet_lit.data.CIFAR10DataModule"
    assert data["init_args"]["augment"] and model["drop_rate"] == 0.0
    assert data["init_args"]["batch_size"] == 64 and trainer["max_epochs"] == 300
    assert data["init_args"]["val_size"] == 0 and cfg["run"]["test_after_fit"]
    assert model["lr"] == 0.1 and model["milestones"] == [0.5, 0.75]
    # the runs of Table 2 are the top-level configs themselves: same network, same name
    twin = EXPERIMENTS / path.name
    if twin.is_file():
        assert resolved(capsys, twin)["model"] == model
        row = next(m for m in CIFAR_MODELS if m.key == spec.key)
        args = {k: network[k] for k in ("depth", "growth_rate", "bottleneck", "compression")}
        params = network_cost("densenet_cifar", (3, 32, 32), num_classes=10, **args).params
        assert round(params / 1e6, 1) == row.params_m


def test_a_sweep_config_runs_fit(fake_data, tmp_path):
    path = EXPERIMENTS / "sweep_c10plus" / "cifar10plus_densenet_b_40_12.yaml"
    args = ["fit", "--config", str(path), *data_args(path, fake_data), *quick(tmp_path)]
    c = run([*args, "--model.depth", "10", "--model.growth_rate", "4"])  # DenseNet-B, tiny
    assert c.trainer.global_step == 1 and "test/error" in c.trainer.callback_metrics
    assert c.model.hparams.bottleneck and c.model.hparams.compression == 1.0
    assert c.run_dir.parent.name == path.stem
