"""Run directories as ``python -m densenet_lit fit`` writes them, with known contents, for the
tests of the analysis tools and the notebooks (the ``fake_runs`` fixture of conftest.py)."""

from __future__ import annotations

import csv
import os
from datetime import datetime
from pathlib import Path

import yaml

# What each data module declares itself to be (its ``benchmark``; CIFAR adds "plus" when it
# augments), as the CLI's runs log it with their hyperparameters.
BENCHMARKS = {
    "CIFAR10DataModule": "cifar10",
    "CIFAR100DataModule": "cifar100",
    "SVHNDataModule": "svhn",
    "ImageNetDataModule": "imagenet",
    "DigitsDataModule": "digits",
}


def write_fake_run(
    root: Path,
    experiment: str,
    run_id: str,
    *,
    data_class: str,
    data_args: dict,
    model_args: dict,
    rows: list[dict],
    max_epochs: int,
    metrics_subdir: str = "",
    checkpoint: bool = True,
    start: float | None = None,
    end: float | None = None,
) -> Path:
    """A run directory as ``python -m densenet_lit fit`` writes it: config.yaml (the resolved
    LightningCLI config), hparams.yaml + metrics.csv (CSVLogger) and checkpoints/. ``rows`` are
    the CSV rows (missing keys are empty cells). ``start``/``end`` set the files' times."""
    run_dir = root / experiment / run_id
    (run_dir / metrics_subdir).mkdir(parents=True, exist_ok=True)
    config = {
        "seed_everything": 0,
        "trainer": {"max_epochs": max_epochs, "default_root_dir": str(root), "logger": None},
        "model": {"arch": "densenet_cifar", "drop_rate": 0.0, "lr": 0.1, **model_args},
        "data": {"class_path": f"densenet_lit.data.{data_class}", "init_args": data_args},
        "run": {"name": None, "wandb": False, "test_after_fit": True},
        "ckpt_path": None,
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    hparams = {"_instantiator": "lightning.pytorch.cli.instantiate_module", **config["model"]}
    hparams.update(data_args)
    hparams["benchmark"] = BENCHMARKS[data_class] + ("plus" if data_args.get("augment") else "")
    metrics_dir = run_dir / metrics_subdir
    (metrics_dir / "hparams.yaml").write_text(yaml.safe_dump(hparams))
    columns = sorted({k for row in rows for k in row} | {"epoch", "step"})
    with open(metrics_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in columns})
    files = [run_dir / "config.yaml", metrics_dir / "hparams.yaml", metrics_dir / "metrics.csv"]
    if checkpoint:
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"not needed by the report")
        files.append(run_dir / "checkpoints" / "last.ckpt")
    if start is not None:
        for f in files[:2]:
            os.utime(f, (start, start))
    if end is not None:
        for f in files[2:]:
            os.utime(f, (end, end))
    return run_dir


def epoch_rows(val_errors, train_errors=None, images_per_sec=None, steps_per_epoch=10):
    """CSV rows as Lightning's CSVLogger writes them: a validation row and a training row per
    epoch, NaN (empty) where a metric is not logged."""
    rows = []
    for e, val in enumerate(val_errors):
        step = (e + 1) * steps_per_epoch - 1
        rows.append({"epoch": e, "step": step, "val/error": val, "val/loss": val / 10})
        train = {"epoch": e, "step": step, "train/loss": 1.0 / (e + 1)}
        if train_errors is not None:
            train["train/error"] = train_errors[e]
        if images_per_sec is not None:
            train["perf/images_per_sec"] = images_per_sec[e]
        rows.append(train)
    return rows


START_A = datetime(2025, 1, 1, 10, 0, 0).timestamp()


def write_fake_runs(root: Path) -> Path:
    """Four finished/unfinished runs with known numbers under ``root`` (the ``fake_runs``
    fixture of conftest.py)."""
    # A: DenseNet-BC (L=100, k=12) on C10+, 3 epochs of 3, tested: 4.75 vs the paper's 4.51.
    rows_a = epoch_rows([10.0, 7.5, 6.25], [20.0, 12.0, 8.0], [100.0, 120.0, 110.0])
    rows_a.append({"epoch": 3, "step": 29, "test/error": 4.75, "test/loss": 0.2})
    write_fake_run(
        root, "cifar10plus_densenet_bc_100_12", "20250101-100000-aaaaaa",
        data_class="CIFAR10DataModule",
        data_args={"data_dir": "data/cifar10", "batch_size": 64, "augment": True, "val_size": 5000},
        model_args={"depth": 100, "growth_rate": 12, "bottleneck": None, "compression": None},
        rows=rows_a, max_epochs=3, end=START_A + 3600,
    )  # fmt: skip
    # B: DenseNet (L=40, k=12) on SVHN, 2 of 4 epochs, no test: unfinished, ours = last val.
    t0 = datetime(2025, 2, 1, 8, 0, 0).timestamp()
    write_fake_run(
        root, "svhn_densenet_40_12", "run-b",
        data_class="SVHNDataModule",
        data_args={"data_dir": "data/svhn", "batch_size": 64, "val_size": 6000},
        model_args={"depth": 40, "growth_rate": 12, "bottleneck": False, "compression": 1.0,
                    "drop_rate": 0.2},
        rows=epoch_rows([3.0, 2.5]), max_epochs=4, start=t0, end=t0 + 90,
    )  # fmt: skip
    # C: DenseNet (L=40, k=12) on C100 (no augmentation), metrics.csv nested, no checkpoints.
    rows_c = epoch_rows([40.0, 35.0])
    rows_c.append({"epoch": 2, "step": 19, "test/error": 30.0})
    write_fake_run(
        root, "cifar100_densenet_40_12", "run-c",
        data_class="CIFAR100DataModule",
        data_args={"data_dir": "data/cifar100", "batch_size": 64, "augment": False, "val_size": 5000},
        model_args={"depth": 40, "growth_rate": 12, "bottleneck": False, "compression": 1.0},
        rows=rows_c, max_epochs=2, metrics_subdir="csv", checkpoint=False, start=t0, end=t0 + 45,
    )  # fmt: skip
    # D: DenseNet-121 on ImageNet, 2 of 2 epochs, val error only (24.5 vs 25.02, single-crop).
    write_fake_run(
        root, "imagenet121", "run-d",
        data_class="ImageNetDataModule",
        data_args={"data_dir": "data/imagenet", "batch_size": 256, "eval_crop": 224},
        model_args={"arch": "densenet121", "schedule": "step"},
        rows=epoch_rows([30.0, 24.5], images_per_sec=[900.0, 1000.0]), max_epochs=2,
        start=t0, end=t0 + 9000,
    )  # fmt: skip
    return root
