"""Images per second of a data module's loader alone (no model): whether a loader keeps up."""

from __future__ import annotations

import time

import torch

from densenet_lit.data.base import BaseDataModule


def loader_throughput(
    datamodule: BaseDataModule,
    num_batches: int = 50,
    split: str = "train",
    device: str | torch.device = "cpu",
    warmup_batches: int = 2,
) -> float:
    """Images per second delivered by ``split``'s loader, including the on-device transform.

    Runs ``prepare_data``/``setup`` if needed, skips ``warmup_batches`` (worker start-up),
    then times ``num_batches`` batches: loading, ``transfer_batch_to_device`` and
    ``transform_batch`` (the work ``on_after_batch_transfer`` does: augmentation for
    ``split="train"``, and decoding for ImageNet's ``decode="device"``). Restarts the
    loader when it runs out of batches.
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

    def on_device(batch):
        """What Lightning does with a batch: the transfer hook, then the on-device transform."""
        moved = datamodule.transfer_batch_to_device(batch, device, 0)
        return datamodule.transform_batch(moved, train=split == "train")

    stream = batches()
    for _ in range(warmup_batches):
        on_device(next(stream))
    n_images = 0
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the warm-up batches are not timed
    start = time.perf_counter()
    for _ in range(num_batches):
        images, _ = on_device(next(stream))
        n_images += images.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n_images / (time.perf_counter() - start)
