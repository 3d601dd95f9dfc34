"""Parameters and FLOPs of every network of the paper, beside the paper's numbers.

``python -m densenet_lit.models.summary`` (or ``make table``) prints the table. FLOPs are
multiply-adds of convolutions and the classifier at the native input size (32x32 for
CIFAR, 224x224 for ImageNet), one image, as in the paper's Figure 3.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch import nn

from densenet_lit.models.zoo import build_model
from densenet_lit.paper import ALL_MODELS, PaperModel


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """Multiply-adds of the convolutions and linear layers for one input of ``input_size``
    (C, H, W). Batch norm, ReLU, pooling and concatenation are not counted."""
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
        model(torch.zeros(1, *input_size))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total


@dataclass(frozen=True)
class SummaryRow:
    label: str
    input_size: int
    params: int
    macs: int
    paper_params_m: float | None
    source: str


def summarize(models: tuple[PaperModel, ...] = ALL_MODELS) -> list[SummaryRow]:
    """Parameters and multiply-adds of each paper model (10 classes for CIFAR, 1000 for ImageNet)."""
    rows = []
    seen = set()
    for pm in models:
        imagenet = pm.arch != "densenet_cifar"
        if (pm.arch, tuple(sorted(pm.model_kwargs.items()))) in seen:
            continue  # the cosine 264 is the same network as the step 264
        seen.add((pm.arch, tuple(sorted(pm.model_kwargs.items()))))
        size = 224 if imagenet else 32
        model = build_model(pm.arch, num_classes=1000 if imagenet else 10, **pm.model_kwargs)
        rows.append(
            SummaryRow(
                pm.label,
                size,
                count_parameters(model),
                count_macs(model, (3, size, size)),
                pm.params_m,
                pm.source,
            )
        )
    return rows


def format_table(rows: list[SummaryRow]) -> str:
    lines = [
        "| model | input | params | params (paper) | GMACs (FLOPs) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        paper = f"{r.paper_params_m:.1f}M" if r.paper_params_m is not None else "-"
        lines.append(
            f"| {r.label} | {r.input_size}x{r.input_size} | {r.params / 1e6:.2f}M "
            f"({r.params:,}) | {paper} | {r.macs / 1e9:.3f} |"
        )
    lines.append("")
    lines.append(
        "Params for CIFAR rows are with the 10-class classifier, as in the paper's Table 2. "
        "The paper gives FLOPs only as plots (Figure 3); GMACs are multiply-adds of one image."
    )
    return "\n".join(lines)


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(args)
    print(format_table(summarize()))


if __name__ == "__main__":
    main()
