"""Comparing an exported file's outputs with the eager network's: the sample batches and the
tolerance every format is checked against before the export is kept."""

from __future__ import annotations

import torch

from densenet_lit.export.errors import ExportError

# Batch sizes of the check: the export's example has SAMPLE_BATCH images; the dynamic batch
# dimension is checked on other sizes too.
SAMPLE_BATCH = 2
CHECK_BATCHES = (1, 3)
# Largest difference to the eager outputs, relative to their largest magnitude (at least 1).
TOLERANCE = {"safetensors": 1e-5, "onnx": 1e-4, "pt2": 1e-5}


def sample(input_size: tuple[int, ...], batch: int = SAMPLE_BATCH, seed: int = 0) -> torch.Tensor:
    """A reproducible batch of normalised-looking inputs (standard normal)."""
    return torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(seed))


def batches(input_size: tuple[int, ...]) -> list[torch.Tensor]:
    """The inputs each exported file is run on (each size a different seed)."""
    return [sample(input_size, b, seed=b) for b in CHECK_BATCHES]


def compare(fmt: str, expected: torch.Tensor, got: torch.Tensor) -> float:
    """The largest absolute difference; an :class:`ExportError` above the format's tolerance."""
    if tuple(got.shape) != tuple(expected.shape):
        raise ExportError(
            f"the {fmt} export gives outputs of shape {tuple(got.shape)}, the network "
            f"{tuple(expected.shape)}: the exported file is not kept."
        )
    diff = (got.float() - expected.float()).abs().max().item()
    limit = TOLERANCE[fmt] * max(1.0, expected.abs().max().item())
    if not diff <= limit:
        raise ExportError(
            f"the {fmt} export's outputs differ from the network's by up to {diff:.3g} "
            f"(allowed: {limit:.3g}): the exported file is not kept."
        )
    return diff
