"""Compare runs: validation error per epoch on one plot, and a table of final errors.

``python -m densenet_lit.analysis.compare runs/ --out compare.png`` reads every run under
``runs/`` from its local ``metrics.csv``; ``--wandb_project entity/project`` adds the runs of a
W&B project (needs network and ``wandb login``; without them one message says so and the local
runs are still compared). ``--select`` keeps the runs whose name (``experiment/run-id``)
matches one of the given shell patterns.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from densenet_lit import markdown
from densenet_lit.analysis.runs import (
    Run,
    WandbUnavailable,
    benchmark,
    best_validation,
    collect_local_runs,
    collect_wandb_runs,
    epochs_trained,
    final_error,
    max_epochs,
    paper_error,
    paper_gap,
    paper_number,
    validation_curve,
)
from densenet_lit.toolcli import UsageError, run_tool


def select_runs(runs: Sequence[Run], patterns: Sequence[str] | None) -> list[Run]:
    """Runs whose name (``experiment/run-id``) or experiment matches a shell pattern; all runs
    when ``patterns`` is empty. A pattern without wildcards matches as a substring."""
    if not patterns:
        return list(runs)

    def matches(run: Run, pattern: str) -> bool:
        if not any(c in pattern for c in "*?["):
            return pattern in run.name
        return fnmatch.fnmatch(run.name, pattern) or fnmatch.fnmatch(run.experiment, pattern)

    return [r for r in runs if any(matches(r, p) for p in patterns)]


def collect_runs(
    paths: Iterable[str | os.PathLike] = (),
    wandb_project: str | None = None,
    wandb_entity: str | None = None,
    select: Sequence[str] | None = None,
) -> list[Run]:
    """Local runs under ``paths`` plus, when ``wandb_project`` is named, that project's W&B
    runs (raises :class:`~densenet_lit.analysis.runs.WandbUnavailable` when W&B cannot be read),
    filtered by ``select`` patterns."""
    runs = collect_local_runs(paths)
    if wandb_project:
        runs += collect_wandb_runs(wandb_project, entity=wandb_entity)
    return select_runs(runs, select)


@dataclass(frozen=True)
class FinalErrors:
    name: str
    source: str
    benchmark: str | None
    epochs: int | None
    max_epochs: int | None
    last_val: float | None
    best_val: float | None
    best_val_epoch: int | None  # 1-based
    test: float | None
    paper: float | None
    gap: float | None = None  # ours (test, else last validation) - paper
    paper_source: str | None = None  # where the paper's number was read, or "none: <why>"


def final_errors(runs: Sequence[Run]) -> list[FinalErrors]:
    """Final numbers of each run: last and best validation error, test error, the paper's."""
    rows = []
    for run in runs:
        curve = validation_curve(run)
        best, best_epoch = best_validation(run)
        value, kind = final_error(run)
        paper = paper_number(run)
        rows.append(
            FinalErrors(
                name=run.name,
                source=run.source,
                benchmark=benchmark(run),
                epochs=epochs_trained(run),
                max_epochs=max_epochs(run),
                last_val=curve[-1][1] if curve else None,
                best_val=best,
                best_val_epoch=None if best_epoch is None else best_epoch + 1,
                test=value if kind == "test" else None,
                paper=paper.error,
                gap=paper_gap(run),
                paper_source=paper.source,
            )
        )
    return rows


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _gap(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def format_final_errors(rows: Sequence[FinalErrors]) -> str:
    """Markdown table of :func:`final_errors` (errors in %)."""
    header = ["run", "source", "benchmark", "epochs", "last val error", "best val error (epoch)",
              "test error", "paper", "gap"]  # fmt: skip
    return markdown.table(header, [_final_cells(r) for r in rows])


def _final_cells(r: FinalErrors) -> list[str]:
    epochs = "-" if r.epochs is None else str(r.epochs)
    if r.max_epochs is not None and r.epochs is not None and r.epochs < r.max_epochs:
        epochs += f"/{r.max_epochs}"
    best = _fmt(r.best_val) + ("" if r.best_val_epoch is None else f" ({r.best_val_epoch})")
    return [r.name, r.source, r.benchmark or "-", epochs, _fmt(r.last_val), best, _fmt(r.test),
            _fmt(r.paper), _gap(r.gap)]  # fmt: skip


def plot_validation_error(
    runs: Sequence[Run],
    path: str | os.PathLike | None = None,
    ax=None,
    logy: bool = False,
    title: str = "Validation error per epoch",
):
    """Validation error (%) against epoch (1-based), one line per run; the paper's error of the
    run's model and benchmark as a dotted line of the same colour when known. Saves a PNG when
    ``path`` is given; returns the Figure."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(7.5, 4.5), layout="constrained")
    else:
        fig = ax.figure
    drawn = 0
    for run in runs:
        curve = validation_curve(run)
        if not curve:
            continue
        epochs = [e + 1 for e, _ in curve]
        errors = [v for _, v in curve]
        (line,) = ax.plot(epochs, errors, marker="o" if len(curve) < 30 else None, ms=3,
                          label=run.name)  # fmt: skip
        paper = paper_error(run)
        if paper is not None:
            ax.axhline(paper, color=line.get_color(), ls=":", lw=1)
        drawn += 1
    if drawn == 0:
        ax.text(0.5, 0.5, "no run logged a validation error", ha="center", va="center",
                transform=ax.transAxes)  # fmt: skip
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation error (%)")
    if logy:
        ax.set_yscale("log")
    ax.set_title(title + (" (dotted: the paper's test error)" if drawn else ""), fontsize=10)
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(fontsize=7, loc="upper right")
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig


def compare_command(
    paths: Sequence[str] = (),
    wandb_project: str | None = None,
    wandb_entity: str | None = None,
    select: list[str] | str | None = None,
    out: str = "compare.png",
    logy: bool = False,
    table: str | None = None,
) -> int:
    """Plot validation error per epoch of several runs and print their final errors.

    Args:
        paths: run directories or roots of runs (e.g. runs/)
        wandb_project: also read this W&B project (entity/project)
        wandb_entity: W&B entity, if not part of wandb_project
        select: keep runs whose experiment/run-id matches a pattern (one, or a list)
        out: PNG to write
        logy: logarithmic error axis
        table: also write the table (Markdown) to this file
    """
    if not paths and not wandb_project:
        raise UsageError("give run directories / roots of runs, or --wandb_project")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = collect_local_runs(paths)
    if wandb_project:
        try:
            runs += collect_wandb_runs(wandb_project, entity=wandb_entity)
        except WandbUnavailable as err:
            print(f"warning: {err}", file=sys.stderr)
            if not runs:
                return 1
    runs = select_runs(runs, [select] if isinstance(select, str) else select)
    if not runs:
        print("error: no runs found (no metrics.csv under the given paths).", file=sys.stderr)
        return 1
    text = format_final_errors(final_errors(runs))
    print(text)
    if table:
        Path(table).write_text(text + "\n", encoding="utf-8")
    fig = plot_validation_error(runs, out, logy=logy)
    plt.close(fig)
    print(f"\nplot written to {out}")
    return 0


def main(args: Sequence[str] | None = None) -> int:
    return run_tool(compare_command, args, positional="paths")


__all__ = [
    "FinalErrors",
    "collect_runs",
    "final_errors",
    "format_final_errors",
    "plot_validation_error",
    "select_runs",
]

if __name__ == "__main__":
    sys.exit(main())
