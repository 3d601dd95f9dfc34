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
