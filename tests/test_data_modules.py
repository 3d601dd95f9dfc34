"""CIFAR, SVHN and digits data modules over tiny data sets in the real file formats."""

from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from crops import crop_windows
from torch.utils.data import DistributedSampler

from densenet_lit.data import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    ImageNetDataModule,
    SVHNDataModule,
    loader_throughput,
)
from densenet_lit.data.synthetic import write_cifar100
from densenet_lit.data.transforms import normalize

C10_MEAN, C10_STD = (125.3, 123.0, 113.9), (63.0, 62.1, 66.7)
CIFAR10 = {"n_train": 120, "n_test": 40}  # fake_data("cifar10", **CIFAR10)
SVHN = {"n_train": 60, "n_extra": 40, "n_test": 30}  # fake_data("svhn", **SVHN)


def attach(dm, training: bool, world_size: int = 1):
    """A stand-in for the Trainer attributes the data modules read."""
    dm.trainer = SimpleNamespace(
        training=training,
        world_size=world_size,
        num_devices=world_size,
        global_rank=0,
        current_epoch=0,
        num_training_batches=float("inf"),
    )
    return dm


def cifar10(root, **kw):
    kw = {"val_size": 20, "batch_size": 16, **kw}
    dm = CIFAR10DataModule(data_dir=str(root), **kw)
    dm.setup("fit")
    dm.setup("test")
    return dm


# --- properties the CLI links before setup ---------------------------------------------
@pytest.mark.parametrize(
    ("cls", "classes", "channels", "size"),
    [
        (CIFAR10DataModule, 10, 3, 32),
        (CIFAR100DataModule, 100, 3, 32),
        (SVHNDataModule, 10, 3, 32),
        (ImageNetDataModule, 1000, 3, 224),
        (DigitsDataModule, 10, 1, 32),
    ],
)
def test_properties_known_after_init_and_cli_parsable(cls, classes, channels, size):
    dm = cls()
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (classes, channels, size)
    from jsonargparse import ArgumentParser  # here: the GPU tests of this file run without it

    parser = ArgumentParser()
    parser.add_class_arguments(cls, "data")
    cfg = parser.parse_args(["--data.batch_size", "32"])
    assert cfg.data.batch_size == 32 and cfg.data.seed == 0


# --- CIFAR -------------------------------------------------------------------------------
def test_cifar10_split_sizes_and_content(fake_data):
    root, written = fake_data("cifar10", **CIFAR10)
    dm = cifar10(root)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (100, 20, 40)
    idx = torch.cat([dm.train_set.indices, dm.val_set.indices]).sort().values
    assert torch.equal(idx, torch.arange(120))  # disjoint and complete
    x, y = written["train"]
    assert torch.equal(dm.train_set.images, torch.from_numpy(x))
    assert torch.equal(dm.train_set.labels, torch.from_numpy(y))
    assert torch.equal(dm.test_set.images, torch.from_numpy(written["test"][0]))


def test_cifar_split_is_seeded(fake_data):
    root, _ = fake_data("cifar10", **CIFAR10)
    a, b, c = cifar10(root, seed=0), cifar10(root, seed=0), cifar10(root, seed=1)
    assert torch.equal(a.val_set.indices, b.val_set.indices)
    assert not torch.equal(a.val_set.indices, c.val_set.indices)


def test_cifar_final_run_has_no_validation(fake_data):
    root, _ = fake_data("cifar10", **CIFAR10)
    dm = cifar10(root, val_size=0)
    assert len(dm.train_set) == 120
    assert dm.val_dataloader() == []


def test_cifar_loader_batches_are_uint8_nchw(fake_data):
    root, _ = fake_data("cifar10", **CIFAR10)
    dm = cifar10(root)
    train = list(dm.train_dataloader())
    assert len(train) == 100 // 16  # drop_last
    images, labels = train[0]
    assert images.dtype == torch.uint8 and images.shape == (16, 3, 32, 32)
    assert labels.dtype == torch.int64 and labels.shape == (16,)
    val = list(dm.val_dataloader())
    assert [len(b[1]) for b in val] == [16, 4]  # evaluation keeps every image
    assert len(list(dm.test_dataloader())) == len(list(dm.predict_dataloader())) == 3


