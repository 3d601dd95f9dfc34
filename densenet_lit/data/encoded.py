"""Worker side of the device-decoding path: file bytes and augmentation parameters only.

Each worker reads the files of a batch straight into one buffer (in shared memory when it
runs in a worker process) and draws every training image's crop box, colour jitter,
lighting and flip (and the seeds of the modern augmentations where they are on) from that
image's seed, with the same transforms and in the same order as the PIL path
(:mod:`densenet_lit.data.pil_pipeline`), so the two paths draw the same numbers for the same
seed and resume the same way. A colour step that is off (``data.color_jitter`` or
``data.lighting`` 0) is not drawn, as the PIL path leaves it out. Decoding and augmenting
happen on the device (:mod:`densenet_lit.data.device_decode`).

Files the device decoder cannot read (not 8-bit three-component Huffman JPEGs: CMYK or
grayscale JPEGs, a PNG named ``.JPEG``) are recognised from their header here and decoded
with PIL in the worker, exactly as the PIL path decodes them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from densenet_lit.data.errors import CorruptDataError
from densenet_lit.data.modern_augment import ModernAugment, draw_seed
from densenet_lit.data.pil_pipeline import (
    FLIP_P,
    ColourAugment,
    color_jitter,
    load_rgb,
    random_crop,
)

DEVICE_SOF = (0xC0, 0xC1, 0xC2)  # baseline, extended and progressive Huffman frames
OTHER_SOF = {0xC3: "lossless", 0xC5: "hierarchical", 0xC6: "hierarchical", 0xC7: "lossless"}
OTHER_SOF |= {m: "arithmetic-coded" for m in (0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)}
COMPONENTS = {1: "grayscale", 4: "CMYK"}


def jpeg_size(data: memoryview) -> tuple[int, int] | str:
    """``(height, width)`` of a JPEG the device decoder reads, else a few words saying why not.

    Walks the marker segments up to the frame header, which holds the sample precision,
    the size and the number of colour components; an Adobe segment with transform 0 marks
    an RGB-coded (not YCbCr) file.
    """
    n = len(data)
    if bytes(data[:2]) != b"\xff\xd8":
        return "a PNG file" if bytes(data[:4]) == b"\x89PNG" else "not a JPEG file"
    pos, adobe_rgb = 2, False
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        length = (data[pos + 2] << 8) | data[pos + 3]
        if marker == 0xEE and bytes(data[pos + 4 : pos + 9]) == b"Adobe" and pos + 15 < n:
            adobe_rgb = data[pos + 15] == 0
        if marker in DEVICE_SOF or marker in OTHER_SOF:
            if pos + 10 > n:
                break
            precision, components = data[pos + 4], data[pos + 9]
            height = (data[pos + 5] << 8) | data[pos + 6]
            width = (data[pos + 7] << 8) | data[pos + 8]
            if marker in OTHER_SOF:
                return f"a {OTHER_SOF[marker]} JPEG"
            if components != 3:
                return f"a {COMPONENTS.get(components, f'{components}-component')} JPEG"
            if precision != 8:
                return f"a {precision}-bit JPEG"
            if adobe_rgb:
                return "an RGB-coded JPEG"
            if height == 0 or width == 0:
                return "a JPEG without its size in the frame header"
            return height, width
        if marker in (0xDA, 0xD9):  # scan data or the end, before any frame header
            break
        pos += 2 + length
    return "a JPEG without a readable frame header"


@dataclass
class AugmentParams:
    """Per-image parameters of the fb.resnet.torch training augmentation, drawn in workers.

    ``boxes`` (top, left, height, width) of the random-size crop and ``flip`` stay on the
    host: the device pipeline crops and mirrors image by image with them. ``jitter`` holds
    the brightness, contrast and saturation factors and ``order`` the order they apply in
    (0, 1, 2 = brightness, contrast, saturation); ``alpha`` is the lighting noise (already
    times its std). ``jitter`` and ``order`` are None when the colour jitter is off,
    ``alpha`` when the lighting is off (the device then leaves that step out).
    ``auto_augment_seeds`` and ``erase_seeds`` (host; None when that augmentation is off)
    are the seeds each image's auto-augment and random erasing run with
    (:mod:`densenet_lit.data.modern_augment`).
    """

    boxes: torch.Tensor  # int64 [N, 4], host
    jitter: torch.Tensor | None  # float32 [N, 3]
    order: torch.Tensor | None  # int64 [N, 3]
    alpha: torch.Tensor | None  # float32 [N, 3]
    flip: torch.Tensor  # bool [N], host
    auto_augment_seeds: torch.Tensor | None = None  # int64 [N], host
    erase_seeds: torch.Tensor | None = None  # int64 [N], host

    HOST = ("boxes", "flip", "auto_augment_seeds", "erase_seeds")


@dataclass
class EncodedBatch:
    """A batch of the device path as the loader delivers it.

    ``data`` holds every file of the batch back to back (image ``i`` is
    ``data[offsets[i]:offsets[i + 1]]``). It is written once, straight from the files, and
    stays where it is: the pinning thread and the transfer to the device leave it on the
    host, where ``decode_jpeg`` reads it in place. ``cpu_images`` are the images the device
    decoder cannot read, decoded with PIL in the worker; ``cpu_index`` gives their places
    in the batch and ``cpu_reasons`` what each file is. ``params`` is None for evaluation.
    """

    data: torch.Tensor  # uint8 [total bytes], host
    offsets: list[int]
    labels: torch.Tensor  # int64 [N]
    paths: list[str]
    cpu_images: list[torch.Tensor] = field(default_factory=list)  # uint8 [3, H, W]
    cpu_index: list[int] = field(default_factory=list)
    cpu_reasons: list[str] = field(default_factory=list)
    params: AugmentParams | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def _map(self, fn) -> EncodedBatch:
        """A copy with ``fn`` applied to every tensor that goes to the device."""
        params = self.params
        if params is not None:
            names = [f.name for f in fields(params) if f.name not in params.HOST]
            moved = {name: getattr(params, name) for name in names}
            params = replace(params, **{k: fn(v) for k, v in moved.items() if v is not None})
        return replace(
            self,
            labels=fn(self.labels),
            cpu_images=[fn(t) for t in self.cpu_images],
            params=params,
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> EncodedBatch:
        """Labels, parameters and CPU-decoded images to ``device``; the bytes stay on the host
        (``decode_jpeg`` takes host tensors and copies what it needs itself)."""
        device = torch.device(device)
        non_blocking = non_blocking or device.type == "cuda"
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> EncodedBatch:
        """Called by the DataLoader's pinning thread: pins what :meth:`to` moves, and not the
        encoded bytes, which would only be copied once more."""
        return self._map(lambda t: t.pin_memory())


class ParamSampler:
    """Draws one image's augmentation parameters with the PIL path's own transforms, in its
    order: crop box, jitter order and factors, lighting, flip; with a ``modern`` augmentation
    on, that of :func:`~densenet_lit.data.pil_pipeline.modern_train_transform`: crop box,
    flip, auto-augment seed, jitter, lighting, erasing seed. The colour steps that
    ``colour`` has off are not drawn (None = the paper's, both on)."""

    def __init__(
        self, crop: int, modern: ModernAugment | None = None, colour: ColourAugment | None = None
    ):
        self.crop = random_crop(crop)
        self.colour = ColourAugment() if colour is None else colour
        self.jitter = color_jitter(self.colour.jitter) if self.colour.jitter > 0 else None
        self.modern = modern if modern is not None and modern.enabled else None

    def draw(self, height: int, width: int) -> tuple:
        """``(box, factors, order, alpha, flip, auto_augment_seed, erase_seed)`` for an image
        of ``height`` x ``width`` (the seeds None where that augmentation is off; factors and
        order None with the jitter off, alpha None with the lighting off)."""
        probe = torch.empty(1, 1, 1).expand(3, height, width)  # only its size is read
        box = self.crop.make_params([probe])
        box = [box["top"], box["left"], box["height"], box["width"]]
        modern = self.modern
        if modern is not None:
            flip = draw_flip()
            auto_augment = draw_seed() if modern.auto_augment is not None else None
        factors = order = alpha = None
        if self.jitter is not None:
            jit = self.jitter.make_params([probe])
            order = [int(i) for i in jit["fn_idx"] if int(i) < 3]  # 3 = hue, not used
            factors = [jit["brightness_factor"], jit["contrast_factor"], jit["saturation_factor"]]
        if self.colour.lighting > 0:
            alpha = torch.randn(3) * self.colour.lighting
        if modern is None:
            return box, factors, order, alpha, draw_flip(), None, None
        erase = draw_seed() if modern.random_erase > 0 else None
        return box, factors, order, alpha, flip, auto_augment, erase


def draw_flip() -> bool:
    """RandomHorizontalFlip's draw: it keeps the image if ``rand >= p``."""
    return bool(torch.rand(1) < FLIP_P)


class EncodedImageDataset(Dataset):
    """Image files under ``root`` with labels, served as :class:`EncodedBatch` es.

    ``crop`` set: training, with augmentation parameters for a ``crop``-sized random crop;
    None: evaluation. Keys are indices or ``(index, seed)`` pairs as for
    :class:`~densenet_lit.data.pil_pipeline.ImageListDataset` (``accepts_sample_seeds``): an
    image's parameters are drawn from the torch RNG seeded with its seed. The DataLoader
    fetches whole batches through :meth:`__getitems__`.
    """

    accepts_sample_seeds = True

    def __init__(
        self,
        root: Path,
        relpaths: np.ndarray,
        labels: np.ndarray,
        crop: int | None,
        modern: ModernAugment | None = None,
        colour: ColourAugment | None = None,
    ):
        self.root = str(root)
        self.relpaths = relpaths
        self.labels = labels
        self.crop = crop
        self.sampler = ParamSampler(crop, modern, colour) if crop else None

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, i: int) -> str:
        return os.path.join(self.root, self.relpaths[i].decode())

    def __getitem__(self, key: int | tuple[int, int]) -> EncodedBatch:
        return self.__getitems__([key])

    def __getitems__(self, keys: list) -> EncodedBatch:
        pairs = [k if isinstance(k, tuple) else (k, None) for k in keys]
        paths = [self.path(i) for i, _ in pairs]
        data, offsets = read_files(paths)
        view = memoryview(data.numpy())
        batch = EncodedBatch(
            data, offsets, torch.as_tensor(self.labels[[i for i, _ in pairs]]), paths
        )
        draws = []
        for pos, ((_, seed), path) in enumerate(zip(pairs, paths, strict=True)):
            size = jpeg_size(view[offsets[pos] : offsets[pos + 1]])
            if isinstance(size, str):
                image = np.array(load_rgb(path))  # as the PIL path decodes it
                batch.cpu_images.append(torch.from_numpy(image).permute(2, 0, 1).contiguous())
                batch.cpu_index.append(pos)
                batch.cpu_reasons.append(size)
                size = image.shape[:2]
            if self.sampler is not None:
                draws.append(self._draw(*size, seed))
        if draws:
            boxes, factors, orders, alphas, flips, auto_augments, erases = zip(*draws, strict=True)
            batch.params = AugmentParams(
                boxes=torch.tensor(boxes, dtype=torch.int64),
                jitter=None if factors[0] is None else torch.tensor(factors, dtype=torch.float32),
                order=None if orders[0] is None else torch.tensor(orders, dtype=torch.int64),
                alpha=None if alphas[0] is None else torch.stack(alphas),
                flip=torch.tensor(flips, dtype=torch.bool),
                auto_augment_seeds=seeds(auto_augments),
                erase_seeds=seeds(erases),
            )
        return batch

    def _draw(self, height: int, width: int, seed: int | None):
        if seed is None:
            return self.sampler.draw(height, width)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.sampler.draw(height, width)


def seeds(drawn: tuple[int | None, ...]) -> torch.Tensor | None:
    """The images' seeds of one augmentation as an int64 tensor, None where it is off."""
    return None if drawn[0] is None else torch.tensor(drawn, dtype=torch.int64)


def read_files(paths: list[str]) -> tuple[torch.Tensor, list[int]]:
    """Every file of ``paths`` read straight into one uint8 buffer, and the offsets of each.

    In a worker process the buffer is put into shared memory before it is filled, so the
    bytes reach the main process without being copied again.
    """
    sizes = []
    for path in paths:
        try:
            sizes.append(os.stat(path).st_size)
        except OSError as err:
            raise CorruptDataError(f"Cannot read image '{path}': {err}") from err
    offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    data = torch.empty(offsets[-1], dtype=torch.uint8)
    if get_worker_info() is not None:
        data.share_memory_()
    view = memoryview(data.numpy())
    for path, start, end in zip(paths, offsets[:-1], offsets[1:], strict=True):
        with open(path, "rb") as f:
            got = f.readinto(view[start:end])
        if got != end - start:
            raise CorruptDataError(
                f"Cannot read image '{path}': expected {end - start} bytes, read {got} (the "
                "file changed while it was read)."
            )
    return data, offsets
