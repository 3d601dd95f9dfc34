"""ImageNet (ILSVRC 2012) from the usual ``train/`` and ``val/`` class-folder layout.

Images are decoded and augmented per image in worker processes (the fb.resnet.torch
pipeline the paper used), then batched as normalised float tensors.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset
from torchvision.transforms import InterpolationMode, v2

from densenet_lit.data.base import BaseDataModule, cpu_count, split_indices
from densenet_lit.data.errors import CorruptDataError, DataError, not_found
from densenet_lit.data.ten_crop import check_eval_crops, ten_crop_transform

# fb.resnet.torch constants (datasets/imagenet.lua).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)

HOW_TO_GET = (
    "ImageNet cannot be downloaded automatically. Get ILSVRC2012_img_train.tar and "
    "ILSVRC2012_img_val.tar from https://image-net.org (free registration), unpack the "
    "training archive into train/<wnid>/ folders (one tar per class) and sort the flat "
    "validation images into val/<wnid>/ folders, e.g. with the valprep.sh script of "
    "soumith/imagenetloader.torch."
)


def load_rgb(path: str) -> Image.Image:
    """Decode an image file as RGB; a corrupt or truncated file becomes a DataError naming it."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as err:
        raise CorruptDataError(
            f"Cannot decode image '{path}': {err}. The file is truncated or corrupt; "
            "replace it from the original ImageNet archive (or delete it)."
        ) from err


class Lighting:
    """AlexNet-style PCA lighting noise on a float RGB image in [0, 1] (fb.resnet.torch).

    Adds ``eigvec @ (alpha * eigval)`` to every pixel, ``alpha ~ N(0, alphastd)`` per image.
    """

    def __init__(self, alphastd: float = 0.1, eigval=PCA_EIGVAL, eigvec=PCA_EIGVEC):
        self.alphastd = alphastd
        self.eigval = torch.tensor(eigval, dtype=torch.float32)
        self.eigvec = torch.tensor(eigvec, dtype=torch.float32)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.alphastd == 0:
            return img
        alpha = torch.randn(3) * self.alphastd
        rgb = self.eigvec @ (alpha * self.eigval)
        return img + rgb.view(3, 1, 1).to(img.dtype)


