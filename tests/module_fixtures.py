"""A tiny DenseNet's arguments, random 32 px data and a quiet CPU trainer, shared by the
tests of :class:`densenet_lit.module.DenseNetModule`."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningDataModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

TINY = {"depth": 10, "growth_rate": 4}


class RandomData(LightningDataModule):
    def __init__(self, n=16, classes=4, batch_size=8):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.data = TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % classes)
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(self.data, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.data, batch_size=self.batch_size)

    def test_dataloader(self):
        return DataLoader(self.data, batch_size=self.batch_size)

    def predict_dataloader(self):
        return DataLoader(self.data, batch_size=self.batch_size)


def quiet_trainer(tmp_path, **kwargs):
    defaults = dict(
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return Trainer(**{**defaults, **kwargs})
