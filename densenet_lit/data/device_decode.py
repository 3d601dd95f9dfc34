"""Device side of the device-decoding path: decode a batch of JPEGs on the batch's device
and run the fb.resnet.torch augmentation (or the evaluation resize and centre crop) there.

``torchvision.io.decode_jpeg`` decodes the whole list of encoded images in one call (with
nvJPEG on a GPU, with libjpeg-turbo on the CPU). The images differ in size, so cropping
and resizing go image by image (in float, on the CPU too, so that the CPU tests check the
arithmetic a GPU does); everything after the resize (colour jitter, lighting,
normalisation) is one batched operation each. A horizontal flip commutes with the colour
operations (all per pixel, or per image as the contrast's mean), so each crop is mirrored
as it is cut instead of the float batch afterwards.

The operations follow torchvision's kernels that the PIL path runs (``adjust_brightness``,
``adjust_contrast``, ``adjust_saturation``, the 0.2989/0.587/0.114 grey), with per-image
factors; the results differ from the PIL path only by the decoder and the resize kernel.

The modern recipe's augmentations (:mod:`densenet_lit.data.modern_augment`) run image by
image with torchvision's own v2 transforms on the device's tensors, each with the seed its
worker drew for it: TrivialAugmentWide/RandAugment on the uint8 crop (after the flip),
RandomErasing on the normalised image. The operations and magnitudes drawn are those of the
PIL path; the pixels differ as torchvision's tensor and PIL kernels do.
"""

from __future__ import annotations

import functools
import io
import warnings

import numpy as np
import torch
from PIL import Image
from torch.nn.functional import interpolate
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as F

from densenet_lit.data.encoded import AugmentParams, EncodedBatch
from densenet_lit.data.errors import CorruptDataError
from densenet_lit.data.modern_augment import ModernAugment, run_seeded
from densenet_lit.data.pil_pipeline import INTERPOLATION, MEAN, PCA_EIGVAL, PCA_EIGVEC, STD

GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
BICUBIC_AA = {"mode": "bicubic", "antialias": True, "align_corners": False}


