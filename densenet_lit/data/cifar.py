"""CIFAR-10 and CIFAR-100 from torchvision's on-disk layout (the python pickles).

We read the pickled batches ourselves instead of through ``torchvision.datasets.CIFAR10``:
torchvision checks the md5 of every full file, which (a) rejects small test files in the
true format and (b) only says "Dataset not found or corrupted". Downloads still go through
torchvision (``download=True``), which verifies the archive's checksum.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision

from densenet_lit.benchmarks import CIFAR10, CIFAR10_PLUS, CIFAR100, CIFAR100_PLUS
from densenet_lit.data.base import InMemoryImageDataModule, require_files, run_download
from densenet_lit.data.errors import corrupt


class CIFAR10DataModule(InMemoryImageDataModule):
    """CIFAR-10 (50,000 train / 10,000 test 32x32 images, 10 classes).

    Batches leave the loader as uint8; on the device they are normalised with the
    authors' channel statistics and, in training steps with ``augment``, flipped and
    randomly cropped from the 4-pixel zero-padded image (the paper's "C10+").
    Validation uses no augmentation. With ``val_size: 0`` (final run) there is no
    validation loop: train on all 50,000 images and report ``trainer.test`` at the end.
    """

    name = "CIFAR-10"
    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    meta_file = "batches.meta"
    label_key = "labels"
    url = "https://www.cs.toronto.edu/~kriz/cifar.html"
    torchvision_class = torchvision.datasets.CIFAR10
    mean = (125.3, 123.0, 113.9)
    std = (63.0, 62.1, 66.7)
    # what the data module is without and with the standard augmentation (the paper's C10+)
    plain, augmented = CIFAR10.name, CIFAR10_PLUS.name
    num_classes = CIFAR10.num_classes
    in_channels = CIFAR10.in_channels
    image_size = CIFAR10.image_size

    def __init__(
        self,
        data_dir: str = "data/cifar10",
        batch_size: int = 64,
        augment: bool = True,
        val_size: int = 5000,
        seed: int = 0,
        num_workers: int | None = None,
        download: bool = False,
    ):
        """
        Args:
            data_dir: Folder that holds (or will receive) the data set's torchvision folder.
            batch_size: Global batch size, split evenly over all devices (paper: 64).
            augment: Standard "+" augmentation (flip, pad-4 random crop) in training.
            val_size: Training images held out as validation, chosen with ``seed``
                (paper: 5,000 while developing). 0 = final run on all training images,
                no validation; the test error is reported with ``trainer.test``.
            seed: Seed of the validation split (the same seed gives the same split).
            num_workers: Loader worker processes; None = 0, since batches are gathered from
                an in-memory tensor with one index op.
            download: Download through torchvision when the files are missing.
        """
        super().__init__(batch_size, num_workers, seed, val_size, augment)
        self.data_dir = data_dir
        self.download = download
        self.benchmark = self.augmented if augment else self.plain
        self.save_hyperparameters()
        self.declare()

    # --- files ----------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return Path(self.data_dir).expanduser()

    def layout(self) -> str:
        files = (*self.train_files, *self.test_files, self.meta_file)
        return f"  {self.root}/{self.folder}/\n" + "\n".join(f"      {f}" for f in files)

    def how_to_get(self) -> str:
        return (
            f"set `download: true` (command line: --data.download true) to fetch it, or "
            f"download the python version from {self.url} and unpack it into '{self.root}'."
        )

    def _paths(self, files: tuple[str, ...]) -> list[Path]:
        rel = [f"{self.folder}/{f}" for f in files]
        return require_files(self.name, self.root, rel, self.layout(), self.how_to_get())

    def _files_present(self) -> bool:
        return all(
            (self.root / self.folder / f).is_file() for f in self.train_files + self.test_files
        )

    def prepare_data(self) -> None:
        if self.download and not self._files_present():
            cls = self.torchvision_class
            run_download(
                lambda: cls(str(self.root), train=True, download=True),
                cls.url,
                self.root,
                self.layout(),
            )

    def _read(self, paths: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for path in paths:
            try:
                with open(path, "rb") as f:
                    entry = pickle.load(f, encoding="latin1")
                data = np.asarray(entry["data"], dtype=np.uint8)
                target = np.asarray(entry[self.label_key], dtype=np.int64)
                if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or target.shape != data.shape[:1]:
                    raise ValueError(
                        f"expected 'data' of shape [N, 3072] and N labels, "
                        f"got {data.shape} and {target.shape}"
                    )
                if target.min() < 0 or target.max() >= self.num_classes:
                    raise ValueError(f"labels outside 0..{self.num_classes - 1}")
            except Exception as err:
                raise corrupt(path, err, self.how_to_get()) from err
            images.append(data.reshape(-1, 3, 32, 32))
            labels.append(target)
        return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))

    def load_train(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.prepare_data()  # no-op unless download is on and files are missing
        return self._read(self._paths(self.train_files))

    def load_test(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.prepare_data()
        return self._read(self._paths(self.test_files))


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100 (50,000 train / 10,000 test 32x32 images, 100 fine classes).

    Same pipeline and arguments as :class:`CIFAR10DataModule` ("C100+" with ``augment``),
    with CIFAR-100's files, channel statistics and classes.
    """

    name = "CIFAR-100"
    folder = "cifar-100-python"
    train_files = ("train",)
    test_files = ("test",)
    meta_file = "meta"
    label_key = "fine_labels"
    torchvision_class = torchvision.datasets.CIFAR100
    mean = (129.3, 124.1, 112.4)
    std = (68.2, 65.4, 70.4)
    plain, augmented = CIFAR100.name, CIFAR100_PLUS.name
    num_classes = CIFAR100.num_classes

    def __init__(self, data_dir: str = "data/cifar100", **kwargs: Any):
        """
        Args:
            data_dir: Folder that holds (or will receive) the data set's torchvision folder.
            **kwargs: the other arguments of :class:`CIFAR10DataModule`.
        """
        super().__init__(data_dir, **kwargs)
