"""Batched image operations that run on the device, on a whole batch at once.

The 32x32 data sets ship uint8 batches from the loader; these functions turn them into
normalised float batches and apply the "+" augmentation with one tensor op each (no loop
over images). Randomness comes from the global torch RNG of the batch's device, so
``seed_everything`` makes it reproducible.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` -> float32 ``(x - mean) / std`` per channel (0-255 scale stats)."""
    if images.dtype != torch.uint8:
        raise TypeError(
            f"normalize expects a uint8 batch straight from the loader, got {images.dtype} "
            "(was the batch transformed twice?)"
        )
    mean_t, std_t = _channel_stats(tuple(mean), tuple(std), images.device)
    return (images.float() - mean_t) / std_t


@functools.lru_cache(maxsize=32)
def _channel_stats(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean`` and ``std`` as ``[1, C, 1, 1]`` tensors on ``device``, made once: copying host
    values to a GPU with ``torch.tensor(..., device=...)`` makes the host wait for the GPU's
    queue, at every batch."""
    return tuple(
        torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1).to(device) for v in (mean, std)
    )


def random_hflip(images: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right independently with probability ``p``."""
    flip = torch.rand(images.shape[0], device=images.device) < p
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def random_pad_crop(images: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad each side by ``padding`` pixels and take one random HxW window per image.

    All windows come out of one ``gather`` on the flattened padded images, with a
    per-image (top, left) offset.
    """
    n, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    dev = images.device
    top = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=dev)
    left = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=dev)
    rows = top + torch.arange(h, device=dev).view(1, h, 1)
    cols = left + torch.arange(w, device=dev).view(1, 1, w)
    flat = (rows * (w + 2 * padding) + cols).view(n, 1, h * w).expand(n, c, h * w)
    return padded.flatten(2).gather(2, flat).view(n, c, h, w)