def test_cifar_shuffle_follows_the_global_seed(fake_data):
    root, _ = fake_data("cifar10", **CIFAR10)
    dm = cifar10(root)
    pl.seed_everything(7)
    first = [labels for _, labels in dm.train_dataloader()]
    torch.manual_seed(123)  # the order does not follow the global RNG's state, only the seed
    again = [labels for _, labels in dm.train_dataloader()]
    next_epoch = dm.train_dataloader()
    next_epoch.sampler.set_epoch(1)  # as Lightning does at the start of each epoch
    other = [labels for _, labels in next_epoch]
    pl.seed_everything(8)
    other_seed = [labels for _, labels in dm.train_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other_seed, strict=True))


def test_cifar_eval_transform_normalises_and_is_deterministic(fake_data):
    root, _ = fake_data("cifar10", **CIFAR10)
    dm = attach(cifar10(root), training=False)
    batch = next(iter(dm.val_dataloader()))
    out1, labels = dm.on_after_batch_transfer(batch, 0)
    out2, _ = dm.on_after_batch_transfer(batch, 0)
    assert out1.dtype == torch.float32 and out1.shape == (16, 3, 32, 32)
    assert torch.equal(out1, out2)
    assert torch.equal(out1, normalize(batch[0], C10_MEAN, C10_STD))  # no flip, no crop
    assert torch.equal(labels, batch[1])


def test_cifar_training_batches_are_flipped_padded_crops(fake_data):
    root, _ = fake_data("cifar10", **CIFAR10)
    dm = attach(cifar10(root, batch_size=64, val_size=0), training=True)
    images, _ = next(iter(dm.train_dataloader()))
    torch.manual_seed(0)
    out, _ = dm.on_after_batch_transfer((images, torch.zeros(64)), 0)
    normed = normalize(images, C10_MEAN, C10_STD)
    # each image a window of the zero-padded image or of its mirror image
    flipped, offsets = crop_windows(out, normed, normed.flip(-1), padding=4)
    n_flipped = int(flipped.sum())
    assert 16 < n_flipped < 48
    assert len({tuple(o) for o in offsets.tolist()}) > 10  # crop offsets vary
    # zero padding after normalisation: some border pixels are exactly 0 (the mean colour)
    assert (out == 0).any()


def test_cifar_augment_off_means_eval_pipeline_in_training(fake_data):
    root, _ = fake_data("cifar10", **CIFAR10)
    dm = attach(cifar10(root, augment=False), training=True)
    batch = next(iter(dm.train_dataloader()))
    out, _ = dm.on_after_batch_transfer(batch, 0)
    assert torch.equal(out, normalize(batch[0], C10_MEAN, C10_STD))


def test_cifar100_reads_fine_labels_and_uses_its_statistics(tmp_path):
    x = np.zeros((10, 3, 32, 32), dtype=np.uint8)
    x[:, 0], x[:, 1], x[:, 2] = 129, 200, 30
    y = np.arange(90, 100)
    write_cifar100(tmp_path, images={"train": (x, y), "test": (x[:4], y[:4])})
    dm = attach(CIFAR100DataModule(data_dir=str(tmp_path), val_size=2, batch_size=4), False)
    dm.setup("fit")
    assert dm.num_classes == 100
    assert int(dm.train_set.labels.max()) == 99
    out, _ = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    expected = torch.tensor([(129 - 129.3) / 68.2, (200 - 124.1) / 65.4, (30 - 112.4) / 70.4])
    assert torch.allclose(out[:, :, 5, 7], expected.expand(2, 3))


# --- SVHN ----------------------------------------------------------------------------------
def test_svhn_train_plus_extra_split_labels_and_orientation(fake_data):
    root, written = fake_data("svhn", **SVHN)
    dm = SVHNDataModule(data_dir=str(root), val_size=10, batch_size=8)
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (90, 10, 30)
    x = np.concatenate([written["train"][0], written["extra"][0]])
    y = np.concatenate([written["train"][1], written["extra"][1]])
    assert torch.equal(dm.train_set.images, torch.from_numpy(x))  # [N, C, H, W], not transposed
    assert torch.equal(dm.train_set.labels, torch.from_numpy(y))  # 10 became 0
    assert int(dm.train_set.labels.min()) == 0 and int(dm.train_set.labels.max()) <= 9
    other = SVHNDataModule(data_dir=str(root), val_size=10, seed=1)
    other.setup("fit")
    assert not torch.equal(dm.val_set.indices, other.val_set.indices)


