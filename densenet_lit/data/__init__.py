"""Data modules for the paper's benchmarks (CIFAR-10/100, SVHN, ImageNet) and the digits demo.

Every module takes a *global* ``batch_size`` and knows ``num_classes``, ``in_channels`` and
``image_size`` right after ``__init__`` (for the CLI's argument links). The 32x32 sets ship
uint8 batches and normalise/augment on the device in ``on_after_batch_transfer``; ImageNet
(and any folder-of-classes data set) does so too with ``decode="device"``: its loader ships
JPEG bytes, decoded on the device there.
"""

from densenet_lit.data.base import BaseDataModule, InMemoryImageDataModule, TensorImageDataset
from densenet_lit.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from densenet_lit.data.digits import DigitsDataModule
from densenet_lit.data.errors import (
    CorruptDataError,
    DataError,
    DatasetNotFoundError,
    DownloadError,
)
from densenet_lit.data.imagenet import ImageNetDataModule
from densenet_lit.data.svhn import SVHNDataModule
from densenet_lit.data.throughput import loader_throughput

__all__ = [
    "BaseDataModule",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "CorruptDataError",
    "DataError",
    "DatasetNotFoundError",
    "DigitsDataModule",
    "DownloadError",
    "ImageNetDataModule",
    "InMemoryImageDataModule",
    "SVHNDataModule",
    "TensorImageDataset",
    "loader_throughput",
]
