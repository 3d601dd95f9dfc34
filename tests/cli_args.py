"""Argument lists for ``densenet_lit.cli.run`` / ``main`` (and ``python -m densenet_lit``).

The one builder of the tests' runs, :func:`cli_args`: the flags they share live here (a
quiet CPU trainer, its runs directory, W&B off, the tiny DenseNet-BC on the bundled digits);
what a test varies it passes as keywords. The ``run_args`` fixture of conftest.py is this
builder bound to a test's ``tmp_path`` with the :data:`QUICK` trainer. A plain module (no
fixtures), so that module-scoped fixtures and module constants can use it too."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

DIGITS = "densenet_lit.data.DigitsDataModule"
TINY_MODEL = {"depth": 10, "growth_rate": 4}  # DenseNet-BC-10 with k = 4
IMAGENET = "densenet_lit.data.ImageNetDataModule"
# A quick run: one epoch of 2 batches in each stage (integer counts: a float 1.0 is 100 %).
QUICK = {
    "max_epochs": 1,
    "limit_train_batches": 2,
    "limit_val_batches": 2,
    "limit_test_batches": 2,
    "limit_predict_batches": 2,
}


def text(value: object) -> str:
    """A value on the command line: booleans as ``true`` / ``false``."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def flags(prefix: str, values: Mapping[str, object]) -> list[str]:
    """``--<prefix><key> <value>`` for each item whose value is not None, in order."""
    args = []
    for key, value in values.items():
        if value is not None:
            args += [f"--{prefix}{key}", text(value)]
    return args


def trainer_args(root: Path | None, **trainer: object) -> list[str]:
    """A trainer on the CPU with the given settings, no progress bar or model summary, writing
    its runs under ``root`` (left out where None)."""
    quiet = {"enable_progress_bar": False, "enable_model_summary": False}
    return flags("trainer.", {"accelerator": "cpu", **trainer, **quiet, "default_root_dir": root})


def cli_args(
    subcommand: str | None,
    root: Path | None,
    *extra: str,
    data: str = DIGITS,
    batch_size: int = 32,
    data_init: Mapping[str, object] | None = None,
    model: Mapping[str, object] | None = None,
    seed: int | None = None,
    trainer: Mapping[str, object] | None = None,
    wandb: bool | None = False,
    run: Mapping[str, object] | None = None,
    name: str | None = None,
) -> list[str]:
    """``subcommand`` (left out where None), then a run of ``data`` (init args: ``batch_size``,
    then ``data_init``) on the tiny DenseNet-BC (``model`` adds to or overrides
    ``TINY_MODEL``), seeded with ``seed``, with :func:`trainer_args` under ``root``,
    ``--run.wandb`` (left out where None: the CLI's default, on), the other ``run`` options
    and ``--run.name``; ``extra`` last, so that its flags win. Keywords left None are left
    out."""
    args = [subcommand] if subcommand is not None else []
    args += ["--data", data]
    args += flags("data.init_args.", {"batch_size": batch_size, **(data_init or {})})
    args += flags("model.", {**TINY_MODEL, **(model or {})})
    args += flags("", {"seed_everything": seed})
    args += trainer_args(root, **(trainer or {}))
    args += flags("run.", {"wandb": wandb, **(run or {}), "name": name})
    return [*args, *extra]


# The tiny ImageNet of imagenet_resume_args, fake_data("imagenet", **IMAGENET_RESUME_DATA):
# 3 classes of 8 training and 2 validation images of 20x24 pixels (6 batches of 4 an epoch).
IMAGENET_RESUME_DATA = {"n_classes": 3, "n_per_class": 8, "n_val_per_class": 2, "size": (20, 24)}


def imagenet_resume_args(
    root: Path, data_dir: Path, name: str, workers: int, *extra: str, decode: str | None = None
) -> list[str]:
    """Two seeded, deterministic epochs of a tiny network on the tiny ImageNet in ``data_dir``
    (:data:`IMAGENET_RESUME_DATA`), in batches of 4 whose images are decoded and augmented in
    ``workers`` loader processes (0: in the training process) by the ``decode`` path (None:
    the data module's default), for the tests that compare an interrupted-and-resumed run
    with an uninterrupted one."""
    data = {"data_dir": data_dir, "train_crop": 16, "eval_resize": 18, "eval_crop": 16}
    return cli_args(
        "fit",
        root,
        *extra,
        data=IMAGENET,
        batch_size=4,
        data_init={**data, "num_workers": workers, "decode": decode},
        model={"milestones": "[2]"},
        seed=3,
        trainer={
            "deterministic": True,
            "max_epochs": 2,
            "limit_val_batches": 1,
            "log_every_n_steps": 1,
        },
        run={"test_after_fit": False},
        name=name,
    )
