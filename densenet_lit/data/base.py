"""Shared pieces of the data modules: global batch size, loaders, seeded splits, and the
in-memory uint8 pipeline of the 32x32 data sets (CIFAR, SVHN, digits).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from densenet_lit.data.errors import DownloadError, not_found
from densenet_lit.data.resume import EpochOrder, TrainProgress, training_seed
from densenet_lit.data.shards import EvaluationShard
from densenet_lit.data.transforms import normalize, random_hflip, random_pad_crop


class TensorImageDataset(Dataset):
    """Images held in memory as one uint8 ``[N, C, H, W]`` tensor, with int64 labels.

    ``indices`` selects a subset without copying (train/validation splits share storage).
    ``__getitems__`` serves a whole batch with one tensor index; the DataLoader's default
    fetcher calls it with the batch's index list (also under a DistributedSampler), and
    :func:`collate_batch` passes the result through unchanged.
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor | None = None
    ):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be uint8 [N, C, H, W], got {images.dtype} {images.shape}"
            )
        if labels.shape != (images.shape[0],):
            raise ValueError(f"need one label per image, got {labels.shape} for {images.shape[0]}")
        self.images = images
        self.labels = labels.long()
        self.indices = torch.arange(len(images)) if indices is None else indices.long()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = self.indices[i]
        return self.images[j], self.labels[j]

    def __getitems__(self, batch: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        j = self.indices.index_select(0, torch.as_tensor(batch, dtype=torch.long))
        return self.images.index_select(0, j), self.labels.index_select(0, j)


def collate_batch(batch):
    """Identity collate: :meth:`TensorImageDataset.__getitems__` already returns a batch."""
    return batch


def split_indices(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded split of ``range(n)`` into (train, validation) index tensors, each sorted."""
    if not 0 <= val_size < n:
        raise ValueError(
            f"data.val_size={val_size}: expected 0 <= val_size < {n}, the number of training "
            f"images (0 = no validation split; the paper's CIFAR runs hold out 5000)"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:].sort().values, perm[:val_size].sort().values


def batch_per_process(batch_size: int, world_size: int) -> int:
    """Each process's share of the global ``batch_size``; a ValueError saying what to change
    when it does not divide evenly over ``world_size`` processes."""
    if batch_size % world_size:
        lower = batch_size - batch_size % world_size
        upper = lower + world_size
        divisors = [d for d in range(1, batch_size + 1) if batch_size % d == 0]
        raise ValueError(
            f"data.batch_size={batch_size} (the global batch) does not divide evenly over "
            f"{world_size} processes (trainer.devices x trainer.num_nodes). Use a batch size "
            f"divisible by {world_size}, e.g. {lower or upper} or {upper}, or a device count "
            f"that divides {batch_size} (one of {divisors[:12]})."
        )
    return batch_size // world_size


def require_files(
    name: str, root: Path, relative: Sequence[str], layout: str, how_to_get: str
) -> list[Path]:
    """Return the absolute paths of ``relative`` under ``root``; DataError if any is absent."""
    paths = [root / r for r in relative]
    missing = [p for p in paths if not p.is_file()]
    if not root.is_dir():
        missing = [root]
    if missing:
        inner = Path(relative[0]).parts[0] if relative else ""
        if inner and inner != Path(relative[0]).name and root.name == inner:
            # data_dir names the folder inside the data set's directory, not the directory
            how_to_get = (
                f"data.data_dir is the '{inner}' folder itself; give the folder that holds it, "
                f"'{root.parent}'. Otherwise: {how_to_get}"
            )
        raise not_found(name, root, missing, layout, how_to_get)
    return paths


def run_download(download: Callable[[], object], url: str, root: Path, layout: str) -> None:
    """Run a torchvision download; any failure becomes a DownloadError with manual steps."""
    try:
        download()
    except Exception as err:
        raise DownloadError(
            f"Downloading {url} into '{root}' failed: {err!r}. If this machine has no internet, "
            f"download it on another machine and copy it here so that the layout is:\n{layout}"
        ) from err


def cpu_count() -> int:
    """CPUs this process may use (respects affinity masks, e.g. SLURM allocations)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class BaseDataModule(pl.LightningDataModule):
    """Global batch size, loader construction, the optional validation split, and exact
    resumption of the training data (:mod:`densenet_lit.data.resume`).

    Subclasses set ``train_set``, ``val_set`` (None when ``val_size == 0``) and
    ``test_set`` in ``setup``, implement :meth:`transform_batch`, and declare what they are,
    as class attributes (instance attributes set in ``__init__`` where an argument or the
    files decide): ``benchmark`` (the name runs are grouped and compared by, e.g.
    ``cifar10plus``: see :mod:`densenet_lit.benchmarks`), ``num_classes``, ``in_channels``
    and ``image_size``. The CLI links ``num_classes`` and ``in_channels`` into the model.
    """

    benchmark: str = "custom"
    num_classes: int
    in_channels: int = 3
    image_size: int

    def __init__(self, batch_size: int, num_workers: int | None, seed: int, val_size: int):
        super().__init__()
        if batch_size < 1:
            raise ValueError(
                f"data.batch_size={batch_size}: expected a positive global batch size (the "
                "paper: 64 for CIFAR and SVHN, 256 for ImageNet)."
            )
        if val_size < 0:
            raise ValueError(
                f"data.val_size={val_size}: expected 0 (no validation split) or a positive "
                "number of training images to hold out."
            )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.val_size = val_size
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.progress = TrainProgress()

    def declare(self) -> None:
        """Record what this data module is among its hyperparameters (``benchmark``): they are
        logged with every run and kept in its checkpoints, so the analysis tools know a run's
        data without guessing. Subclasses call it after ``save_hyperparameters()``."""
        self.save_hyperparameters({**self.hparams, "benchmark": self.benchmark})

    # --- sizes ---------------------------------------------------------------------------
    @property
    def world_size(self) -> int:
        return self.trainer.world_size if self.trainer is not None else 1

    @property
    def rank(self) -> int:
        return self.trainer.global_rank if self.trainer is not None else 0

    @property
    def order_seed(self) -> int:
        """The seed of the training order: ``seed_everything``'s, else the data module's."""
        seed = training_seed()
        return self.seed if seed is None else seed

    @property
    def per_device_batch_size(self) -> int:
        """``batch_size`` is the global batch; each process loads ``batch_size // world_size``."""
        return batch_per_process(self.batch_size, self.world_size)

    @property
    def has_validation_set(self) -> bool:
        """Whether ``validate`` has images to run on (with ``val_size: 0`` there are none, as
        in the paper's final CIFAR and SVHN runs on all training images)."""
        return self.val_size > 0

    # --- hooks shared by all modules -------------------------------------------------------
    def default_num_workers(self) -> int:
        return 0

    @property
    def resolved_num_workers(self) -> int:
        return self.default_num_workers() if self.num_workers is None else self.num_workers

    def collate_fn(self) -> Callable | None:
        return None  # torch's default collate

    def transform_batch(self, batch, train: bool):
        """The on-device part of the pipeline (identity unless a subclass needs one)."""
        return batch

    def is_training(self) -> bool:
        """True only inside the fit loop's training steps (not validation/test/predict)."""
        return self.trainer is not None and bool(self.trainer.training)

    # --- loaders --------------------------------------------------------------------------
    def _loader(self, dataset: Dataset | None, train: bool, stage: str) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"call setup('{stage}') before asking for its dataloader")
        workers = self.resolved_num_workers
        sampler = None
        if train:
            epoch, skip_batches = self.progress.resume_point()
            sampler = EpochOrder(
                dataset,
                num_replicas=self.world_size,
                rank=self.rank,
                seed=self.order_seed,
                epoch=epoch,
                skip=skip_batches * self.per_device_batch_size,
            )
        elif self.world_size > 1:  # each image once, on one rank (exact metrics)
            what = "validation" if stage == "validate" else "test"
            sampler = EvaluationShard(dataset, self.world_size, self.rank, what)
        return DataLoader(
            dataset,
            batch_size=self.per_device_batch_size,
            sampler=sampler,  # evaluation: in order (under DDP, this rank's share of it)
            drop_last=train,  # a smaller last batch would recompile torch.compile'd models
            collate_fn=self.collate_fn(),
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers > 0,
        )

    # --- exact resumption ---------------------------------------------------------------------
    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Count each training batch as it arrives and seed its augmentation and dropout."""
        if self.is_training():
            self.progress.next_batch(self.trainer.current_epoch, self.rank, self.order_seed)
        return batch

    def state_dict(self) -> dict:
        """Saved in every checkpoint by Lightning: where training stands (see TrainProgress)."""
        per_epoch = self.trainer.num_training_batches if self.trainer is not None else 0
        return {"progress": self.progress.state_dict(per_epoch)}

    def start_stage(self, stage: str | None) -> None:
        """A fit starts from the beginning unless Lightning restores a checkpoint into this
        data module afterwards (``setup`` runs before the restore): a test or an earlier fit
        in the same process leaves no progress behind. Each ``setup`` calls it first."""
        if stage in (None, "fit"):
            self.progress = TrainProgress()

    def load_state_dict(self, state_dict: dict) -> None:
        """Restored before the loaders are built, so the first one starts where training was."""
        self.progress.load_state_dict(state_dict.get("progress", {}))

    def train_dataloader(self) -> DataLoader:
        per_process = len(self.train_set) // self.world_size if self.train_set is not None else 0
        if self.train_set is not None and per_process < self.per_device_batch_size:
            raise ValueError(
                f"The training set has {len(self.train_set)} images, fewer than one batch of "
                f"{self.per_device_batch_size} per process; with drop_last there would be no "
                "training step. Lower batch_size or val_size."
            )
        return self._loader(self.train_set, train=True, stage="fit")

    def val_dataloader(self) -> DataLoader | list:
        """Validation loader, or ``[]`` when ``val_size == 0`` (Lightning then skips validation)."""
        if self.val_set is None and self.train_set is not None:
            return []
        return self._loader(self.val_set, train=False, stage="validate")

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False, stage="test")

    def predict_dataloader(self) -> DataLoader:
        """The test set with evaluation transforms."""
        return self._loader(self.test_set, train=False, stage="predict")


class InMemoryImageDataModule(BaseDataModule):
    """A 32x32-style data set held as uint8 tensors; normalise/augment on the device.

    The loader yields ``(uint8 [N, C, H, W], int64 [N])``. :meth:`on_after_batch_transfer`
    (called by Lightning after the batch is on the device) converts to float, normalises
    with ``mean``/``std`` (0-255 scale), and during training steps applies the augmentation
    in the authors' order: horizontal flip (if ``flip``), then a random crop of the image
    zero-padded by ``padding`` pixels. Padding after normalisation pads with the mean colour.

    Subclasses implement :meth:`load_train` and :meth:`load_test`; the validation split is
    taken from the training images with ``seed``.
    """

    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    flip: bool = True
    padding: int = 4

    def __init__(
        self, batch_size: int, num_workers: int | None, seed: int, val_size: int, augment: bool
    ):
        super().__init__(batch_size, num_workers, seed, val_size)
        self.augment = augment

    def load_train(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def load_test(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def on_train_loaded(self, train_set: TensorImageDataset) -> None:
        """Hook for subclasses that derive statistics from the training split."""

    def setup(self, stage: str | None = None) -> None:
        self.start_stage(stage)
        if stage in (None, "fit", "validate") and self.train_set is None:
            images, labels = self.load_train()
            train_idx, val_idx = split_indices(len(images), self.val_size, self.seed)
            self.train_set = TensorImageDataset(images, labels, train_idx)
            self.val_set = TensorImageDataset(images, labels, val_idx) if self.val_size else None
            self.on_train_loaded(self.train_set)
        if stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = TensorImageDataset(*self.load_test())

    def collate_fn(self) -> Callable:
        return collate_batch

    def transform_batch(self, batch, train: bool):
        """uint8 batch -> normalised float batch; augmented when ``train`` and ``augment``."""
        images, labels = batch
        if self.mean is None or self.std is None:
            raise RuntimeError("normalisation statistics are not known yet: call setup() first")
        x = normalize(images, self.mean, self.std)
        if train and self.augment:
            if self.flip:
                x = random_hflip(x)
            x = random_pad_crop(x, self.padding)
        return x, labels

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        return self.transform_batch(batch, train=self.is_training())
