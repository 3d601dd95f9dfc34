"""DenseNet, following Section 3 of Huang et al., "Densely Connected Convolutional Networks".

A dense block's layer l sees the concatenation of every earlier feature map of its block,
``x_l = H_l([x_0, ..., x_{l-1}])``, and adds ``growth_rate`` (k) channels. Transitions
between blocks compress the channels by ``compression`` (theta) and halve the resolution.

The module names (``norm1``, ``conv1``, ``transition1`` ...) follow torchvision's where the
layers are the same, which keeps :func:`~densenet_lit.models.pretrained.load_torchvision_weights`
a renaming of keys. Dropout follows the paper, not torchvision: after every convolution except
the stem's (both convolutions of a bottleneck layer and the transition's 1x1 convolution).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from densenet_lit.benchmarks import IMAGENET_CLASSES
from densenet_lit.models.memory_efficient import bn_relu_conv, memory_level, recomputed


class DenseLayer(nn.Module):
    """H_l: BN-ReLU-Conv3x3, or with a bottleneck BN-ReLU-Conv1x1-BN-ReLU-Conv3x3.

    ``memory_efficient``, a memory level from 0 (``False``) to 3, chooses what the layer
    keeps for the backward pass and what it recomputes instead (see
    :mod:`densenet_lit.models.memory_efficient`). From level 1 (``True``) on, the
    concatenation and the first BN-ReLU are recomputed, so a block's activation memory grows
    linearly with its depth rather than quadratically (Pleiss et al., arXiv 1707.06990).
    """

    def __init__(
        self,
        in_channels: int,
        growth_rate: int,
        bottleneck: bool = True,
        bn_size: int = 4,
        drop_rate: float = 0.0,
        memory_efficient: bool | int = False,
    ) -> None:
        super().__init__()
        first_width = bn_size * growth_rate if bottleneck else growth_rate
        first_kernel = 1 if bottleneck else 3
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(
            in_channels, first_width, first_kernel, padding=first_kernel // 2, bias=False
        )
        self.drop1 = nn.Dropout(drop_rate)
        self.bottleneck = bottleneck
        if bottleneck:
            self.norm2 = nn.BatchNorm2d(first_width)
            self.relu2 = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(first_width, growth_rate, 3, padding=1, bias=False)
            self.drop2 = nn.Dropout(drop_rate)
        self.memory_efficient = memory_level(memory_efficient)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        if (
            self.memory_efficient
            and torch.is_grad_enabled()
            and any(f.requires_grad for f in features)
        ):
            return self.recomputed_forward(features)
        out = self.drop1(self.conv1(self.relu1(self.norm1(torch.cat(features, 1)))))
        if self.bottleneck:
            out = self.drop2(self.conv2(self.relu2(self.norm2(out))))
        return out

    def recomputed_forward(self, features: Sequence[Tensor]) -> Tensor:
        """The same output at memory level 1 or more: the parts the level does not keep for
        backward (each ending at a convolution) run under ``recomputed``."""

        def first_part(*inputs: Tensor) -> tuple[Tensor, ...]:  # concatenation, BN-ReLU-Conv
            return bn_relu_conv(torch.cat(inputs, 1), self.norm1, self.conv1)

        def second_part(x: Tensor) -> tuple[Tensor, ...]:  # the bottleneck's BN-ReLU-Conv
            return bn_relu_conv(x, self.norm2, self.conv2)

        def whole_layer(*inputs: Tensor) -> tuple[Tensor, ...]:
            out, *stats = first_part(*inputs)
            out, *more_stats = second_part(self.drop1(out))
            return out, *stats, *more_stats

        if self.bottleneck and self.memory_efficient >= 3:
            norms, random = [self.norm1, self.norm2], self.drop1.p > 0
            return self.drop2(recomputed(whole_layer, features, norms, random))
        out = self.drop1(recomputed(first_part, features, [self.norm1]))
        if not self.bottleneck:
            return out
        if self.memory_efficient >= 2:
            out = recomputed(second_part, [out], [self.norm2])
        else:
            out = self.conv2(self.relu2(self.norm2(out)))
        return self.drop2(out)


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers; the output is the concatenation of the input and all
    new feature maps: ``in_channels + num_layers * growth_rate`` channels."""

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, **layer_kwargs) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = DenseLayer(in_channels + i * growth_rate, growth_rate, **layer_kwargs)
            self.add_module(f"denselayer{i + 1}", layer)
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-Conv1x1 to ``out_channels``, dropout, then 2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.drop = nn.Dropout(drop_rate)
        self.pool = nn.AvgPool2d(2, stride=2)


