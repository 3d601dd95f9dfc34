"""Exact resumption of training data: what a training step draws depends only on the seed,
the rank and the step, so a run resumed from a checkpoint (at an epoch boundary or in the
middle of an epoch) draws exactly what the uninterrupted run draws.

* Order: epoch ``e`` visits the training images in the permutation drawn with seed
  ``seed + e`` (DistributedSampler's rule, so one process and DDP draw alike), each rank its
  share. ``seed`` is that of ``seed_everything`` (else the data module's).
* Augmentation in worker processes (ImageNet): data sets with ``accepts_sample_seeds`` get
  ``(index, seed)`` keys, the seed from ``(seed, rank, epoch, position in the epoch)``, so an
  image's augmentation depends neither on the worker that decodes it nor on their number.
* Augmentation on the device and dropout: the global torch RNG is seeded from
  ``(seed, rank, n)`` as the ``n``-th training batch of the run arrives (see
  :class:`TrainProgress`).
* Resuming: the data module's ``state_dict`` (saved by Lightning in every checkpoint) holds
  the epoch, the batches of it already trained on and the batches of the whole run; the
  sampler of the resumed epoch starts after those already trained on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, DistributedSampler

MASK64 = (1 << 64) - 1


def training_seed() -> int | None:
    """The seed of ``seed_everything`` (Lightning keeps it in ``PL_GLOBAL_SEED``), or None."""
    value = os.environ.get("PL_GLOBAL_SEED")
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def mix_seed(*values: int) -> int:
    """A 63-bit seed from a tuple of integers (SplitMix64 steps): neighbouring tuples such as
    ``(seed, rank, 7)`` and ``(seed, rank, 8)`` give unrelated random streams."""
    state = 0
    for value in values:
        z = ((state ^ (value & MASK64)) + 0x9E3779B97F4A7C15) & MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        state = z ^ (z >> 31)
    return state >> 1


class EpochOrder(DistributedSampler):
    """The training order of an epoch: a seeded permutation per epoch, this rank's share of
    it, a seed per image where the data set takes one, and after a resumption in the middle
    of an epoch, only the images not trained on yet.

    A ``DistributedSampler``, so Lightning keeps it under DDP and calls :meth:`set_epoch` at
    the start of every epoch.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int,
        rank: int,
        seed: int,
        epoch: int = 0,
        skip: int = 0,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.epoch = epoch
        self.skip = skip  # samples of `epoch` already trained on (a resumed run)
        self.sample_seeds = bool(getattr(dataset, "accepts_sample_seeds", False))

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.skip = 0
        super().set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        order: list[Any] = list(super().__iter__())
        if self.sample_seeds:
            base = mix_seed(self.seed, self.rank, self.epoch, 2)
            order = [(index, mix_seed(base, position)) for position, index in enumerate(order)]
        skip, self.skip = self.skip, 0  # only the resumed epoch's first pass skips
        return iter(order[skip:])


@dataclass
class TrainProgress:
    """Where training stands, as the data module sees it: the epoch, its batches trained on so
    far, whether that epoch was complete, and the training batches of the whole run."""

    epoch: int = 0
    batches: int = 0
    epoch_done: bool = False
    total: int = 0

    def next_batch(self, epoch: int, rank: int, seed: int | None) -> None:
        """Count a training batch of ``epoch`` as it arrives, and seed the global RNG for
        its augmentation and dropout from ``(seed, rank, batches of the run before it)``."""
        if epoch != self.epoch:
            self.epoch, self.batches, self.epoch_done = epoch, 0, False
        if seed is not None:
            torch.manual_seed(mix_seed(seed, rank, self.total))
        self.batches += 1
        self.total += 1

    def state_dict(self, batches_per_epoch: int | float) -> dict[str, Any]:
        state = asdict(self)
        state["epoch_done"] = 0 < batches_per_epoch <= self.batches
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("epoch", "batches", "epoch_done", "total"):
            if key in state:
                setattr(self, key, type(getattr(self, key))(state[key]))

    def resume_point(self) -> tuple[int, int]:
        """``(epoch, batches of it to skip)`` where the next training pass starts."""
        if self.epoch_done or self.batches == 0:
            return (self.epoch + 1 if self.epoch_done else self.epoch), 0
        return self.epoch, self.batches
