"""Reproduction report: finished runs beside the paper's numbers, as a Markdown table.

``python -m densenet_lit.analysis.report runs/ --out report.md`` (``--all`` adds unfinished
runs, ``--evaluations`` the validate/test runs of checkpoints; ``--wandb_project
entity/project`` adds the runs of a W&B project when online).

Columns: experiment (and run id), benchmark (c10, c10+, c100, c100+, svhn, imagenet), the
paper's error for that network on that benchmark, ours, the difference (ours - paper, in
points; positive = worse than the paper), parameters and FLOPs (multiply-adds of one image) of
the network built from the run's config, epochs trained, wall time and training images per
second. How each number is obtained is written under the table.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from densenet_lit.analysis.runs import (
    Run,
    WandbUnavailable,
    benchmark,
    collect_local_runs,
    collect_wandb_runs,
    epochs_trained,
    eval_crops,
    final_error,
    images_per_second,
    input_size,
    is_finished,
    max_epochs,
    paper_error,
    paper_row,
    run_cost,
    wall_time,
)
from densenet_lit.markdown import table_lines
from densenet_lit.toolcli import UsageError, run_tool

NOTES = (
    "- **ours**: the last test error logged (`test`), else the last validation error (`val`).",
    "- **diff**: ours - paper, in percentage points (positive: worse than the paper).",
    "- **paper**, ImageNet: top-1 error of the CVPR paper's Table 3, single-crop, or 10-crop "
    "for runs tested with `data.eval_crops: 10` (`imagenet (10-crop)`); the README's "
    "single-crop error where Table 3 has no row (see `densenet_lit.paper.citation`).",
    "- **params / FLOPs**: counted on the network built from the run's config; GMACs are "
    "multiply-adds of the convolutions and the classifier for one image at the data's test "
    "size, i.e. the paper's FLOPs.",
    "- **wall time**: W&B's runtime or a logged clock if there is one; otherwise from the start "
    "time in the run id (or config.yaml's time) to the last write of metrics.csv or a "
    "checkpoint (start-up, validation and testing included).",
    "- **img/s**: median over epochs of the logged training throughput (all devices); blank "
    "when the run logged none.",
)


@dataclass(frozen=True)
class ReportRow:
    experiment: str
    run_id: str
    benchmark: str | None
    model: str | None  # the paper's label of the network
    paper: float | None
    ours: float | None
    ours_from: str | None  # "test" or "val"
    params: int | None
    macs: int | None
    input_side: int | None
    epochs: int | None
    max_epochs: int | None
    wall_time_s: float | None
    wall_time_from: str | None
    images_per_sec: float | None
    finished: bool
    eval_crops: int = 1  # crops per test image (ImageNet: 1 or 10)

    @property
    def difference(self) -> float | None:
        if self.paper is None or self.ours is None:
            return None
        return self.ours - self.paper


def report_row(run: Run) -> ReportRow:
    """Every number of the report for one run."""
    value, kind = final_error(run)
    cost = run_cost(run)
    seconds, source = wall_time(run)
    row = paper_row(run)
    return ReportRow(
        experiment=run.experiment,
        run_id=run.run_id,
        benchmark=benchmark(run),
        model=row.label if row else None,
        paper=paper_error(run),
        ours=value,
        ours_from=kind,
        params=cost.params if cost else None,
        macs=cost.macs if cost else None,
        input_side=input_size(run)[-1] if cost else None,
        epochs=epochs_trained(run),
        max_epochs=max_epochs(run),
        wall_time_s=seconds,
        wall_time_from=source,
        images_per_sec=images_per_second(run),
        finished=is_finished(run),
        eval_crops=eval_crops(run),
    )


def report_rows(runs: Iterable[Run], include_unfinished: bool = False) -> list[ReportRow]:
    """Report rows of the runs that logged an error; unfinished runs (fewer epochs than
    ``trainer.max_epochs`` and no test error) only with ``include_unfinished``. Sorted by
    experiment, then run id."""
    rows = [report_row(r) for r in runs]
    rows = [r for r in rows if r.ours is not None and (include_unfinished or r.finished)]
    return sorted(rows, key=lambda r: (r.experiment, r.run_id))


def format_count(n: int | None) -> str:
    """``0.77M`` (millions, two decimals) or ``2.5k`` below 100,000."""
    if n is None:
        return ""
    return f"{n / 1e6:.2f}M" if n >= 100_000 else f"{n / 1e3:.1f}k"


def format_duration(seconds: float | None) -> str:
    """``42 s``, ``12.5 min``, ``3.2 h``."""
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_report(rows: Sequence[ReportRow], title: str | None = "Reproduction report") -> str:
    """The Markdown report (table and notes)."""
    lines = []
    if title:
        lines += [f"# {title}", ""]
    if not rows:
        lines.append("No finished runs found.")
        return "\n".join(lines) + "\n"
    header = ["experiment", "run", "benchmark", "model", "paper (%)", "ours (%)", "diff", "params",
              "FLOPs (GMACs)", "epochs", "wall time", "img/s"]  # fmt: skip
    lines += table_lines(header, [_report_cells(r) for r in rows])
    lines += ["", *NOTES]
    return "\n".join(lines) + "\n"


def _report_cells(r: ReportRow) -> list[str]:
    paper = "" if r.paper is None else f"{r.paper:.2f}"
    ours = "" if r.ours is None else f"{r.ours:.2f} ({r.ours_from})"
    diff = "" if r.difference is None else f"{r.difference:+.2f}"
    macs = "" if r.macs is None else f"{r.macs / 1e9:.3g}"
    epochs = "" if r.epochs is None else str(r.epochs)
    if r.max_epochs is not None and r.epochs is not None and r.epochs < r.max_epochs:
        epochs += f"/{r.max_epochs}"
    speed = "" if r.images_per_sec is None else f"{r.images_per_sec:,.0f}"
    bench = (r.benchmark or "") + (f" ({r.eval_crops}-crop)" if r.eval_crops > 1 else "")
    return [r.experiment, r.run_id, bench, r.model or "", paper, ours, diff,
            format_count(r.params), macs, epochs, format_duration(r.wall_time_s), speed]  # fmt: skip


def write_report(
    paths: Iterable[str | os.PathLike],
    out: str | os.PathLike | None = None,
    include_unfinished: bool = False,
    wandb_project: str | None = None,
    wandb_entity: str | None = None,
    evaluations: bool = False,
) -> str:
    """Collect the runs under ``paths`` (and of ``wandb_project`` if named: raises
    :class:`~densenet_lit.analysis.runs.WandbUnavailable` when W&B cannot be read), format the
    report and write it to ``out`` if given. Returns the Markdown text. ``evaluations`` adds
    the local runs of ``validate``/``test`` of a checkpoint (e.g. a 10-crop ImageNet test)."""
    found = collect_local_runs(paths, training_only=not evaluations)
    if wandb_project:
        found += collect_wandb_runs(wandb_project, entity=wandb_entity)
    text = format_report(report_rows(found, include_unfinished))
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text, encoding="utf-8")
    return text


def report_command(
    runs: Sequence[str] = (),
    out: str | None = None,
    all: bool = False,
    evaluations: bool = False,
    wandb_project: str | None = None,
    wandb_entity: str | None = None,
) -> int:
    """Write a Markdown table of finished runs beside the paper's errors.

    Args:
        runs: roots of runs (e.g. runs/) or run directories
        out: Markdown file to write (default: print only)
        all: include unfinished runs (epochs shown as done/max)
        evaluations: include validate/test runs of checkpoints (e.g. 10-crop tests)
        wandb_project: also read this W&B project (entity/project)
        wandb_entity: W&B entity, if not part of wandb_project
    """
    if not runs and not wandb_project:
        raise UsageError("give roots of runs / run directories, or --wandb_project")
    try:
        text = write_report(runs, out, all, wandb_project, wandb_entity, evaluations)
    except WandbUnavailable as err:
        print(f"warning: {err}", file=sys.stderr)
        if not runs:
            return 1
        text = write_report(runs, out, include_unfinished=all, evaluations=evaluations)
    print(text, end="")
    if out:
        print(f"\nreport written to {out}")
    return 0


def main(args: Sequence[str] | None = None) -> int:
    return run_tool(report_command, args, positional="runs")


__all__ = [
    "ReportRow",
    "format_count",
    "format_duration",
    "format_report",
    "report_row",
    "report_rows",
    "write_report",
]

if __name__ == "__main__":
    sys.exit(main())
