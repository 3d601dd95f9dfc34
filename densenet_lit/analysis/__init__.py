"""Analysis of trained DenseNets and of training runs.

* :mod:`~densenet_lit.analysis.feature_reuse`: how much each layer reads each earlier layer
  (the paper's Figure 5), from a checkpoint or a model; heat maps.
* :mod:`~densenet_lit.analysis.compare`: validation error per epoch of several runs (local
  ``metrics.csv`` files or a W&B project) and a table of their final errors.
* :mod:`~densenet_lit.analysis.report`: the reproduction report, runs beside the paper's table.
* :mod:`~densenet_lit.analysis.paper_plots`: error against parameters and FLOPs, and the
  paper's Figures 3 and 4 (:mod:`~densenet_lit.analysis.figure3`,
  :mod:`~densenet_lit.analysis.figure4`) with their baselines.
* :mod:`~densenet_lit.analysis.runs`, :mod:`~densenet_lit.analysis.checkpoint`,
  :mod:`~densenet_lit.analysis.costs`: reading runs and checkpoints, counting costs.

Each of feature_reuse, compare, report and paper_plots is also a command:
``python -m densenet_lit.analysis.<name> --help``. The names below are imported lazily, so
that running a submodule with ``-m`` does not import it twice.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CheckpointError": "checkpoint",
    "UntrustedCheckpointError": "checkpoint",
    "find_checkpoint": "checkpoint",
    "load_model": "checkpoint",
    "collect_runs": "compare",
    "final_errors": "compare",
    "format_final_errors": "compare",
    "plot_validation_error": "compare",
    "Cost": "costs",
    "network_cost": "costs",
    "paper_costs": "costs",
    "format_cost_table": "costs",
    "BlockReuse": "feature_reuse",
    "compute_feature_reuse": "feature_reuse",
    "format_matrices": "feature_reuse",
    "plot_feature_reuse": "feature_reuse",
    "paper_points": "paper_plots",
    "plot_error_vs_cost": "paper_plots",
    "plot_paper_figure": "paper_plots",
    "plot_cost_figure": "paper_plots",
    "plot_figure3": "paper_plots",
    "plot_figure4": "paper_plots",
    "write_paper_figures": "paper_plots",
    "format_report": "report",
    "report_rows": "report",
    "write_report": "report",
    "Run": "runs",
    "WandbUnavailable": "runs",
    "collect_local_runs": "runs",
    "collect_wandb_runs": "runs",
    "load_run": "runs",
}

# Package-level names that differ from the function's (the submodule feature_reuse shadows
# its own function at package level).
_ALIASES = {"compute_feature_reuse": "feature_reuse"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'densenet_lit.analysis' has no attribute {name!r}")
    attr = _ALIASES.get(name, name)
    value = getattr(importlib.import_module(f"densenet_lit.analysis.{module}"), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
