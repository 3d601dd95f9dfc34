"""Which network a set of model arguments means: the one place that decides.

``DenseNetModule``'s arguments (from a config) and a checkpoint's ``hyper_parameters`` both
go through :func:`network_spec`, which returns the architecture, the arguments of its
factory and the network's short key (``densenet_bc_100_12``, ``densenet121``). The module
builds its network from it, the CLI compares a config with a checkpoint through it, and the
analysis tools rebuild trained networks and name runs with it.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from densenet_lit.models.densenet import DenseNet
from densenet_lit.models.zoo import (
    CIFAR_ARCH,
    CIFAR_DEFAULTS,
    IMAGENET_ARCH,
    IMAGENET_CONFIGS,
    MODEL_NAMES,
    MODELS,
    build_model,
)

# Arguments that only change how the network runs, not what it computes (or which weights it
# holds): they may differ between a checkpoint and the run that resumes or evaluates it.
RUNTIME_ARGS = frozenset({"memory_efficient", "channels_last", "compile", "pretrained"})
# The arguments that size a network; which of them an architecture takes is fixed below.
SIZE_ARGS = ("depth", "growth_rate", "bottleneck", "compression", "block_config")
# Arguments of DenseNet that an ImageNet name fixes (densenet_imagenet takes two of them).
IMAGENET_FIXED = frozenset(
    {"block_config", "growth_rate", "stem_channels", "imagenet_stem", "bottleneck", "compression"}
)
# Why an architecture rejects a size argument, and what to use instead.
NAMED = (
    "fixes its depth, growth rate and block structure",
    f"or use model.arch={CIFAR_ARCH!r} for a network sized by depth and growth rate, or "
    f"model.arch={IMAGENET_ARCH!r} for an ImageNet network of any blocks and growth rate",
)
IMAGENET_SIZED = (
    "is a DenseNet-BC sized by model.block_config and model.growth_rate",
    f"or use model.arch={CIFAR_ARCH!r} for a network sized by depth",
)
CIFAR_SIZED = (
    "has three dense blocks whose length follows from model.depth",
    f"or use model.arch={IMAGENET_ARCH!r} for an ImageNet network of any blocks",
)


@dataclass(frozen=True)
class NetworkSpec:
    """A network by architecture and the arguments of its factory (structure only)."""

    arch: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """A short name, as in densenet_lit.paper: ``densenet_bc_100_12``, ``densenet_40_12``,
        ``densenet121``."""
        if self.arch == IMAGENET_ARCH:
            blocks, k = tuple(self.kwargs["block_config"]), self.kwargs["growth_rate"]
            named = [name for name, config in IMAGENET_CONFIGS.items() if config == (k, blocks)]
            return named[0] if named else f"densenet_imagenet_{'_'.join(map(str, blocks))}_k{k}"
        if self.arch != CIFAR_ARCH:
            return self.arch
        depth, k = self.kwargs["depth"], self.kwargs["growth_rate"]
        variant = ("b" if self.kwargs["bottleneck"] else "") + (
            "c" if self.kwargs["compression"] < 1 else ""
        )
        return f"densenet_{variant}_{depth}_{k}" if variant else f"densenet_{depth}_{k}"

    def build(self, **runtime: Any) -> DenseNet:
        """The network, with runtime options such as ``memory_efficient``; a bad value is a
        ValueError naming the config key (``model.depth=...``)."""
        try:
            return build_model(self.arch, **self.kwargs, **runtime)
        except ValueError as err:
            message = str(err)
            if re.match(r"[a-z_]+=", message):
                raise ValueError(f"model.{message}") from err
            raise


def factory_args(arch: str) -> set[str]:
    """The structural arguments the factory of ``arch`` takes."""
    if arch == CIFAR_ARCH:
        accepted = set(inspect.signature(MODELS[arch]).parameters)
    else:  # the ImageNet factories fix the structure and pass the rest on to DenseNet
        accepted = set(inspect.signature(DenseNet).parameters) - IMAGENET_FIXED
        if arch == IMAGENET_ARCH:  # ... but for the blocks and growth rate of this one
            accepted |= {"block_config", "growth_rate"}
    return accepted - RUNTIME_ARGS


def is_network_arg(name: str, archs: tuple[str, ...] = (CIFAR_ARCH,)) -> bool:
    """Whether module argument ``name`` describes the network of any of ``archs`` (``arch``
    itself or a structural argument of its factory); every other module argument (learning
    rate, schedule, metrics, ...) is the recipe, and runtime options are neither."""
    if name == "arch":
        return True
    return any(name in factory_args(arch) for arch in archs if arch in MODELS)


def network_spec(args: Mapping[str, Any]) -> NetworkSpec:
    """The network that ``args`` (module arguments or a checkpoint's hyperparameters) mean.

    ``arch`` defaults to the CIFAR network, whose ``None`` arguments take the defaults
    (DenseNet-BC, L=100, k=12). Arguments the factory does not take (learning rate, schedule,
    ...) and runtime options are left out. A CIFAR-only argument given with an ImageNet name
    is a ValueError, as is an unknown ``arch``.
    """
    arch = args.get("arch") or CIFAR_ARCH
    if arch not in MODELS:
        raise ValueError(
            f"model.arch={arch!r} is not a known architecture; expected one of "
            f"{', '.join(MODEL_NAMES)}."
        )
    given = {k: args[k] for k in SIZE_ARGS if args.get(k) is not None}
    if arch == IMAGENET_ARCH:
        reject(arch, given, ("depth", "bottleneck", "compression"), IMAGENET_SIZED)
        missing = [f"model.{k}" for k in ("block_config", "growth_rate") if k not in given]
        if missing:
            raise ValueError(
                f"model.arch={arch!r} needs {' and '.join(missing)}: the layers of each dense "
                "block and the growth rate k, e.g. block_config [6, 12, 48, 48] and "
                "growth_rate 48 for DenseNet-232."
            )
    elif arch == CIFAR_ARCH:
        reject(arch, given, ("block_config",), CIFAR_SIZED)
    else:
        reject(arch, given, SIZE_ARGS, NAMED)
    accepted = factory_args(arch)
    kwargs = {k: v for k, v in args.items() if k in accepted and v is not None}
    if arch == CIFAR_ARCH:
        kwargs = {**CIFAR_DEFAULTS, **kwargs}
    return NetworkSpec(arch, kwargs)


def reject(arch: str, given: dict[str, Any], names: tuple[str, ...], why: tuple[str, str]) -> None:
    """A clear error when any of ``names`` was given for ``arch``, which ``why`` explains."""
    wrong = {k: list(v) if isinstance(v, tuple) else v for k, v in given.items() if k in names}
    if wrong:
        keys = ", ".join(f"model.{k}={v}" for k, v in wrong.items())
        raise ValueError(
            f"model.arch={arch!r} {why[0]}, so {keys} contradicts it. Remove "
            f"{'it' if len(wrong) == 1 else 'them'}, {why[1]}."
        )
