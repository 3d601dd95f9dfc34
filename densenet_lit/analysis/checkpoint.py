"""Rebuild a trained DenseNet from a Lightning checkpoint (or a run directory holding one).

A checkpoint written by :class:`~densenet_lit.module.DenseNetModule` holds the module's
arguments in ``ckpt["hyper_parameters"]`` and the network's weights under the ``model.`` prefix
of ``ckpt["state_dict"]``. :func:`load_model` builds the network with
:func:`densenet_lit.models.build_model` from those arguments and loads the weights (prefixes
``model.`` and ``_orig_mod.`` of compiled networks stripped), so no Lightning objects are needed.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from densenet_lit.checkpoints import CheckpointError, load_checkpoint
from densenet_lit.models import DenseNet, build_model
from densenet_lit.models.zoo import CIFAR_ARCH, IMAGENET_ARCH, MODELS, with_cifar_defaults

# Arguments of the network that change how it runs, not what it computes.
_RUNTIME_ONLY = {"memory_efficient"}
# Arguments of DenseNet that an ImageNet name (densenet121, ...) fixes.
_IMAGENET_FIXED = {
    "block_config",
    "growth_rate",
    "stem_channels",
    "imagenet_stem",
    "bottleneck",
    "compression",
}


def find_checkpoint(path: str | os.PathLike, which: str = "last") -> Path:
    """The checkpoint file for ``path``: the file itself, or one found in a run directory.

    In a directory: ``which="last"`` picks ``checkpoints/last.ckpt`` (else any ``last*.ckpt``,
    else the newest ``*.ckpt``); ``which="best"`` picks the newest ``best*.ckpt`` (the CLI's
    checkpoint with the lowest validation error), else falls back to ``last``.
    """
    p = Path(path)
    if p.is_file():
        return p
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint file or run directory.")
    if which not in ("last", "best"):
        raise ValueError(f"which={which!r}: expected 'last' or 'best'.")
    ckpts = [c for c in p.rglob("*.ckpt") if c.is_file() and "wandb" not in c.parts]
    if not ckpts:
        raise CheckpointError(f"{p}: a directory without any .ckpt file (not a finished run?).")

    def newest(paths: list[Path]) -> Path:
        return max(paths, key=lambda c: (c.stat().st_mtime, str(c)))

    if which == "best":
        best = [c for c in ckpts if c.name.startswith("best")]
        if best:
            return newest(best)
    preferred = p / "checkpoints" / "last.ckpt"
    if preferred.is_file():
        return preferred
    last = [c for c in ckpts if c.name.startswith("last")]
    return newest(last or ckpts)


def network_spec(hparams: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(arch, kwargs)`` for :func:`~densenet_lit.models.build_model` from a module's arguments.

    ``None`` CIFAR arguments take DenseNetModule's defaults (L=100, k=12, BC); arguments the
    network factory does not take (learning rate, schedule, ...) are dropped, and so is
    ``memory_efficient``, which does not change the weights.
    """
    arch = hparams.get("arch") or CIFAR_ARCH
    if arch not in MODELS:
        raise CheckpointError(f"arch={arch!r} is not a known architecture ({', '.join(MODELS)}).")
    if arch == CIFAR_ARCH:
        accepted = set(inspect.signature(MODELS[arch]).parameters)
    else:  # the ImageNet factories fix the structure and pass the rest on to DenseNet
        accepted = set(inspect.signature(DenseNet).parameters) - _IMAGENET_FIXED
        if arch == IMAGENET_ARCH:  # ... but for the blocks and growth rate of this one
            accepted |= {"block_config", "growth_rate"}
    kwargs = {}
    for key, value in hparams.items():
        if key in accepted and key not in _RUNTIME_ONLY and value is not None and key != "arch":
            kwargs[key] = value
    return arch, with_cifar_defaults(kwargs) if arch == CIFAR_ARCH else kwargs


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
    path: str | os.PathLike, which: str = "last", hparams: Mapping[str, Any] | None = None
) -> DenseNet:
    """The trained network of a checkpoint or run directory, in eval mode on the CPU.

    Args:
        path: a ``.ckpt`` file or a run directory (see :func:`find_checkpoint`).
        which: ``"last"`` or ``"best"`` checkpoint of a run directory.
        hparams: network arguments to use instead of (or where missing, in addition to) the
            checkpoint's ``hyper_parameters``, e.g. for a bare state dict file.
    """
    file = find_checkpoint(path, which)
    ckpt = load_checkpoint(file)
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
    """The DenseNet inside a LightningModule (``.model``) or a compiled wrapper, or ``model``."""
    for _ in range(3):
        if isinstance(model, DenseNet):
            return model
        inner = getattr(model, "_orig_mod", None) or getattr(model, "model", None)
        if not isinstance(inner, nn.Module):
            break
        model = inner
    if isinstance(model, DenseNet):
        return model
    raise TypeError(f"expected a DenseNet or a module holding one as .model, got {type(model)}")


__all__ = [
    "CheckpointError",
    "extract_state_dict",
    "find_checkpoint",
    "load_checkpoint",
    "load_model",
    "network_spec",
    "unwrap_model",
]
