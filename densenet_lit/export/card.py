"""The model card (``MODEL_CARD.md``) written beside the exported files: what the network is,
what it expects, how well it did (beside the paper's number for it, where there is one), its
size and cost, and the configuration it was trained with."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from densenet_lit.analysis import derived
from densenet_lit.analysis.paper_match import NO_NUMBER
from densenet_lit.export.source import Trained, jsonable, public
from densenet_lit.markdown import table

FILENAME = "MODEL_CARD.md"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} %"


def shown(value: object) -> str:
    return "-" if value is None else str(value)


def paper_line(trained: Trained) -> str:
    """The paper's error for this network on this benchmark and where it is printed, or why
    there is none (:func:`densenet_lit.analysis.derived.paper_number`)."""
    number = derived.paper_number(trained.run)
    if number.error is None:
        return f"The paper's number: none ({number.source.removeprefix(NO_NUMBER)})."
    return f"The paper's number: {number.error:.2f} % error ({number.source})."


def card(trained: Trained, files: dict[str, str]) -> str:
    """The card's Markdown; ``files``: format -> file name."""
    meta = trained.metadata
    cost = derived.run_cost(trained.run)
    size = "x".join(map(str, meta["input_size"]))
    lines = [
        f"# {meta['key']} ({meta['dataset'] or 'unknown data set'})",
        "",
        f"Exported by densenet_lit {meta['densenet_lit_version']} from `{meta['checkpoint']}` "
        f"(epoch {meta['epoch']}, step {meta['global_step']}, {meta['weights']} weights).",
        "",
        table(["format", "file"], [(fmt, f"`{name}`") for fmt, name in files.items()]),
        "",
        "## Network",
        "",
        f"`{meta['builder']}` with `arguments` = `{json.dumps(meta['arguments'])}`.",
    ]
    if meta["torchvision"]:
        tv = meta["torchvision"]
        args = ", ".join(f"{k}={v!r}" for k, v in tv["arguments"].items())
        lines += ["", f"torchvision: `torchvision.models.{tv['builder']}({args})`."]
    lines += [
        "",
        "## Input",
        "",
        table(
            ["input (C x H x W)", "mean (0-1 pixels)", "std", "eval resize", "eval crop"],
            [
                [size, *(shown(meta[k]) for k in ("mean", "std", "eval_resize", "eval_crop"))],
            ],
        ),
        "",
        f"Classes ({meta['num_classes']}): "
        + (", ".join(meta["class_names"]) if meta["class_names"] else "names not recorded"),
        "",
        "## Results",
        "",
        table(
            ["best val/error", "test error", "parameters", "FLOPs (multiply-adds)"],
            [
                (
                    percent(meta["best_val_error"]),
                    percent(meta["test_error"]),
                    "-" if cost is None else f"{cost.params:,}",
                    "-" if cost is None else f"{cost.macs:,} at {size}",
                )
            ],
        ),
        "",
        paper_line(trained),
        "",
        "## Configuration",
        "",
        "```yaml",
        yaml.safe_dump(jsonable(public(trained.run.hparams)), sort_keys=True).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def write(trained: Trained, path: Path, files: dict[str, str]) -> None:
    path.write_text(card(trained, files), encoding="utf-8")
