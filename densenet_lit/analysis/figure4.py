"""The paper's Figure 4, on C10+: left, the error of DenseNet, -B, -C and -BC against their
parameters; middle, DenseNet-BC against pre-activation ResNets; right, training and test curves
of DenseNet-BC (L=100, k=12) beside the 1001-layer pre-activation ResNet.

The paper draws these panels without printing their numbers; what it prints is Table 2. So the
paper's points here are Table 2's (C10+ errors; DenseNet parameters counted on our networks,
the ResNets' as printed), the right panel's paper numbers are the two final test errors, and
the sweeps and curves are those of your runs (``experiments/sweep_c10plus/`` reproduces the
left panel's sweep). Nothing is read off the paper's plots.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from densenet_lit.analysis.costs import paper_model_cost
from densenet_lit.analysis.runs import (
    Run,
    benchmark,
    final_error,
    network_args,
    paper_row,
    run_cost,
    validation_curve,
)
from densenet_lit.benchmarks import CIFAR10_PLUS
from densenet_lit.metric_names import TRAIN_LOSS
from densenet_lit.paper import CIFAR_MODELS, PREACT_RESNETS, paper_model

BENCH = CIFAR10_PLUS.key
FAMILY_STYLE = {
    "DenseNet": ("tab:blue", "o"),
    "DenseNet-B": ("tab:green", "^"),
    "DenseNet-C": ("tab:purple", "D"),
    "DenseNet-BC": ("tab:red", "s"),
}
RESNET_STYLE = ("tab:orange", "v")
CURVE_KEYS = ("densenet_bc_100_12",)  # the DenseNet of Figure 4 (right)


@dataclass(frozen=True)
class Point:
    family: str
    label: str  # e.g. "L=100"
    params: float  # millions
    error: float


def cifar_family(kwargs: dict[str, Any]) -> str:
    """DenseNet, DenseNet-B (bottleneck), DenseNet-C (compression < 1) or DenseNet-BC."""
    bottleneck = bool(kwargs.get("bottleneck"))
    compressed = float(kwargs.get("compression", 1.0)) < 1.0
    return (
        "DenseNet" + ("-" if bottleneck or compressed else "") + "B" * bottleneck + "C" * compressed
    )


def paper_points(growth_rate: int | None = 12) -> list[Point]:
    """Table 2's DenseNets with a C10+ error (of growth rate ``growth_rate``; None: all); the
    README's Wide-DenseNet-BCs are not the paper's and are left out."""
    points = []
    for m in CIFAR_MODELS:
        kw = m.model_kwargs
        in_table2 = BENCH in m.errors and m.cited[BENCH] == ("Table 2", "arxiv")
        if in_table2 and growth_rate in (None, kw["growth_rate"]):
            label = f"L={kw['depth']}" + ("" if growth_rate else f", k={kw['growth_rate']}")
            params = paper_model_cost(m).params / 1e6
            points.append(Point(cifar_family(kw), label, params, m.errors[BENCH]))
    return points


def resnet_points() -> list[Point]:
    """Table 2's pre-activation ResNets on C10+, at their printed parameter counts."""
    return [
        Point("ResNet", "L=" + r.label.rsplit("-", 1)[-1], r.params_m, r.errors[BENCH])
        for r in PREACT_RESNETS
    ]


def run_points(runs: Sequence[Run]) -> list[Point]:
    """Your finished C10+ runs of CIFAR DenseNets: family, depth, parameters, final error."""
    points = []
    for run in runs:
        spec = network_args(run) if benchmark(run) == BENCH else None
        error, cost = final_error(run)[0], run_cost(run)
        if spec is None or spec[0] != "densenet_cifar" or error is None or cost is None:
            continue
        kw = spec[1]
        label = f"L={kw['depth']}" + ("" if kw["growth_rate"] == 12 else f", k={kw['growth_rate']}")
        points.append(Point(cifar_family(kw), label, cost.params / 1e6, error))
    return points


def _draw(ax, points: list[Point], color: str, marker: str, label: str, paper: bool) -> None:
    points = sorted(points, key=lambda p: p.params)
    if not points:
        return
    xs, ys = [p.params for p in points], [p.error for p in points]
    if paper:
        ax.plot(xs, ys, ls="none", marker=marker, ms=8, mfc="none", mec=color, mew=1.5, label=label)
    else:
        ax.plot(xs, ys, ls="-", lw=1.5, marker=marker, ms=6, color=color, label=label)
    for p in points:
        ax.annotate(p.label, (p.params, p.error), fontsize=6, xytext=(4, 3 if paper else -9),
                    textcoords="offset points", color=color)  # fmt: skip