class DenseNet(nn.Module):
    """A DenseNet of any variant: plain, B (bottleneck), C (compression) or BC.

    Args:
        block_config: number of layers in each dense block, e.g. ``(6, 12, 24, 16)``.
        growth_rate: k, channels each layer adds.
        stem_channels: output channels of the first convolution (16 or 2k).
        imagenet_stem: 7x7/2 convolution, BN, ReLU and 3x3/2 max pooling (ImageNet) instead
            of a single 3x3 convolution (CIFAR, SVHN).
        bottleneck: use 1x1 bottleneck convolutions (the "B").
        bn_size: bottleneck width in multiples of k (4 in the paper).
        compression: theta, the fraction of channels a transition keeps (the "C" when < 1).
        drop_rate: dropout after every convolution but the first (0.2 in the paper for the
            runs without augmentation).
        num_classes: outputs of the classifier.
        in_channels: channels of the input images.
        memory_efficient: memory level of the dense layers, ``False``/0 to 3: what the
            backward pass recomputes instead of storing (see :class:`DenseLayer`).
    """

    def __init__(
        self,
        block_config: Sequence[int] = (6, 12, 24, 16),
        growth_rate: int = 32,
        stem_channels: int = 64,
        imagenet_stem: bool = True,
        bottleneck: bool = True,
        bn_size: int = 4,
        compression: float = 0.5,
        drop_rate: float = 0.0,
        num_classes: int = IMAGENET_CLASSES,
        in_channels: int = 3,
        memory_efficient: bool | int = False,
    ) -> None:
        super().__init__()
        _check_positive(growth_rate=growth_rate, stem_channels=stem_channels, bn_size=bn_size)
        _check_positive(num_classes=num_classes, in_channels=in_channels)
        if not block_config or any(n < 1 for n in block_config):
            raise ValueError(
                f"block_config={tuple(block_config)!r}: expected one or more blocks, each with at "
                "least one layer, e.g. (6, 12, 24, 16)."
            )
        if not 0.0 < compression <= 1.0:
            raise ValueError(
                f"compression={compression!r}: expected 0 < theta <= 1 (0.5 for DenseNet-BC, "
                "1 for the plain DenseNet)."
            )
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate={drop_rate!r}: expected 0 <= drop_rate < 1 (paper: 0.2).")

        self.block_config = tuple(block_config)
        self.growth_rate = growth_rate
        self.imagenet_stem = imagenet_stem
        self.features = nn.Sequential()
        if imagenet_stem:
            self.features.add_module(
                "conv0", nn.Conv2d(in_channels, stem_channels, 7, stride=2, padding=3, bias=False)
            )
            self.features.add_module("norm0", nn.BatchNorm2d(stem_channels))
            self.features.add_module("relu0", nn.ReLU(inplace=True))
            self.features.add_module("pool0", nn.MaxPool2d(3, stride=2, padding=1))
        else:
            self.features.add_module(
                "conv0", nn.Conv2d(in_channels, stem_channels, 3, padding=1, bias=False)
            )

        channels = stem_channels
        for i, num_layers in enumerate(self.block_config, start=1):
            block = DenseBlock(
                num_layers,
                channels,
                growth_rate,
                bottleneck=bottleneck,
                bn_size=bn_size,
                drop_rate=drop_rate,
                memory_efficient=memory_efficient,
            )
            self.features.add_module(f"denseblock{i}", block)
            channels = block.out_channels
            if i < len(self.block_config):
                out_channels = math.floor(compression * channels)
                self.features.add_module(
                    f"transition{i}", Transition(channels, out_channels, drop_rate)
                )
                channels = out_channels
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.features.add_module("relu5", nn.ReLU(inplace=True))
        self.num_features = channels
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        self.reset_parameters()

    def feature_map_size(self, image_size: int) -> int:
        """Side of the last feature map for ``image_size`` x ``image_size`` inputs; 0 when the
        stem and the transitions' 2x2 poolings halve such images down to nothing."""
        size = image_size
        if self.imagenet_stem:
            size = (size - 1) // 2 + 1  # 7x7 convolution, stride 2, padding 3
            size = (size - 1) // 2 + 1  # 3x3 max pooling, stride 2, padding 1
        for _ in range(len(self.block_config) - 1):
            size //= 2
        return size

    def smallest_image_size(self) -> int:
        """The smallest input side length this network accepts."""
        size = 1
        while self.feature_map_size(size) < 1:
            size += 1
        return size

    def reset_parameters(self) -> None:
        """He initialisation as in the authors' Torch code: N(0, sqrt(2 / (k*k*out)))."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @property
    def memory_efficient(self) -> int:
        """The memory level of the dense layers (the highest, if they differ)."""
        return max(layer.memory_efficient for layer in self._dense_layers())

    @memory_efficient.setter
    def memory_efficient(self, value: bool | int) -> None:
        level = memory_level(value)
        for layer in self._dense_layers():
            layer.memory_efficient = level

    def _dense_layers(self) -> Iterator[DenseLayer]:
        return (m for m in self.modules() if isinstance(m, DenseLayer))

    def block_features(self, x: Tensor) -> list[Tensor]:
        """The feature map at the end of each dense block (before its transition)."""
        outputs = []
        for name, module in self.features.named_children():
            x = module(x)
            if name.startswith("denseblock"):
                outputs.append(x)
        return outputs

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled features before the classifier, shape ``[N, num_features]``."""
        return torch.flatten(self.pool(self.features(x)), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.forward_features(x))


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}: expected a positive integer.")


__all__ = ["DenseBlock", "DenseLayer", "DenseNet", "Transition"]
