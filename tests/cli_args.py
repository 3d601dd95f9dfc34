"""Argument lists for ``densenet_lit.cli.run`` / ``main`` (and ``python -m densenet_lit``).

The flags the tests' runs share live here: a quiet CPU trainer, its runs directory, W&B off,
the tiny DenseNet-BC on the bundled digits. What a test varies it passes as keywords."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

DIGITS = "densenet_lit.data.DigitsDataModule"
TINY_MODEL = {"depth": 10, "growth_rate": 4}  # DenseNet-BC-10 with k = 4


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