def decode_jpegs(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """``decode_jpeg`` on a list of host byte tensors, RGB, without its deprecation warning
    (torchvision 0.29 points to TorchCodec, which this project does not depend on)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
        return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)


def decode_batch(
    batch: EncodedBatch, device: torch.device
) -> tuple[list[torch.Tensor], list[tuple[str, str]]]:
    """Every image of ``batch`` as uint8 ``[3, H, W]`` on ``device``, and the files that had to
    be decoded on the CPU (``(path, why)``).

    The workers already decoded the files whose header the device decoder cannot read. If
    the batched decode still fails, each image is decoded alone, and those that fail again
    are decoded with PIL on the CPU; only a file PIL cannot read either is an error.
    """
    images: list[torch.Tensor | None] = [None] * len(batch)
    for pos, image in zip(batch.cpu_index, batch.cpu_images, strict=True):
        images[pos] = image
    on_cpu = [
        (batch.paths[p], why) for p, why in zip(batch.cpu_index, batch.cpu_reasons, strict=True)
    ]
    todo = [pos for pos, image in enumerate(images) if image is None]
    if not todo:
        return images, on_cpu
    off = batch.offsets
    encoded = [batch.data[off[pos] : off[pos + 1]] for pos in todo]
    try:
        decoded = decode_jpegs(encoded, device)
    except RuntimeError:
        decoded = []
        for pos, data in zip(todo, encoded, strict=True):
            try:
                (image,) = decode_jpegs([data], device)
            except RuntimeError as err:
                image = pil_decode(data, batch.paths[pos]).to(device)
                on_cpu.append((batch.paths[pos], f"refused by the decoder ({err})"))
            decoded.append(image)
    for pos, image in zip(todo, decoded, strict=True):
        images[pos] = image
    return images, on_cpu


def pil_decode(data: torch.Tensor, path: str) -> torch.Tensor:
    """The bytes of one file decoded with PIL as uint8 ``[3, H, W]`` (the reference path's
    decoder), or a CorruptDataError naming the file."""
    try:
        with Image.open(io.BytesIO(data.numpy().tobytes())) as img:
            pixels = np.array(img.convert("RGB"))
    except Exception as err:
        raise CorruptDataError(
            f"Cannot decode image '{path}': {err}. The file is truncated or corrupt; "
            "replace it from the data set's original archive (or delete it)."
        ) from err
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


@functools.lru_cache(maxsize=8)
def constants(device: torch.device) -> dict[str, torch.Tensor]:
    """The pipeline's constant tensors on ``device``, made once per device: copying host
    values to a GPU at every batch would make the host wait for the GPU's queue."""
    values = {
        "eigval": torch.tensor(PCA_EIGVAL),
        "eigvec_t": torch.tensor(PCA_EIGVEC).t().contiguous(),
        "mean": torch.tensor(MEAN).view(1, 3, 1, 1),
        "std": torch.tensor(STD).view(1, 3, 1, 1),
    }
    return {k: v.to(device) for k, v in values.items()}


def crop_resize_flip(
    images: list[torch.Tensor], boxes: list[list[int]], flips: list[bool], size: int
) -> torch.Tensor:
    """Each image's box resized to ``size`` x ``size`` and mirrored where ``flips`` says:
    float ``[N, 3, size, size]`` holding uint8 values (0-255, rounded).

    Bicubic with antialiasing in float, as torchvision resizes a uint8 image on a GPU, then
    clamped and rounded as it does; three operations per image, written into one batch.
    """
    out = torch.empty(len(images), 3, size, size, device=images[0].device)
    for i, (image, (top, left, height, width), flip) in enumerate(
        zip(images, boxes, flips, strict=True)
    ):
        crop = image[None, :, top : top + height, left : left + width].float()
        resized = interpolate(crop, size=(size, size), **BICUBIC_AA)[0]
        out[i] = resized.flip(-1) if flip else resized
    return out.clamp_(0, 255).round_()


def resize_center_crop(images: list[torch.Tensor], resize: int, crop: int) -> torch.Tensor:
    """Shorter side to ``resize`` (bicubic, antialiased, torchvision's output size), centre
    ``crop``: float ``[N, 3, crop, crop]`` holding uint8 values, as :func:`crop_resize_flip`."""
    out = torch.empty(len(images), 3, crop, crop, device=images[0].device)
    for i, image in enumerate(images):
        resized = F.resize(image.float(), [resize], INTERPOLATION, antialias=True)
        out[i] = F.center_crop(resized, [crop, crop])
    return out.clamp_(0, 255).round_()


def color_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast and saturation with per-image ``factors`` ``[N, 3]``, applied in
    each image's ``order`` ``[N, 3]``, in place on the float batch ``x`` in [0, 1].

    Each of the three is a blend ``clamp(f * x + (1 - f) * ref, 0, 1)`` with ``ref`` black
    (brightness), the image's mean grey (contrast) or its grey (saturation), so step ``k``
    blends every image with its own ``ref`` at once.
    """
    n = x.shape[0]
    for k in range(3):
        op = order[:, k].view(n, 1, 1, 1)
        f = factors.gather(1, order[:, k : k + 1]).view(n, 1, 1, 1)
        grey = grey_of(x)
        mean = grey.mean((1, 2, 3), keepdim=True)
        ref = torch.where(op == 2, grey, torch.where(op == 1, mean, torch.zeros_like(mean)))
        del grey
        x.mul_(f).add_(ref.mul_(1 - f)).clamp_(0, 1)
    return x


def grey_of(x: torch.Tensor) -> torch.Tensor:
    """``[N, 1, H, W]`` grey of an RGB batch, as torchvision computes it (same operations in
    the same order), without a temporary the size of the batch."""
    r, g, b = x.unbind(1)
    return r.mul(GREY[0]).add_(g, alpha=GREY[1]).add_(b, alpha=GREY[2]).unsqueeze(1)


def lighting(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """AlexNet's PCA lighting: adds ``eigvec @ (alpha * eigval)`` per image, in place."""
    c = constants(x.device)
    rgb = (alpha * c["eigval"]) @ c["eigvec_t"]
    return x.add_(rgb.view(-1, 3, 1, 1))


def normalize(x: torch.Tensor) -> torch.Tensor:
    """``(x - MEAN) / STD`` per channel, in place."""
    c = constants(x.device)
    return x.sub_(c["mean"]).div_(c["std"])


def augment(
    images: list[torch.Tensor],
    params: AugmentParams,
    size: int,
    modern: ModernAugment | None = None,
) -> torch.Tensor:
    """fb.resnet.torch's training augmentation of decoded uint8 images with drawn parameters:
    the normalised float batch ``[N, 3, size, size]``. Empties ``images`` once they are
    cropped, so that the decoded images are freed before the float batch is made.

    The ``modern`` augmentations run where ``params`` carry their seeds (the workers drew
    them because ``modern`` has them on); the colour jitter and the lighting where they
    carry their factors and noise (not drawn when ``data.color_jitter`` or
    ``data.lighting`` is 0)."""
    x = crop_resize_flip(images, params.boxes.tolist(), params.flip.tolist(), size)
    images.clear()
    if params.auto_augment_seeds is not None:
        auto_augment_batch(x, modern.auto_augment_transform(), params.auto_augment_seeds)
    x.mul_(1.0 / 255)  # as ToDtype(float32, scale=True)
    if params.jitter is not None:
        x = color_jitter(x, params.jitter, params.order)
    if params.alpha is not None:
        x = lighting(x, params.alpha)
    x = normalize(x)
    if params.erase_seeds is not None:
        erasing, seeds = modern.erasing(), params.erase_seeds.tolist()
        for i, seed in enumerate(seeds):
            x[i] = run_seeded(erasing, x[i], seed)
    return x


def auto_augment_batch(x: torch.Tensor, transform, seeds: torch.Tensor) -> torch.Tensor:
    """TrivialAugmentWide/RandAugment on each image of the float batch ``x`` holding uint8
    values (as :func:`crop_resize_flip` makes it), as uint8 like the PIL path; in place."""
    pixels = x.to(torch.uint8)
    for i, seed in enumerate(seeds.tolist()):
        pixels[i] = run_seeded(transform, pixels[i], seed)
    return x.copy_(pixels)


def evaluate(images: list[torch.Tensor], resize: int, crop: int) -> torch.Tensor:
    """The evaluation pipeline of decoded uint8 images: the normalised float batch. Empties
    ``images`` once they are cropped, as :func:`augment` does."""
    x = resize_center_crop(images, resize, crop)
    images.clear()
    return normalize(x.mul_(1.0 / 255))
