"""An ONNX model (``model.onnx``) from torch's dynamo-based exporter, with a dynamic batch
dimension (input ``images``, output ``logits``) and the export's metadata as
``metadata_props`` (JSON strings). Checked with ``onnx.checker`` (full check) and run with
onnxruntime on the CPU against the network before it is kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from densenet_lit.export.check import batches, compare, sample
from densenet_lit.export.errors import require
from densenet_lit.export.pt2_file import batch_dim
from densenet_lit.models import DenseNet

NAME = "onnx"
FILENAME = "model.onnx"
PURPOSE = "The ONNX export"
INPUT, OUTPUT = "images", "logits"


def write(network: DenseNet, path: Path, metadata: dict[str, Any]) -> None:
    require("onnxscript", PURPOSE)  # torch's dynamo exporter builds the graph with it
    onnx = require("onnx", PURPOSE)
    program = torch.onnx.export(
        network,
        (sample(tuple(metadata["input_size"])),),
        dynamo=True,
        dynamic_shapes=({0: batch_dim()},),
        input_names=[INPUT],
        output_names=[OUTPUT],
        verbose=False,
    )
    model = program.model_proto
    onnx.helper.set_model_props(model, {k: json.dumps(v) for k, v in metadata.items()})
    onnx.save_model(model, str(path))


@torch.no_grad()
def check(network: DenseNet, path: Path, metadata: dict[str, Any]) -> None:
    onnx = require("onnx", PURPOSE)
    ort = require("onnxruntime", "Checking the ONNX export")
    onnx.checker.check_model(str(path), full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for x in batches(tuple(metadata["input_size"])):
        (logits,) = session.run([OUTPUT], {INPUT: x.numpy()})
        compare(NAME, network(x), torch.from_numpy(logits))
