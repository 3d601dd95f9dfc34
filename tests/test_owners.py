"""Each fact has one owner: the YAML files that repeat one agree with it, and the code spells
each name in one module only (the others import it)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import yaml

from densenet_lit import benchmarks, metric_names, paper, rundir
from densenet_lit.callbacks.checkpoints import MONITOR
from densenet_lit.cli import main
from densenet_lit.data import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    ImageNetDataModule,
    SVHNDataModule,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = REPO / "experiments" / "defaults"
PACKAGE = REPO / "densenet_lit"


def checkpoint_callbacks(path: Path) -> list[dict]:
    callbacks = yaml.safe_load(path.read_text())["trainer"]["callbacks"]
    return [c["init_args"] for c in callbacks if c["class_path"].endswith(".ModelCheckpoint")]


def test_the_yaml_checkpoints_are_the_callbacks_and_the_run_directory():
    last, best = checkpoint_callbacks(DEFAULTS / "base.yaml")
    assert last["filename"] == rundir.LAST_NAME and last["monitor"] is None
    assert best["filename"] == rundir.BEST_FILENAME
    assert best["monitor"] == MONITOR == metric_names.VAL_ERROR
    assert checkpoint_callbacks(DEFAULTS / "imagenet.yaml") == [last]
    assert rundir.last_checkpoint("r") == Path("r") / rundir.CHECKPOINT_DIR / rundir.LAST_FILE


@pytest.mark.parametrize(
    "quoted",
    [
        *(f'"{name}"' for name in ("val/error", "test/error", "train/loss", "train/loss_step")),
        *(f'"{name}"' for name in ("c10+", "cifar10plus", "last.ckpt", "wandb_run_id")),
        '"hpc_ckpt_"',
    ],
)
def test_each_name_is_spelled_in_one_module(quoted):
    spelled = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if quoted in p.read_text() or quoted.replace('"', "'") in p.read_text()
    ]
    assert len(spelled) <= 1, spelled


@pytest.mark.parametrize(
    ("module", "owner"),
    [
        (CIFAR10DataModule, benchmarks.CIFAR10),
        (CIFAR100DataModule, benchmarks.CIFAR100),
        (SVHNDataModule, benchmarks.SVHN),
        (DigitsDataModule, benchmarks.DIGITS),
    ],
)
def test_data_modules_declare_their_benchmark_as_class_attributes(module, owner):
    for name in ("num_classes", "in_channels"):
        declared = inspect.getattr_static(module, name)
        assert not isinstance(declared, property) and declared == getattr(owner, name)
    if module is not DigitsDataModule:  # the digits' side is an argument
        assert module.image_size == owner.image_size == 32


def test_cifar_benchmark_names_what_the_paper_calls_it():
    for module, plain, plus in [
        (CIFAR10DataModule, benchmarks.CIFAR10, benchmarks.CIFAR10_PLUS),
        (CIFAR100DataModule, benchmarks.CIFAR100, benchmarks.CIFAR100_PLUS),
    ]:
        assert module(augment=False).benchmark == plain.name
        augmented = module(augment=True)
        assert augmented.benchmark == plus.name == augmented.hparams["benchmark"]
        assert benchmarks.find_benchmark(plus.name) == benchmarks.find_benchmark(plus.key)
    assert (benchmarks.CIFAR10_PLUS.name, benchmarks.CIFAR10_PLUS.key) == ("cifar10plus", "c10+")
    # CIFAR-100 takes CIFAR-10's arguments, with its own folder
    c100 = CIFAR100DataModule(batch_size=8, val_size=3)
    assert set(c100.hparams) == set(CIFAR10DataModule().hparams)
    assert (c100.data_dir, c100.batch_size, c100.val_size) == ("data/cifar100", 8, 3)


def test_every_paper_column_is_a_benchmark():
    columns = {key for m in (*paper.ALL_MODELS, *paper.PREACT_RESNETS) for key in m.errors}
    assert columns <= set(paper.BENCHMARKS)
    for column in paper.BENCHMARKS:
        assert paper.benchmark_of(column) is not None, column
    assert paper.benchmark_of("imagenet_10crop_top5") == benchmarks.IMAGENET
    assert ImageNetDataModule(data_dir="/nonexistent").num_classes == benchmarks.IMAGENET_CLASSES


def constructor_default(module: type, name: str) -> object:
    return inspect.signature(module.__init__).parameters[name].default


@pytest.mark.parametrize(
    ("config", "module"),
    [
        ("cifar100.yaml", CIFAR100DataModule),  # after cifar.yaml names CIFAR-10's module
        ("imagenet.yaml", ImageNetDataModule),
    ],
)
def test_data_dir_defaults_are_the_constructors(config, module, capsys):
    assert all("data_dir" not in p.read_text() for p in DEFAULTS.glob("*.yaml"))
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(DEFAULTS / config), "--print_config"])
    data = yaml.safe_load(capsys.readouterr().out)["data"]
    assert data["class_path"].endswith(module.__name__)
    assert data["init_args"]["data_dir"] == constructor_default(module, "data_dir")
    assert constructor_default(module, "data_dir").startswith("data/")


def test_the_memory_levels_do_not_read_the_layer():
    """DenseLayer owns its recomputed forward; the memory-level tools import no network."""
    tree = ast.parse((PACKAGE / "models" / "memory_efficient.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {m for m in imported if m and m.startswith("densenet_lit")}, imported
