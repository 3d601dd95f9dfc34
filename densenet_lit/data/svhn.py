"""SVHN (Street View House Numbers, cropped digits) from its MATLAB files.

We read ``{train,extra,test}_32x32.mat`` with scipy ourselves: torchvision's ``SVHN``
class checks the md5 of the whole file (rejecting small test files in the true format)
and reports any problem as "Dataset not found or corrupted". Downloads go through
torchvision, which verifies the checksums.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import torch
import torchvision

from densenet_lit.benchmarks import SVHN
from densenet_lit.data.base import InMemoryImageDataModule, require_files, run_download
from densenet_lit.data.errors import corrupt

SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"


def read_svhn_mat(path: Path, how_to_get: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one SVHN .mat file: ``X`` [32, 32, 3, N] uint8 and ``y`` [N, 1] with 10 for digit 0."""
    try:
        mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
        x, y = mat["X"], mat["y"].reshape(-1)
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
            raise ValueError(f"expected X as uint8 [32, 32, 3, N], got {x.dtype} {x.shape}")
        if y.shape != (x.shape[3],) or y.min() < 1 or y.max() > 10:
            raise ValueError(f"expected y as N labels in 1..10, got shape {y.shape}")
    except Exception as err:
        raise corrupt(path, err, how_to_get) from err
    labels = torch.from_numpy(y.astype(np.int64) % 10)  # label 10 is the digit 0
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))  # -> N, C, H, W
    return images, labels


class SVHNDataModule(InMemoryImageDataModule):
    """SVHN: train (73,257) + extra (531,131) images for training, 26,032 test, 10 classes.

    As in the paper: no augmentation, pixels divided by 255 (on the device), 6,000
    training images held out as validation. The paper keeps the model with the lowest
    validation error and reports its test error (a ModelCheckpoint on the validation
    error in the config, then ``trainer.test(ckpt_path="best")``).
    """

    mean = (0.0, 0.0, 0.0)
    std = (255.0, 255.0, 255.0)
    benchmark = SVHN.name
    num_classes = SVHN.num_classes
    in_channels = SVHN.in_channels
    image_size = SVHN.image_size

    def __init__(
        self,
        data_dir: str = "data/svhn",
        batch_size: int = 64,
        val_size: int = 6000,
        seed: int = 0,
        use_extra: bool = True,
        num_workers: int | None = None,
        download: bool = False,
    ):
        """
        Args:
            data_dir: Folder with train_32x32.mat, extra_32x32.mat and test_32x32.mat.
            batch_size: Global batch size, split evenly over all devices (paper: 64).
            val_size: Images of train+extra held out as validation, chosen with ``seed``
                (paper: 6,000). 0 = no validation.
            seed: Seed of the validation split (the same seed gives the same split).
            use_extra: Train on train+extra as in the paper; false = the 73,257 train
                images only (quicker experiments, extra_32x32.mat is 1.3 GB).
            num_workers: Loader worker processes; None = 0, since batches are gathered from
                an in-memory tensor with one index op.
            download: Download through torchvision when the files are missing.
        """
        super().__init__(batch_size, num_workers, seed, val_size, augment=False)
        self.data_dir = data_dir
        self.use_extra = use_extra
        self.download = download
        self.save_hyperparameters()
        self.declare()

    @property
    def root(self) -> Path:
        return Path(self.data_dir).expanduser()

    def _splits(self, stage: str) -> tuple[str, ...]:
        if stage == "test":
            return ("test",)
        return ("train", "extra") if self.use_extra else ("train",)

    def layout(self) -> str:
        return f"  {self.root}/\n      train_32x32.mat\n      extra_32x32.mat\n      test_32x32.mat"

    def how_to_get(self) -> str:
        return (
            "set `download: true` (command line: --data.download true) to fetch it, or "
            f"download the 'Format 2' .mat files from {SVHN_URL} into '{self.root}'."
        )

    def prepare_data(self) -> None:
        if not self.download:
            return
        for split in ("train", "extra", "test"):
            if split == "extra" and not self.use_extra:
                continue
            if not (self.root / f"{split}_32x32.mat").is_file():
                url = f"{SVHN_URL}{split}_32x32.mat"
                run_download(
                    lambda s=split: torchvision.datasets.SVHN(str(self.root), s, download=True),
                    url,
                    self.root,
                    self.layout(),
                )

    def _load(self, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        self.prepare_data()
        files = [f"{s}_32x32.mat" for s in self._splits(stage)]
        paths = require_files("SVHN", self.root, files, self.layout(), self.how_to_get())
        parts = [read_svhn_mat(p, self.how_to_get()) for p in paths]
        if len(parts) == 1:
            return parts[0]
        images = torch.cat([p[0] for p in parts])
        labels = torch.cat([p[1] for p in parts])
        return images, labels

    def load_train(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._load("fit")

    def load_test(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._load("test")
