"""Exporting a trained DenseNet for use without densenet_lit: safetensors weights, an ONNX
model and a ``torch.export`` program, checked against the network, with a model card.

``python -m densenet_lit.export CHECKPOINT_OR_RUN_DIR --out DIR`` (:mod:`.command`); the
formats' libraries are the ``export`` extra (``pip install densenet_lit[export]``).
"""

from densenet_lit.export.command import FORMATS, export, main
from densenet_lit.export.errors import ExportError

__all__ = ["FORMATS", "ExportError", "export", "main"]
