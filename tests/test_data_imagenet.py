"""ImageNet data module over JPEGs in class folders."""

import shutil
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from PIL import Image

from densenet_lit.data import DataError, DatasetNotFoundError, ImageNetDataModule
from densenet_lit.data.imagenet import MEAN, PCA_EIGVAL, PCA_EIGVEC, STD, Lighting, train_transform
from densenet_lit.data.synthetic import write_imagenet

# fake_data("imagenet", **IMAGENET): 3 classes of 4 training and 2 validation images, 40x48
IMAGENET = {"n_classes": 3, "n_per_class": 4, "n_val_per_class": 2}


def small(root, **kw):
    kw = {"batch_size": 4, "train_crop": 32, "eval_resize": 36, "eval_crop": 32, **kw}
    dm = ImageNetDataModule(data_dir=str(root), num_workers=0, **kw)
    dm.setup("fit")
    return dm


def test_splits_classes_and_loader_batches(fake_data):
    root, classes = fake_data("imagenet", **IMAGENET)
    dm = small(root)
    assert dm.classes == classes
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (12, 6, 6)
    assert dm.val_set is dm.test_set  # val_size 0: validate on the official val/ images
    assert sorted(set(dm.train_set.labels.tolist())) == [0, 1, 2]
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.float32 and images.shape == (4, 3, 32, 32)
    assert labels.dtype == torch.int64 and labels.shape == (4,)
    assert len(dm.train_dataloader()) == 3 and len(dm.val_dataloader()) == 2


def test_held_out_validation_from_train_is_seeded(fake_data):
    root, _ = fake_data("imagenet", **IMAGENET)
    a, b, c = small(root, val_size=3), small(root, val_size=3), small(root, val_size=3, seed=5)
    assert (len(a.train_set), len(a.val_set), len(a.test_set)) == (9, 3, 6)
    assert a.val_set.relpaths.tolist() == b.val_set.relpaths.tolist()
    assert a.val_set.relpaths.tolist() != c.val_set.relpaths.tolist()
    assert not set(a.val_set.relpaths.tolist()) & set(a.train_set.relpaths.tolist())


def test_default_train_crop_is_224(fake_data):
    root, _ = fake_data("imagenet", **IMAGENET)
    image = Image.open(next((root / "train").rglob("*.JPEG"))).convert("RGB")
    assert train_transform(224)(image).shape == (3, 224, 224)


def test_train_is_random_and_eval_deterministic(fake_data):
    root, _ = fake_data("imagenet", **IMAGENET)
    dm = small(root)
    torch.manual_seed(0)
    assert not torch.equal(dm.train_set[0][0], dm.train_set[0][0])
    a, b = dm.test_set[1][0], dm.test_set[1][0]
    assert torch.equal(a, b) and a.shape == (3, 32, 32)


