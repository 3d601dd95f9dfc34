"""Parameters and FLOPs of networks without allocating or initialising their weights.

The networks are built on PyTorch's ``meta`` device, so the 33M-parameter DenseNet-264 costs a
fraction of a second instead of seconds of He initialisation and a real 224x224 forward pass.
The counts are those of :func:`densenet_lit.models.summary.count_parameters` and
:func:`~densenet_lit.models.summary.count_macs`: trainable parameters, and multiply-adds of the
convolutions and linear layers for one image ("FLOPs" in the paper's Figure 3 sense).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from densenet_lit.benchmarks import CIFAR10, IMAGENET
from densenet_lit.markdown import table
from densenet_lit.models import build_model
from densenet_lit.models.summary import count_macs, count_parameters
from densenet_lit.models.zoo import CIFAR_ARCH
from densenet_lit.paper import ALL_MODELS, PaperModel
from densenet_lit.toolcli import run_tool


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int


def module_cost(model: nn.Module, input_size: tuple[int, int, int]) -> Cost:
    """Parameters and multiply-adds of ``model`` (on any device, ``meta`` included) for one
    input of ``input_size`` (C, H, W)."""
    return Cost(count_parameters(model), count_macs(model, input_size))


def _freeze(kwargs: dict[str, Any]) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()))


@lru_cache(maxsize=256)
def _cached_cost(arch: str, frozen: tuple, input_size: tuple[int, int, int]) -> Cost:
    kwargs = dict(frozen)
    kwargs.pop("memory_efficient", None)
    with torch.device("meta"):
        model = build_model(arch, **kwargs)
    return module_cost(model, input_size)


def network_cost(arch: str, input_size: tuple[int, int, int], **kwargs: Any) -> Cost:
    """Cost of ``build_model(arch, **kwargs)`` at ``input_size`` (C, H, W), built on ``meta``."""
    return _cached_cost(arch, _freeze(kwargs), tuple(input_size))


@lru_cache(maxsize=32)
def torchvision_cost(name: str, input_size: tuple[int, int, int] = (3, 224, 224)) -> Cost:
    """Cost of ``torchvision.models.get_model(name)`` (e.g. ``"resnet50"``, the baselines of the
    paper's Figure 3) at ``input_size``, built on ``meta`` without weights."""
    import torchvision.models

    if name not in torchvision.models.list_models():
        raise ValueError(f"{name!r} is not a torchvision model; e.g. resnet34, resnet50.")
    with torch.device("meta"):
        model = torchvision.models.get_model(name, weights=None)
    return module_cost(model, tuple(input_size))


def paper_input_size(model: PaperModel) -> tuple[int, int, int]:
    """The paper's input for a model: 3x32x32 (CIFAR/SVHN networks) or 3x224x224 (ImageNet)."""
    return (3, 32, 32) if model.arch == "densenet_cifar" else (3, 224, 224)


def paper_model_cost(model: PaperModel, num_classes: int | None = None) -> Cost:
    """Cost of a paper model at its native input size; 10 classes for CIFAR networks (as in the
    paper's parameter counts) and 1000 for ImageNet unless ``num_classes`` says otherwise."""
    if num_classes is None:
        dataset = CIFAR10 if model.arch == CIFAR_ARCH else IMAGENET
        num_classes = dataset.num_classes
    return network_cost(
        model.arch, paper_input_size(model), num_classes=num_classes, **model.model_kwargs
    )


@dataclass(frozen=True)
class PaperCostRow:
    model: PaperModel
    cost: Cost

    @property
    def params_m(self) -> float:
        return self.cost.params / 1e6

    @property
    def gmacs(self) -> float:
        return self.cost.macs / 1e9


def paper_costs(models: tuple[PaperModel, ...] = ALL_MODELS) -> list[PaperCostRow]:
    """Parameters and FLOPs of each of the paper's models, with the paper's row."""
    return [PaperCostRow(m, paper_model_cost(m)) for m in models]


def format_cost_table(rows: list[PaperCostRow]) -> str:
    """Markdown: every paper model's parameters and FLOPs beside the paper's parameter count."""
    header = ["model", "input", "params (ours)", "params (paper)", "GMACs", "errors (paper, %)"]
    return table(header, [_cost_cells(r) for r in rows])


def _cost_cells(r: PaperCostRow) -> list[str]:
    size = paper_input_size(r.model)[-1]
    paper = f"{r.model.params_m:.1f}M" if r.model.params_m is not None else "-"
    errors = ", ".join(f"{b} {e:.2f}" for b, e in r.model.errors.items())
    return [r.model.label, f"{size}x{size}", f"{r.params_m:.2f}M", paper, f"{r.gmacs:.3f}", errors]


def print_cost_table() -> int:
    """Parameters and FLOPs (multiply-adds) of every network of the paper at its native input
    size, beside the paper's parameter counts and errors."""
    print(format_cost_table(paper_costs()))
    print(
        "\nCIFAR rows: 10-class classifier, as in the paper's Table 2. The paper gives FLOPs "
        "only as plots (Figure 3); GMACs are multiply-adds of one image."
    )
    return 0


def main(args: list[str] | None = None) -> int:
    """Print the table of every paper model (``make table``)."""
    return run_tool(print_cost_table, args)


__all__ = [
    "Cost",
    "PaperCostRow",
    "format_cost_table",
    "module_cost",
    "network_cost",
    "paper_costs",
    "paper_input_size",
    "paper_model_cost",
    "torchvision_cost",
]


if __name__ == "__main__":
    raise SystemExit(main())
