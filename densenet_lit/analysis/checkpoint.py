"""Rebuild a trained DenseNet from a Lightning checkpoint (or a run directory holding one).

A checkpoint written by :class:`~densenet_lit.module.DenseNetModule` holds the module's
arguments in ``ckpt["hyper_parameters"]`` and the network's weights under the ``model.`` prefix
of ``ckpt["state_dict"]``. :func:`load_model` builds the network with
:func:`densenet_lit.models.build_model` from those arguments and loads the weights (prefixes
``model.`` and ``_orig_mod.`` of compiled networks stripped), so no Lightning objects are needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from densenet_lit import rundir
from densenet_lit.checkpoints import CheckpointError, UntrustedCheckpointError, load_checkpoint
from densenet_lit.models import DenseNet, build_model
from densenet_lit.models import spec as models_spec

# How a user vouches for a checkpoint that the safe unpickler refuses.
TRUST_OPT_IN = "pass --trust-checkpoint (trust=True in Python; a warning is printed)"


def find_checkpoint(path: str | os.PathLike, which: str = "last") -> Path:
    """The checkpoint file for ``path``: the file itself, or one found in a run directory
    (:func:`densenet_lit.rundir.find_checkpoint`: ``which`` is ``"last"`` or ``"best"``)."""
    if which not in ("last", "best"):
        raise ValueError(f"which={which!r}: expected 'last' or 'best'.")
    try:
        return rundir.find_checkpoint(path, which)
    except FileNotFoundError as err:
        raise CheckpointError(str(err)) from None


def network_spec(hparams: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(arch, kwargs)`` for :func:`~densenet_lit.models.build_model` from a module's arguments
    (:func:`densenet_lit.models.spec.network_spec`, the one owner of "which network")."""
    try:
        spec = models_spec.network_spec(hparams)
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    return spec.arch, dict(spec.kwargs)


def extract_state_dict(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The network's weights from a LightningModule state dict: keys under ``model.`` with that
    prefix and any ``_orig_mod.`` (torch.compile) removed. A plain network state dict (no
    ``model.`` keys) is returned with only ``_orig_mod.`` removed."""
    keys = [k for k in state if k.startswith("model.")]
    if keys:
        state = {k[len("model.") :]: state[k] for k in keys}
    out = {}
    for key, value in state.items():
        out[key.replace("_orig_mod.", "")] = value
    return out


def load_model(
    path: str | os.PathLike,
    which: str = "last",
    hparams: Mapping[str, Any] | None = None,
    trust: bool = False,
) -> DenseNet:
    """The trained network of a checkpoint or run directory, in eval mode on the CPU.

    Args:
        path: a ``.ckpt`` file or a run directory (see :func:`find_checkpoint`).
        which: ``"last"`` or ``"best"`` checkpoint of a run directory.
        hparams: network arguments to use instead of (or where missing, in addition to) the
            checkpoint's ``hyper_parameters``, e.g. for a bare state dict file.
        trust: load with the full unpickler, which runs any code pickled in the file (a
            warning says so). Only for a file you trust that the safe unpickler refuses (an
            :class:`~densenet_lit.checkpoints.UntrustedCheckpointError`); densenet_lit's own
            checkpoints never need it.
    """
    file = find_checkpoint(path, which)
    ckpt = load_checkpoint(file, trust=trust, opt_in=TRUST_OPT_IN)
    return network_from_checkpoint(ckpt, file, hparams)


def network_from_checkpoint(
    ckpt: Mapping[str, Any], file: str | os.PathLike, hparams: Mapping[str, Any] | None = None
) -> DenseNet:
    """The trained network of a loaded checkpoint dictionary (``file`` names it in errors), in
    eval mode on the CPU: built from its ``hyper_parameters`` (with ``hparams`` over them)
    without the runtime options (memory levels, compile), its ``state_dict`` loaded."""
    stored = ckpt.get("hyper_parameters") or {}
    merged = {**dict(stored), **dict(hparams or {})}
    if not merged:
        raise CheckpointError(
            f"{file}: no 'hyper_parameters' to rebuild the network from; pass the network's "
            "arguments (arch, depth, growth_rate, ...) as hparams."
        )
    state = ckpt.get("state_dict", ckpt)
    if not isinstance(state, Mapping) or not any(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise CheckpointError(f"{file}: the checkpoint holds no 'state_dict' with weights.")
    arch, kwargs = network_spec(merged)
    model = build_model(arch, **kwargs)
    weights = extract_state_dict(state)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{file}: the weights do not fit the network rebuilt from its hyper_parameters "
            f"({arch}, {kwargs}): {str(err).splitlines()[0]} ..."
        ) from err
    return model.eval()


def unwrap_model(model: nn.Module) -> DenseNet:
    """The DenseNet inside a LightningModule (``.model``), or ``model``. (The module compiles
    its network in place, ``nn.Module.compile``, so there is no compiled wrapper to open.)"""
    for _ in range(3):
        if isinstance(model, DenseNet):
            return model
        inner = getattr(model, "model", None)
        if not isinstance(inner, nn.Module):
            break
        model = inner
    if isinstance(model, DenseNet):
        return model
    raise TypeError(f"expected a DenseNet or a module holding one as .model, got {type(model)}")


__all__ = [
    "CheckpointError",
    "UntrustedCheckpointError",
    "extract_state_dict",
    "find_checkpoint",
    "load_checkpoint",
    "load_model",
    "network_from_checkpoint",
    "network_spec",
    "unwrap_model",
]