def test_svhn_divides_by_255_without_augmentation(fake_data):
    root, _ = fake_data("svhn", **SVHN)
    dm = attach(SVHNDataModule(data_dir=str(root), val_size=10, batch_size=8), training=True)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    out, _ = dm.on_after_batch_transfer(batch, 0)
    assert torch.allclose(out, batch[0].float() / 255.0)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_svhn_without_extra(fake_data):
    root, _ = fake_data("svhn", **SVHN)
    dm = SVHNDataModule(data_dir=str(root), val_size=6, use_extra=False)
    dm.setup("fit")
    assert len(dm.train_set) == 54


# --- digits ------------------------------------------------------------------------------
def test_digits_splits_cover_all_1797_real_images():
    dm = DigitsDataModule()
    dm.setup("fit")
    sizes = (len(dm.train_set), len(dm.val_set), len(dm.test_set))
    assert sizes == (1257, 180, 360) and sum(sizes) == 1797
    images = dm.train_set.images
    assert images.dtype == torch.uint8 and images.shape[1:] == (1, 32, 32)
    assert int(images.min()) == 0 and int(images.max()) == 255
    other = DigitsDataModule(seed=1)
    other.setup("fit")
    assert torch.equal(dm.test_set.images, other.test_set.images)  # fixed test set
    assert not torch.equal(dm.val_set.indices, other.val_set.indices)


def test_digits_normalised_with_training_statistics_and_never_flipped():
    dm = attach(DigitsDataModule(image_size=16, batch_size=64), training=False)
    dm.setup("fit")
    train = dm.train_set.images[dm.train_set.indices]
    x, _ = dm.transform_batch((train, torch.zeros(len(train))), train=False)
    assert x.shape[1:] == (1, 16, 16)
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-4
    attach(dm, training=True)
    images, labels = next(iter(dm.train_dataloader()))
    torch.manual_seed(0)
    out, _ = dm.on_after_batch_transfer((images, labels), 0)
    normed = normalize(images, dm.mean, dm.std)
    # every image an unflipped window (padding = 16 // 8)
    _, offsets = crop_windows(out, normed, padding=2)
    assert len({tuple(o) for o in offsets.tolist()}) > 5


# --- global batch size -------------------------------------------------------------------
def test_global_batch_is_divided_over_processes(fake_data):
    root, _ = fake_data("cifar10", **CIFAR10)
    dm = attach(cifar10(root, batch_size=64, val_size=0), training=True, world_size=4)
    assert dm.per_device_batch_size == 16
    assert dm.train_dataloader().batch_size == 16
    attach(dm, training=True, world_size=3)
    with pytest.raises(ValueError, match=r"64.*3 processes") as err:
        dm.train_dataloader()
    assert "divisible by 3" in str(err.value)


def test_loader_survives_lightning_distributed_sampler(fake_data):
    from lightning.pytorch.utilities.data import _update_dataloader

    root, _ = fake_data("cifar10", **CIFAR10)
    dm = attach(cifar10(root, batch_size=16, val_size=0), training=True, world_size=2)
    loader = dm.train_dataloader()
    sampler = DistributedSampler(dm.train_set, num_replicas=2, rank=1, shuffle=True, seed=0)
    loader = _update_dataloader(loader, sampler)
    batches = list(loader)
    assert len(batches) == 60 // 8
    images, labels = batches[0]
    assert images.dtype == torch.uint8 and images.shape == (8, 3, 32, 32)
    assert labels.shape == (8,)


def test_training_set_smaller_than_a_batch_is_a_clear_error(fake_data):
    root, _ = fake_data("cifar10", **CIFAR10)
    dm = cifar10(root, batch_size=128, val_size=0)
    with pytest.raises(ValueError, match="fewer than one batch"):
        dm.train_dataloader()


