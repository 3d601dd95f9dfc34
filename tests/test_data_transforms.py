"""The batched on-device image ops: normalisation, flips, padded random crops."""

import pytest
import torch
import torch.nn.functional as F

from densenet_lit.data.transforms import normalize, random_hflip, random_pad_crop


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


def test_normalize_exact_values():
    images = torch.empty(2, 3, 4, 4, dtype=torch.uint8)
    images[:, 0], images[:, 1], images[:, 2] = 255, 0, 128
    out = normalize(images, (125.3, 123.0, 113.9), (63.0, 62.1, 66.7))
    assert out.dtype == torch.float32 and out.shape == images.shape
    expected = torch.tensor([(255 - 125.3) / 63.0, (0 - 123.0) / 62.1, (128 - 113.9) / 66.7])
    assert torch.allclose(out[:, :, 1, 2], expected.expand(2, 3))
    assert torch.allclose(out[0, 0, 0, 0], torch.tensor(2.0587301))


def test_normalize_rejects_float_input():
    with pytest.raises(TypeError, match="uint8"):
        normalize(torch.zeros(1, 3, 2, 2), (0, 0, 0), (1, 1, 1))


def test_random_pad_crop_is_a_window_of_the_zero_padded_image():
    torch.manual_seed(0)
    x = torch.randn(48, 3, 8, 8)
    out = random_pad_crop(x, padding=2)
    assert out.shape == x.shape
    offsets = window_offsets(out, F.pad(x, (2, 2, 2, 2)))
    assert all(o is not None for o in offsets)
    assert len(set(offsets)) > 5  # offsets vary per image (0..4 in each direction)
    assert {o[0] for o in offsets} <= set(range(5))


def test_random_hflip_flips_about_half_and_only_flips():
    torch.manual_seed(0)
    x = torch.randn(1000, 1, 2, 3)
    out = random_hflip(x)
    same = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | flipped).all())
    assert 400 < int(flipped.sum()) < 600


def test_augmentation_is_reproducible_from_the_global_seed():
    x = torch.randn(16, 3, 8, 8)
    torch.manual_seed(3)
    a = random_pad_crop(random_hflip(x), 4)
    torch.manual_seed(3)
    b = random_pad_crop(random_hflip(x), 4)
    assert torch.equal(a, b)
