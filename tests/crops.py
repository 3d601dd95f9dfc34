"""Where each image of a randomly cropped batch was cut from (for the tests of the on-device
augmentation and of the configs that use it)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_windows(
    out: torch.Tensor, *sources: torch.Tensor, padding: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which of ``sources`` (e.g. the batch and its mirror image) each image of ``out`` was
    cut from, as an ``[N]`` tensor of indices into ``sources``, and the ``(top, left)`` of
    its window in that source zero-padded by ``padding``, as an ``[N, 2]`` tensor. Asserts
    that each image matches exactly one window of one source (images of random values have
    no repeated windows)."""
    _, _, h, w = out.shape
    matches = []
    for source in sources:
        padded = F.pad(source, (padding,) * 4)
        windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # [N, C, tops, lefts, h, w]
        same = windows == out[:, :, None, None]
        matches.append(same.flatten(4).all(dim=4).all(dim=1))  # [N, tops, lefts]
    found = torch.stack(matches, dim=1).int()  # [N, sources, tops, lefts]
    assert bool((found.flatten(1).sum(dim=1) == 1).all()), "not exactly one window each"
    index = found.flatten(1).argmax(dim=1)
    side = 2 * padding + 1
    which, place = index // (side * side), index % (side * side)
    return which, torch.stack([place // side, place % side], dim=1)


def crop_offsets(out: torch.Tensor, *sources: torch.Tensor, padding: int) -> torch.Tensor:
    """The ``(top, left)`` of :func:`crop_windows`, whichever source each image came from."""
    return crop_windows(out, *sources, padding=padding)[1]
