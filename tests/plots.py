"""Checks of the figures that the analysis tools and the notebooks write."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np


def assert_png_not_blank(path: Path, min_bytes: int = 5_000) -> None:
    """The PNG exists, is not tiny, and its pixels vary (not a blank canvas)."""
    path = Path(path)
    assert path.is_file(), f"{path} was not written"
    assert path.stat().st_size > min_bytes, f"{path} is only {path.stat().st_size} bytes"
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert float(pixels[..., :3].std()) > 0.02, f"{path} looks blank"
    # more than a couple of colours: something was drawn
    colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 20, f"{path} has only {len(colours)} colours"
