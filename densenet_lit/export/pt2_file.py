"""A ``torch.export`` program (``model.pt2``) with a dynamic batch dimension; it reloads with
``torch.export.load(path).module()`` and needs neither densenet_lit nor Python code of ours.
The metadata travels in the archive as ``extra_files["metadata.json"]``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from densenet_lit.export.check import batches, compare, sample
from densenet_lit.models import DenseNet

NAME = "pt2"
FILENAME = "model.pt2"
METADATA_FILE = "metadata.json"


def batch_dim() -> torch.export.Dim:
    """The dynamic batch dimension of the exported programs (ONNX and pt2)."""
    return torch.export.Dim("batch", min=1)


def exported(network: DenseNet, input_size: tuple[int, ...]) -> torch.export.ExportedProgram:
    return torch.export.export(
        network, (sample(input_size),), dynamic_shapes=({0: batch_dim()},), strict=False
    )


def write(network: DenseNet, path: Path, metadata: dict[str, Any]) -> None:
    program = exported(network, tuple(metadata["input_size"]))
    torch.export.save(program, str(path), extra_files={METADATA_FILE: json.dumps(metadata)})


@torch.no_grad()
def check(network: DenseNet, path: Path, metadata: dict[str, Any]) -> None:
    module = torch.export.load(str(path)).module()
    for x in batches(tuple(metadata["input_size"])):
        compare(NAME, network(x), module(x))