def train_transform(crop: int) -> Callable:
    """fb.resnet.torch training order: RandomSizedCrop, ColorJitter, Lighting, flip, normalise."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(
                crop,
                scale=(0.08, 1.0),
                ratio=(3 / 4, 4 / 3),
                interpolation=InterpolationMode.BICUBIC,
                antialias=True,
            ),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4),
            Lighting(0.1),
            v2.RandomHorizontalFlip(0.5),
            v2.Normalize(MEAN, STD),
            v2.ToPureTensor(),
        ]
    )


def eval_transform(resize: int, crop: int) -> Callable:
    """Shorter side to ``resize``, centre ``crop``, normalise (deterministic)."""
    return v2.Compose(
        [
            v2.Resize(resize, interpolation=InterpolationMode.BICUBIC, antialias=True),
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

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        i, seed = key if isinstance(key, tuple) else (key, None)
        path = os.path.join(self.root, self.relpaths[i].decode())
        image = load_rgb(path)
        if seed is None:
            return self.transform(image), int(self.labels[i])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), int(self.labels[i])


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir())


def scan_split(split_dir: Path, class_to_idx: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Relative paths (bytes) and labels of every image in ``split_dir/<class>/``."""
    try:
        samples = make_dataset(str(split_dir), class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as err:
        raise DataError(
            f"Wrong ImageNet layout in '{split_dir}': {err}. Every class folder must hold "
            f"image files ({', '.join(IMG_EXTENSIONS[:3])}, ...)."
        ) from err
    rel = np.array([os.fsencode(os.path.relpath(p, split_dir)) for p, _ in samples])
    return rel, np.array([label for _, label in samples], dtype=np.int64)


class ImageNetDataModule(BaseDataModule):
    """ImageNet in ``<data_dir>/{train,val}/<wnid>/*.JPEG`` (1,000 classes).

    Training: fb.resnet.torch augmentation (random-size crop to ``train_crop``, colour
    jitter 0.4, PCA lighting 0.1, horizontal flip, mean/std normalisation). Evaluation:
    resize the shorter side to ``eval_resize``, centre crop ``eval_crop`` (``eval_crops: 10``:
    the four corner and centre crops and their flips, as the paper's 10-crop errors). Worker
    processes (sized to the machine), pinned memory, persistent workers.

    The official ``val/`` images are the test set (the paper reports its errors there).
    By default (``val_size: 0``) the validation loop also runs on ``val/``, as in
    fb.resnet.torch; do not select checkpoints on it. ``val_size > 0`` instead holds out
    that many training images (seeded) as a separate validation set.

    Only fit (and validate with ``val_size > 0``) needs ``train/``; test, predict and
    validate with ``val_size: 0`` need only ``val/``, e.g. to evaluate pretrained weights.
    """

    def __init__(
        self,
        data_dir: str = "data/imagenet",
        batch_size: int = 256,
        train_crop: int = 224,
        eval_resize: int = 256,
        eval_crop: int = 224,
        eval_crops: int = 1,
        val_size: int = 0,
        seed: int = 0,
        num_workers: int | None = None,
        download: bool = False,
    ):
        """
        Args:
            data_dir: Folder holding train/ and val/, each with one folder per class (wnid);
                evaluation needs only val/.
            batch_size: Global batch size, split evenly over all devices (paper: 256).
            train_crop: Side of the random-size training crop.
            eval_resize: Shorter side after resizing for evaluation.
            eval_crop: Side of the evaluation centre crop.
            eval_crops: 1 = the centre crop (the paper's single-crop errors); 10 = the four
                corners and the centre and their horizontal flips, logits averaged by the
                module (the CVPR paper's 10-crop errors; ten times the evaluation compute).
                Applies to every evaluation loader (validate, test, predict).
            val_size: 0 = validate on the official val/ images (which are also the test
                set); > 0 = hold out that many training images, chosen with ``seed``.
            seed: Seed of the held-out validation split.
            num_workers: Decoding worker processes per device; None = the machine's CPUs
                divided among its devices (at most 16).
            download: Accepted for a uniform interface; ImageNet has no automatic download
                (the error for missing data explains how to get it).
        """
        super().__init__(batch_size, num_workers, seed, val_size)
        if eval_crop > eval_resize:
            raise ValueError(f"eval_crop ({eval_crop}) must not exceed eval_resize ({eval_resize})")
        self.data_dir = data_dir
        self.train_crop = train_crop
        self.eval_resize = eval_resize
        self.eval_crop = eval_crop
        self.eval_crops = check_eval_crops(eval_crops)
        self.download = download
        self.classes: list[str] = []
        self.save_hyperparameters()
        self.declare()

    benchmark = "imagenet"

    @property
    def num_classes(self) -> int:
        return 1000

    @property
    def in_channels(self) -> int:
        return 3

    @property
    def image_size(self) -> int:
        return self.train_crop

    @property
    def root(self) -> Path:
        return Path(self.data_dir).expanduser()

    @property
    def has_validation_set(self) -> bool:
        return True  # val_size 0: the official val/ images

    def layout(self) -> str:
        return (
            f"  {self.root}/\n      train/n01440764/n01440764_10026.JPEG ... (1,000 class folders)\n"
            "      val/n01440764/ILSVRC2012_val_00000293.JPEG ... (the same class folders)"
        )

    def default_num_workers(self) -> int:
        if self.trainer is not None:
            devices = self.trainer.num_devices
        else:
            devices = max(1, torch.cuda.device_count())
        return min(16, max(1, cpu_count() // devices))

    def needs_train(self, stage: str | None) -> bool:
        """Whether ``stage`` reads ``train/``: fit, and validation on a held-out split of it.

        Evaluation (test, predict, and validate with ``val_size: 0``) reads ``val/`` only, so
        that weights trained elsewhere (e.g. torchvision's) can be evaluated without the
        training images.
        """
        return stage in (None, "fit") or (stage == "validate" and self.val_size > 0)

    def _missing_folders(self, need_train: bool) -> list[Path]:
        if not self.root.is_dir():
            return [self.root]
        wanted = [self.root / "train"] if need_train else []
        return [p for p in (*wanted, self.root / "val") if not p.is_dir()]

    def _check_layout(self, need_train: bool) -> list[str]:
        """Check the folders and return the class names; DataError on any layout problem.

        ``val/`` is always required; ``train/`` only when ``need_train``. When both hold
        class folders they must hold the same ones, whether or not ``train/`` is used.
        """
        train, val = self.root / "train", self.root / "val"
        missing = self._missing_folders(need_train)
        if missing:
            how_to_get = HOW_TO_GET
            if not need_train:
                how_to_get += " Evaluation (validate, test, predict) needs only val/."
            raise not_found("ImageNet", self.root, missing, self.layout(), how_to_get)
        train_classes = _class_dirs(train) if train.is_dir() else []
        val_classes = _class_dirs(val)
        if need_train and not train_classes:
            raise DataError(
                f"Wrong ImageNet layout: '{train}' has no class folders.\n"
                f"Expected layout:\n{self.layout()}\n{HOW_TO_GET}"
            )
        if not val_classes:
            flat = [e.name for e in os.scandir(val) if e.is_file()]
            raise DataError(
                f"Wrong ImageNet layout: '{val}' has no class folders"
                + (f" but {len(flat)} files directly inside (e.g. '{flat[0]}')" if flat else "")
                + ". The validation images must be sorted into val/<wnid>/ folders like "
                "train/ (e.g. with the valprep.sh script of soumith/imagenetloader.torch).\n"
                f"Expected layout:\n{self.layout()}"
            )
        if train_classes and train_classes != val_classes:
            only_train = sorted(set(train_classes) - set(val_classes))
            only_val = sorted(set(val_classes) - set(train_classes))
            raise DataError(
                f"Wrong ImageNet layout under '{self.root}': train/ and val/ must hold the same "
                f"class folders. Only in train/: {len(only_train)} {only_train[:5]}; "
                f"only in val/: {len(only_val)} {only_val[:5]}."
            )
        return val_classes

    def setup(self, stage: str | None = None) -> None:
        need_train = self.needs_train(stage)
        if not self.classes or (need_train and self.train_set is None):
            # checked again when an evaluation-only setup is followed by fit
            self.classes = self._check_layout(need_train)
        class_to_idx = {c: i for i, c in enumerate(self.classes)}
        if self.eval_crops == 10:
            eval_tf = ten_crop_transform(self.eval_resize, self.eval_crop, MEAN, STD)
        else:
            eval_tf = eval_transform(self.eval_resize, self.eval_crop)
        if self.test_set is None:
            val_dir = self.root / "val"
            self.test_set = ImageListDataset(val_dir, *scan_split(val_dir, class_to_idx), eval_tf)
        if not need_train:
            if self.val_size == 0:
                self.val_set = self.test_set
            return
        if self.train_set is None:
            train_dir = self.root / "train"
            paths, labels = scan_split(train_dir, class_to_idx)
            if self.val_size:
                keep, held = (
                    i.numpy() for i in split_indices(len(labels), self.val_size, self.seed)
                )
                self.val_set = ImageListDataset(train_dir, paths[held], labels[held], eval_tf)
                paths, labels = paths[keep], labels[keep]
            else:
                self.val_set = self.test_set
            self.train_set = ImageListDataset(
                train_dir, paths, labels, train_transform(self.train_crop)
            )
