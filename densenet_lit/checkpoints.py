"""Reading checkpoint files, shared by the CLI, the analysis tools and pretrained weights.

Files are read with torch's safe ``weights_only`` unpickler, which builds tensors, numbers,
strings and containers only: every checkpoint this project writes is made of those. An
object it refuses could run code while it is unpickled (a ``__reduce__`` calling
``os.system``), so a refusal is an error, never a reason to retry with the full unpickler;
only an explicit ``trust=True`` (``--run.trust_checkpoint true`` in the CLI,
``--trust-checkpoint`` in the analysis tools) uses it, with a warning.

It imports torch only: the analysis package (run reports, comparisons) reads checkpoints
without loading Lightning or jsonargparse.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

# Lightning's WeightAveraging (the EMA callback, densenet_lit.callbacks.averaging) writes the
# averaged weights to a checkpoint's "state_dict" and the trained ones under this key.
RAW_WEIGHTS_KEY = "current_model_state"
# The default way to vouch for a file, said in the error (``opt_in``: a clause).
TRUST_IN_PYTHON = "load it with trust=True (a warning is printed)"


class CheckpointError(ValueError):
    """A checkpoint cannot be used: missing, unreadable (truncated, not a checkpoint), or not
    this model's. Raised by the CLI's ``--ckpt_path`` and by densenet_lit.analysis alike."""


class UntrustedCheckpointError(CheckpointError):
    """The safe unpickler refused an object in the file: loading it could run its code.

    ``path`` is the file, ``refused`` what was refused (e.g. ``posix.system``)."""

    def __init__(self, path: Path, refused: str, opt_in: str) -> None:
        self.path, self.refused = path, refused
        super().__init__(
            f"{path}: refused to load this checkpoint. It holds an object that PyTorch's safe "
            f"loader (torch.load weights_only=True) does not build: {refused}. Unpickling such "
            "an object can run code on this machine; checkpoints written by densenet_lit hold "
            "only tensors, numbers, strings and containers and never need more. If you know "
            f"where the file comes from and trust it, {opt_in}; otherwise do not use it."
        )


def refused_object(err: BaseException) -> str:
    """What the safe unpickler refused, from its message: the global's name (``posix.system``,
    ``io.open``, ``mymodule.MyClass``), else the line of the message that says why."""
    text = str(err)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return found.group(1)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    detail = [ln for ln in lines if "WeightsUnpickler error:" in ln]
    if detail:
        return detail[0].split("WeightsUnpickler error:", 1)[1].strip()[:200]
    return (lines[-1] if lines else type(err).__name__)[:200]


def refusal_error(
    err: BaseException, path: str | os.PathLike, opt_in: str = TRUST_IN_PYTHON
) -> UntrustedCheckpointError | None:
    """The :class:`UntrustedCheckpointError` for ``err`` if it is the safe unpickler refusing
    an object of ``path`` (not a damaged file), else None. Also for Lightning's restore."""
    text = str(err).lower()
    if isinstance(err, pickle.UnpicklingError) and (
        "weights only" in text or "weights_only" in text
    ):
        return UntrustedCheckpointError(Path(path), refused_object(err), opt_in)
    return None


def _torch_load(path: Path, weights_only: bool) -> Any:
    """``torch.load`` on the CPU, memory-mapped (only what is looked at is read) where the
    file's format allows it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
        return torch.load(path, map_location="cpu", weights_only=weights_only)  # old format


def warn_trusted(path: str | os.PathLike) -> None:
    """The warning of every load that uses the full unpickler."""
    warnings.warn(
        f"Loading {path} with the full unpickler (the checkpoint is trusted): any code pickled "
        "in it runs now. Do this only for files whose origin you trust.",
        UserWarning,
        stacklevel=3,
    )


def safe_load(path: str | os.PathLike, trust: bool = False, opt_in: str = TRUST_IN_PYTHON) -> Any:
    """``torch.load`` of ``path`` on the CPU with the safe unpickler; an object it refuses is
    an :class:`UntrustedCheckpointError` naming the file, the object and ``opt_in`` (how the
    caller trusts a file: what to do, as a clause). ``trust=True`` loads with the full unpickler, after a warning.
    Other failures (truncated file, not a torch file) are raised as they are."""
    p = Path(path)
    if trust:
        warn_trusted(p)
        return _torch_load(p, weights_only=False)
    try:
        return _torch_load(p, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = refusal_error(err, p, opt_in)
        if refused is None:
            raise
        raise refused from err


def load_checkpoint(
    path: str | os.PathLike, trust: bool = False, opt_in: str = TRUST_IN_PYTHON
) -> dict[str, Any]:
    """A checkpoint file's dictionary, loaded on the CPU with :func:`safe_load`; every failure
    is a :class:`CheckpointError` that names the file and says why (an
    :class:`UntrustedCheckpointError` for an object the safe unpickler refuses)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file.")
    try:
        ckpt = safe_load(p, trust=trust, opt_in=opt_in)
    except UntrustedCheckpointError:
        raise
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
