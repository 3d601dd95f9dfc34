"""Images per second of a data module's loader alone (no model), for the benchmark suite."""

from __future__ import annotations

import time

import torch

from densenet_lit.data.base import BaseDataModule


def _to(batch, device: torch.device):
    images, labels = batch
    return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


def loader_throughput(
    datamodule: BaseDataModule,
    num_batches: int = 50,
    split: str = "train",
    device: str | torch.device = "cpu",
    warmup_batches: int = 2,
) -> float:
    """Images per second delivered by ``split``'s loader, including the on-device transform.

    Runs ``prepare_data``/``setup`` if needed, skips ``warmup_batches`` (worker start-up),
    then times ``num_batches`` batches: loading, transfer to ``device`` and
    ``transform_batch`` (the work ``on_after_batch_transfer`` does; augmentation included
    for ``split="train"``). Restarts the loader when it runs out of batches.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    device = torch.device(device)
    datamodule.prepare_data()
    datamodule.setup("fit" if split in ("train", "val") else "test")
    loader = {
        "train": datamodule.train_dataloader,
        "val": datamodule.val_dataloader,
        "test": datamodule.test_dataloader,
    }[split]()
    if not isinstance(loader, torch.utils.data.DataLoader) or len(loader) == 0:
        raise ValueError(f"the {split} loader is empty (val_size 0 or a tiny data set)")

    def batches():
        while True:
            yield from loader

    stream = batches()
    for _ in range(warmup_batches):
        datamodule.transform_batch(_to(next(stream), device), train=split == "train")
    n_images = 0
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the warm-up batches are not timed
    start = time.perf_counter()
    for _ in range(num_batches):
        images, _ = datamodule.transform_batch(_to(next(stream), device), train=split == "train")
        n_images += images.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n_images / (time.perf_counter() - start)
