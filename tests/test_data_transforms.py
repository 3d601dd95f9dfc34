"""The batched on-device image ops: normalisation, flips, padded random crops."""

import pytest
import torch
from crops import crop_offsets

from densenet_lit.data.transforms import normalize, random_hflip, random_pad_crop


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


@pytest.mark.parametrize("padding", [4, 2])
def test_random_pad_crop_cuts_every_window_of_the_zero_padded_image(padding):
    """Each output is the window of its own zero-padded image at one offset, and over a
    large batch the offsets cover 0..2*padding in both axes, each about equally often."""
    torch.manual_seed(0)
    x = torch.randn(2000, 2, 6, 6)
    out = random_pad_crop(x, padding=padding)
    assert out.shape == x.shape
    offsets = crop_offsets(out, x, padding=padding)
    side = 2 * padding + 1
    for axis in (0, 1):
        counts = torch.bincount(offsets[:, axis], minlength=side)
        assert counts.numel() == side and bool((counts > 0.7 * 2000 / side).all()), counts
    # the offsets of the two axes are drawn independently: every pair occurs
    assert len({tuple(o) for o in offsets.tolist()}) == side * side


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
