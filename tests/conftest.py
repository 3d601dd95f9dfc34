"""Shared pytest configuration and the fixtures every test file may use: the tiny-run argument
builder (``run_args``), the W&B isolation (``no_wandb_account``), the fake-data factory
(``fake_data``) and the fake run directories of the analysis tests (``fake_runs``).

Plain helpers (no fixtures) live in modules of their own next to this file: ``cli_args.py``
(the argument builder itself), ``run_dirs.py``, ``plots.py``, ``weights.py``, ``crops.py``.
This file imports neither jsonargparse nor wandb: the GPU tests must collect without them.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from cli_args import QUICK, cli_args

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_collection_modifyitems(config, items):
    """GPU tests skip cleanly where there is no CUDA device (CI never has one)."""
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def run_args(tmp_path: Path) -> Callable[..., list[str]]:
    """The tiny-run argument builder for this test: ``run_args(*extra, subcommand="fit",
    trainer=None, **options)`` is :func:`cli_args.cli_args` for ``subcommand`` with its runs
    under ``tmp_path / "runs"`` and a quick trainer (:data:`cli_args.QUICK`: one epoch of 2
    batches in each stage; ``trainer`` adds to it or overrides it, None leaves a setting
    out). ``options`` are the builder's other keywords (``data``, ``model``, ``run``, ...)."""

    def build(
        *extra: str,
        subcommand: str = "fit",
        trainer: dict[str, object] | None = None,
        **options: object,
    ) -> list[str]:
        quick = {**QUICK, **(trainer or {})}
        return cli_args(subcommand, tmp_path / "runs", *extra, trainer=quick, **options)

    return build


@pytest.fixture
def no_wandb_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A machine where nobody logged in to W&B: no API key, no ``~/.netrc``, no W&B settings
    folder, and WANDB_MODE, WANDB_DISABLED and WANDB_BASE_URL unset. Returns the (empty) home
    folder: a test that needs a login writes its ``.netrc`` there."""
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DISABLED", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    return home


@pytest.fixture(scope="session")
def fake_data(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[Path, object]]:
    """Tiny data sets in the real on-disk formats, each written once per session and shared
    by every test that asks for the same one: ``fake_data(kind, **sizes)`` returns ``(root,
    what the writer returned)``, ``kind`` being ``cifar10``, ``cifar100``, ``svhn`` or
    ``imagenet`` and ``sizes`` the keywords of its writer in
    :mod:`densenet_lit.data.synthetic` (its defaults where left out). Read the files, never
    change them: a test that damages or removes files writes its own into ``tmp_path``."""
    from densenet_lit.data import synthetic

    writers = {
        "cifar10": synthetic.write_cifar10,
        "cifar100": synthetic.write_cifar100,
        "svhn": synthetic.write_svhn,
        "imagenet": synthetic.write_imagenet,
    }
    written: dict[tuple[str, str], tuple[Path, object]] = {}

    def make(kind: str, **sizes: object) -> tuple[Path, object]:
        if kind not in writers:
            raise ValueError(f"fake_data({kind!r}): expected one of {', '.join(writers)}")
        arguments = inspect.signature(writers[kind]).bind(None, **sizes)
        arguments.apply_defaults()
        key = (kind, repr(list(arguments.arguments.items())[1:]))  # all but the root
        if key not in written:
            root = tmp_path_factory.mktemp(kind)
            written[key] = (root, writers[kind](root, **sizes))
        return written[key]

    return make


@pytest.fixture
def fake_runs(tmp_path: Path) -> Path:
    """Four finished or unfinished runs with known numbers under ``tmp_path / "runs"``
    (see :func:`run_dirs.write_fake_runs`)."""
    from run_dirs import write_fake_runs

    return write_fake_runs(tmp_path / "runs")
