"""The paper's learning-rate schedules: steps at milestones (fractions of training or epochs)
and the authors' per-iteration cosine schedule."""

from __future__ import annotations

import math
from collections.abc import Sequence


def check_milestones(milestones: Sequence[float]) -> None:
    """Raise a ValueError for milestones that are neither fractions (< 1) nor whole epochs."""
    if not milestones:
        raise ValueError("milestones=[]: give at least one milestone, e.g. [0.5, 0.75].")
    for m in milestones:
        if m <= 0:
            raise ValueError(f"milestones={list(milestones)}: every milestone must be > 0.")
        if m >= 1 and m != int(m):
            raise ValueError(
                f"milestones={list(milestones)}: {m} is >= 1, so it is read as an epoch "
                "number, and must be whole. Give fractions of training as values below 1."
            )


def resolve_milestones(milestones: Sequence[float], max_epochs: int | None) -> list[int]:
    """Turn the ``milestones`` argument into epoch numbers (0-based, as Lightning counts).

    A value below 1 is a fraction of ``max_epochs``: the learning rate drops once the epoch
    reaches that fraction of training, i.e. at epoch ``ceil(f * max_epochs)`` (0.5 and 0.75 of
    300 epochs are epochs 150 and 225; lr 0.1 for epochs 0-149). A value of 1 or more is an
    epoch number and must be a whole number (30, 60 for ImageNet).
    """
    check_milestones(milestones)
    epochs = []
    for m in milestones:
        if m < 1:
            if max_epochs is None or max_epochs < 1:
                raise ValueError(
                    f"milestones={list(milestones)} contains fractions of the training length, "
                    f"but trainer.max_epochs={max_epochs} is not a positive number of epochs. "
                    "Set trainer.max_epochs or give the milestones as epoch numbers (>= 1)."
                )
            epochs.append(max(1, math.ceil(m * max_epochs - 1e-9)))
        else:
            epochs.append(int(m))
    return sorted(epochs)


def cosine_factor(step: int, total_steps: int) -> float:
    """The authors' cosine schedule: ``0.5 * (1 + cos(pi * t / T))``, held at 0 after T."""
    t = min(max(step, 0), total_steps)
    return 0.5 * (1.0 + math.cos(math.pi * t / total_steps))


def warmup_factor(step: int, warmup_steps: int, start_factor: float) -> float:
    """Linear warm-up: ``start_factor`` at step 0, rising linearly to 1 at ``warmup_steps``
    (torch's ``LinearLR``: ``start + (1 - start) * t / W``), 1 afterwards."""
    if step >= warmup_steps:
        return 1.0
    return start_factor + (1.0 - start_factor) * max(step, 0) / warmup_steps


def check_warmup(warmup_epochs: float, warmup_steps: int, start_factor: float) -> None:
    """Raise a ValueError for a warm-up given both ways, negative, or from a bad factor."""
    if warmup_epochs < 0 or warmup_steps < 0:
        raise ValueError(
            f"model.warmup_epochs={warmup_epochs!r}, model.warmup_steps={warmup_steps!r}: "
            "expected 0 (no warm-up) or a positive length."
        )
    if warmup_epochs and warmup_steps:
        raise ValueError(
            f"model.warmup_epochs={warmup_epochs!r} and model.warmup_steps={warmup_steps!r}: "
            "give the warm-up in epochs or in steps, not both (set the other to 0)."
        )
    if not 0.0 < start_factor <= 1.0:
        raise ValueError(
            f"model.warmup_start_factor={start_factor!r}: expected 0 < factor <= 1, the "
            "fraction of the learning rate the warm-up starts from (torchvision: 0.01)."
        )


def warmup_length(warmup_epochs: float, warmup_steps: int, steps_per_epoch: int) -> int:
    """The warm-up in optimizer steps (epochs are rounded to whole steps)."""
    return int(warmup_steps) or round(warmup_epochs * steps_per_epoch)


def step_schedule_factor(
    step: int, steps_per_epoch: int, milestones: Sequence[int], gamma: float
) -> float:
    """The step schedule per step: ``gamma ** (milestones reached by the step's epoch)``."""
    epoch = step // steps_per_epoch
    return gamma ** sum(epoch >= m for m in milestones)


def check_warmup_fits(warmup: int, total_steps: int, first_drop: int | None) -> None:
    """A warm-up must end before training does, and before the step schedule's first drop."""
    if warmup >= total_steps:
        raise ValueError(
            f"The warm-up of {warmup} steps (model.warmup_epochs / model.warmup_steps) is not "
            f"shorter than the training, {total_steps} steps: shorten the warm-up or train "
            "longer (trainer.max_epochs / trainer.max_steps)."
        )
    if first_drop is not None and warmup > first_drop:
        raise ValueError(
            f"The warm-up of {warmup} steps ends after the first milestone of the step "
            f"schedule (step {first_drop}): shorten the warm-up or move model.milestones."
        )
