"""Small data sets in the real on-disk formats, for the tests and the benchmark.

No data set can be downloaded where the tests and ``python -m densenet_lit.bench`` run, so
they write their own: CIFAR python pickles, SVHN ``.mat`` files, ImageNet class folders of
JPEGs (random noise, smooth pictures, or pictures that compress like a photo), odd files
named ``.JPEG``, Tiny-ImageNet's layout and real digit photos. The CIFAR and SVHN writers
return what they wrote, as the data modules should load it: uint8 images ``[N, C, H, W]`` and
int64 labels (numpy), so that tests can compare loaded with written.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def write_cifar_pickle(path: Path, images: np.ndarray, labels: np.ndarray, label_key: str) -> None:
    """One CIFAR python batch: dict with 'data' uint8 [N, 3072] (channel-major rows) and labels."""
    entry = {
        "batch_label": path.name,
        "data": images.reshape(len(images), -1).astype(np.uint8),
        label_key: [int(v) for v in labels],
        "filenames": [f"img_{i}.png" for i in range(len(images))],
    }
    if label_key == "fine_labels":
        entry["coarse_labels"] = [int(v) // 5 for v in labels]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def _random_set(rng: np.random.Generator, n: int, n_classes: int, shape=(3, 32, 32)):
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    labels = rng.integers(0, n_classes, size=n).astype(np.int64)
    return images, labels


def write_cifar10(
    root: str | Path, n_train: int = 120, n_test: int = 40, seed: int = 0, images=None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``.

    ``images``: optional ``{"train": (x, y), "test": (x, y)}`` to write instead of random data.
    """
    rng = np.random.default_rng(seed)
    data = images or {"train": _random_set(rng, n_train, 10), "test": _random_set(rng, n_test, 10)}
    folder = Path(root) / "cifar-10-batches-py"
    x, y = data["train"]
    for i, (xs, ys) in enumerate(zip(np.array_split(x, 5), np.array_split(y, 5), strict=True)):
        write_cifar_pickle(folder / f"data_batch_{i + 1}", xs, ys, "labels")
    write_cifar_pickle(folder / "test_batch", *data["test"], "labels")
    with open(folder / "batches.meta", "wb") as f:
        names = ["airplane", "automobile", "bird", "cat", "deer"]
        names += ["dog", "frog", "horse", "ship", "truck"]
        pickle.dump({"label_names": names, "num_cases_per_batch": 10000}, f, protocol=2)
    return data


