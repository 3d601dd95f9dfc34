"""The optimizer and learning-rate schedule of a run, from the module's recipe values.

* SGD; with ``norm_weight_decay`` None every parameter decays with ``weight_decay`` (the paper,
  the authors' code), else the normalisation layers' weights and biases and every bias form a
  second parameter group that decays with ``norm_weight_decay`` (torchvision's recipe: 0).
* The paper's schedules (``step`` per epoch, ``cosine`` per step, :mod:`densenet_lit.schedule`),
  after an optional linear warm-up. With a warm-up the whole schedule is one per-step
  ``LambdaLR``: ``warm-up factor x schedule factor``; the cosine then runs over the steps after
  the warm-up (torchvision's ``SequentialLR(LinearLR, CosineAnnealingLR)``, which steps once
  an epoch; ours moves at every step: the same curve without the staircase). Without one the
  schedulers are exactly the paper runs' (``MultiStepLR`` per epoch, cosine ``LambdaLR``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from densenet_lit.schedule import (
    check_warmup_fits,
    cosine_factor,
    resolve_milestones,
    step_schedule_factor,
    warmup_factor,
    warmup_length,
)

# The layers whose weights and biases leave weight decay with norm_weight_decay (public
# classes: SyncBatchNorm is no subclass of BatchNorm2d).
NORM_LAYERS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
)


def parameter_groups(
    model: nn.Module, weight_decay: float, norm_weight_decay: float | None
) -> list[dict[str, Any]]:
    """SGD parameter groups: one (every parameter, ``weight_decay``) when ``norm_weight_decay``
    is None, else ``[others, norm layers' parameters and biases]``, each with its decay."""
    if norm_weight_decay is None:
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for module in model.modules():
        is_norm = isinstance(module, NORM_LAYERS)
        for name, param in module.named_parameters(recurse=False):
            (no_decay if is_norm or name == "bias" else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": norm_weight_decay},
    ]


def build_sgd(model: nn.Module, hp: Any) -> torch.optim.SGD:
    return torch.optim.SGD(
        parameter_groups(model, hp.weight_decay, hp.get("norm_weight_decay")),
        lr=hp.lr,
        momentum=hp.momentum,
        dampening=hp.dampening,
        weight_decay=hp.weight_decay,
        nesterov=hp.nesterov,
    )


def total_steps(trainer: Any, schedule: str) -> int:
    total = trainer.estimated_stepping_batches
    if total == math.inf or int(total) < 1:
        raise ValueError(
            f"schedule={schedule!r} needs a finite training length: set trainer.max_epochs "
            "or trainer.max_steps."
        )
    return int(total)


def steps_per_epoch(trainer: Any) -> int:
    """Optimizer steps of an epoch (read after ``estimated_stepping_batches`` loaded the data)."""
    batches = trainer.num_training_batches
    if batches == math.inf:
        raise ValueError(
            "A warm-up in epochs or a step schedule with a warm-up needs a training loader "
            "with a length; give the warm-up in model.warmup_steps."
        )
    return max(1, math.ceil(batches / trainer.accumulate_grad_batches))


def build_schedule(optimizer: torch.optim.Optimizer, hp: Any, milestones: list[float], trainer):
    """``(scheduler, interval)`` for the module's recipe values (see the module docstring)."""
    warmup_epochs, warmup_steps = hp.get("warmup_epochs", 0.0), hp.get("warmup_steps", 0)
    if not (warmup_epochs or warmup_steps):
        if hp.schedule == "cosine":
            total = total_steps(trainer, "cosine")
            return torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: cosine_factor(step, total)
            ), "step"
        epochs = resolve_milestones(milestones, trainer.max_epochs)
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=epochs, gamma=hp.gamma
        ), "epoch"
    total = total_steps(trainer, hp.schedule)
    per_epoch = steps_per_epoch(trainer) if warmup_epochs or hp.schedule == "step" else 1
    warmup = warmup_length(warmup_epochs, warmup_steps, per_epoch)
    start = hp.get("warmup_start_factor", 0.01)
    if hp.schedule == "cosine":
        check_warmup_fits(warmup, total, None)

        def factor(step: int) -> float:
            return warmup_factor(step, warmup, start) * cosine_factor(step - warmup, total - warmup)
    else:
        epochs = resolve_milestones(milestones, trainer.max_epochs)
        check_warmup_fits(warmup, total, epochs[0] * per_epoch)
        gamma = hp.gamma

        def factor(step: int) -> float:
            drops = step_schedule_factor(step, per_epoch, epochs, gamma)
            return warmup_factor(step, warmup, start) * drops

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "step"
