"""Exporting a trained DenseNet for use without densenet_lit: safetensors weights, an ONNX
model and a ``torch.export`` program, checked against the network, with a model card.

``python -m densenet_lit.export CHECKPOINT_OR_RUN_DIR --out DIR`` (:func:`export_command`;
the work is :func:`densenet_lit.export.command.export`). The formats' libraries are the
``export`` extra (``pip install densenet_lit[export]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from densenet_lit.checkpoints import CheckpointError
from densenet_lit.export.command import FORMATS, export
from densenet_lit.export.errors import ExportError

Format = Literal["safetensors", "onnx", "pt2"]  # FORMATS, as the command line's type


def export_command(
    checkpoint: str,
    *,
    out: str,
    formats: list[Format] = list(FORMATS),  # noqa: B006 (jsonargparse shows it in --help)
    trust_checkpoint: bool = False,
) -> None:
    """Export a trained DenseNet to safetensors, ONNX and torch.export (.pt2) files.

    The safetensors weights carry torchvision's tensor names for the ImageNet networks; each
    file is checked against the network; a model card (MODEL_CARD.md) is written beside them.

    Args:
        checkpoint: a .ckpt file, or a run directory (its best checkpoint, else its last).
        out: the folder to write; it must not exist or be empty.
        formats: which files to write.
        trust_checkpoint: load with the full unpickler, which runs any code pickled in the
            file: only for a checkpoint you trust that the safe loader refuses.
    """
    written = export(checkpoint, out, formats, trust=trust_checkpoint)
    for path in sorted(written.iterdir()):
        print(path)


def main(args: Sequence[str] | None = None) -> int:
    """The command line (:func:`densenet_lit.toolcli.run_tool`): ``--help``, ``--config``; a
    user error is ``error: <message>`` on stderr and exit status 2."""
    from densenet_lit.toolcli import run_tool

    return run_tool(export_command, args, input_errors=(ExportError, CheckpointError)) or 0


__all__ = ["FORMATS", "ExportError", "Format", "export", "export_command", "main"]
