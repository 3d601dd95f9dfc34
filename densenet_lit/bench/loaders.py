"""The loaders' images/s alone, ours and torchvision's per-image baseline, on files in the
real formats that :mod:`densenet_lit.data.synthetic` writes. Ours are timed by
:func:`densenet_lit.data.loader_throughput`, the rest by ``torch.utils.benchmark``."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch.utils.benchmark import Timer
from torch.utils.data import DataLoader

from densenet_lit.bench.common import guarded, log
from densenet_lit.bench.config import Settings
from densenet_lit.data.synthetic import IMAGENET_SIZE

OURS = "ours: in-memory uint8, on-device normalise/flip/crop"
TORCHVISION = "torchvision: PIL per image, RandomCrop+Flip+ToTensor+Normalize"
SVHN_PIPELINE = "ours: in-memory uint8, on-device /255"
DIGITS_PIPELINE = "ours: in-memory uint8, on-device normalise/crop"
PIL_PIPELINE = "ours: decode + fb.resnet.torch augmentation per image in workers (default count)"
BYTES_PIPELINE = "ours, decode: device: workers read bytes and draw the augmentation only"
DEVICE_DECODE_PIPELINE = (
    "ours, decode: device: batched decode_jpeg + fb.resnet.torch augmentation on the {device} "
    "alone (no workers)"
)
DEVICE_END_TO_END_PIPELINE = "ours, decode: device: end to end (workers + decode + augmentation)"
JPEGS = f"ImageNet (synthetic {IMAGENET_SIZE[1]}x{IMAGENET_SIZE[0]} JPEGs)"


@dataclass
class LoaderRow:
    loader: str
    pipeline: str
    workers: int
    batch: int
    images_per_s: float | None
    error: str | None = None


def images_per_s(next_batch: Callable[[], int], num_batches: int) -> float:
    """Images/s of ``next_batch()`` (which returns its batch's size); the first three calls
    (worker start-up) are not timed: one here, two in ``Timer.timeit``'s own warm-up."""
    n = next_batch()
    timer = Timer("f()", globals={"f": next_batch}, num_threads=torch.get_num_threads())
    return n / timer.timeit(num_batches).median


def torchvision_loader(root: Path, batch_size: int, workers: int, device) -> DataLoader:
    """``torchvision.datasets.CIFAR10`` on our files (only the md5 checks of the real files
    skipped), with the usual per-image transforms, in a DataLoader."""
    import torchvision
    from torchvision import transforms as T

    from densenet_lit.data import CIFAR10DataModule

    class CIFAR10Unchecked(torchvision.datasets.CIFAR10):
        meta = {**torchvision.datasets.CIFAR10.meta, "md5": None}  # None: existence only

        def _check_integrity(self) -> bool:
            return True

    mean, std = ([v / 255 for v in vs] for vs in (CIFAR10DataModule.mean, CIFAR10DataModule.std))
    crop_flip = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
    transform = T.Compose([*crop_flip, T.ToTensor(), T.Normalize(mean, std)])
    data = CIFAR10Unchecked(str(root), train=True, transform=transform)
    cuda = torch.device(device).type == "cuda"
    return DataLoader(
        data, batch_size, shuffle=True, num_workers=workers, pin_memory=cuda, drop_last=True
    )


def stream_throughput(loader, num_batches: int, device=None) -> float:
    """Images/s of drawing batches from ``loader`` over and over: a plain DataLoader's
    ``(images, labels)`` moved to ``device``; without one, batches only counted (the device
    path's workers alone: file bytes and drawn augmentation, not decoded)."""
    stream = itertools.chain.from_iterable(itertools.repeat(loader))

    def next_batch() -> int:
        if device is None:
            return len(next(stream))
        x, y = (t.to(device, non_blocking=True) for t in next(stream))
        return x.shape[0]

    return images_per_s(next_batch, num_batches)


def our_imagenet(root: Path, batch_size: int, decode: str = "pil"):
    """ImageNetDataModule as a training run builds it: default worker count and crops."""
    from densenet_lit.data import ImageNetDataModule

    return ImageNetDataModule(data_dir=str(root), batch_size=batch_size, decode=decode)


def train_loader(datamodule):
    datamodule.setup("fit")
    return datamodule.train_dataloader()


def device_decode_throughput(datamodule, num_batches: int, device) -> float:
    """Decoding and augmenting on ``device`` alone: 4 training batches read once (in this
    process), then moved and transformed over and over, as Lightning does
    (``transfer_batch_to_device``, then ``transform_batch``)."""
    datamodule.setup("fit")
    train, size = datamodule.train_set, datamodule.per_device_batch_size
    if len(train) < size:
        raise ValueError(f"{len(train)} training images, fewer than one batch of {size}")
    held = [
        train.__getitems__(list(range(k * size, (k + 1) * size)))
        for k in range(4)
        if (k + 1) * size <= len(train)
    ]
    batches = itertools.cycle(held)

    def next_batch() -> int:
        moved = datamodule.transfer_batch_to_device(next(batches), device, 0)
        return datamodule.transform_batch(moved, train=True)[0].shape[0]

    return images_per_s(next_batch, num_batches)


def imagenet_loader_images(s: Settings) -> int:
    """Synthetic JPEGs of the ImageNet rows: at least four batches per default worker (outside
    --quick). With fewer, each epoch of the timed loop has fewer batches than workers, the
    prefetch queue drains at every epoch end and the row measures fewer workers than it names."""
    if s.quick:
        return s.imagenet_train_images
    workers = our_imagenet(Path("."), s.loader_batch).resolved_num_workers
    return max(s.imagenet_train_images, 4 * workers * s.loader_batch)


def loader_rows(s: Settings, roots: dict[str, Path]) -> list[tuple[str, str, int, Callable]]:
    """``(loader, pipeline, workers, measure)`` of every row: CIFAR-10 ours and torchvision's
    with 0 and many workers, SVHN, digits; ImageNet's PIL path, then its device path in parts:
    its workers alone, decoding + augmentation alone, both together."""
    from densenet_lit.data import (
        CIFAR10DataModule,
        DigitsDataModule,
        SVHNDataModule,
        loader_throughput,
    )

    b, n, nj, dev = s.loader_batch, s.loader_batches, s.imagenet_loader_batches, s.device

    def ours(make: Callable, num_batches: int = n) -> Callable[[], float]:
        return lambda: loader_throughput(make(), num_batches, "train", dev)

    rows = []
    for w in sorted({0, s.loader_workers}):
        cifar = partial(CIFAR10DataModule, str(roots["cifar10"]), b, num_workers=w, val_size=0)
        loader = partial(torchvision_loader, roots["cifar10"], b, w, dev)
        rows.append(("CIFAR-10", OURS, w, ours(partial(cifar, augment=True))))
        rows.append(("CIFAR-10", TORCHVISION, w, lambda f=loader: stream_throughput(f(), n, dev)))
    svhn = partial(SVHNDataModule, str(roots["svhn"]), b, val_size=0, use_extra=False)
    rows.append(("SVHN (train only)", SVHN_PIPELINE, 0, ours(svhn)))
    digits = partial(DigitsDataModule, batch_size=b)
    rows.append(("digits (scikit-learn, real)", DIGITS_PIPELINE, 0, ours(digits)))
    pil = partial(our_imagenet, roots["imagenet"], b)
    device_path = partial(pil, decode="device")
    workers = pil().resolved_num_workers
    decode = DEVICE_DECODE_PIPELINE.format(device="GPU" if s.cuda else "CPU")
    return rows + [
        (JPEGS, PIL_PIPELINE, workers, ours(pil, nj)),
        (
            JPEGS,
            BYTES_PIPELINE,
            workers,
            lambda: stream_throughput(train_loader(device_path()), nj),
        ),
        (JPEGS, decode, 0, lambda: device_decode_throughput(device_path(), nj, dev)),
        (JPEGS, DEVICE_END_TO_END_PIPELINE, workers, ours(device_path, nj)),
    ]


def run_loaders(s: Settings, roots: dict[str, Path], rows: list[LoaderRow], save) -> None:
    """Every loader row, each saved (the partial JSON) when it is done."""
    for loader, pipeline, workers, measure in loader_rows(s, roots):
        value, err = guarded(measure, f"loader {loader} {pipeline} workers={workers}", s.device)
        rows.append(LoaderRow(loader, pipeline, workers, s.loader_batch, value, err))
        log(f"loader {loader} / {pipeline} / {workers} workers: {value or err}")
        save()
