"""The reference ImageNet pipeline: each image decoded with PIL and augmented in a worker
process, as fb.resnet.torch (the code the paper used) did it.

The fb.resnet.torch constants live here too; the device pipeline
(:mod:`densenet_lit.data.device_decode`) uses the same ones and draws its random numbers
with the same transforms, so that the two paths agree image for image.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode, v2

from densenet_lit.data.errors import CorruptDataError
from densenet_lit.data.modern_augment import ModernAugment, Seeded

# fb.resnet.torch constants (datasets/imagenet.lua).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
CROP_SCALE = (0.08, 1.0)  # RandomSizedCrop: 8% to 100% of the area ...
CROP_RATIO = (3 / 4, 4 / 3)  # ... at aspect ratios 3/4 to 4/3
# The defaults of data.color_jitter and data.lighting (ColourAugment):
JITTER = 0.4  # brightness, contrast and saturation factors in [0.6, 1.4], in random order
LIGHTING_STD = 0.1  # AlexNet's PCA lighting noise
FLIP_P = 0.5
INTERPOLATION = InterpolationMode.BICUBIC


def load_rgb(path: str) -> Image.Image:
    """Decode an image file as RGB; a corrupt or truncated file becomes a DataError naming it."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as err:
        raise CorruptDataError(
            f"Cannot decode image '{path}': {err}. The file is truncated or corrupt; "
            "replace it from the data set's original archive (or delete it)."
        ) from err


class Lighting:
    """AlexNet-style PCA lighting noise on a float RGB image in [0, 1] (fb.resnet.torch).

    Adds ``eigvec @ (alpha * eigval)`` to every pixel, ``alpha ~ N(0, alphastd)`` per image.
    """

    def __init__(self, alphastd: float = LIGHTING_STD, eigval=PCA_EIGVAL, eigvec=PCA_EIGVEC):
        self.alphastd = alphastd
        self.eigval = torch.tensor(eigval, dtype=torch.float32)
        self.eigvec = torch.tensor(eigvec, dtype=torch.float32)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.alphastd == 0:
            return img
        alpha = torch.randn(3) * self.alphastd
        rgb = self.eigvec @ (alpha * self.eigval)
        return img + rgb.view(3, 1, 1).to(img.dtype)


def random_crop(crop: int) -> v2.RandomResizedCrop:
    """fb.resnet.torch's RandomSizedCrop (8%-100% of the area, ratio 3/4-4/3, bicubic)."""
    return v2.RandomResizedCrop(
        crop, scale=CROP_SCALE, ratio=CROP_RATIO, interpolation=INTERPOLATION, antialias=True
    )


def color_jitter(jitter: float = JITTER) -> v2.ColorJitter:
    """Brightness, contrast and saturation ``jitter`` each (factors in [1 - jitter,
    1 + jitter]), applied in a random order."""
    return v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter)


@dataclass(frozen=True)
class ColourAugment:
    """The paper's colour augmentation of training images, checked: ``jitter`` (colour
    jitter: brightness, contrast and saturation factors in [1 - jitter, 1 + jitter], in a
    random order) and ``lighting`` (the std of AlexNet's PCA lighting noise).

    The defaults are fb.resnet.torch's. 0 leaves that step out of the pipeline entirely: it
    draws no random numbers, so the other steps draw what they draw without it (torchvision's
    modern recipe has neither step). Both decode paths run the steps that are on.
    """

    jitter: float = JITTER
    lighting: float = LIGHTING_STD

    def __post_init__(self) -> None:
        jitter, lighting = self.jitter, self.lighting
        if not is_number(jitter) or not 0 <= jitter < 1:
            raise ValueError(
                f"data.color_jitter={jitter!r}: expected a number from 0 (off) to below 1 "
                f"(the brightness, contrast and saturation factors are drawn in [1 - j, 1 + j]; "
                f"the paper's {JITTER})."
            )
        if not is_number(lighting) or not 0 <= lighting < math.inf:
            raise ValueError(
                f"data.lighting={lighting!r}: expected a standard deviation of 0 (off) or "
                f"more (AlexNet's PCA lighting noise; the paper's {LIGHTING_STD})."
            )

    def steps(self) -> list[Callable]:
        """The steps on the float image in [0, 1], those that are on: colour jitter, lighting."""
        jitter = [color_jitter(self.jitter)] if self.jitter > 0 else []
        return jitter + ([Lighting(self.lighting)] if self.lighting > 0 else [])


