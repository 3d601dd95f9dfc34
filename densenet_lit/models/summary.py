"""Counting a network's parameters and FLOPs (multiply-adds, as in the paper's Figure 3).

The table of every paper model beside the paper's numbers is
``python -m densenet_lit.analysis.costs`` (``make table``).
"""

from __future__ import annotations

import torch
from torch import nn


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """Multiply-adds of the convolutions and linear layers for one input of ``input_size``
    (C, H, W). Batch norm, ReLU, pooling and concatenation are not counted. Works on any
    device, ``meta`` included (nothing is allocated there)."""
    total = 0

    def conv_hook(module: nn.Conv2d, inputs, output) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, inputs, output) -> None:
        nonlocal total
        total += output.numel() * module.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(torch.zeros(1, *input_size, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total