def _finish(ax, title: str) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xlabel("parameters (millions, log scale)")
    ax.set_ylabel("C10+ test error (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def plot_variants(ax, runs: Sequence[Run] = ()) -> None:
    """Figure 4, left: every DenseNet variant (k=12), Table 2 (hollow) and your runs (lines)."""
    mine = run_points(runs)
    for family, (color, marker) in FAMILY_STYLE.items():
        paper = [p for p in paper_points(12) if p.family == family]
        _draw(ax, paper, color, marker, f"{family} (Table 2)", paper=True)
        _draw(
            ax, [p for p in mine if p.family == family], color, marker, f"{family} (yours)", False
        )
    _finish(ax, "DenseNet variants (k=12)")


def plot_bc_vs_resnets(ax, runs: Sequence[Run] = ()) -> None:
    """Figure 4, middle: DenseNet-BC (Table 2 and your runs) against pre-activation ResNets."""
    color, marker = FAMILY_STYLE["DenseNet-BC"]
    paper = [p for p in paper_points(None) if p.family == "DenseNet-BC"]
    _draw(ax, paper, color, marker, "DenseNet-BC (Table 2)", paper=True)
    mine = [p for p in run_points(runs) if p.family == "DenseNet-BC"]
    _draw(ax, mine, color, marker, "DenseNet-BC (yours)", paper=False)
    r_color, r_marker = RESNET_STYLE
    _draw(ax, resnet_points(), r_color, r_marker, "pre-act. ResNet (Table 2)", paper=True)
    _finish(ax, "DenseNet-BC and pre-activation ResNets")


def curve_runs(runs: Sequence[Run], keys: Sequence[str] = CURVE_KEYS) -> list[Run]:
    """Your C10+ runs of the networks ``keys`` (paper model keys) that logged curves."""
    return [
        r
        for r in runs
        if benchmark(r) == BENCH
        and (row := paper_row(r)) is not None
        and row.key in keys
        and validation_curve(r)
    ]


def plot_training_curves(ax, runs: Sequence[Run] = (), keys: Sequence[str] = CURVE_KEYS) -> None:
    """Figure 4, right: your runs' test error (solid, left axis) and training loss (dashed,
    right axis) per epoch; the paper's final test errors of DenseNet-BC (L=100, k=12) and the
    1001-layer pre-activation ResNet (Table 2) as horizontal lines."""
    from matplotlib.ticker import MaxNLocator

    bc, resnet = paper_model("densenet_bc_100_12"), PREACT_RESNETS[-1]
    ax.axhline(bc.errors[BENCH], color="tab:red", ls=":", lw=1.2,
               label=f"DenseNet-BC (L=100, k=12): {bc.errors[BENCH]}% (Table 2)")  # fmt: skip
    ax.axhline(resnet.errors[BENCH], color=RESNET_STYLE[0], ls=":", lw=1.2,
               label=f"{resnet.label}: {resnet.errors[BENCH]}% (Table 2)")  # fmt: skip
    loss_ax = ax.twinx()
    chosen = curve_runs(runs, keys)
    for i, run in enumerate(chosen):
        color = f"C{(i + 2) % 10}"
        epochs, errors = zip(*validation_curve(run), strict=True)
        ax.plot(
            [e + 1 for e in epochs], errors, color=color, lw=1.2, label=f"{run.name}: test error"
        )
        loss = run.series(TRAIN_LOSS)
        if loss:
            le, lv = zip(*loss, strict=True)
            loss_ax.plot(
                [e + 1 for e in le],
                lv,
                color=color,
                ls="--",
                lw=1,
                label=f"{run.name}: training loss",
            )
    if not chosen:
        ax.text(0.5, 0.55, "curves: give runs of\n" + ", ".join(keys) + " on C10+",
                transform=ax.transAxes, ha="center", fontsize=8, color="gray")  # fmt: skip
    ax.set_ylim(0, 20)
    if not chosen:
        ax.set_xlim(0, 300)  # the paper's CIFAR schedule (section 4.2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test error (%), solid")
    loss_ax.set_ylabel("training loss, dashed")
    ax.set_title("Training and test curves (C10+)", fontsize=10)
    ax.grid(True, alpha=0.3)
    lines = ax.get_legend_handles_labels()
    more = loss_ax.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=6, loc="upper right")


def plot_figure4(
    runs: Sequence[Run] = (),
    path: str | os.PathLike | None = None,
    curve_keys: Sequence[str] = CURVE_KEYS,
):
    """Figure 4's three panels. Saves a PNG when ``path`` is given; returns the Figure."""
    import matplotlib.pyplot as plt

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.6), layout="constrained")
    plot_variants(left, runs)
    plot_bc_vs_resnets(middle, runs)
    plot_training_curves(right, runs, curve_keys)
    fig.suptitle("Figure 4 (C10+): the paper's Table 2 numbers (hollow, dotted) and your runs")
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


__all__ = [
    "Point",
    "cifar_family",
    "curve_runs",
    "paper_points",
    "plot_bc_vs_resnets",
    "plot_figure4",
    "plot_training_curves",
    "plot_variants",
    "resnet_points",
    "run_points",
]
