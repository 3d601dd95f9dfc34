"""The loaders' images/s alone, ours and the torchvision baseline's.

The suite's data are files in the real formats that :mod:`densenet_lit.data.synthetic`
writes into a temporary folder (no data set can be downloaded where the suite runs): the
loaders' speed does not depend on what the pixels show, so CIFAR-10 and SVHN are random
uint8 images; ImageNet's JPEGs, whose decoding cost does depend on the content, are smooth
random pictures of a typical ImageNet photo's size and file size. The scikit-learn digits
are real.

The baseline is what a torchvision user writes: ``torchvision.datasets.CIFAR10`` (one PIL
image per sample) with ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()``,
``ToTensor()`` and ``Normalize`` in a ``DataLoader``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from densenet_lit.bench.common import now

# ------------------------------------------------------------------ the torchvision baseline


def torchvision_cifar10(root: Path, train: bool = True):
    """``torchvision.datasets.CIFAR10`` on our files, with the usual per-image transforms.

    torchvision checks the md5 of the real files (data and meta), which random files cannot pass; the
    subclass skips only those checks, so loading and ``__getitem__`` are torchvision's own.
    """
    import torchvision
    from torchvision import transforms as T

    from densenet_lit.data import CIFAR10DataModule

    class CIFAR10Unchecked(torchvision.datasets.CIFAR10):
        meta = {**torchvision.datasets.CIFAR10.meta, "md5": None}  # None: existence only

        def _check_integrity(self) -> bool:
            return True

    mean = [m / 255 for m in CIFAR10DataModule.mean]
    std = [s / 255 for s in CIFAR10DataModule.std]
    steps = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if train else []
    transform = T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])
    return CIFAR10Unchecked(str(root), train=train, transform=transform, download=False)


def torchvision_loader(root: Path, batch_size: int, workers: int, device: torch.device):
    return DataLoader(
        torchvision_cifar10(root),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
    )


def warmed_up(loader: DataLoader, warmup_batches: int) -> Iterator:
    """An endless stream of ``loader``'s batches, after ``warmup_batches`` (worker start-up)."""

    def batches():
        while True:
            yield from loader

    stream = batches()
    for _ in range(warmup_batches):
        next(stream)
    return stream


def plain_loader_throughput(
    loader: DataLoader, num_batches: int, device: torch.device, warmup_batches: int = 2
) -> float:
    """Images/s of a plain DataLoader, batches moved to ``device`` (like loader_throughput)."""

    stream = warmed_up(loader, warmup_batches)
    n = 0
    start = now(device)
    for _ in range(num_batches):
        x, y = next(stream)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        n += x.shape[0]
    return n / (now(device) - start)


# ---------------------------------------------------------------------------- measurements


@dataclass
class LoaderRow:
    loader: str
    pipeline: str
    workers: int
    batch: int
    images_per_s: float | None
    error: str | None = None


def our_cifar10(root: Path, batch_size: int, workers: int | None, **kwargs):
    from densenet_lit.data import CIFAR10DataModule

    return CIFAR10DataModule(
        data_dir=str(root), batch_size=batch_size, num_workers=workers, **kwargs
    )


def our_imagenet(root: Path, batch_size: int, decode: str = "pil"):
    """ImageNetDataModule as a training run builds it: default worker count and crops."""
    from densenet_lit.data import ImageNetDataModule

    return ImageNetDataModule(data_dir=str(root), batch_size=batch_size, decode=decode)


# ------------------------------------------------------------- ImageNet's device path, in parts

BYTES_PIPELINE = "ours, decode: device: workers read bytes and draw the augmentation only"
DEVICE_DECODE_PIPELINE = (
    "ours, decode: device: batched decode_jpeg + fb.resnet.torch augmentation on the {device} "
    "alone (no workers)"
)
DEVICE_END_TO_END_PIPELINE = "ours, decode: device: end to end (workers + decode + augmentation)"


def encoded_loader_throughput(datamodule, num_batches: int, warmup_batches: int = 2) -> float:
    """Images/s of the device path's workers alone: batches of file bytes and drawn
    augmentation parameters as the training loader delivers them, not decoded."""
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()

    stream = warmed_up(loader, warmup_batches)
    n = 0
    start = now(torch.device("cpu"))
    for _ in range(num_batches):
        n += len(next(stream))
    return n / (now(torch.device("cpu")) - start)


def device_decode_throughput(
    datamodule, num_batches: int, device: torch.device, held: int = 4, warmup_batches: int = 2
) -> float:
    """Images/s of decoding and augmenting on ``device`` alone: ``held`` training batches are
    read once (in this process), then moved and transformed ``num_batches`` times over, as
    Lightning does (``transfer_batch_to_device``, then ``transform_batch``)."""
    datamodule.setup("fit")
    train = datamodule.train_set
    size = datamodule.per_device_batch_size
    if len(train) < size:
        raise ValueError(f"{len(train)} training images, fewer than one batch of {size}")
    held_batches = [
        train.__getitems__(list(range(k * size, (k + 1) * size)))
        for k in range(min(held, len(train) // size))
    ]

    def step(k: int) -> int:
        moved = datamodule.transfer_batch_to_device(held_batches[k % len(held_batches)], device, 0)
        images, _ = datamodule.transform_batch(moved, train=True)
        return images.shape[0]

    for k in range(warmup_batches):
        step(k)
    n = 0
    start = now(device)
    for k in range(num_batches):
        n += step(k)
    return n / (now(device) - start)


def imagenet_device_rows(
    root: Path, batch_size: int, num_batches: int, device: torch.device
) -> list[tuple[str, int, Callable[[], float]]]:
    """``(pipeline, workers, measure)`` of the device path's loader rows: the workers alone,
    decoding and augmentation alone, and both together (``loader_throughput``)."""
    from densenet_lit.data import loader_throughput

    def ours():
        return our_imagenet(root, batch_size, decode="device")

    workers = ours().resolved_num_workers
    return [
        (BYTES_PIPELINE, workers, lambda: encoded_loader_throughput(ours(), num_batches)),
        (
            DEVICE_DECODE_PIPELINE.format(device="GPU" if device.type == "cuda" else "CPU"),
            0,
            lambda: device_decode_throughput(ours(), num_batches, device),
        ),
        (
            DEVICE_END_TO_END_PIPELINE,
            workers,
            lambda: loader_throughput(ours(), num_batches, "train", device),
        ),
    ]
