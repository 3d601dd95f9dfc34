"""The ``train/<class>/`` and ``val/<class>/`` layout of ImageNet and every data set like it
(Imagenette, Tiny-ImageNet's training images, your own): finding the class folders,
listing their images, and saying exactly what is wrong with a layout that is not that.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from densenet_lit.data.errors import DataError, not_found

HOW_TO_GET = (
    "ImageNet cannot be downloaded automatically. Get ILSVRC2012_img_train.tar and "
    "ILSVRC2012_img_val.tar from https://image-net.org (free registration), unpack the "
    "training archive into train/<wnid>/ folders (one tar per class) and sort the flat "
    "validation images into val/<wnid>/ folders, e.g. with the valprep.sh script of "
    "soumith/imagenetloader.torch. Any other data set in this layout works the same way "
    "(e.g. Imagenette: torchvision.datasets.Imagenette(root, size='320px', download=True) "
    "writes <root>/imagenette2-320/{train,val}/<wnid>/)."
)
LAYOUT = (
    "  {root}/\n      train/n01440764/n01440764_10026.JPEG ... (one folder per class: 1,000 "
    "for ImageNet, 10 for Imagenette, 200 for Tiny-ImageNet)\n"
    "      val/n01440764/ILSVRC2012_val_00000293.JPEG ... (the same class folders)"
)


def class_dirs(split_dir: Path) -> list[str]:
    """The names of the folders directly inside ``split_dir``, sorted (label order)."""
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir())


def count_classes(root: Path) -> int | None:
    """The number of class folders in ``train/`` (``val/`` when there is no ``train/``), or
    None when neither can be read yet."""
    for split in ("train", "val"):
        try:
            names = class_dirs(root / split)
        except OSError:
            continue
        if names:
            return len(names)
    return None


def scan_split(split_dir: Path, class_to_idx: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Relative paths (bytes) and labels of every image in ``split_dir/<class>/`` (also in
    sub-folders, as Tiny-ImageNet's ``train/<wnid>/images/``)."""
    try:
        samples = make_dataset(str(split_dir), class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as err:
        raise DataError(
            f"Wrong class-folder layout in '{split_dir}': {err}. Every class folder must hold "
            f"image files ({', '.join(IMG_EXTENSIONS[:3])}, ...)."
        ) from err
    rel = np.array([os.fsencode(os.path.relpath(p, split_dir)) for p, _ in samples])
    return rel, np.array([label for _, label in samples], dtype=np.int64)


def missing_folders(root: Path, need_train: bool) -> list[Path]:
    if not root.is_dir():
        return [root]
    wanted = [root / "train"] if need_train else []
    return [p for p in (*wanted, root / "val") if not p.is_dir()]


def check_layout(root: Path, need_train: bool) -> list[str]:
    """Check the folders under ``root`` and return the class names; DataError on any problem.

    ``val/`` is always required; ``train/`` only when ``need_train``. When both hold class
    folders they must hold the same ones, whether or not ``train/`` is used: a ``val/``
    laid out otherwise (flat, or Tiny-ImageNet's ``val/images/`` with an annotation file)
    is an error that says how to sort it.
    """
    train, val = root / "train", root / "val"
    layout = LAYOUT.format(root=root)
    missing = missing_folders(root, need_train)
    if missing:
        how_to_get = HOW_TO_GET
        if not need_train:
            how_to_get += " Evaluation (validate, test, predict) needs only val/."
        raise not_found("ImageNet", root, missing, layout, how_to_get)
    train_classes = class_dirs(train) if train.is_dir() else []
    val_classes = class_dirs(val)
    if need_train and not train_classes:
        raise DataError(
            f"Wrong ImageNet layout: '{train}' has no class folders.\n"
            f"Expected layout:\n{layout}\n{HOW_TO_GET}"
        )
    if not val_classes:
        flat = [e.name for e in os.scandir(val) if e.is_file()]
        raise DataError(
            f"Wrong ImageNet layout: '{val}' has no class folders"
            + (f" but {len(flat)} files directly inside (e.g. '{flat[0]}')" if flat else "")
            + ". The validation images must be sorted into val/<wnid>/ folders like "
            "train/ (e.g. with the valprep.sh script of soumith/imagenetloader.torch).\n"
            f"Expected layout:\n{layout}"
        )
    if train_classes and train_classes != val_classes:
        raise DataError(differing_classes(root, train_classes, val_classes))
    return val_classes


def differing_classes(root: Path, train_classes: list[str], val_classes: list[str]) -> str:
    """The error for a ``val/`` whose class folders are not those of ``train/``."""
    only_train = sorted(set(train_classes) - set(val_classes))
    only_val = sorted(set(val_classes) - set(train_classes))
    msg = (
        f"Wrong ImageNet layout under '{root}': train/ and val/ must hold the same class "
        f"folders ({len(train_classes)} in train/, {len(val_classes)} in val/). Only in "
        f"train/: {len(only_train)} {only_train[:5]}; only in val/: {len(only_val)} "
        f"{only_val[:5]}."
    )
    annotations = sorted(p.name for p in (root / "val").glob("*annotations*.txt"))
    if not set(val_classes) & set(train_classes) and annotations:
        msg += (
            f" val/ holds {val_classes[:3]} and '{annotations[0]}': it looks like "
            "Tiny-ImageNet's original validation layout. Sort val/images/* into "
            "val/<wnid>/ folders with the file-to-class list in that annotation file "
            "(its first two columns)."
        )
    return msg
