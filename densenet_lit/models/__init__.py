"""The DenseNet family: the network, its memory levels, the paper's models by name, weights
and summaries."""

from densenet_lit.models.densenet import DenseBlock, DenseLayer, DenseNet, Transition
from densenet_lit.models.memory_efficient import DEEPEST as DEEPEST_MEMORY_LEVEL
from densenet_lit.models.memory_efficient import LEVELS as MEMORY_LEVELS
from densenet_lit.models.pretrained import load_torchvision_weights
from densenet_lit.models.zoo import (
    IMAGENET_CONFIGS,
    MODEL_NAMES,
    build_model,
    cifar_block_length,
    densenet121,
    densenet161,
    densenet169,
    densenet201,
    densenet264,
    densenet_cifar,
    densenet_imagenet,
)

__all__ = [
    "DEEPEST_MEMORY_LEVEL",
    "IMAGENET_CONFIGS",
    "MEMORY_LEVELS",
    "MODEL_NAMES",
    "DenseBlock",
    "DenseLayer",
    "DenseNet",
    "Transition",
    "build_model",
    "cifar_block_length",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "densenet264",
    "densenet_cifar",
    "densenet_imagenet",
    "load_torchvision_weights",
]
