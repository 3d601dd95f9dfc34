"""Ten-crop evaluation, as fb.resnet.torch's ``-tenCrop`` (the trainer the paper used).

The image's shorter side is resized (to 256), then the four corner and the centre crops (224)
and their horizontal flips are taken. A data set item is the ten crops stacked,
``[10, C, H, W]``, so a batch is ``[N, 10, C, H, W]``; :func:`crop_averaged_logits` runs the
network on all crops and averages the logits of each image's crops (fb.resnet.torch's
``computeScore`` sums them: the same ranking, so the same top-1/top-5 errors).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

EVAL_CROPS = (1, 10)


def check_eval_crops(eval_crops: int) -> int:
    """``eval_crops`` if it is 1 or 10, else a ValueError saying what to give."""
    if eval_crops not in EVAL_CROPS:
        raise ValueError(
            f"eval_crops={eval_crops!r}: expected 1 (the centre crop, the paper's errors) or 10 "
            "(four corners + centre and their horizontal flips, fb.resnet.torch's -tenCrop)."
        )
    return eval_crops


class TenCropTransform:
    """PIL image -> normalised ``float32 [10, 3, crop, crop]``: the shorter side resized to
    ``resize`` (bicubic, as the single-crop evaluation), then the five crops and their flips.

    A class rather than a closure, so that loader worker processes can receive it.
    """

    def __init__(self, resize: int, crop: int, mean: tuple, std: tuple):
        self.crop = crop
        self.prepare = v2.Compose(
            [
                v2.Resize(resize, interpolation=InterpolationMode.BICUBIC, antialias=True),
                v2.PILToTensor(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(mean, std),
                v2.ToPureTensor(),
            ]
        )

    def __call__(self, image: Image.Image) -> Tensor:
        # cropping and flipping move pixels only, so they commute with the normalisation
        crops = TF.ten_crop(self.prepare(image), [self.crop, self.crop])
        return torch.stack(crops)


def ten_crop_transform(resize: int, crop: int, mean: tuple, std: tuple) -> Callable:
    """The evaluation transform for ``eval_crops: 10`` (see :class:`TenCropTransform`)."""
    return TenCropTransform(resize, crop, mean, std)


def crop_averaged_logits(network: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Logits ``[N, classes]`` of a batch: ``network(x)`` for images ``[N, C, H, W]``; for
    several crops per image ``[N, crops, C, H, W]``, the mean of each image's crop logits."""
    if x.dim() != 5:
        return network(x)
    n, crops = x.shape[:2]
    return network(x.flatten(0, 1)).unflatten(0, (n, crops)).mean(dim=1)
