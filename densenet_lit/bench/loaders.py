"""The loaders' images/s alone, ours and torchvision's per-image baseline, all timed by
``torch.utils.benchmark``, on files in the real formats of :mod:`densenet_lit.data.synthetic`."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.benchmark import Timer
from torch.utils.data import DataLoader
from torchvision import transforms as T
from torchvision.datasets import CIFAR10

from densenet_lit.bench.common import guarded, log
from densenet_lit.bench.config import Settings
from densenet_lit.data import (
    CIFAR10DataModule,
    DigitsDataModule,
    ImageNetDataModule,
    SVHNDataModule,
)
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


def images_per_s(batches: Iterable, num_batches: int, count: Callable[[Any], int] = len) -> float:
    """Images/s of ``count(batch)`` over ``batches``, iterated again whenever it runs out (a
    loader restarts, a list cycles); ``count`` moves, decodes or only counts a batch and returns
    its size. The first batch and ``Timer.timeit``'s own warm-up (at least two batches) are not
    timed: worker start-up."""
    stream = itertools.chain.from_iterable(itertools.repeat(batches))
    n = count(next(stream))
    timer = Timer("count(next(stream))", globals=locals(), num_threads=torch.get_num_threads())
    return n / timer.timeit(num_batches).median


def torchvision_loader(root: Path, batch_size: int, workers: int, device) -> DataLoader:
    """torchvision's ``CIFAR10`` on our files, with the usual per-image transforms, in a loader."""

    class CIFAR10Unchecked(CIFAR10):  # md5 None: torchvision only checks that the files exist
        train_list = [[name, None] for name, _ in CIFAR10.train_list]
        test_list = [[name, None] for name, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    mean, std = ([v / 255 for v in vs] for vs in (CIFAR10DataModule.mean, CIFAR10DataModule.std))
    crop_flip = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
    transform = T.Compose([*crop_flip, T.ToTensor(), T.Normalize(mean, std)])
    data = CIFAR10Unchecked(str(root), train=True, transform=transform)
    cuda = torch.device(device).type == "cuda"
    return DataLoader(
        data, batch_size, shuffle=True, num_workers=workers, pin_memory=cuda, drop_last=True
    )


def ours(datamodule, num_batches: int, device, part: str = "all") -> float:
    """Images/s of our training loader. ``all``: its batches moved and transformed on ``device``
    as Lightning does (``transfer_batch_to_device``, then ``transform_batch``); ``workers``: its
    batches only counted (the device path's: file bytes, drawn augmentation); ``device``: 4 of
    its batches read beforehand in this process (no workers), moved and transformed in turn."""
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()  # a ValueError if the set holds less than one batch
    if part == "workers":
        return images_per_s(loader, num_batches)
    if part == "device":
        keys = itertools.islice(loader.batch_sampler, 4)
        loader = [datamodule.train_set.__getitems__(batch_keys) for batch_keys in keys]

    def on_device(batch) -> int:
        moved = datamodule.transfer_batch_to_device(batch, device, 0)
        return datamodule.transform_batch(moved, train=True)[0].shape[0]

    return images_per_s(loader, num_batches, on_device)


def imagenet_loader_images(s: Settings) -> int:
    """Synthetic JPEGs of the ImageNet rows: at least four batches per default worker (outside
    --quick). With fewer, each epoch of the timed loop has fewer batches than workers, the
    prefetch queue drains at every epoch end and the row measures fewer workers than it names."""
    if s.quick:
        return s.imagenet_train_images
    workers = ImageNetDataModule(batch_size=s.loader_batch).resolved_num_workers
    return max(s.imagenet_train_images, 4 * workers * s.loader_batch)


def run_loaders(s: Settings, roots: dict[str, Path], rows: list[dict], save) -> None:
    """Every loader row, each saved when it is done (images/s, or "n/a (reason)"). ImageNet's
    rows: its PIL path, then its device path in parts; both as a training run builds them
    (default worker count and crops)."""
    b, n, nj, dev = s.loader_batch, s.loader_batches, s.imagenet_loader_batches, s.device

    def row(loader: str, pipeline: str, workers: int, measure: Callable[[], float]) -> None:
        what = f"loader {loader} / {pipeline} / {workers} workers"
        cells = dict(loader=loader, pipeline=pipeline, workers=workers, batch=b)
        rows.append({**cells, "images_per_s": guarded(measure, what, dev)})
        log(f"{what}: {rows[-1]['images_per_s']}")
        save()

    def moved(batch) -> int:  # a plain DataLoader's (images, labels) onto the device
        return batch[0].to(dev, non_blocking=True).shape[0]

    for w in sorted({0, s.loader_workers}):
        cifar = partial(CIFAR10DataModule, str(roots["cifar10"]), b, num_workers=w, val_size=0)
        row("CIFAR-10", OURS, w, lambda f=cifar: ours(f(), n, dev))
        plain = partial(torchvision_loader, roots["cifar10"], b, w, dev)
        row("CIFAR-10", TORCHVISION, w, lambda f=plain: images_per_s(f(), n, moved))
    svhn = partial(SVHNDataModule, str(roots["svhn"]), b, val_size=0, use_extra=False)
    row("SVHN (train only)", SVHN_PIPELINE, 0, lambda: ours(svhn(), n, dev))
    digits = partial(DigitsDataModule, batch_size=b)
    row("digits (scikit-learn, real)", DIGITS_PIPELINE, 0, lambda: ours(digits(), n, dev))
    pil = partial(ImageNetDataModule, data_dir=str(roots["imagenet"]), batch_size=b)
    device_path = partial(pil, decode="device")
    workers = pil().resolved_num_workers
    row(JPEGS, PIL_PIPELINE, workers, lambda: ours(pil(), nj, dev))
    row(JPEGS, BYTES_PIPELINE, workers, lambda: ours(device_path(), nj, dev, "workers"))
    decode = DEVICE_DECODE_PIPELINE.format(device="GPU" if s.cuda else "CPU")
    row(JPEGS, decode, 0, lambda: ours(device_path(), nj, dev, "device"))
    row(JPEGS, DEVICE_END_TO_END_PIPELINE, workers, lambda: ours(device_path(), nj, dev))
