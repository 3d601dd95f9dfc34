"""Which training recipe a run uses: the paper's, or the modern one of
``experiments/imagenet121_modern.yaml`` (torchvision's "How to train state-of-the-art models").

Each modern component is a value of the module (label smoothing, MixUp/CutMix, warm-up, weight
decay without normalisation layers), of the data module (TrivialAugment/RandAugment, random
erasing) or a callback (EMA of the weights), each off by default. A run is ``paper`` when all
of them are off, else ``modern``: the name is derived from the values themselves, so it cannot
disagree with what the run did (W&B groups and tags carry it, see ``cli/app.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PAPER = "paper"
MODERN = "modern"

# The module's recipe values and the value of each that is the paper's (off).
MODULE_PAPER_VALUES: dict[str, Any] = {
    "label_smoothing": 0.0,
    "mixup_alpha": 0.0,
    "cutmix_alpha": 0.0,
    "warmup_epochs": 0.0,
    "warmup_steps": 0,
    "norm_weight_decay": None,
}
# The data module's (class-folder data sets): augmentations beyond fb.resnet.torch's.
DATA_PAPER_VALUES: dict[str, Any] = {"auto_augment": None, "random_erase": 0.0}


def check_label_smoothing(value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"model.label_smoothing={value!r}: expected a value in [0, 1) (0 = off; "
            "torchvision's recipe: 0.1)."
        )


def departs(values: Mapping[str, Any], paper: Mapping[str, Any]) -> list[str]:
    """The names among ``paper`` whose value in ``values`` is not the paper's."""
    return [k for k, v in paper.items() if k in values and values[k] != v]


def recipe_name(
    module_hparams: Mapping[str, Any], data_hparams: Mapping[str, Any], averaged: bool
) -> str:
    """``paper`` or ``modern`` from the run's values (``averaged``: an EMA of the weights)."""
    changed = departs(module_hparams, MODULE_PAPER_VALUES)
    changed += departs(data_hparams, DATA_PAPER_VALUES)
    return MODERN if averaged or changed else PAPER
