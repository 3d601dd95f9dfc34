"""The experiment configs' paths and the helpers their tests share: the resolved config of
``--print_config``, tiny real-format data for a config, and a one-batch trainer."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cli_args import TINY_MODEL, flags, trainer_args

from densenet_lit.cli import main

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
# The paper's runs and the examples; the modern-recipe runs (*_modern.yaml) are checked in
# tests/test_experiments_modern.py.
MODERN_RUNS = sorted(EXPERIMENTS.glob("*_modern.yaml"))
RUNS = sorted(set(EXPERIMENTS.glob("*.yaml")) - set(MODERN_RUNS))
SHRINK = flags("model.", TINY_MODEL)


def resolved(capsys, *args: str) -> dict:
    """The config that ``fit --config ... --print_config`` prints."""
    with pytest.raises(SystemExit) as printed:
        main(["fit", *[a for p in args for a in ("--config", str(p))], "--print_config"])
    assert printed.value.code in (0, None), capsys.readouterr().err  # not a parser error
    return yaml.safe_load(capsys.readouterr().out)


# Tiny data sets in the real on-disk formats: fake_data(name, **FAKE_DATA[name]).
FAKE_DATA = {
    "cifar10": {"n_train": 40, "n_test": 16},
    "cifar100": {"n_train": 40, "n_test": 16},
    "svhn": {"n_train": 30, "n_extra": 20, "n_test": 16},
    "imagenet": {"n_classes": 3, "n_per_class": 4, "n_val_per_class": 2, "size": (40, 48)},
}


def data_args(path: Path, fake_data) -> list[str]:
    """Point a config at the tiny data (the ``fake_data`` factory's), with batches that fit
    it."""
    name = path.stem
    for prefix in ("cifar100", "cifar10", "svhn"):
        if name.startswith(prefix):
            root, _ = fake_data(prefix, **FAKE_DATA[prefix])
            args = ["--data.init_args.data_dir", str(root)]
            args += ["--data.init_args.batch_size", "8"]
            return args + (["--data.init_args.val_size", "10"] if prefix == "svhn" else [])
    if name.startswith("imagenet"):
        root, _ = fake_data("imagenet", **FAKE_DATA["imagenet"])
        return [
            "--data.init_args.data_dir",
            str(root),
            "--data.init_args.batch_size",
            "4",
            "--data.init_args.num_workers",
            "0",
            "--data.init_args.train_crop",
            "32",
            "--data.init_args.eval_resize",
            "36",
            "--data.init_args.eval_crop",
            "32",
        ]
    return ["--data.init_args.batch_size", "16"]


def quick(tmp_path: Path) -> list[str]:
    """A single batch of each stage (``fast_dev_run``) on a quiet CPU trainer."""
    return trainer_args(tmp_path / "runs", fast_dev_run=True)