def write_cifar100(
    root: str | Path, n_train: int = 120, n_test: int = 40, seed: int = 0, images=None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``<root>/cifar-100-python/{train, test, meta}`` with 100 fine classes."""
    rng = np.random.default_rng(seed)
    data = images or {
        "train": _random_set(rng, n_train, 100),
        "test": _random_set(rng, n_test, 100),
    }
    folder = Path(root) / "cifar-100-python"
    write_cifar_pickle(folder / "train", *data["train"], "fine_labels")
    write_cifar_pickle(folder / "test", *data["test"], "fine_labels")
    with open(folder / "meta", "wb") as f:
        meta = {
            "fine_label_names": [f"class_{i}" for i in range(100)],
            "coarse_label_names": [f"super_{i}" for i in range(20)],
        }
        pickle.dump(meta, f, protocol=2)
    return data


def write_svhn_mat(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """One SVHN 'Format 2' file: X uint8 [32, 32, 3, N] (H, W, C, N), y [N, 1] with 10 for 0."""
    import scipy.io

    x = np.ascontiguousarray(images.transpose(2, 3, 1, 0))  # N, C, H, W -> H, W, C, N
    y = np.where(labels == 0, 10, labels).astype(np.uint8).reshape(-1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"X": x, "y": y})


def write_svhn(
    root: str | Path,
    n_train: int = 60,
    n_extra: int | None = 40,
    n_test: int = 30,
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``<root>/{train,extra,test}_32x32.mat`` (no ``extra`` file where ``n_extra`` is None);
    returned labels use 0 for the digit 0."""
    rng = np.random.default_rng(seed)
    data = {}
    for split, n in (("train", n_train), ("extra", n_extra), ("test", n_test)):
        if n is None:
            continue
        images, labels = _random_set(rng, n, 10)
        labels[:2] = 0  # make sure the 10 -> 0 mapping is exercised
        write_svhn_mat(Path(root) / f"{split}_32x32.mat", images, labels)
        data[split] = (images, labels)
    return data


def wnid(i: int) -> str:
    """A WordNet-id-like class folder name (``n01440764`` style)."""
    return f"n{1440764 + i:08d}"


def write_imagenet(
    root: str | Path,
    n_classes: int = 3,
    n_per_class: int = 4,
    n_val_per_class: int = 2,
    size: tuple[int, int] = (40, 48),
    seed: int = 0,
) -> list[str]:
    """``<root>/{train,val}/<wnid>/*.JPEG`` with random RGB images of ``size`` (h, w).

    Returns the class folder names in label order.
    """
    rng = np.random.default_rng(seed)
    classes = [wnid(i) for i in range(n_classes)]
    val_counter = 0
    for c in classes:
        for split, n in (("train", n_per_class), ("val", n_val_per_class)):
            folder = Path(root) / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
                if split == "train":
                    name = f"{c}_{k}.JPEG"
                else:
                    val_counter += 1
                    name = f"ILSVRC2012_val_{val_counter:08d}.JPEG"
                Image.fromarray(pixels).save(folder / name, quality=90)
    return classes


def digit_photos(sizes: list[tuple[int, int]], seed: int = 0) -> list[np.ndarray]:
    """Real images of ``sizes`` (h, w), uint8 RGB ``[h, w, 3]``: scikit-learn's bundled
    handwritten digits, upscaled (bicubic) and tinted, on a smooth colour gradient, so that
    crops of different parts of an image differ as in a photograph."""
    from sklearn.datasets import load_digits

    digits = load_digits().images  # [1797, 8, 8], values 0..16
    rng = np.random.default_rng(seed)
    photos = []
    for h, w in sizes:
        digit = digits[rng.integers(len(digits))] / 16.0
        big = Image.fromarray((digit * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
        ink = np.asarray(big, dtype=np.float64)[..., None] / 255.0
        yy, xx = np.mgrid[0:h, 0:w]
        background = np.stack([xx / w, yy / h, 1.0 - xx / w], axis=-1) * rng.uniform(0.3, 1.0, 3)
        tint = rng.uniform(0.0, 1.0, 3)
        pixels = background * (1.0 - ink) + tint * ink
        photos.append((np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8))
    return photos


def write_imagenet_val(root: str | Path, images_per_class: list[list[np.ndarray]]) -> list[Path]:
    """``<root>/val/<wnid>/ILSVRC2012_val_*.JPEG`` (no train/, as for evaluating weights
    trained elsewhere), one class folder per list of uint8 RGB images. Returns the files in
    the order a data module lists them (by class, then name)."""
    files, counter = [], 0
    for i, images in enumerate(images_per_class):
        folder = Path(root) / "val" / wnid(i)
        folder.mkdir(parents=True, exist_ok=True)
        for pixels in images:
            counter += 1
            path = folder / f"ILSVRC2012_val_{counter:08d}.JPEG"
            Image.fromarray(pixels).save(path, quality=95)
            files.append(path)
    return files


def smooth_pixels(
    rng: np.random.Generator,
    size: tuple[int, int] = (60, 80),
    grid: tuple[int, int] = (6, 8),
    noise: int = 8,
) -> np.ndarray:
    """A uint8 ``[H, W, 3]`` picture of ``size`` that is smooth like a photo: a random
    ``grid`` image upscaled (bicubic) plus uniform noise of +-``noise``. The defaults suit
    comparisons where pure noise would exaggerate how much two resize kernels differ."""
    coarse = rng.integers(0, 256, size=(*grid, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize(size[::-1], Image.BICUBIC), np.int16)
    noisy = smooth + rng.integers(-noise, noise + 1, size=smooth.shape, dtype=np.int16)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def write_smooth_imagenet(
    root: str | Path,
    n_classes: int = 2,
    n_per_class: int | Sequence[int] = 4,
    n_val_per_class: int = 2,
    size: tuple[int, int] = (60, 80),
    seed: int = 0,
    grid: tuple[int, int] = (6, 8),
    noise: int = 8,
) -> list[str]:
    """As :func:`write_imagenet`, with :func:`smooth_pixels` pictures (``grid``, ``noise``)
    instead of noise, named ``<wnid>_<k>.JPEG`` in train/ and val/; ``n_per_class`` may give
    each class its own count."""
    rng = np.random.default_rng(seed)
    classes = [wnid(i) for i in range(n_classes)]
    counts = [n_per_class] * n_classes if isinstance(n_per_class, int) else list(n_per_class)
    for c, n_train in zip(classes, counts, strict=True):
        for split, n in (("train", n_train), ("val", n_val_per_class)):
            folder = Path(root) / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                pixels = smooth_pixels(rng, size, grid, noise)
                Image.fromarray(pixels).save(folder / f"{c}_{k}.JPEG", quality=90)
    return classes


# (height, width): ImageNet's most common size (its average is about 400x350).
IMAGENET_SIZE = (375, 500)
# A 64x48 random image upscaled to 500x375, plus +-30 of noise, comes to about 110 KB at
# quality 90, the average size of an ImageNet training JPEG, and decodes about as fast as a
# photo (pure noise makes a 170 KB file that decodes slower; a flat colour, a few KB).
PHOTO_GRID, PHOTO_NOISE = (48, 64), 30


def write_photo_imagenet(
    root: str | Path,
    n_train: int,
    n_classes: int = 8,
    size: tuple[int, int] = IMAGENET_SIZE,
    seed: int = 0,
) -> Path:
    """``<root>/{train,val}/<wnid>/*.JPEG`` of pictures that compress and decode like
    ImageNet photos (the benchmark's loader rows): ``n_train`` training pictures spread over
    ``n_classes`` class folders, one validation picture per class."""
    counts = [len(part) for part in np.array_split(np.arange(n_train), n_classes)]
    write_smooth_imagenet(
        root, n_classes, counts, 1, size, seed, grid=PHOTO_GRID, noise=PHOTO_NOISE
    )
    return Path(root)


# Files named .JPEG that GPU JPEG decoders refuse but PIL reads (ImageNet has such files).
UNUSUAL_IMAGES = {"cmyk.JPEG": "CMYK", "grey.JPEG": "grayscale", "png.JPEG": "PNG"}


def write_unusual_images(
    folder: str | Path, size: tuple[int, int] = (60, 80), seed: int = 0
) -> dict[str, str]:
    """A CMYK JPEG, a grayscale JPEG and a PNG, each named ``.JPEG``, in ``folder``.

    Returns ``{file name: what it is}`` (:data:`UNUSUAL_IMAGES`).
    """
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(smooth_pixels(rng, size))
    image.convert("CMYK").save(folder / "cmyk.JPEG", format="JPEG", quality=90)
    image.convert("L").save(folder / "grey.JPEG", format="JPEG", quality=90)
    image.save(folder / "png.JPEG", format="PNG")
    return dict(UNUSUAL_IMAGES)


def write_tiny_imagenet(
    root: str | Path,
    n_classes: int = 200,
    n_per_class: int = 1,
    n_val: int = 4,
    size: tuple[int, int] = (16, 16),
    sorted_val: bool = False,
    seed: int = 0,
) -> list[str]:
    """Tiny-ImageNet's layout: ``train/<wnid>/images/<wnid>_<k>.JPEG`` (plus the
    ``<wnid>_boxes.txt`` beside ``images/``), and ``val/images/val_<k>.JPEG`` listed in
    ``val/val_annotations.txt`` (file, wnid, box), or, with ``sorted_val``, the validation
    images sorted into ``val/<wnid>/``. Returns the class names in label order."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    classes = [wnid(i) for i in range(n_classes)]
    for c in classes:
        folder = root / "train" / c / "images"
        folder.mkdir(parents=True, exist_ok=True)
        (root / "train" / c / f"{c}_boxes.txt").write_text("")
        for k in range(n_per_class):
            pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{c}_{k}.JPEG")
    lines = []
    for k in range(n_val):
        c = classes[k % n_classes]
        folder = root / "val" / (c if sorted_val else "images")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"val_{k}.JPEG")
        lines.append(f"val_{k}.JPEG\t{c}\t0\t0\t{size[1]}\t{size[0]}")
    if not sorted_val:
        (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return classes
