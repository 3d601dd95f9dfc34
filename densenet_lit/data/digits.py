"""scikit-learn's bundled 8x8 handwritten digits: 1,797 real images, no download needed.

The demo's embedded data set. Pixel values 0..16 are scaled to uint8 0..255 and the
images upscaled once (bilinear) to ``image_size`` so the CIFAR-style networks apply.
Images stay single-channel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from densenet_lit.benchmarks import DIGITS
from densenet_lit.data.base import InMemoryImageDataModule, TensorImageDataset

TEST_SPLIT_SEED = 2017  # the test images are fixed; ``seed`` only moves the validation split


def load_digits_tensor(image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as uint8 ``[N, 1, image_size, image_size]`` and int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images).float().unsqueeze(1) * (255.0 / 16.0)
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = x.round().clamp(0, 255).to(torch.uint8)
    return images, torch.from_numpy(digits.target).long()


class DigitsDataModule(InMemoryImageDataModule):
    """The 8x8 digits of scikit-learn (1,797 images, 10 classes), upscaled.

    Split: ``test_size`` images drawn with a fixed seed (the same test set for every run),
    then ``val_size`` of the rest drawn with ``seed``; the remainder trains (default
    1,257 / 180 / 360). Normalisation uses the mean and standard deviation of the training
    split's pixels. Augmentation (``augment``) is the random crop of the zero-padded image
    only, padding ``image_size // 8`` pixels: digits are never flipped (a mirrored 2 or 7
    is not the same digit).
    """

    flip = False
    benchmark = DIGITS.name
    num_classes = DIGITS.num_classes
    in_channels = DIGITS.in_channels

    def __init__(
        self,
        batch_size: int = 64,
        image_size: int = 32,
        val_size: int = 180,
        test_size: int = 360,
        augment: bool = True,
        seed: int = 0,
        num_workers: int | None = None,
    ):
        """
        Args:
            batch_size: Global batch size, split evenly over all devices.
            image_size: Side length the 8x8 images are upscaled to (32 suits the CIFAR nets).
            val_size: Images held out as validation, chosen with ``seed``; 0 = no validation.
            test_size: Images held out as the test set (fixed, independent of ``seed``).
            augment: Random crop of the padded image in training (no flips).
            seed: Seed of the validation split (the same seed gives the same split).
            num_workers: Loader worker processes; None = 0 (in-memory tensor).
        """
        if not 0 < test_size < 1797:
            raise ValueError(f"test_size must be in (0, 1797), got {test_size}")
        super().__init__(batch_size, num_workers, seed, val_size, augment)
        self.image_size = image_size
        self.test_size = test_size
        self.padding = max(1, image_size // 8)
        self._all: tuple[torch.Tensor, ...] | None = None
        self.save_hyperparameters()
        self.declare()

    def _split(self) -> tuple[torch.Tensor, ...]:
        if self._all is None:
            images, labels = load_digits_tensor(self.image_size)
            gen = torch.Generator().manual_seed(TEST_SPLIT_SEED)
            perm = torch.randperm(len(images), generator=gen)
            test_idx, rest_idx = perm[: self.test_size].sort().values, perm[self.test_size :]
            rest_idx = rest_idx.sort().values
            self._all = (images[rest_idx], labels[rest_idx], images[test_idx], labels[test_idx])
        return self._all

    def load_train(self) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels, _, _ = self._split()
        return images, labels

    def load_test(self) -> tuple[torch.Tensor, torch.Tensor]:
        _, _, images, labels = self._split()
        return images, labels

    def on_train_loaded(self, train_set: TensorImageDataset) -> None:
        pixels = train_set.images[train_set.indices].float()
        self.mean = (pixels.mean().item(),)
        self.std = (pixels.std().item(),)

    def setup(self, stage: str | None = None) -> None:
        # The statistics come from the training split, so test-only runs load it too.
        progress = self.progress
        super().setup(None)
        self.progress = progress
        self.start_stage(stage)
