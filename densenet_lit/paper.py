"""The paper's reported numbers (Huang et al., CVPR 2017; the authors' README for the rows
marked so). One place for every table that code, reports and notebooks compare against.

Errors are test error in % (ImageNet: single-crop 224x224 top-1 validation error).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PaperModel:
    """One row of the paper's tables."""

    key: str  # short name used in experiment file names, e.g. "densenet_bc_100_12"
    label: str  # as printed in the paper, e.g. "DenseNet-BC (L=100, k=12)"
    arch: str  # densenet_lit.models.build_model name
    model_kwargs: dict = field(default_factory=dict)
    params_m: float | None = None  # millions, as printed (CIFAR-10 classifier for CIFAR rows)
    errors: dict[str, float] = field(default_factory=dict)  # benchmark -> error %
    source: str = "paper"


def _cifar(key, label, depth, k, bc, params, c10, c10p, c100, c100p, svhn, source="paper"):
    kwargs = {"depth": depth, "growth_rate": k, "bottleneck": bc, "compression": 0.5 if bc else 1}
    errors = {"c10": c10, "c10+": c10p, "c100": c100, "c100+": c100p, "svhn": svhn}
    return PaperModel(
        key,
        label,
        "densenet_cifar",
        kwargs,
        params,
        {b: e for b, e in errors.items() if e is not None},
        source,
    )


# Table 2 of the paper, DenseNet rows, and the Wide-DenseNet-BC rows of the authors' README.
CIFAR_MODELS: tuple[PaperModel, ...] = (
    _cifar("densenet_40_12", "DenseNet (L=40, k=12)", 40, 12, False, 1.0, 7.00, 5.24, 27.55, 24.42, 1.79),
    _cifar("densenet_100_12", "DenseNet (L=100, k=12)", 100, 12, False, 7.0, 5.77, 4.10, 23.79, 20.20, 1.67),
    _cifar("densenet_100_24", "DenseNet (L=100, k=24)", 100, 24, False, 27.2, 5.83, 3.74, 23.42, 19.25, 1.59),
    _cifar("densenet_bc_100_12", "DenseNet-BC (L=100, k=12)", 100, 12, True, 0.8, 5.92, 4.51, 24.15, 22.27, 1.76),
    _cifar("densenet_bc_250_24", "DenseNet-BC (L=250, k=24)", 250, 24, True, 15.3, 5.19, 3.62, 19.64, 17.60, 1.74),
    _cifar("densenet_bc_190_40", "DenseNet-BC (L=190, k=40)", 190, 40, True, 25.6, None, 3.46, None, 17.18, None),
    _cifar("wide_densenet_bc_40_36", "Wide-DenseNet-BC (L=40, k=36)", 40, 36, True, 1.5, None, 4.58, None, 22.30, None, "README"),
    _cifar("wide_densenet_bc_40_48", "Wide-DenseNet-BC (L=40, k=48)", 40, 48, True, 2.7, None, 3.99, None, 20.29, None, "README"),
    _cifar("wide_densenet_bc_40_60", "Wide-DenseNet-BC (L=40, k=60)", 40, 60, True, 4.3, None, 4.01, None, 19.99, None, "README"),
)  # fmt: skip

# Table 3 / the authors' README (top-1 error of the released Torch models).
IMAGENET_MODELS: tuple[PaperModel, ...] = (
    PaperModel("densenet121", "DenseNet-121 (k=32)", "densenet121", {}, 8.0, {"imagenet": 25.0}),
    PaperModel("densenet169", "DenseNet-169 (k=32)", "densenet169", {}, 14.1, {"imagenet": 23.6}),
    PaperModel("densenet201", "DenseNet-201 (k=32)", "densenet201", {}, 20.0, {"imagenet": 22.5}),
    PaperModel("densenet161", "DenseNet-161 (k=48)", "densenet161", {}, 28.7, {"imagenet": 22.2}),
    PaperModel("densenet264", "DenseNet-264 (k=32)", "densenet264", {}, None, {"imagenet": 22.1}, "tech report"),
    PaperModel("densenet264_cosine", "DenseNet-cosine-264 (k=32)", "densenet264", {}, None, {"imagenet": 21.6}, "README"),
    # the README's tech-report models (blocks: densenet_lit.models.zoo.densenet_imagenet)
    PaperModel("densenet232", "DenseNet-232 (k=48)", "densenet_imagenet", {"block_config": (6, 12, 48, 48), "growth_rate": 48}, None, {"imagenet": 21.2}, "README"),
    PaperModel("densenet264cosine_k48", "DenseNet-cosine-264 (k=48)", "densenet_imagenet", {"block_config": (6, 12, 64, 48), "growth_rate": 48}, None, {"imagenet": 20.4}, "README"),
)  # fmt: skip

BENCHMARKS = {
    "c10": "CIFAR-10",
    "c10+": "CIFAR-10+ (augmented)",
    "c100": "CIFAR-100",
    "c100+": "CIFAR-100+ (augmented)",
    "svhn": "SVHN",
    "imagenet": "ImageNet (top-1)",
}

ALL_MODELS: tuple[PaperModel, ...] = CIFAR_MODELS + IMAGENET_MODELS


def paper_model(key: str) -> PaperModel:
    """The paper's row for ``key`` (e.g. ``"densenet_bc_100_12"`` or ``"densenet121"``)."""
    for model in ALL_MODELS:
        if model.key == key:
            return model
    known = ", ".join(m.key for m in ALL_MODELS)
    raise KeyError(f"{key!r} is not a model of the paper; known: {known}.")
