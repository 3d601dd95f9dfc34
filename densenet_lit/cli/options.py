"""The ``run.*`` options: what a run is called, where it logs, what it tests at the end, and
which checkpoints it trusts."""

from __future__ import annotations

from typing import Literal

from lightning.pytorch.cli import LightningArgumentParser

WANDB_PROJECT = "densenet-lit"
# How a user vouches for a checkpoint that the safe unpickler refuses.
TRUST_OPT_IN = "give --run.trust_checkpoint true (a warning is printed)"


def add_run_options(parser: LightningArgumentParser) -> None:
    parser.add_argument(
        "--run.name",
        type=str | None,
        default=None,
        help="Experiment name: runs go to <root>/<name>/<id>/. Default: the name of the "
        "last --config file that is not in overlays/ or defaults/.",
    )
    parser.add_argument(
        "--run.wandb", type=bool, default=True, help="Log to W&B (besides the CSV file)."
    )
    parser.add_argument("--run.wandb_project", type=str, default=WANDB_PROJECT)
    parser.add_argument(
        "--run.wandb_log_model",
        type=bool | Literal["all"],
        default=False,
        help="Upload checkpoints to W&B as versions of the artifact model-<W&B run id>: "
        "true = the run's checkpoints when training ends, 'all' = each one as it is saved. "
        "The one with the lowest val/error gets the alias 'best'; W&B gives 'latest' to the "
        "newest upload. Off by default.",
    )
    parser.add_argument(
        "--run.tags", type=list[str], default=[], help="Extra W&B tags for this run."
    )
    parser.add_argument(
        "--run.test_after_fit",
        type=bool,
        default=False,
        help="Run the test set at the end of fit (the paper's final runs).",
    )
    parser.add_argument(
        "--run.test_ckpt",
        type=str | None,
        default=None,
        help="Weights tested after fit: null = those at the end of training, 'best' = the "
        "checkpoint with the lowest validation error (SVHN), or a path.",
    )
    parser.add_argument(
        "--run.trust_checkpoint",
        type=bool,
        default=False,
        help="Load --ckpt_path (and --run.test_ckpt) with the full unpickler, which runs "
        "any code pickled in the file. Only for a checkpoint whose origin you trust that "
        "the safe loader refuses; densenet_lit's own checkpoints never need it.",
    )
