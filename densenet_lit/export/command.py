"""Exporting a trained DenseNet into a new folder: safetensors weights, an ONNX model and a
``torch.export`` program, with a model card (the command line: :mod:`densenet_lit.export`).

Each file is checked against the network before it is kept. The files are written into a
temporary folder beside ``out`` that is renamed to ``out`` once everything is written and
checked: on any error nothing is left behind, and an ``out`` that holds files is never touched.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path

from densenet_lit.export import card, onnx_file, pt2_file, safetensors_file
from densenet_lit.export.errors import ExportError, require
from densenet_lit.export.source import Trained, read_trained

WRITERS = {m.NAME: m for m in (safetensors_file, onnx_file, pt2_file)}
FORMATS = tuple(WRITERS)
# The libraries each format needs (the ``export`` extra), checked before anything is read.
NEEDS = {
    "safetensors": ("safetensors",),
    "onnx": ("onnx", "onnxscript", "onnxruntime"),
    "pt2": (),
}


def check_formats(formats: Sequence[str]) -> list[str]:
    """The formats asked for, in order and without repeats; an unknown one is an error."""
    unknown = [f for f in formats if f not in WRITERS]
    if unknown or not formats:
        raise ExportError(
            f"formats={list(formats)!r}: expected one or more of {', '.join(FORMATS)} "
            f"(unknown: {', '.join(map(repr, unknown)) or 'none given'})."
        )
    for fmt in formats:
        for module in NEEDS[fmt]:
            require(module, f"The {fmt} export")
    return list(dict.fromkeys(formats))


def check_out(out: Path) -> None:
    """``out`` may be missing or an empty folder, nothing else."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out}: a file is in the way; expected a new or empty folder.")
    if out.is_dir() and any(out.iterdir()):
        held = sorted(p.name for p in out.iterdir())
        raise ExportError(
            f"--out {out}: the folder exists and holds {len(held)} entries ({', '.join(held[:3])}"
            f"{', ...' if len(held) > 3 else ''}); choose a new folder or empty this one, so that "
            "no earlier export is overwritten or mixed with this one."
        )


def write_all(trained: Trained, folder: Path, formats: list[str]) -> None:
    """Every format into ``folder``, each checked against the network, then the card."""
    files = {fmt: WRITERS[fmt].FILENAME for fmt in formats}
    for fmt in formats:
        path = folder / WRITERS[fmt].FILENAME
        WRITERS[fmt].write(trained.network, path, trained.metadata)
        WRITERS[fmt].check(trained.network, path, trained.metadata)
    card.write(trained, folder / card.FILENAME, files)
    mode = (folder / card.FILENAME).stat().st_mode  # as the umask makes a new file
    for name in files.values():  # libraries may write theirs private (safetensors: 0600)
        (folder / name).chmod(mode)


def export(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    formats: Sequence[str] = FORMATS,
    trust: bool = False,
) -> Path:
    """Export the network of ``checkpoint`` (a ``.ckpt`` file or a run directory: its best
    checkpoint, else its last) into the new folder ``out``; returns ``out``. Bad input is an
    :class:`ExportError` or a :class:`~densenet_lit.checkpoints.CheckpointError`."""
    out = Path(out)
    formats = check_formats(formats)
    check_out(out)
    trained = read_trained(checkpoint, trust=trust)
    parent = out.absolute().parent
    created = next((p for p in reversed(parent.parents) if not p.exists()), None)
    created = created or (None if parent.exists() else parent)  # removed again on an error
    partial = parent / f".{out.name}.{secrets.token_hex(4)}.partial"
    partial.mkdir(parents=True)
    try:
        write_all(trained, partial, formats)
        if out.is_dir():
            out.rmdir()  # empty (check_out)
        partial.rename(out)
    except BaseException:
        shutil.rmtree(created or partial, ignore_errors=True)
        raise
    return out
