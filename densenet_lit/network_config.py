"""The network that a :class:`~densenet_lit.module.DenseNetModule`'s arguments describe:
built with errors that name the config keys (``model.depth=...``), and its short name."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from torch import nn

from densenet_lit.models import MODEL_NAMES, build_model
from densenet_lit.models.zoo import (
    CIFAR_ARCH,
    CIFAR_DEFAULTS,
    IMAGENET_ARCH,
    IMAGENET_CONFIGS,
    with_cifar_defaults,
)


def build_network(
    arch: str,
    *,
    depth: int | None = None,
    growth_rate: int | None = None,
    bottleneck: bool | None = None,
    compression: float | None = None,
    block_config: Sequence[int] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build the network of ``arch``; arguments that contradict it are rejected: the CIFAR
    sizes for ImageNet names, ``block_config`` for all but ``densenet_imagenet``."""
    if arch not in MODEL_NAMES:
        raise ValueError(
            f"model.arch={arch!r} is not a known architecture; expected one of "
            f"{', '.join(MODEL_NAMES)}."
        )
    sizes = {
        "depth": depth,
        "growth_rate": growth_rate,
        "bottleneck": bottleneck,
        "compression": compression,
        "block_config": None if block_config is None else list(block_config),
    }
    given = {k: v for k, v in sizes.items() if v is not None}
    if arch == IMAGENET_ARCH:
        _reject(arch, given, ("depth", "bottleneck", "compression"), _IMAGENET_SIZED)
        missing = [f"model.{k}" for k in ("block_config", "growth_rate") if k not in given]
        if missing:
            raise ValueError(
                f"model.arch={arch!r} needs {' and '.join(missing)}: the layers of each dense "
                "block and the growth rate k, e.g. block_config [6, 12, 48, 48] and "
                "growth_rate 48 for DenseNet-232."
            )
        return _build_named(
            arch, {**kwargs, "block_config": block_config, "growth_rate": growth_rate}
        )
    if arch != CIFAR_ARCH:
        _reject(arch, given, tuple(sizes), _NAMED)
        return _build_named(arch, kwargs)
    _reject(arch, given, ("block_config",), _CIFAR_SIZED)
    return _build_named(CIFAR_ARCH, {**CIFAR_DEFAULTS, **given, **kwargs})


_NAMED = (
    "fixes its depth, growth rate and block structure",
    f"or use model.arch={CIFAR_ARCH!r} for a network sized by depth and growth rate, or "
    f"model.arch={IMAGENET_ARCH!r} for an ImageNet network of any blocks and growth rate",
)
_IMAGENET_SIZED = (
    "is a DenseNet-BC sized by model.block_config and model.growth_rate",
    f"or use model.arch={CIFAR_ARCH!r} for a network sized by depth",
)
_CIFAR_SIZED = (
    "has three dense blocks whose length follows from model.depth",
    f"or use model.arch={IMAGENET_ARCH!r} for an ImageNet network of any blocks",
)


def _reject(arch: str, given: dict[str, Any], names: Sequence[str], why: tuple[str, str]) -> None:
    """A clear error when any of ``names`` was given for ``arch``, which ``why`` explains."""
    wrong = {k: given[k] for k in names if k in given}
    if wrong:
        keys = ", ".join(f"model.{k}={v}" for k, v in wrong.items())
        raise ValueError(
            f"model.arch={arch!r} {why[0]}, so {keys} contradicts it. Remove "
            f"{'it' if len(wrong) == 1 else 'them'}, {why[1]}."
        )


def _build_named(arch: str, kwargs: dict[str, Any]) -> nn.Module:
    """build_model, with errors about an argument named as in the config (``model.depth=...``)."""
    try:
        return build_model(arch, **kwargs)
    except ValueError as err:
        message = str(err)
        if re.match(r"[a-z_]+=", message):
            raise ValueError(f"model.{message}") from err
        raise


def model_key(hparams: dict[str, Any]) -> str:
    """A short name for the network, as in densenet_lit.paper: ``densenet_bc_100_12``,
    ``densenet_40_12``, ``densenet121``; ``densenet_imagenet_6_12_48_48_k48`` for
    ``densenet_imagenet`` (or the ImageNet name of its blocks and growth rate)."""
    arch = hparams.get("arch", CIFAR_ARCH)
    if arch == IMAGENET_ARCH:
        blocks, k = tuple(hparams["block_config"]), hparams["growth_rate"]
        named = [name for name, config in IMAGENET_CONFIGS.items() if config == (k, blocks)]
        return named[0] if named else f"densenet_imagenet_{'_'.join(map(str, blocks))}_k{k}"
    if arch != CIFAR_ARCH:
        return arch
    network = with_cifar_defaults(hparams)
    depth, k = network["depth"], network["growth_rate"]
    bottleneck, compression = network["bottleneck"], network["compression"]
    variant = ("b" if bottleneck else "") + ("c" if compression < 1 else "")
    return f"densenet_{variant}_{depth}_{k}" if variant else f"densenet_{depth}_{k}"
