"""The networks of the paper by name, the CIFAR/SVHN constructor that derives them from depth,
and the ImageNet constructor of any block configuration."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from densenet_lit.models.densenet import DenseNet

# name -> (growth rate k, layers per block); Table 1 of the paper and the tech report (264).
IMAGENET_CONFIGS: dict[str, tuple[int, tuple[int, ...]]] = {
    "densenet121": (32, (6, 12, 24, 16)),
    "densenet169": (32, (6, 12, 32, 32)),
    "densenet201": (32, (6, 12, 48, 32)),
    "densenet161": (48, (6, 12, 36, 24)),
    "densenet264": (32, (6, 12, 64, 48)),
}


def densenet_imagenet(block_config: Sequence[int], growth_rate: int, **kwargs: Any) -> DenseNet:
    """An ImageNet DenseNet-BC with any layers per block and growth rate, as the authors'
    ``-d1 -d2 -d3 -d4`` options build it (liuzhuang13/DenseNet, models/densenet.lua): the
    7x7 stem with 2k channels, bottleneck layers, transitions with theta = 0.5. Keyword
    arguments go to :class:`DenseNet`.

    ``densenet_imagenet((6, 12, 24, 16), 32)`` is DenseNet-121. The README's DenseNet-232
    (k=48) is ``densenet_imagenet((6, 12, 48, 48), 48)``: the blocks of the authors' released
    weights (as converted in mingminzhen/densenet-efficient-model, README.md); its 55.6M
    parameters fit the README's file sizes (426MB, 7.7 bytes per parameter as for the 264s).
    """
    return DenseNet(
        block_config=block_config,
        growth_rate=growth_rate,
        stem_channels=2 * growth_rate,
        imagenet_stem=True,
        bottleneck=True,
        compression=0.5,
        **kwargs,
    )


def _imagenet(name: str, **kwargs: Any) -> DenseNet:
    growth_rate, blocks = IMAGENET_CONFIGS[name]
    return densenet_imagenet(blocks, growth_rate, **kwargs)


def densenet121(**kwargs: Any) -> DenseNet:
    """DenseNet-121 (k=32), 8.0M parameters. Keyword arguments go to :class:`DenseNet`."""
    return _imagenet("densenet121", **kwargs)


def densenet169(**kwargs: Any) -> DenseNet:
    """DenseNet-169 (k=32), 14.1M parameters."""
    return _imagenet("densenet169", **kwargs)


def densenet201(**kwargs: Any) -> DenseNet:
    """DenseNet-201 (k=32), 20.0M parameters."""
    return _imagenet("densenet201", **kwargs)


def densenet161(**kwargs: Any) -> DenseNet:
    """DenseNet-161 (k=48), 28.7M parameters."""
    return _imagenet("densenet161", **kwargs)


def densenet264(**kwargs: Any) -> DenseNet:
    """DenseNet-264 (k=32) of the memory-efficiency technical report."""
    return _imagenet("densenet264", **kwargs)


def cifar_block_length(depth: int, bottleneck: bool) -> int:
    """Layers per dense block of a 3-block CIFAR DenseNet of depth L.

    L counts the stem convolution, the two transition convolutions, the classifier and the
    convolutions of the dense layers (two per bottleneck layer): L = 3*n*c + 4 with c = 2
    for bottleneck layers, 1 otherwise.
    """
    convs_per_layer = 2 if bottleneck else 1
    step = 3 * convs_per_layer
    if not isinstance(depth, int) or isinstance(depth, bool):
        raise ValueError(f"depth={depth!r}: expected an integer depth such as 40 or 100.")
    if depth > 4 and (depth - 4) % step == 0:
        return (depth - 4) // step
    n = max((depth - 4) // step, 1)
    nearest = [4 + step * n, 4 + step * (n + 1)] if depth > 4 + step else [4 + step]
    kind = "DenseNet-B/BC (bottleneck)" if bottleneck else "DenseNet (no bottleneck)"
    other = (
        "the plain DenseNet (bottleneck=False) takes 3*n + 4"
        if bottleneck
        else "DenseNet-BC (bottleneck=True) takes 6*n + 4"
    )
    raise ValueError(
        f"depth={depth}: a 3-block {kind} needs depth = {step}*n + 4 with n layers per "
        f"block. Nearest valid depths: {' or '.join(map(str, nearest))} ({other}; the paper "
        "uses 40, 100, 250 and 190)."
    )


def densenet_cifar(
    depth: int,
    growth_rate: int,
    bottleneck: bool = True,
    compression: float = 0.5,
    drop_rate: float = 0.0,
    num_classes: int = 10,
    memory_efficient: bool = False,
    in_channels: int = 3,
    stem_channels: int | None = None,
) -> DenseNet:
    """The 3-block DenseNet of the CIFAR and SVHN experiments (32x32 inputs).

    ``densenet_cifar(40, 12, bottleneck=False, compression=1)`` is DenseNet (L=40, k=12);
    ``densenet_cifar(100, 12)`` is DenseNet-BC (L=100, k=12); ``densenet_cifar(40, 48)`` is
    Wide-DenseNet-BC (L=40, k=48). The stem has 2k channels for DenseNet-BC and 16 otherwise,
    as in the paper, unless ``stem_channels`` says otherwise.
    """
    n = cifar_block_length(depth, bottleneck)
    if stem_channels is None:
        stem_channels = 2 * growth_rate if bottleneck and compression < 1 else 16
    return DenseNet(
        block_config=(n, n, n),
        growth_rate=growth_rate,
        stem_channels=stem_channels,
        imagenet_stem=False,
        bottleneck=bottleneck,
        compression=compression,
        drop_rate=drop_rate,
        num_classes=num_classes,
        in_channels=in_channels,
        memory_efficient=memory_efficient,
    )


MODELS: dict[str, Callable[..., DenseNet]] = {
    "densenet121": densenet121,
    "densenet169": densenet169,
    "densenet201": densenet201,
    "densenet161": densenet161,
    "densenet264": densenet264,
    "densenet_cifar": densenet_cifar,
    "densenet_imagenet": densenet_imagenet,
}
MODEL_NAMES = tuple(MODELS)

CIFAR_ARCH = "densenet_cifar"
IMAGENET_ARCH = "densenet_imagenet"  # sized by block_config and growth_rate
# The network of densenet_cifar when depth/growth_rate/bottleneck/compression are left None
# (DenseNetModule's defaults): DenseNet-BC (L=100, k=12).
CIFAR_DEFAULTS = {"depth": 100, "growth_rate": 12, "bottleneck": True, "compression": 0.5}


def build_model(arch: str, **kwargs: Any) -> DenseNet:
    """Build a network by name: one of :data:`MODEL_NAMES`."""
    try:
        factory = MODELS[arch]
    except KeyError:
        raise ValueError(
            f"arch={arch!r} is not a known architecture; expected one of {', '.join(MODEL_NAMES)}."
        ) from None
    return factory(**kwargs)
