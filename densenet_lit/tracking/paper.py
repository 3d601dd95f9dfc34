"""The paper's number beside the run in W&B: the network's parameters and FLOPs, the paper's
error for this network, benchmark and evaluation (and where it was read), and the gap.

At setup the W&B config and summary get the network's exact counts and the paper's number
(:mod:`densenet_lit.analysis.paper_match` chooses it and names the fields); at the end of
fit, validate and test the summary gets our error of that stage (``val/error`` after fit and
validate, ``test/error`` after test) and the gap, ours - paper. So the runs table shows ours
beside the paper's, and a W&B scatter of an error against ``network/params`` or
``network/flops`` is the paper's Figure 3. A run without a paper number says why in
``paper/source``.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from densenet_lit.analysis.costs import network_cost
from densenet_lit.analysis.paper_match import (
    NETWORK,
    PaperNumber,
    comparison_fields,
    cost_fields,
    paper_number,
)
from densenet_lit.metric_names import TEST_ERROR, VAL_ERROR
from densenet_lit.tracking.wandb_logger import SafeWandbLogger


def eval_input_size(datamodule: LightningDataModule | None, in_channels: int) -> tuple[int, ...]:
    """(C, H, W) of one image the network evaluates: the data module's evaluation crop
    (``eval_crop`` of the class-folder sets), else its ``image_size``."""
    side = getattr(datamodule, "eval_crop", None) or getattr(datamodule, "image_size", None)
    if not isinstance(side, int):
        raise ValueError(f"the data module declares no image size ({type(datamodule).__name__})")
    return (in_channels, side, side)


def run_number(module: LightningModule, datamodule: LightningDataModule | None) -> PaperNumber:
    """The paper's number for the network of ``module`` on ``datamodule``'s benchmark."""
    return paper_number(
        module.spec.key,
        getattr(datamodule, "benchmark", None),
        getattr(datamodule, "eval_crops", 1),
        module.hparams.get("schedule") == "cosine",
    )


def run_fields(module: LightningModule, datamodule: LightningDataModule | None) -> dict[str, Any]:
    """The config fields of a run: its network's key, exact parameter and FLOP counts at the
    evaluation crop (counted on the ``meta`` device) and the paper's number."""
    spec = module.spec
    size = eval_input_size(datamodule, int(spec.kwargs.get("in_channels", 3)))
    cost = network_cost(spec.arch, size, **spec.kwargs)
    number = run_number(module, datamodule)
    return {NETWORK: spec.key, **cost_fields(cost.params, cost.macs), **number.fields()}


class PaperComparison(Callback):
    """Writes :func:`run_fields` into the W&B config and summary of the run (rank zero), and
    our error and the gap into the summary at the end of fit, validate and test."""

    def __init__(self) -> None:
        self.number: PaperNumber | None = None

    @staticmethod
    def loggers(trainer: Trainer) -> list[SafeWandbLogger]:
        if not trainer.is_global_zero:
            return []
        return [lg for lg in trainer.loggers if isinstance(lg, SafeWandbLogger)]

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        loggers = self.loggers(trainer)
        if not loggers or self.number is not None:
            return
        try:
            fields = run_fields(pl_module, trainer.datamodule)
        except Exception as err:  # W&B never stops training: a data module of unknown size ...
            rank_zero_warn(f"No network costs or paper number for W&B: {err!r}")
            return
        self.number = run_number(pl_module, trainer.datamodule)
        for logger in loggers:
            logger.guard(logger.experiment.config.update, fields, allow_val_change=True)
            logger.update_summary(fields)

    def summarise(self, trainer: Trainer, metric: str) -> None:
        value = trainer.callback_metrics.get(metric)
        if self.number is None or value is None:
            return
        ours = float(value.item() if isinstance(value, Tensor) else value)
        fields = comparison_fields(self.number, ours, metric)
        for logger in self.loggers(trainer):
            logger.update_summary(fields)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.summarise(trainer, VAL_ERROR)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self.summarise(trainer, VAL_ERROR)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.summarise(trainer, TEST_ERROR)
