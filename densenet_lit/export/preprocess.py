"""What a trained network expects of its input, from the data module recorded in a checkpoint:
normalisation mean and std, the evaluation resize and crop, the class names.

Lightning keeps the data module's arguments in ``datamodule_hyper_parameters`` (with its class
as ``_class_path``). Only densenet_lit's own data modules are looked up (``densenet_lit.data.*``);
another class leaves these facts unknown (None) rather than importing code named by a file.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from densenet_lit.class_path import named_class
from densenet_lit.data.base import InMemoryImageDataModule
from densenet_lit.data.class_folders import check_layout
from densenet_lit.data.digits import DigitsDataModule
from densenet_lit.data.errors import DataError
from densenet_lit.data.imagenet import MEAN, STD, ImageNetDataModule
from densenet_lit.data.svhn import SVHNDataModule

OWN_DATA = "densenet_lit.data."
CLASS_PATH = "_class_path"
# Digit data sets: class i is the digit i.
DIGIT_CLASSES = [str(i) for i in range(10)]


def data_module_class(data_hparams: Mapping[str, Any]) -> type | None:
    """The data module class a checkpoint names, if it is one of densenet_lit's."""
    path = data_hparams.get(CLASS_PATH)
    if not isinstance(path, str) or not path.startswith(OWN_DATA):
        return None
    return named_class(path)


def init_args(cls: type, data_hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The recorded arguments that ``cls`` takes."""
    accepted = set(inspect.signature(cls).parameters)
    return {k: v for k, v in data_hparams.items() if k in accepted}


def unit_scale(values: Any) -> list[float] | None:
    """Per-channel statistics on the 0-1 pixel scale (the in-memory sets keep them 0-255)."""
    return None if values is None else [round(float(v) / 255.0, 8) for v in values]


def normalisation(cls: type, data_hparams: Mapping[str, Any]) -> tuple[list | None, list | None]:
    """``(mean, std)`` per channel of images scaled to 0-1: ``(x / 255 - mean) / std``."""
    if issubclass(cls, ImageNetDataModule):
        return list(MEAN), list(STD)
    if not issubclass(cls, InMemoryImageDataModule):
        return None, None
    if cls.mean is None:  # statistics of the training split (digits): set up to compute them
        module = cls(**init_args(cls, data_hparams))
        module.setup("fit")
        return unit_scale(module.mean), unit_scale(module.std)
    return unit_scale(cls.mean), unit_scale(cls.std)


def class_names(cls: type, data_hparams: Mapping[str, Any]) -> list[str] | None:
    """The class names where they are known: the digits, or the class folders of a
    folder-of-classes set whose ``val/`` is readable here; else None."""
    if issubclass(cls, DigitsDataModule | SVHNDataModule):
        return list(DIGIT_CLASSES)
    data_dir = data_hparams.get("data_dir")
    if issubclass(cls, ImageNetDataModule) and data_dir:
        try:
            return check_layout(Path(data_dir).expanduser(), False)
        except (DataError, OSError):  # not on this machine: the names stay unknown
            return None
    return None


def input_facts(data_hparams: Mapping[str, Any]) -> dict[str, Any]:
    """mean, std, eval_resize, eval_crop and class_names (None where unknown)."""
    facts: dict[str, Any] = dict.fromkeys(
        ("mean", "std", "eval_resize", "eval_crop", "class_names")
    )
    cls = data_module_class(data_hparams)
    if cls is None:
        return facts
    facts["mean"], facts["std"] = normalisation(cls, data_hparams)
    if issubclass(cls, ImageNetDataModule):
        defaults = inspect.signature(cls).parameters
        for key in ("eval_resize", "eval_crop"):
            facts[key] = data_hparams.get(key, defaults[key].default)
    facts["class_names"] = class_names(cls, data_hparams)
    return facts
