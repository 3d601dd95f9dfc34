"""ImageNet (ILSVRC 2012), or any data set in its ``train/<class>/`` and ``val/<class>/`` layout.

Two ways to decode and augment (``decode``), with the same fb.resnet.torch pipeline:

* ``pil`` (the reference): each image decoded with PIL and augmented in a worker process
  (:mod:`densenet_lit.data.pil_pipeline`), batched as normalised float tensors.
* ``device``: workers only read file bytes and draw each image's augmentation parameters
  (:mod:`densenet_lit.data.encoded`); the batch is decoded and augmented on the device it
  is trained on (:mod:`densenet_lit.data.device_decode`), in ``on_after_batch_transfer``.
"""

from __future__ import annotations

import collections
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch

from densenet_lit.benchmarks import IMAGENET, IMAGENET_CLASSES
from densenet_lit.data import device_decode
from densenet_lit.data.base import BaseDataModule, collate_batch, cpu_count, split_indices
from densenet_lit.data.class_folders import (
    HOW_TO_GET,
    LAYOUT,
    check_layout,
    count_classes,
    scan_split,
)
from densenet_lit.data.encoded import EncodedBatch, EncodedImageDataset
from densenet_lit.data.modern_augment import AutoAugment, ModernAugment
from densenet_lit.data.pil_pipeline import (  # re-exported: the reference pipeline's names
    JITTER,
    LIGHTING_STD,
    MEAN,
    PCA_EIGVAL,
    PCA_EIGVEC,
    STD,
    ColourAugment,
    ImageListDataset,
    Lighting,
    eval_transform,
    load_rgb,
    train_transform,
)
from densenet_lit.data.ten_crop import check_eval_crops, ten_crop_transform

__all__ = ["HOW_TO_GET", "MEAN", "PCA_EIGVAL", "PCA_EIGVEC", "STD", "ImageNetDataModule"]
__all__ += ["ImageListDataset", "Lighting", "eval_transform", "load_rgb", "train_transform"]

DECODERS = ("pil", "device")