def is_number(value) -> bool:
    """An int or a float (not a bool, a string or None)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def train_transform(
    crop: int, modern: ModernAugment | None = None, colour: ColourAugment | None = None
) -> Callable:
    """fb.resnet.torch training order: RandomSizedCrop, ColorJitter, Lighting, flip, normalise
    (``colour``: which colour steps are on, and how strong; None = the paper's).

    With a ``modern`` augmentation on, :func:`modern_train_transform` instead."""
    colour = ColourAugment() if colour is None else colour
    if modern is not None and modern.enabled:
        return modern_train_transform(crop, modern, colour)
    return v2.Compose(
        [
            random_crop(crop),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            *colour.steps(),
            v2.RandomHorizontalFlip(FLIP_P),
            v2.Normalize(MEAN, STD),
            v2.ToPureTensor(),
        ]
    )


def modern_train_transform(
    crop: int, modern: ModernAugment, colour: ColourAugment | None = None
) -> Callable:
    """torchvision's reference order with the paper's colour augmentation kept (where
    ``colour`` has it on): RandomSizedCrop, flip, auto-augment (on the PIL image), to float,
    ColorJitter, Lighting, normalise, random erasing.

    The flip moves before the colour operations, which commute with it (per pixel, or per
    image as the contrast's mean), so the auto-augment sees the flipped uint8 image as in
    torchvision's recipe. Auto-augment and erasing each run seeded by a seed drawn at their
    place (:class:`~densenet_lit.data.modern_augment.Seeded`), as the device path does.
    """
    colour = ColourAugment() if colour is None else colour
    auto_augment, erasing = modern.auto_augment_transform(), modern.erasing()
    return v2.Compose(
        [
            random_crop(crop),
            v2.RandomHorizontalFlip(FLIP_P),
            *([Seeded(auto_augment)] if auto_augment is not None else []),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            *colour.steps(),
            v2.Normalize(MEAN, STD),
            *([Seeded(erasing)] if erasing is not None else []),
            v2.ToPureTensor(),
        ]
    )


def eval_transform(resize: int, crop: int) -> Callable:
    """Shorter side to ``resize``, centre ``crop``, normalise (deterministic)."""
    return v2.Compose(
        [
            v2.Resize(resize, interpolation=INTERPOLATION, antialias=True),
            v2.CenterCrop(crop),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
            v2.ToPureTensor(),
        ]
    )


class ImageListDataset(Dataset):
    """Image files under ``root`` with labels, decoded and transformed on access.

    Paths are kept as one numpy byte-string array, not a list of Python strings, so that
    forked workers do not copy a million refcounted objects page by page.

    An item is ``dataset[i]``, or ``dataset[(i, seed)]``: the transform then draws its random
    numbers from the torch RNG seeded with ``seed`` (the caller's RNG state is left as it
    was). ``DenseNetModule`` passes such seeds for training (``accepts_sample_seeds``), so
    that an image's augmentation does not depend on which worker process decodes it.
    """

    accepts_sample_seeds = True

    def __init__(self, root: Path, relpaths: np.ndarray, labels: np.ndarray, transform: Callable):
        self.root = str(root)
        self.relpaths = relpaths
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, i: int) -> str:
        return os.path.join(self.root, self.relpaths[i].decode())

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        i, seed = key if isinstance(key, tuple) else (key, None)
        image = load_rgb(self.path(i))
        if seed is None:
            return self.transform(image), int(self.labels[i])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), int(self.labels[i])