# --- with a real Trainer -----------------------------------------------------------------
class Probe(pl.LightningModule):
    """Records what the model receives; a linear classifier on flattened pixels."""

    def __init__(self, in_features: int):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_features, 10))
        self.seen: list[tuple] = []

    def _step(self, batch, stage):
        x, y = batch
        self.seen.append((stage, x.dtype, tuple(x.shape)))
        return F.cross_entropy(self.net(x), y)

    def training_step(self, batch, _):
        return self._step(batch, "train")

    def validation_step(self, batch, _):
        self._step(batch, "val")

    def test_step(self, batch, _):
        self._step(batch, "test")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.filterwarnings("ignore:Total length of `list` across ranks is zero")
@pytest.mark.parametrize("val_size", [180, 0])
def test_trainer_fit_and_test_on_digits(val_size):
    pl.seed_everything(0)
    dm = DigitsDataModule(image_size=16, val_size=val_size, batch_size=32)
    model = Probe(16 * 16)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=2,
        limit_test_batches=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, dm)
    trainer.test(model, dm, verbose=False)
    stages = [s[0] for s in model.seen]
    assert stages.count("train") == 3 and stages.count("test") == 2
    # val_size 0: no validation loop at all (not even the sanity check)
    assert stages.count("val") == (0 if val_size == 0 else 2 + 2)
    assert {s[1] for s in model.seen} == {torch.float32}
    assert {s[2] for s in model.seen if s[0] == "train"} == {(32, 1, 16, 16)}


# --- throughput entry ---------------------------------------------------------------------
def test_loader_throughput_reports_images_per_second(fake_data):
    root, _ = fake_data("cifar10", **CIFAR10)
    dm = CIFAR10DataModule(data_dir=str(root), val_size=0, batch_size=16)
    rate = loader_throughput(dm, num_batches=12, split="train")
    assert rate > 0 and np.isfinite(rate)
    assert loader_throughput(dm, num_batches=3, split="test") > 0
    with pytest.raises(ValueError, match="empty"):
        loader_throughput(dm, num_batches=3, split="val")


@pytest.mark.gpu
def test_batch_transform_and_throughput_on_cuda(fake_data):
    root, _ = fake_data("cifar10", **CIFAR10)
    dm = attach(cifar10(root, batch_size=64, val_size=0), training=True)
    images, labels = next(iter(dm.train_dataloader()))
    torch.manual_seed(0)
    out, _ = dm.on_after_batch_transfer((images.cuda(), labels.cuda()), 0)
    assert out.is_cuda and out.dtype == torch.float32 and out.shape == (64, 3, 32, 32)
    normed = normalize(images, C10_MEAN, C10_STD)
    crop_windows(out.cpu(), normed, normed.flip(-1), padding=4)  # each image one window
    assert loader_throughput(dm, num_batches=5, device="cuda") > 0


@pytest.mark.gpu
def test_batch_transform_on_cuda_never_waits_for_the_gpu(fake_data):
    """Normalising and augmenting a batch on the GPU only queues work: no host wait (after
    the first batch, which copies the normalisation statistics to the device once)."""
    root, _ = fake_data("cifar10", **CIFAR10)
    dm = attach(cifar10(root, batch_size=64, val_size=0), training=True)
    images, labels = next(iter(dm.train_dataloader()))
    batch = (images.cuda(), labels.cuda())
    dm.on_after_batch_transfer(batch, 0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            dm.on_after_batch_transfer(batch, 0)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_a_fit_starts_from_the_beginning_unless_a_checkpoint_is_restored_after_setup():
    """A test of a checkpoint (which restores the data module's progress) followed by a fresh
    fit in the same process must not start that fit where the checkpoint stood."""
    from densenet_lit.data import DigitsDataModule
    from densenet_lit.data.resume import TrainProgress

    dm = DigitsDataModule(batch_size=32)
    saved = {"epoch": 1, "batches": 4, "epoch_done": False, "total": 9}
    dm.load_state_dict({"progress": saved})
    dm.setup("test")
    assert dm.progress.total == 9 and dm.progress.resume_point() == (1, 4)
    dm.setup("fit")  # Lightning restores a resumed fit's checkpoint after this
    assert dm.progress == TrainProgress() and dm.progress.resume_point() == (0, 0)
    # without a trainer there is no epoch length: nothing counts as a finished epoch
    assert TrainProgress().state_dict(0)["epoch_done"] is False