class ImageNetDataModule(BaseDataModule):
    """ImageNet in ``<data_dir>/{train,val}/<wnid>/*.JPEG``, or any data set laid out so.

    ``num_classes`` is the number of class folders (1,000 for ImageNet, 10 for Imagenette,
    200 for Tiny-ImageNet's ``train/``); ``val/`` must hold the same class folders.

    Training: fb.resnet.torch augmentation (random-size crop to ``train_crop``, colour
    jitter ``color_jitter`` (0.4), PCA lighting ``lighting`` (0.1), horizontal flip, mean/std
    normalisation; a colour step at 0 is left out, on both ``decode`` paths). Evaluation:
    resize the shorter side to ``eval_resize``, centre crop ``eval_crop`` (``eval_crops: 10``:
    the four corner and centre crops and their flips, as the paper's 10-crop errors). Worker
    processes (sized to the machine), pinned memory, persistent workers.

    The modern recipe's augmentations (off by default; training only, never evaluation; on
    both ``decode`` paths): ``auto_augment`` (TrivialAugmentWide or RandAugment) and
    ``random_erase``. With either on, the training order is torchvision's reference order,
    with the paper's colour jitter and lighting kept on the float image before the
    normalisation: random-size crop, flip, auto-augment (uint8), to float, colour jitter,
    PCA lighting, normalisation, random erasing. torchvision's recipe has neither jitter nor
    lighting; they stay unless ``color_jitter: 0`` and ``lighting: 0`` leave them out, so
    that the modern augmentations add to the paper's by default rather than replace part
    of it. (The flip comes before the colour steps, with which it
    commutes, so that the auto-augment sees the flipped image as in torchvision's order.)

    The official ``val/`` images are the test set (the paper reports its errors there).
    By default (``val_size: 0``) the validation loop also runs on ``val/``, as in
    fb.resnet.torch; do not select checkpoints on it. ``val_size > 0`` instead holds out
    that many training images (seeded) as a separate validation set.

    Only fit (and validate with ``val_size > 0``) needs ``train/``; test, predict and
    validate with ``val_size: 0`` need only ``val/``, e.g. to evaluate pretrained weights.
    """

    in_channels = IMAGENET.in_channels

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
        decode: Literal["pil", "device"] = "pil",
        benchmark: str = IMAGENET.name,
        auto_augment: AutoAugment | None = None,
        ra_magnitude: int = 9,
        random_erase: float = 0.0,
        color_jitter: float = JITTER,
        lighting: float = LIGHTING_STD,
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
            num_workers: Worker processes per device; None = the machine's CPUs divided
                among its devices (at most 16).
            download: Accepted for a uniform interface; ImageNet has no automatic download
                (the error for missing data explains how to get it).
            decode: ``pil`` = decode and augment each image with PIL in the workers (the
                reference); ``device`` = workers read the file bytes only, and the batch is
                decoded (``torchvision.io.decode_jpeg``: nvJPEG on a GPU) and augmented on
                the training device. Both draw the same augmentation for the same seed.
            benchmark: what the data set is, for grouping and comparing runs (W&B groups,
                reports): ``imagenet``, or e.g. ``imagenette`` for another class-folder set.
            auto_augment: ``ta_wide`` = torchvision's TrivialAugmentWide, ``ra`` =
                RandAugment (2 operations), on each training image after the crop and the
                flip; None = off (the paper). As torchvision's reference script
                ``--auto-augment`` (bilinear interpolation, its default).
            ra_magnitude: RandAugment's magnitude bin, 0 to 30 (torchvision's default 9);
                used with ``auto_augment: ra`` only.
            random_erase: probability of torchvision's RandomErasing (2%-33% of the image
                set to 0) on each normalised training image; 0 = off (the paper).
                torchvision's recipe: 0.1.
            color_jitter: strength of the training colour jitter: brightness, contrast and
                saturation factors drawn in [1 - color_jitter, 1 + color_jitter], applied
                in a random order (fb.resnet.torch: 0.4); 0 to below 1. 0 = off: the step
                is left out and draws no random numbers (torchvision's recipe has none).
            lighting: standard deviation of AlexNet's PCA lighting noise on training images
                (fb.resnet.torch: 0.1); 0 = off, as ``color_jitter``.
        """
        super().__init__(batch_size, num_workers, seed, val_size)
        if eval_crop > eval_resize:
            raise ValueError(f"eval_crop ({eval_crop}) must not exceed eval_resize ({eval_resize})")
        if decode not in DECODERS:
            raise ValueError(
                f"data.decode={decode!r}: expected 'pil' (PIL in worker processes, the "
                "reference) or 'device' (decode and augment on the training device)."
            )
        self.data_dir = data_dir
        self.train_crop = train_crop
        self.eval_resize = eval_resize
        self.eval_crop = eval_crop
        self.image_size = train_crop
        self.benchmark = benchmark
        self.eval_crops = check_eval_crops(eval_crops)
        if self.eval_crops == 10 and decode == "device":
            raise ValueError(
                "data.eval_crops=10 with data.decode='device': ten-crop evaluation runs on the "
                "PIL path. Give data.decode=pil for the ten-crop validate/test."
            )
        self.download = download
        self.decode = decode
        self.modern = ModernAugment(auto_augment, ra_magnitude, random_erase)
        self.colour = ColourAugment(color_jitter, lighting)
        self.classes: list[str] = []
        # the number of class folders, known before setup (for the model's classifier);
        # ImageNet's 1,000 while no folder can be read, as when a config is checked without
        # the data (setup then says what is missing)
        self.num_classes = count_classes(self.root) or IMAGENET_CLASSES
        # files the device decoder could not read, decoded on the CPU: (path, why) -> images
        self.cpu_decoded: collections.Counter[tuple[str, str]] = collections.Counter()
        self.save_hyperparameters()
        self.declare()

    @property
    def root(self) -> Path:
        return Path(self.data_dir).expanduser()

    @property
    def has_validation_set(self) -> bool:
        return True  # val_size 0: the official val/ images

    def layout(self) -> str:
        return LAYOUT.format(root=self.root)

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

    def _dataset(self, split_dir: Path, paths, labels, train: bool):
        if self.decode == "device":
            if not train:
                return EncodedImageDataset(split_dir, paths, labels, None)
            return EncodedImageDataset(
                split_dir, paths, labels, self.train_crop, self.modern, self.colour
            )
        if train:
            transform = train_transform(self.train_crop, self.modern, self.colour)
            return ImageListDataset(split_dir, paths, labels, transform)
        if self.eval_crops == 10:
            evaluation = ten_crop_transform(self.eval_resize, self.eval_crop, MEAN, STD)
        else:
            evaluation = eval_transform(self.eval_resize, self.eval_crop)
        return ImageListDataset(split_dir, paths, labels, evaluation)

    def setup(self, stage: str | None = None) -> None:
        self.start_stage(stage)
        need_train = self.needs_train(stage)
        if not self.classes or (need_train and self.train_set is None):
            # checked again when an evaluation-only setup is followed by fit
            self.classes = check_layout(self.root, need_train)
            self.num_classes = len(self.classes)
        class_to_idx = {c: i for i, c in enumerate(self.classes)}
        if self.test_set is None:
            val_dir = self.root / "val"
            self.test_set = self._dataset(val_dir, *scan_split(val_dir, class_to_idx), False)
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
                self.val_set = self._dataset(train_dir, paths[held], labels[held], False)
                paths, labels = paths[keep], labels[keep]
            else:
                self.val_set = self.test_set
            self.train_set = self._dataset(train_dir, paths, labels, True)

    # --- the device path ------------------------------------------------------------------
    def collate_fn(self) -> Callable | None:
        """The device path's dataset already returns a whole batch (one byte buffer)."""
        return collate_batch if self.decode == "device" else None

    def transform_batch(self, batch, train: bool):
        """Decode and augment an :class:`EncodedBatch` on the device its labels are on; PIL
        batches pass through. Training batches are those that carry augmentation parameters
        (drawn by the training set's workers), so ``train`` is not needed to tell them."""
        if not isinstance(batch, EncodedBatch):
            return batch
        images, on_cpu = device_decode.decode_batch(batch, batch.labels.device)
        self.cpu_decoded.update(on_cpu)
        if batch.params is not None:
            x = device_decode.augment(images, batch.params, self.train_crop, self.modern)
        else:
            x = device_decode.evaluate(images, self.eval_resize, self.eval_crop)
        return x, batch.labels

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        return self.transform_batch(batch, train=self.is_training())

    def teardown(self, stage: str) -> None:
        """One warning for the whole stage that counts the images decoded on the CPU."""
        if not self.cpu_decoded:
            return
        files = list(self.cpu_decoded)
        examples = "; ".join(f"'{path}' ({why})" for path, why in files[:5])
        warnings.warn(
            f"decode=device: {self.cpu_decoded.total()} images ({len(files)} files) were not "
            f"readable by the device's JPEG decoder and were decoded on the CPU instead, the "
            f"same pixels as decode=pil gives: {examples}{'; ...' if len(files) > 5 else ''}. "
            "A few such files are expected (ImageNet's training set has 22 CMYK JPEGs and a "
            "PNG named .JPEG); if there are many, convert them to RGB JPEGs or use decode=pil.",
            stacklevel=2,
        )
        self.cpu_decoded.clear()
