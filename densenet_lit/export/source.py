"""The trained network of a checkpoint or run directory, and what the export records about it:
the network's arguments, its input, the data set, which weights (EMA or raw) and the run's
errors. Everything is read with the safe loader and the analysis tools' readers."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from densenet_lit import __version__, rundir
from densenet_lit.analysis import derived
from densenet_lit.analysis.checkpoint import (
    TRUST_OPT_IN,
    find_checkpoint,
    load_checkpoint,
    network_from_checkpoint,
)
from densenet_lit.analysis.record import Run
from densenet_lit.analysis.runs import load_run
from densenet_lit.checkpoints import RAW_WEIGHTS_KEY
from densenet_lit.export.preprocess import input_facts
from densenet_lit.models import DenseNet
from densenet_lit.models.pretrained import torchvision_equivalent
from densenet_lit.models.spec import network_spec

# Which checkpoint of a run directory is exported (rundir.find_checkpoint falls back to last).
WHICH = "best"
AVERAGING_CALLBACK = "WeightAveraging"
FORMAT_VERSION = 1


@dataclass
class Trained:
    """A trained network on the CPU in eval mode, the checkpoint it came from, its record as a
    :class:`~densenet_lit.analysis.record.Run` (rows from the run's metrics.csv when there is a
    run directory) and ``metadata``: JSON values, stored with every exported file."""

    file: Path
    network: DenseNet
    run: Run
    metadata: dict[str, Any]


def jsonable(value: Any) -> Any:
    """Tuples as lists, tensors as numbers, recursively."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value


def public(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Hyperparameters without Lightning's bookkeeping (``_instantiator``, ``_class_path``)."""
    return {k: v for k, v in hparams.items() if not str(k).startswith("_")}


def weights_kind(ckpt: Mapping[str, Any]) -> str:
    """``"ema"`` when EMAWeightAveraging wrote the checkpoint (its ``state_dict`` is then the
    average), else ``"raw"``."""
    callbacks = ckpt.get("callbacks") or {}
    if RAW_WEIGHTS_KEY in ckpt or any(AVERAGING_CALLBACK in str(k) for k in callbacks):
        return "ema"
    return "raw"


def best_val_error(ckpt: Mapping[str, Any], run: Run) -> float | None:
    """The best ``val/error`` (%): the ModelCheckpoint that ranks by it, else the run's log."""
    for state in (ckpt.get("callbacks") or {}).values():
        if isinstance(state, Mapping) and state.get("monitor") in derived.VAL_ERROR:
            score = state.get("best_model_score")
            if score is not None and math.isfinite(float(score)):
                return float(score)
    return derived.best_validation(run)[0]


def test_error(run: Run) -> float | None:
    """The last test error (%) the run logged, if any."""
    col = run.column(derived.TEST_ERROR)
    return run.last(col) if col else None


def run_of(path: Path, file: Path, hparams: dict[str, Any]) -> Run:
    """The run's record: its directory's (``path`` itself, or the one holding ``file``) with the
    checkpoint's hyperparameters over the logged ones, else the checkpoint's alone."""
    run_dir = path if rundir.is_run_dir(path) else rundir.run_dir_of(file)
    run = load_run(run_dir) if run_dir is not None else Run(file.parent.name, file.stem)
    run.hparams = {**run.hparams, **hparams}
    return run


def read_trained(path: str | os.PathLike, trust: bool = False) -> Trained:
    """The network of a checkpoint file or a run directory (its best checkpoint, else its
    last), rebuilt as the plain network (no memory level, not compiled) with its weights;
    every failure is a :class:`~densenet_lit.checkpoints.CheckpointError` naming the file."""
    path = Path(path)
    file = find_checkpoint(path, WHICH)
    ckpt = load_checkpoint(file, trust=trust, opt_in=TRUST_OPT_IN)
    network = network_from_checkpoint(ckpt, file)
    model_hp = public(ckpt.get("hyper_parameters") or {})
    data_hp = dict(ckpt.get("datamodule_hyper_parameters") or {})
    run = run_of(path, file, {**public(data_hp), **model_hp})
    spec = network_spec(model_hp)
    num_classes = network.classifier.out_features
    in_channels = network.features.conv0.in_channels
    args = {**jsonable(spec.kwargs), "num_classes": num_classes, "in_channels": in_channels}
    tv = torchvision_equivalent(spec.arch, args)
    meta = {
        "format_version": FORMAT_VERSION,
        "densenet_lit_version": __version__,
        "architecture": spec.arch,
        "arguments": args,
        "key": spec.key,
        "builder": f"densenet_lit.models.build_model({spec.arch!r}, **arguments)",
        "torchvision": None if tv is None else {"builder": tv[0], "arguments": jsonable(tv[1])},
        "num_classes": num_classes,
        "in_channels": in_channels,
        "input_size": list(derived.input_size(run)),
        **input_facts(data_hp),
        "dataset": data_hp.get(derived.BENCHMARK_KEY),
        "weights": weights_kind(ckpt),
        "best_val_error": best_val_error(ckpt, run),
        "test_error": test_error(run),
        "epoch": ckpt.get("epoch"),
        "global_step": ckpt.get("global_step"),
        "checkpoint": file.name,
    }
    return Trained(file, network, run, jsonable(meta))
