"""MixUp and CutMix of a training batch, on its device.

* MixUp (Zhang et al., ICLR 2018): ``x' = lam * x + (1 - lam) * x[perm]``.
* CutMix (Yun et al., ICCV 2019): a box of the image is replaced by the same box of
  ``x[perm]``; the box is centred at a uniform pixel, its sides are ``sqrt(1 - lam)`` of the
  image's and it is clipped at the border, so ``lam`` is corrected to the share of the image
  left: ``lam = 1 - box area / image area`` (torchvision's ``v2.CutMix``).

In both, ``lam ~ Beta(alpha, alpha)``, ``perm`` is a random permutation of the batch and the
target is ``lam * onehot(y) + (1 - lam) * onehot(y[perm])``. Each batch gets MixUp with
probability ``mixup_prob``, CutMix with ``cutmix_prob``, else nothing.

Everything is drawn from torch's global RNG, which the data module seeds for each training
batch from ``(seed, rank, step)`` (:mod:`densenet_lit.data.resume`): a resumed run mixes what
the uninterrupted run mixes. ``lam``, the choice and the box are drawn on the CPU (no wait
for the GPU), the permutation on the batch's device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# torchvision's classification recipe (references/classification): --mixup-alpha 0.2,
# --cutmix-alpha 1.0
RECIPE_ALPHA = {"mixup": 0.2, "cutmix": 1.0}


def check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"model.{name}={value!r}: expected a probability in [0, 1].")


@dataclass(frozen=True)
class BatchMixing:
    """MixUp and CutMix with their Beta parameters and per-batch probabilities.

    An ``alpha`` of 0 turns that mixing off. A probability left None is an equal share of 1
    among the mixings that are on (1 for one, 0.5 each for both: torchvision's recipe picks
    one of the two for every batch).
    """

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mixup_prob: float | None = None
    cutmix_prob: float | None = None

    def __post_init__(self) -> None:
        for name in ("mixup_alpha", "cutmix_alpha"):
            value = getattr(self, name)
            if not value >= 0.0:
                raise ValueError(
                    f"model.{name}={value!r}: expected alpha >= 0 (0 = off; torchvision's "
                    f"recipe: mixup_alpha {RECIPE_ALPHA['mixup']}, cutmix_alpha "
                    f"{RECIPE_ALPHA['cutmix']})."
                )
        for name in ("mixup_prob", "cutmix_prob"):
            value = getattr(self, name)
            if value is not None:
                check_probability(name, value)
        for mixing in ("mixup", "cutmix"):
            prob = getattr(self, f"{mixing}_prob")
            if prob is not None and getattr(self, f"{mixing}_alpha") == 0.0:
                raise ValueError(
                    f"model.{mixing}_prob={prob!r} is given while model.{mixing}_alpha is 0 "
                    f"({mixing} off), so it would be ignored: set model.{mixing}_alpha > 0 "
                    f"(torchvision's recipe: {RECIPE_ALPHA[mixing]}) or leave "
                    f"model.{mixing}_prob out."
                )
        p_mixup, p_cutmix = self.probabilities()
        if p_mixup + p_cutmix > 1.0 + 1e-9:
            raise ValueError(
                f"model.mixup_prob={p_mixup} and model.cutmix_prob={p_cutmix} add up to more "
                "than 1: each batch gets at most one of them. Give probabilities whose sum is "
                "at most 1 (e.g. 0.5 and 0.5), or leave them out (an equal share each)."
            )

    @property
    def active(self) -> bool:
        return any(p > 0 for p in self.probabilities())

    def probabilities(self) -> tuple[float, float]:
        """``(P(MixUp), P(CutMix))`` of a batch, 0 for a mixing that is off."""
        on = [self.mixup_alpha > 0, self.cutmix_alpha > 0]
        share = 1.0 / max(sum(on), 1)
        given = [self.mixup_prob, self.cutmix_prob]
        return tuple(  # type: ignore[return-value]
            (share if p is None else p) if is_on else 0.0
            for is_on, p in zip(on, given, strict=True)
        )

    def __call__(self, x: Tensor, y: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
        """The mixed batch and its soft targets ``[N, num_classes]`` (one-hot if not mixed)."""
        p_mixup, p_cutmix = self.probabilities()
        u = float(torch.rand(()))
        target = F.one_hot(y, num_classes).to(torch.float32)
        if u < p_mixup:
            x, lam, perm = mixup(x, self.mixup_alpha)
        elif u < p_mixup + p_cutmix:
            x, lam, perm = cutmix(x, self.cutmix_alpha)
        else:
            return x, target
        return x, lam * target + (1.0 - lam) * target[perm]


def draw_lambda(alpha: float) -> float:
    """``lam ~ Beta(alpha, alpha)``, drawn on the CPU from the global RNG."""
    concentration = torch.tensor(float(alpha))
    return float(torch.distributions.Beta(concentration, concentration).sample())


def mixup(x: Tensor, alpha: float) -> tuple[Tensor, float, Tensor]:
    """``(lam * x + (1 - lam) * x[perm], lam, perm)``."""
    lam = draw_lambda(alpha)
    perm = torch.randperm(x.shape[0], device=x.device)
    return x * lam + x[perm] * (1.0 - lam), lam, perm


def cutmix_box(lam: float, height: int, width: int) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` of the CutMix box for ``lam``, centred at a uniform pixel and
    clipped at the border (torchvision's ``v2.CutMix``)."""
    cy = int(torch.randint(height, ()))
    cx = int(torch.randint(width, ()))
    r = 0.5 * math.sqrt(1.0 - lam)
    half_h, half_w = int(r * height), int(r * width)
    return (
        max(cy - half_h, 0),
        min(cy + half_h, height),
        max(cx - half_w, 0),
        min(cx + half_w, width),
    )


def cutmix(x: Tensor, alpha: float) -> tuple[Tensor, float, Tensor]:
    """``(x with the box of x[perm], lam corrected to the box's area, perm)``."""
    lam = draw_lambda(alpha)
    perm = torch.randperm(x.shape[0], device=x.device)
    height, width = x.shape[-2:]
    y0, y1, x0, x1 = cutmix_box(lam, height, width)
    mixed = x.clone()
    mixed[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    return mixed, 1.0 - (y1 - y0) * (x1 - x0) / (height * width), perm
