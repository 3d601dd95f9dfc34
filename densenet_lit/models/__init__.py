"""The DenseNet family: the network, the paper's models by name, weights and summaries."""

from densenet_lit.models.densenet import DenseBlock, DenseLayer, DenseNet, Transition
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
)

__all__ = [
    "IMAGENET_CONFIGS",
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
    "load_torchvision_weights",
]
