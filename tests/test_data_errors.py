"""Every bad-data case ends in one DataError that names the path and says what to do."""

import pickle
import urllib.error

import pytest
import torchvision

from densenet_lit.data import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    DataError,
    DatasetNotFoundError,
    ImageNetDataModule,
    SVHNDataModule,
)
from densenet_lit.data.errors import CorruptDataError, DownloadError
from densenet_lit.data.synthetic import (
    wnid,
    write_cifar10,
    write_cifar100,
    write_imagenet,
    write_svhn,
)


def setup_error(dm, stage="fit") -> str:
    with pytest.raises(DataError) as err:
        dm.setup(stage)
    return str(err.value)


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# --- CIFAR ---------------------------------------------------------------------------------
def test_cifar_missing_directory(tmp_path):
    missing = tmp_path / "nowhere"
    msg = setup_error(CIFAR10DataModule(data_dir=str(missing)))
    assert str(missing) in msg
    assert "cifar-10-batches-py" in msg and "data_batch_5" in msg and "test_batch" in msg
    assert "--data.download true" in msg and "cs.toronto.edu" in msg


def test_cifar_missing_file_is_named(tmp_path):
    write_cifar10(tmp_path, n_train=20, n_test=10)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError) as err:
        CIFAR10DataModule(data_dir=str(tmp_path), val_size=2).setup("fit")
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_3") in str(err.value)


def test_cifar_data_dir_given_as_the_inner_folder_names_its_parent(tmp_path):
    write_cifar10(tmp_path, n_train=20, n_test=10)
    inner = tmp_path / "cifar-10-batches-py"
    msg = setup_error(CIFAR10DataModule(data_dir=str(inner), val_size=2))
    assert (
        f"data.data_dir is the 'cifar-10-batches-py' folder itself; give the folder that "
        f"holds it, '{tmp_path}'" in msg
    )


@pytest.mark.parametrize("damage", ["truncated", "wrong_content", "wrong_shape"])
def test_cifar_corrupt_file(tmp_path, damage):
    write_cifar100(tmp_path, n_train=20, n_test=10)
    path = tmp_path / "cifar-100-python" / "train"
    if damage == "truncated":
        truncate(path)
    elif damage == "wrong_content":
        path.write_bytes(pickle.dumps({"pixels": [1, 2, 3]}))
    else:
        path.write_bytes(pickle.dumps({"data": [[1, 2, 3]], "fine_labels": [0]}))
    with pytest.raises(CorruptDataError) as err:
        CIFAR100DataModule(data_dir=str(tmp_path), val_size=2).setup("fit")
    assert str(path) in str(err.value) and "Delete it" in str(err.value)


def test_cifar_failed_download(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", no_network)
    dm = CIFAR10DataModule(data_dir=str(tmp_path), download=True)
    with pytest.raises(DownloadError) as err:
        dm.prepare_data()
    msg = str(err.value)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg
    assert str(tmp_path) in msg and "name resolution" in msg and "another machine" in msg


# --- SVHN ----------------------------------------------------------------------------------
def test_svhn_missing_extra_file(tmp_path):
    write_svhn(tmp_path, 10, 10, 10)
    (tmp_path / "extra_32x32.mat").unlink()
    msg = setup_error(SVHNDataModule(data_dir=str(tmp_path), val_size=2))
    assert str(tmp_path / "extra_32x32.mat") in msg and "ufldl.stanford.edu" in msg


def test_svhn_truncated_mat(tmp_path):
    write_svhn(tmp_path, 10, 10, 10)
    truncate(tmp_path / "test_32x32.mat")
    with pytest.raises(CorruptDataError, match="test_32x32.mat"):
        SVHNDataModule(data_dir=str(tmp_path)).setup("test")


def test_svhn_failed_download(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Network is unreachable")

    monkeypatch.setattr(torchvision.datasets.svhn, "download_url", no_network)
    with pytest.raises(DownloadError, match=r"train_32x32\.mat") as err:
        SVHNDataModule(data_dir=str(tmp_path), download=True).setup("fit")
    assert str(tmp_path) in str(err.value)


# --- ImageNet ------------------------------------------------------------------------------
def imagenet(root):
    return ImageNetDataModule(data_dir=str(root), train_crop=32, eval_resize=36, eval_crop=32)


def test_imagenet_missing_directory(tmp_path):
    msg = setup_error(imagenet(tmp_path / "ilsvrc"))
    assert str(tmp_path / "ilsvrc") in msg and "train/n01440764" in msg
    assert "image-net.org" in msg


def test_imagenet_missing_val(tmp_path):
    write_imagenet(tmp_path, n_classes=2, n_per_class=1, n_val_per_class=0)
    for folder in (tmp_path / "val").iterdir():
        folder.rmdir()
    (tmp_path / "val").rmdir()
    msg = setup_error(imagenet(tmp_path))
    assert str(tmp_path / "val") in msg


def test_imagenet_flat_val_folder(tmp_path):
    write_imagenet(tmp_path, n_classes=2, n_per_class=1, n_val_per_class=1)
    for image in list((tmp_path / "val").rglob("*.JPEG")):
        image.rename(tmp_path / "val" / image.name)
        image.parent.rmdir()
    msg = setup_error(imagenet(tmp_path))
    assert str(tmp_path / "val") in msg and "class folders" in msg and "valprep" in msg


def test_imagenet_class_sets_differ(tmp_path):
    write_imagenet(tmp_path, n_classes=3, n_per_class=1, n_val_per_class=1)
    (tmp_path / "val" / wnid(2)).rename(tmp_path / "val" / "n99999999")
    msg = setup_error(imagenet(tmp_path))
    assert str(tmp_path) in msg and wnid(2) in msg and "n99999999" in msg


def test_imagenet_empty_class_folder(tmp_path):
    write_imagenet(tmp_path, n_classes=2, n_per_class=1, n_val_per_class=1)
    (tmp_path / "train" / wnid(1) / f"{wnid(1)}_0.JPEG").unlink()
    msg = setup_error(imagenet(tmp_path))
    assert str(tmp_path / "train") in msg and wnid(1) in msg


def test_imagenet_corrupt_jpeg_is_named_even_from_a_worker(tmp_path):
    write_imagenet(tmp_path, n_classes=1, n_per_class=2, n_val_per_class=2)
    bad = sorted((tmp_path / "val").rglob("*.JPEG"))[0]
    truncate(bad)
    dm = ImageNetDataModule(
        data_dir=str(tmp_path),
        batch_size=2,
        train_crop=32,
        eval_resize=36,
        eval_crop=32,
        num_workers=1,
    )
    dm.setup("test")
    with pytest.raises(CorruptDataError) as err:
        dm.test_set[0]
    assert str(bad) in str(err.value)
    with pytest.raises(CorruptDataError) as err:  # re-raised in the main process
        next(iter(dm.test_dataloader()))
    assert str(bad) in str(err.value)


def test_imagenet_has_no_automatic_download(tmp_path):
    dm = ImageNetDataModule(data_dir=str(tmp_path / "x"), download=True)
    assert "cannot be downloaded automatically" in setup_error(dm)
