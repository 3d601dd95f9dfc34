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
from densenet_lit.models.zoo import CIFAR_ARCH, CIFAR_DEFAULTS, MODEL_NAMES, MODELS, build_model

# Arguments that only change how the network runs, not what it computes (or which weights it
# holds): they may differ between a checkpoint and the run that resumes or evaluates it.
RUNTIME_ARGS = frozenset({"memory_efficient", "channels_last", "compile", "pretrained"})
# Arguments of the CIFAR constructor that an ImageNet name (densenet121, ...) fixes itself.
CIFAR_ONLY_ARGS = tuple(CIFAR_DEFAULTS)
# Arguments of DenseNet that an ImageNet name fixes.
IMAGENET_FIXED = frozenset(
    {"block_config", "growth_rate", "stem_channels", "imagenet_stem", "bottleneck", "compression"}
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
    return accepted - RUNTIME_ARGS


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
    if arch != CIFAR_ARCH:
        given = {k: args[k] for k in CIFAR_ONLY_ARGS if args.get(k) is not None}
        if given:
            keys = ", ".join(f"model.{k}={v}" for k, v in given.items())
            raise ValueError(
                f"model.arch={arch!r} fixes its depth, growth rate and block structure, so "
                f"{keys} contradicts it. Remove {'it' if len(given) == 1 else 'them'}, or use "
                f"model.arch={CIFAR_ARCH!r} for a network sized by depth and growth rate."
            )
    accepted = factory_args(arch)
    kwargs = {k: v for k, v in args.items() if k in accepted and v is not None}
    if arch == CIFAR_ARCH:
        kwargs = {**CIFAR_DEFAULTS, **kwargs}
    return NetworkSpec(arch, kwargs)
