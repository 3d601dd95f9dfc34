"""The paper's Figure 3: ImageNet top-1 error of DenseNets and ResNets against parameters and
against FLOPs, with your ImageNet runs added.

The paper draws this figure without printing the ResNets' errors; the DenseNets' errors are
those of its Table 3 and the ResNets' those of fb.resnet.torch, the trainer it used (both
cited in :mod:`densenet_lit.paper`). Parameters and multiply-adds are counted on the networks
(ours for DenseNets, torchvision's for ResNets). Figure 3 is single-crop; ``crops=10`` draws
the same figure from the 10-crop columns.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from densenet_lit.analysis.costs import Cost, paper_model_cost, torchvision_cost
from densenet_lit.analysis.runs import Run, benchmark, eval_crops, final_error, run_cost
from densenet_lit.benchmarks import IMAGENET
from densenet_lit.paper import IMAGENET_MODELS, IMAGENET_RESNETS, imagenet_key

AXES = {"params": "parameters (millions)", "flops": "FLOPs (GMACs, one 224x224 crop)"}
STYLE = {"DenseNet": ("tab:blue", "o"), "ResNet": ("tab:orange", "s")}
SOURCE = {"DenseNet": "DenseNets (paper, Table 3)", "ResNet": "ResNets (fb.resnet.torch)"}


@dataclass(frozen=True)
class Point:
    label: str
    cost: Cost
    error: float

    def x(self, axis: str) -> float:
        return self.cost.params / 1e6 if axis == "params" else self.cost.macs / 1e9


def figure3_points(crops: int = 1) -> dict[str, list[Point]]:
    """``{"DenseNet": [...], "ResNet": [...]}``: the networks with a top-1 error tested with
    ``crops`` crops in the paper's Table 3 (DenseNets) or fb.resnet.torch (ResNets)."""
    key = imagenet_key(crops)
    densenets = [
        Point(m.label.split(" (")[0], paper_model_cost(m), m.errors[key])
        for m in IMAGENET_MODELS
        if key in m.errors and m.cited[key][1] == "cvpr"
    ]
    resnets = [Point(r.label, torchvision_cost(r.tv_arch), r.errors[key]) for r in IMAGENET_RESNETS]
    return {"DenseNet": densenets, "ResNet": resnets}


def imagenet_run_points(runs: Sequence[Run], crops: int = 1) -> list[Point]:
    """Your ImageNet runs tested with ``crops`` crops, at the cost of their networks."""
    points = []
    for run in runs:
        if benchmark(run) != IMAGENET.key or eval_crops(run) != crops:
            continue
        error, cost = final_error(run)[0], run_cost(run)
        if error is not None and cost is not None:
            points.append(Point(run.experiment, cost, error))
    return points


def plot_figure3_panel(ax, axis: str, crops: int = 1, runs: Sequence[Run] = ()) -> None:
    """One panel of Figure 3: top-1 error against ``axis`` ("params" or "flops")."""
    if axis not in AXES:
        raise ValueError(f"axis={axis!r}: expected 'params' or 'flops'.")
    for family, points in figure3_points(crops).items():
        color, marker = STYLE[family]
        points = sorted(points, key=lambda p: p.x(axis))
        xs, ys = [p.x(axis) for p in points], [p.error for p in points]
        ax.plot(xs, ys, color=color, marker=marker, lw=1.5, label=SOURCE[family])
        for p, x, y in zip(points, xs, ys, strict=True):
            ax.annotate(p.label, (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    mine = imagenet_run_points(runs, crops)
    if mine:
        ax.scatter([p.x(axis) for p in mine], [p.error for p in mine], marker="*", s=140,
                   color="black", zorder=5, label="your runs")  # fmt: skip
        for p in mine:
            ax.annotate(p.label, (p.x(axis), p.error), fontsize=7, xytext=(4, -10),
                        textcoords="offset points")  # fmt: skip
    ax.set_xlabel(AXES[axis])
    ax.set_ylabel(f"top-1 error (%), {'single-crop' if crops == 1 else '10-crop'}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def plot_figure3(runs: Sequence[Run] = (), crops: int = 1, path: str | os.PathLike | None = None):
    """Figure 3: error against parameters (left) and FLOPs (right). Saves a PNG when ``path``
    is given; returns the Figure."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained")
    plot_figure3_panel(left, "params", crops, runs)
    plot_figure3_panel(right, "flops", crops, runs)
    testing = "single-crop" if crops == 1 else "10-crop"
    fig.suptitle(f"Figure 3: DenseNets and ResNets on ImageNet ({testing} validation error)")
    fig.text(
        0.5,
        -0.02,
        "DenseNets: CVPR paper, Table 3. ResNets: fb.resnet.torch (the trainer the paper used), "
        "counted as torchvision's resnet34/50/101/152.",
        ha="center",
        fontsize=8,
    )
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


__all__ = ["Point", "figure3_points", "imagenet_run_points", "plot_figure3", "plot_figure3_panel"]
