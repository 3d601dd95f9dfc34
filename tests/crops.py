"""Where each image of a randomly cropped batch was cut from (for the tests of the on-device
augmentation and of the configs that use it)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_offsets(out: torch.Tensor, *sources: torch.Tensor, padding: int) -> torch.Tensor:
    """The ``(top, left)`` of the one window of a source zero-padded by ``padding`` that each
    image of ``out`` equals, as an ``[N, 2]`` tensor; ``sources`` are the candidate images
    (e.g. the batch and its mirror image). Asserts that each image matches exactly one
    window of one source (images of random values have no repeated windows)."""
    _, _, h, w = out.shape
    matches = []
    for source in sources:
        padded = F.pad(source, (padding,) * 4)
        windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # [N, C, tops, lefts, h, w]
        same = windows == out[:, :, None, None]
        matches.append(same.flatten(4).all(dim=4).all(dim=1))  # [N, tops, lefts]
    found = torch.stack(matches).sum(dim=0)
    assert bool((found.flatten(1).sum(dim=1) == 1).all()), "not exactly one window each"
    index = found.flatten(1).argmax(dim=1)
    side = 2 * padding + 1
    return torch.stack([index // side, index % side], dim=1)


def window_offsets(out: torch.Tensor, padded: torch.Tensor) -> list[tuple[int, int] | None]:
    """For each image, the (top, left) at which ``out[i]`` is a window of ``padded[i]``."""
    _, _, h, w = out.shape
    found = []
    for o, p in zip(out, padded, strict=True):
        hit = None
        for top in range(p.shape[1] - h + 1):
            for left in range(p.shape[2] - w + 1):
                if torch.equal(p[:, top : top + h, left : left + w], o):
                    hit = (top, left)
                    break
            if hit:
                break
        found.append(hit)
    return found
