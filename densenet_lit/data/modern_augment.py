"""The modern recipe's image augmentations for class-folder data sets, beside the paper's:
TrivialAugmentWide or RandAugment, and random erasing, as torchvision's reference
classification script applies them (``--auto-augment ta_wide|ra``, ``--ra-magnitude``,
``--random-erase``). Their checks, and how they draw their random numbers.

Both ImageNet paths run them (:mod:`~densenet_lit.data.pil_pipeline` on PIL images in the
workers, :mod:`~densenet_lit.data.device_decode` on uint8 tensors on the device). So that
both draw the same augmentation for an image's seed, each of the two runs in a random
stream of its own: one 63-bit seed drawn from the image's stream (the seed
:mod:`~densenet_lit.data.resume` gives each training image) at its place in the pipeline,
and the transform run with the torch RNG seeded with it (:func:`run_seeded`). A resumed run
therefore draws the same operations, magnitudes and erased rectangles as the uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torchvision.transforms import InterpolationMode, v2

AutoAugment = Literal["ta_wide", "ra"]
AUTO_AUGMENTS = {"ta_wide": "TrivialAugmentWide", "ra": "RandAugment"}
MAGNITUDE_BINS = 31  # torchvision's num_magnitude_bins: ra_magnitude is a bin, 0 to 30
RA_NUM_OPS = 2  # torchvision's RandAugment default (the reference script keeps it)
# The reference script's --interpolation default, which it passes to the auto-augment too.
INTERPOLATION = InterpolationMode.BILINEAR
SEED_END = 2**63 - 1  # seeds drawn in [0, 2^63 - 1): they fit an int64 tensor


@dataclass(frozen=True)
class ModernAugment:
    """The training augmentations of the modern recipe, checked; all off by default.

    ``auto_augment``: ``ta_wide`` (TrivialAugmentWide) or ``ra`` (RandAugment with
    ``RA_NUM_OPS`` operations of magnitude bin ``ra_magnitude``), on the uint8 image after
    the crop and the flip; ``random_erase``: the probability of torchvision's
    ``RandomErasing`` (its defaults: 2%-33% of the area, ratio 0.3-3.3, value 0) on the
    normalised image.
    """

    auto_augment: AutoAugment | None = None
    ra_magnitude: int = 9
    random_erase: float = 0.0

    def __post_init__(self) -> None:
        if self.auto_augment is not None and self.auto_augment not in AUTO_AUGMENTS:
            choices = ", ".join(f"'{k}' ({v})" for k, v in AUTO_AUGMENTS.items())
            raise ValueError(
                f"data.auto_augment={self.auto_augment!r}: expected {choices} or null (none, "
                "the paper's augmentation)."
            )
        magnitude = self.ra_magnitude
        if isinstance(magnitude, bool) or not isinstance(magnitude, int):
            raise ValueError(
                f"data.ra_magnitude={magnitude!r}: expected a whole number from 0 to "
                f"{MAGNITUDE_BINS - 1} (RandAugment's magnitude bin; torchvision's default 9)."
            )
        if not 0 <= magnitude < MAGNITUDE_BINS:
            raise ValueError(
                f"data.ra_magnitude={magnitude}: expected 0 to {MAGNITUDE_BINS - 1} "
                f"(RandAugment has {MAGNITUDE_BINS} magnitude bins; torchvision's default 9)."
            )
        erase = self.random_erase
        if isinstance(erase, bool) or not isinstance(erase, int | float) or not 0 <= erase <= 1:
            raise ValueError(
                f"data.random_erase={erase!r}: expected a probability from 0 to 1 (0 = off; "
                "torchvision's recipe uses 0.1)."
            )

    @property
    def enabled(self) -> bool:
        """Whether any of them is on (else the paper's pipeline runs unchanged)."""
        return self.auto_augment is not None or self.random_erase > 0

    def auto_augment_transform(self) -> v2.Transform | None:
        """torchvision's TrivialAugmentWide or RandAugment, or None when off."""
        if self.auto_augment == "ta_wide":
            return v2.TrivialAugmentWide(interpolation=INTERPOLATION)
        if self.auto_augment == "ra":
            return v2.RandAugment(RA_NUM_OPS, self.ra_magnitude, interpolation=INTERPOLATION)
        return None

    def erasing(self) -> v2.RandomErasing | None:
        """torchvision's RandomErasing with probability ``random_erase``, or None when 0."""
        return v2.RandomErasing(p=float(self.random_erase)) if self.random_erase > 0 else None


def draw_seed() -> int:
    """One seed from the torch RNG's current stream."""
    return int(torch.randint(0, SEED_END, ()))


def run_seeded(transform: Callable, image: Any, seed: int) -> Any:
    """``transform(image)`` with the torch CPU RNG seeded with ``seed`` (torchvision's
    augmentations draw on the CPU whatever the image's device); the caller's RNG state is
    left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(image)


class Seeded:
    """A pipeline step that runs ``transform`` in a stream of its own: it draws a seed from
    the current stream and calls :func:`run_seeded`, as the device path does with the seeds
    its workers draw at the same place."""

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, image: Any) -> Any:
        return run_seeded(self.transform, image, draw_seed())

    def __repr__(self) -> str:
        return f"Seeded({self.transform!r})"
