"""Reading checkpoint files, shared by the CLI and the analysis tools.

It imports torch only: the analysis package (run reports, comparisons) reads checkpoints
without loading Lightning or jsonargparse.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A checkpoint cannot be used: missing, unreadable (truncated, not a checkpoint), or not
    this model's. Raised by the CLI's ``--ckpt_path`` and by densenet_lit.analysis alike."""


def _torch_load(path: Path, weights_only: bool) -> Any:
    """``torch.load`` on the CPU, memory-mapped (only what is looked at is read) where the
    file's format allows it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
        return torch.load(path, map_location="cpu", weights_only=weights_only)  # old format


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint file's dictionary, loaded on the CPU; every failure is a
    :class:`CheckpointError` that names the file and says why.

    The safe ``weights_only`` unpickler is tried first; the full one (which can run code: for
    your own runs only) is the fallback for checkpoints holding other objects.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file.")
    try:
        try:
            ckpt = _torch_load(p, weights_only=True)
        except pickle.UnpicklingError as err:
            if "weights only" not in str(err).lower() and "weights_only" not in str(err).lower():
                raise
            ckpt = _torch_load(p, weights_only=False)
    except Exception as err:  # truncated zip, a text file, classes that no longer exist, ...
        size = p.stat().st_size
        kind = "a zip archive" if zipfile.is_zipfile(p) else "not a complete zip archive"
        reason = (str(err).splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"Cannot read the checkpoint {p} ({size:,} bytes, {kind}): it is not a readable "
            "PyTorch checkpoint, either truncated or damaged (a run killed while saving leaves "
            f"such a file) or of another kind ({type(err).__name__}: {reason})."
        ) from err
    if not isinstance(ckpt, dict):
        raise CheckpointError(
            f"{p}: expected a checkpoint dictionary, found a {type(ckpt).__name__}."
        )
    return ckpt
