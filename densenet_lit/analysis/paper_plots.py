"""Error against parameters and against FLOPs: the paper's numbers with your own runs added.

* :func:`plot_figure3` (:mod:`~densenet_lit.analysis.figure3`): the paper's Figure 3, ImageNet
  DenseNets beside ResNets; :func:`plot_figure4` (:mod:`~densenet_lit.analysis.figure4`): its
  Figure 4 on C10+, DenseNet variants, DenseNet-BC beside pre-activation ResNets, and the
  training curves.
* :func:`plot_error_vs_cost` and the grids below: every DenseNet of the paper per benchmark.

The paper's points are its reported errors placed at the parameters and multiply-adds of the
networks as built here (:mod:`densenet_lit.analysis.costs`); your runs are read from their run
directories. ``python -m densenet_lit.analysis.paper_plots runs/ --out figures/`` writes
Figures 3 and 4 as PNG files.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from densenet_lit.analysis.costs import Cost, paper_model_cost
from densenet_lit.analysis.figure3 import plot_figure3
from densenet_lit.analysis.figure4 import plot_figure4
from densenet_lit.analysis.report import ReportRow
from densenet_lit.analysis.runs import collect_local_runs
from densenet_lit.benchmarks import CIFAR10_PLUS, CIFAR100_PLUS, IMAGENET
from densenet_lit.paper import ALL_MODELS, BENCHMARKS, PaperModel, benchmark_of
from densenet_lit.toolcli import UsageError, run_tool

# the benchmarks of the paper's Figure 3 and of Table 2's augmented columns
FIGURE_BENCHMARKS = (CIFAR10_PLUS.key, CIFAR100_PLUS.key, IMAGENET.key)

AXES = {"params": "parameters (millions)", "flops": "FLOPs (GMACs, one image)"}
FAMILY_STYLE = {
    "DenseNet": ("tab:blue", "o"),
    "DenseNet-BC": ("tab:red", "s"),
    "Wide-DenseNet-BC": ("tab:green", "^"),
    "DenseNet-cosine": ("tab:purple", "D"),
}


@dataclass(frozen=True)
class PaperPoint:
    model: PaperModel
    cost: Cost
    error: float

    @property
    def family(self) -> str:
        label = self.model.label
        if label.startswith("Wide-DenseNet-BC"):
            return "Wide-DenseNet-BC"
        if "cosine" in label:
            return "DenseNet-cosine"
        if label.startswith("DenseNet-BC") or self.model.arch != "densenet_cifar":
            return "DenseNet-BC"  # the ImageNet networks are DenseNet-BC
        return "DenseNet"


def paper_points(benchmark: str, models: Sequence[PaperModel] = ALL_MODELS) -> list[PaperPoint]:
    """The paper's models with an error on ``benchmark``, with their parameters and FLOPs
    (one network per architecture: the cosine DenseNet-264 shares the step one's cost)."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark={benchmark!r}: expected one of {', '.join(BENCHMARKS)}.")
    known = benchmark_of(benchmark)
    classes = known.num_classes if known else 10
    points = []
    for m in models:
        if benchmark in m.errors:
            points.append(
                PaperPoint(m, paper_model_cost(m, num_classes=classes), m.errors[benchmark])
            )
    return points


def _x(cost_params: int, cost_macs: int, axis: str) -> float:
    return cost_params / 1e6 if axis == "params" else cost_macs / 1e9


def plot_error_vs_cost(
    benchmark: str,
    axis: str = "params",
    runs: Sequence[ReportRow] = (),
    ax=None,
    annotate: bool = True,
):
    """One panel: the paper's error on ``benchmark`` against ``axis`` ("params" or "flops"),
    one marker style per family, and the ``runs`` on that benchmark as black stars."""
    import matplotlib.pyplot as plt

    if axis not in AXES:
        raise ValueError(f"axis={axis!r}: expected 'params' or 'flops'.")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4), layout="constrained")
    points = paper_points(benchmark)
    for family, (color, marker) in FAMILY_STYLE.items():
        fam = [p for p in points if p.family == family]
        if not fam:
            continue
        fam.sort(key=lambda p: _x(p.cost.params, p.cost.macs, axis))
        xs = [_x(p.cost.params, p.cost.macs, axis) for p in fam]
        ys = [p.error for p in fam]
        ax.plot(xs, ys, color=color, marker=marker, ls="-", lw=1, label=f"{family} (paper)")
        if annotate:
            for p, x, y in zip(fam, xs, ys, strict=True):
                short = p.model.label.replace("DenseNet", "").strip(" -") or p.model.label
                ax.annotate(short, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    mine = [
        r for r in runs
        if r.benchmark == benchmark and r.ours is not None and r.params is not None and r.macs is not None
    ]  # fmt: skip
    if mine:
        xs = [_x(r.params, r.macs, axis) for r in mine]
        ax.scatter(xs, [r.ours for r in mine], marker="*", s=120, color="black", zorder=5,
                   label="your runs")  # fmt: skip
        if annotate:
            for r, x in zip(mine, xs, strict=True):
                ax.annotate(r.experiment, (x, r.ours), fontsize=6, xytext=(3, -9),
                            textcoords="offset points")  # fmt: skip
    ax.set_xlabel(AXES[axis])
    ax.set_ylabel("error (%)")
    ax.set_title(BENCHMARKS[benchmark], fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return ax


def plot_cost_figure(
    axis: str = "params",
    benchmarks: Sequence[str] = FIGURE_BENCHMARKS,
    runs: Sequence[ReportRow] = (),
    path: str | os.PathLike | None = None,
):
    """One panel per benchmark (three per row): error against ``axis`` ("params" or "flops").
    Saves a PNG when ``path`` is given; returns the Figure."""
    import matplotlib.pyplot as plt

    ncols = min(3, len(benchmarks))
    nrows = -(-len(benchmarks) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(5 * ncols, 4.2 * nrows), squeeze=False, layout="constrained"
    )
    flat = list(axes.flat)
    for ax, bench in zip(flat, benchmarks, strict=False):
        plot_error_vs_cost(bench, axis, runs, ax=ax)
    for ax in flat[len(benchmarks) :]:
        ax.set_visible(False)
    what = "parameters" if axis == "params" else "FLOPs"
    fig.suptitle(f"Error against {what}: the paper's DenseNets and your runs", fontsize=11)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


def plot_paper_figure(
    benchmarks: Sequence[str] = FIGURE_BENCHMARKS,
    runs: Sequence[ReportRow] = (),
    path: str | os.PathLike | None = None,
):
    """A grid: one row per benchmark, error against parameters (left) and FLOPs (right).
    Saves a PNG when ``path`` is given; returns the Figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(benchmarks), 2, figsize=(10, 3.8 * len(benchmarks)), squeeze=False, layout="constrained"
    )
    for row, bench in zip(axes, benchmarks, strict=True):
        plot_error_vs_cost(bench, "params", runs, ax=row[0])
        plot_error_vs_cost(bench, "flops", runs, ax=row[1])
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


def write_paper_figures(
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    crops: int = 1,
    evaluations: bool = False,
) -> list[Path]:
    """Figures 3 and 4 with the runs under ``paths`` (none: the paper's numbers only) as PNG
    files in ``out``: ``figure3_imagenet.png`` (``crops``: 1 or 10, the ImageNet column) and
    ``figure4_c10plus.png``. ``evaluations`` also reads validate/test runs of checkpoints
    (e.g. a 10-crop test). Returns the files written."""
    import matplotlib.pyplot as plt

    runs = collect_local_runs(paths, training_only=not evaluations)
    out = Path(out)
    files = [out / "figure3_imagenet.png", out / "figure4_c10plus.png"]
    for fig in (plot_figure3(runs, crops, files[0]), plot_figure4(runs, files[1])):
        plt.close(fig)
    return files


def paper_plots_command(
    runs: Sequence[str] = (),
    out: str | None = None,
    crops: Literal[1, 10] = 1,
    evaluations: bool = False,
) -> int:
    """Draw the paper's Figures 3 (ImageNet) and 4 (C10+) as PNG files, with the runs under
    the given directories added.

    Args:
        runs: roots of runs (e.g. runs/) or run directories; none: paper only
        out: folder for the PNG files (required)
        crops: ImageNet errors of 1 (the paper's Figure 3) or 10 crops
        evaluations: also read validate/test runs of checkpoints (e.g. 10-crop tests)
    """
    if out is None:
        raise UsageError("--out is required: the folder for the PNG files, e.g. --out figures/")
    for f in write_paper_figures(runs, out, crops, evaluations):
        print(f"wrote {f}")
    return 0


def main(args: Sequence[str] | None = None) -> int:
    return run_tool(paper_plots_command, args, positional="runs")


__all__ = [
    "PaperPoint",
    "main",
    "paper_points",
    "plot_cost_figure",
    "plot_error_vs_cost",
    "plot_figure3",
    "plot_figure4",
    "plot_paper_figure",
    "write_paper_figures",
]

if __name__ == "__main__":
    sys.exit(main())