def test_eval_normalises_with_fb_resnet_statistics(tmp_path):
    write_imagenet(tmp_path, n_classes=1, n_per_class=1, n_val_per_class=1)
    val_image = next((tmp_path / "val").rglob("*.JPEG"))
    Image.new("RGB", (50, 40), (200, 100, 30)).save(val_image)
    dm = small(tmp_path)
    out = dm.test_set[0][0]
    expected = (torch.tensor([200, 100, 30]) / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(out.mean(dim=(1, 2)), expected, atol=0.03)  # JPEG is lossy
    assert float(out.std(dim=(1, 2)).max()) < 0.05


def test_lighting_adds_the_pca_colour_offset():
    img = torch.rand(3, 5, 5)
    torch.manual_seed(1)
    out = Lighting(0.1)(img)
    torch.manual_seed(1)
    alpha = torch.randn(3) * 0.1
    offset = torch.tensor(PCA_EIGVEC) @ (alpha * torch.tensor(PCA_EIGVAL))
    assert torch.allclose(out - img, offset.view(3, 1, 1).expand(3, 5, 5), atol=1e-6)
    assert float(offset.abs().max()) > 0


def test_workers_pinned_memory_and_persistence(fake_data):
    root, _ = fake_data("imagenet", **IMAGENET)
    kw = {"batch_size": 4, "train_crop": 32, "eval_resize": 36, "eval_crop": 32}
    dm = ImageNetDataModule(data_dir=str(root), **kw)
    dm.setup("fit")
    assert dm.resolved_num_workers >= 1
    loader = dm.train_dataloader()
    assert loader.num_workers == dm.resolved_num_workers and loader.persistent_workers
    assert loader.pin_memory == torch.cuda.is_available()
    dm.trainer = SimpleNamespace(num_devices=64, world_size=1, training=True)
    assert dm.default_num_workers() == 1  # CPUs shared among the node's devices, at least 1


# --- evaluation without train/ --------------------------------------------------------------
@pytest.fixture
def val_only_dir(tmp_path):
    """ImageNet with val/ only, as for evaluating weights trained elsewhere."""
    classes = write_imagenet(tmp_path, n_classes=3, n_per_class=1, n_val_per_class=2)
    shutil.rmtree(tmp_path / "train")
    return tmp_path, classes


def eval_only(root, **kw):
    kw = {"batch_size": 2, "train_crop": 32, "eval_resize": 36, "eval_crop": 32, **kw}
    return ImageNetDataModule(data_dir=str(root), num_workers=0, **kw)


@pytest.mark.parametrize("stage", ["test", "predict", "validate"])
def test_evaluation_needs_only_val(val_only_dir, stage):
    root, classes = val_only_dir
    dm = eval_only(root)
    dm.setup(stage)
    assert dm.classes == classes and len(dm.test_set) == 6 and dm.train_set is None
    loader = {"test": dm.test_dataloader, "predict": dm.predict_dataloader}.get(
        stage, dm.val_dataloader
    )()
    images, labels = next(iter(loader))
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == [0, 0]


def test_trainer_tests_and_validates_without_train(val_only_dir):
    root, _ = val_only_dir

    class CountImages(LightningModule):
        def __init__(self):
            super().__init__()
            self.seen = {"validate": 0, "test": 0}

        def validation_step(self, batch, _):
            self.seen["validate"] += len(batch[0])

        def test_step(self, batch, _):
            self.seen["test"] += len(batch[0])

    model, dm = CountImages(), eval_only(root)
    trainer = Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.validate(model, datamodule=dm)
    trainer.test(model, datamodule=dm)
    assert model.seen == {"validate": 6, "test": 6}


def test_fit_still_requires_train(val_only_dir):
    root, _ = val_only_dir
    dm = eval_only(root)
    dm.setup("test")  # fine without train/ ...
    with pytest.raises(DatasetNotFoundError) as err:
        dm.setup("fit")  # ... but training needs it, even after an evaluation setup
    assert str(root / "train") in str(err.value)


def test_held_out_validation_requires_train(val_only_dir):
    root, _ = val_only_dir
    with pytest.raises(DatasetNotFoundError) as err:
        eval_only(root, val_size=2).setup("validate")  # the held-out images come from train/
    assert str(root / "train") in str(err.value)
    eval_only(root, val_size=2).setup("test")  # the test set is val/ all the same


def test_missing_val_is_named_for_evaluation(val_only_dir):
    root, _ = val_only_dir
    shutil.rmtree(root / "val")
    with pytest.raises(DatasetNotFoundError) as err:
        eval_only(root).setup("test")
    msg = str(err.value)
    assert str(root / "val") in msg and "needs only val/" in msg
    assert str(root / "train") not in msg.split("Expected layout")[0]  # not listed as missing


def test_evaluation_still_checks_train_and_val_classes_agree(tmp_path):
    write_imagenet(tmp_path, n_classes=2, n_per_class=1, n_val_per_class=1)
    (tmp_path / "train" / "n99999999").mkdir()
    with pytest.raises(DataError) as err:
        eval_only(tmp_path).setup("test")
    assert "n99999999" in str(err.value) and "same class folders" in str(err.value)
