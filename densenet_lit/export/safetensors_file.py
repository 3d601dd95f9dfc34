"""Weights as ``model.safetensors`` (no pickle), with the export's metadata as JSON strings.

The tensor names are the network's, which are torchvision's for the ImageNet networks: a
torchvision DenseNet built as ``metadata["torchvision"]`` says loads the file with
``load_state_dict`` (checked here before the file is kept)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from densenet_lit.export.check import compare, sample
from densenet_lit.export.errors import ExportError, require
from densenet_lit.models import DenseNet, build_model

NAME = "safetensors"
FILENAME = "model.safetensors"
PURPOSE = "The safetensors export"


def encode(metadata: dict[str, Any]) -> dict[str, str]:
    """safetensors metadata is str -> str: each value as JSON."""
    return {k: json.dumps(v) for k, v in metadata.items()}


def decode(metadata: dict[str, str]) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in metadata.items()}


def write(network: DenseNet, path: Path, metadata: dict[str, Any]) -> None:
    st = require("safetensors.torch", PURPOSE)
    state = {k: v.detach().contiguous() for k, v in network.state_dict().items()}
    st.save_file(state, str(path), metadata=encode(metadata))


def rebuilt(metadata: dict[str, Any], state: dict[str, torch.Tensor]) -> list[torch.nn.Module]:
    """The networks the metadata's builders make (densenet_lit's, and torchvision's where it
    names one), built without initialising and given ``state`` (strictly: every name fits)."""
    import torchvision

    tv = metadata.get("torchvision")
    builders = [lambda: build_model(metadata["architecture"], **metadata["arguments"])]
    if tv:
        builders.append(lambda: getattr(torchvision.models, tv["builder"])(**tv["arguments"]))
    networks = []
    for builder in builders:
        with torch.device("meta"):
            network = builder()
        network.load_state_dict(state, strict=True, assign=True)
        networks.append(network.eval())
    return networks


@torch.no_grad()
def check(network: DenseNet, path: Path, metadata: dict[str, Any]) -> None:
    """The file's tensors equal the network's, its metadata reads back, and the builders it
    names load it; torchvision's network gives the network's outputs."""
    st = require("safetensors.torch", PURPOSE)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        if decode(f.metadata()) != metadata:
            raise ExportError(f"{path}: the metadata does not read back as written.")
    loaded = st.load_file(str(path))
    own = network.state_dict()
    if set(loaded) != set(own) or any(not torch.equal(loaded[k], own[k]) for k in own):
        raise ExportError(f"{path}: the saved tensors differ from the network's.")
    x = sample(tuple(metadata["input_size"]))
    for other in rebuilt(metadata, loaded)[1:]:  # densenet_lit's: the same weights, same outputs
        compare(NAME, network(x), other(x))
