"""The paper's reported numbers, and those of the baselines it compares with. One place for
every table that code, reports, figures and notebooks compare against.

Every number carries where it was read (:func:`citation`): the table or figure and one of
:data:`SOURCES`. Errors are test error in %; ImageNet errors are validation errors of 224x224
crops, keyed by how the images were tested (:func:`imagenet_key`): ``imagenet`` is the
single-crop top-1 error, ``imagenet_10crop`` the 10-crop one, ``*_top5`` the top-5 errors.
The other keys are the benchmarks' (:mod:`densenet_lit.benchmarks`): ``c10+`` and so on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from densenet_lit.benchmarks import (
    CIFAR10,
    CIFAR10_PLUS,
    CIFAR100,
    CIFAR100_PLUS,
    IMAGENET,
    SVHN,
    Benchmark,
    find_benchmark,
)

C10, C10P, C100, C100P = CIFAR10.key, CIFAR10_PLUS.key, CIFAR100.key, CIFAR100_PLUS.key

# Where the numbers below were read; a citation names one of these and a table or figure.
SOURCES = {
    "arxiv": "Huang, Liu, van der Maaten, Weinberger, 'Densely Connected Convolutional "
    "Networks', arXiv:1608.06993v3 (its text: ../shared/reference/densenet-paper.txt)",
    "cvpr": "the same paper, CVPR 2017 proceedings version, section 4.4: 'Table 3: The top-1 "
    "and top-5 error rates on the ImageNet validation set, with single-crop / 10-crop "
    "testing' (read from a copy of the CVPR text, English with a Chinese translation, kept in "
    "a public GitHub repository; two other public copies give the same numbers)",
    "readme": "the authors' README, github.com/liuzhuang13/DenseNet "
    "(../shared/reference/official-densenet-readme.txt)",
    "spec": "../shared/SPEC.md (the paper prints no ImageNet parameter counts)",
    "fb.resnet.torch": "github.com/facebookarchive/fb.resnet.torch, pretrained/README.md "
    "(commit 500b698), 'ImageNet 1-crop error rates (224x224)' and 'ImageNet 10-crop error "
    "rates': the ResNets of the trainer the paper's ImageNet runs used (its footnote 1)",
}

Cited = tuple[str, str]  # (table or figure, key of SOURCES)


def imagenet_key(crops: int = 1, top5: bool = False) -> str:
    """The ``errors`` key of ImageNet errors tested with ``crops`` crops (1 or 10)."""
    if crops not in (1, 10):
        raise ValueError(f"crops={crops!r}: the paper tests with 1 or 10 crops.")
    return IMAGENET.key + ("_10crop" if crops == 10 else "") + ("_top5" if top5 else "")


# Table 3's columns (single-crop top-1 and top-5, 10-crop top-1 and top-5), and the top-1
# error of the authors' released Torch models (their README)
IMAGENET_COLUMNS = tuple(imagenet_key(c, top5) for c in (1, 10) for top5 in (False, True))
IMAGENET_README = IMAGENET.key + "_readme"


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
    cited: dict[str, Cited] = field(default_factory=dict)  # "params" or benchmark -> where


def _cifar(key, label, depth, k, bc, params, c10, c10p, c100, c100p, svhn, source="paper"):
    kwargs = {"depth": depth, "growth_rate": k, "bottleneck": bc, "compression": 0.5 if bc else 1}
    errors = {C10: c10, C10P: c10p, C100: c100, C100P: c100p, SVHN.key: svhn}
    errors = {b: e for b, e in errors.items() if e is not None}
    where = ("Table 2", "arxiv") if source == "paper" else ("'Wide-DenseNet-BC' table", "readme")
    cited = dict.fromkeys(["params", *errors], where)
    return PaperModel(key, label, "densenet_cifar", kwargs, params, errors, source, cited)


def _imagenet(
    key,
    label,
    params,
    cvpr=None,
    readme=None,
    readme_table="original paper",
    arch=None,
    blocks=None,
):
    """An ImageNet row: ``cvpr`` = (top-1, top-5 single-crop, top-1, top-5 10-crop) of
    Table 3; ``readme`` = the README's top-1 of the released Torch model (table "Models in
    the <readme_table>"). ``imagenet`` is Table 3's single-crop top-1 where there is one.
    ``blocks``: (layers per block, k) of a ``densenet_imagenet`` network."""
    errors: dict[str, float] = {}
    cited: dict[str, Cited] = {"params": ("ImageNet networks table", "spec")} if params else {}
    if cvpr is not None:
        errors.update(zip(IMAGENET_COLUMNS, cvpr, strict=True))
        cited.update(dict.fromkeys(IMAGENET_COLUMNS, ("Table 3", "cvpr")))
    if readme is not None:
        where = (f"'Models in the {readme_table}' table (1-crop top-1)", "readme")
        if IMAGENET.key not in errors:
            errors[IMAGENET.key], cited[IMAGENET.key] = readme, where
        errors[IMAGENET_README], cited[IMAGENET_README] = readme, where
    source = "paper" if cvpr is not None else "README"
    sized = {} if blocks is None else {"block_config": blocks[0], "growth_rate": blocks[1]}
    return PaperModel(key, label, arch or key, sized, params, errors, source, cited)


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

# Table 3 of the CVPR paper (single-crop and 10-crop, top-1 and top-5) and the README's top-1
# of the released Torch models. DenseNet-161 and the cosine DenseNet-264 are not in Table 3:
# their only numbers are the README's single-crop top-1 (no 10-crop, no top-5 column).
IMAGENET_MODELS: tuple[PaperModel, ...] = (
    _imagenet("densenet121", "DenseNet-121 (k=32)", 8.0, (25.02, 7.71, 23.61, 6.66), 25.0),
    _imagenet("densenet169", "DenseNet-169 (k=32)", 14.1, (23.80, 6.85, 22.08, 5.92), 23.6),
    _imagenet("densenet201", "DenseNet-201 (k=32)", 20.0, (22.58, 6.34, 21.46, 5.54), 22.5),
    _imagenet("densenet161", "DenseNet-161 (k=48)", 28.7, None, 22.2),
    _imagenet("densenet264", "DenseNet-264 (k=32)", None, (22.15, 6.12, 20.80, 5.29), 22.1, "tech report"),
    _imagenet("densenet264_cosine", "DenseNet-cosine-264 (k=32)", None, None, 21.6, "tech report", "densenet264"),
    # the README's tech-report models of any blocks (densenet_lit.models.zoo.densenet_imagenet)
    _imagenet("densenet232", "DenseNet-232 (k=48)", None, None, 21.2, "tech report", "densenet_imagenet", ((6, 12, 48, 48), 48)),
    _imagenet("densenet264cosine_k48", "DenseNet-cosine-264 (k=48)", None, None, 20.4, "tech report", "densenet_imagenet", ((6, 12, 64, 48), 48)),
)  # fmt: skip

# The columns of the tables: each key of ``errors`` and what it is.
BENCHMARKS = {
    **{b.key: b.label for b in (CIFAR10, CIFAR10_PLUS, CIFAR100, CIFAR100_PLUS, SVHN)},
    IMAGENET_COLUMNS[0]: "ImageNet (top-1)",
    IMAGENET_COLUMNS[1]: "ImageNet (top-5)",
    IMAGENET_COLUMNS[2]: "ImageNet, 10-crop (top-1)",
    IMAGENET_COLUMNS[3]: "ImageNet, 10-crop (top-5)",
    IMAGENET_README: "ImageNet (top-1, the authors' released Torch models)",
}


def benchmark_of(column: str) -> Benchmark | None:
    """The benchmark of an ``errors`` key (ImageNet for each of its columns), or None."""
    return IMAGENET if column.startswith(IMAGENET.key) else find_benchmark(column)


ALL_MODELS: tuple[PaperModel, ...] = CIFAR_MODELS + IMAGENET_MODELS


def paper_model(key: str) -> PaperModel:
    """The paper's row for ``key`` (e.g. ``"densenet_bc_100_12"`` or ``"densenet121"``)."""
    for model in ALL_MODELS:
        if model.key == key:
            return model
    known = ", ".join(m.key for m in ALL_MODELS)
    raise KeyError(f"{key!r} is not a model of the paper; known: {known}.")


def citation(row: PaperModel | Baseline, what: str) -> str:
    """Where ``row``'s number for ``what`` (a benchmark key, or "params") was read."""
    if what not in row.cited:
        raise KeyError(f"{row.key} has no cited number for {what!r}; it has {sorted(row.cited)}.")
    where, source = row.cited[what]
    return f"{where}; {SOURCES[source]}"


# ------------------------------------------------------------------------------ baselines
@dataclass(frozen=True)
class Baseline:
    """A network the paper compares DenseNets with (Table 2, Figures 3 and 4)."""

    key: str
    label: str
    tv_arch: str | None  # torchvision.models builder to count it with; None: printed count only
    params_m: float | None  # millions, as printed (None where the source prints none)
    errors: dict[str, float]
    cited: dict[str, Cited]


def _fb_resnet(depth: int, one_crop: tuple[float, float], ten_crop: tuple[float, float]):
    errors = dict(zip(IMAGENET_COLUMNS, (*one_crop, *ten_crop), strict=True))
    cited = {
        k: ("1-crop table" if "10crop" not in k else "10-crop table", "fb.resnet.torch")
        for k in IMAGENET_COLUMNS
    }
    return Baseline(f"resnet{depth}", f"ResNet-{depth}", f"resnet{depth}", None, errors, cited)


def _preact(depth: int, params: float, c10: float, c10p: float, c100: float, c100p: float):
    errors = {C10: c10, C10P: c10p, C100: c100, C100P: c100p}
    cited = dict.fromkeys(["params", *errors], ("Table 2", "arxiv"))
    label = f"Pre-activation ResNet-{depth}"
    return Baseline(f"preact_resnet{depth}", label, None, params, errors, cited)


# Figure 3's ResNets: the text names ResNet-50 and ResNet-101 but prints none of their errors;
# these are the errors of fb.resnet.torch's ResNets, trained with the code the paper used.
IMAGENET_RESNETS: tuple[Baseline, ...] = (
    _fb_resnet(34, (26.73, 8.74), (24.76, 7.35)),
    _fb_resnet(50, (24.01, 7.02), (22.24, 6.08)),
    _fb_resnet(101, (22.44, 6.21), (21.08, 5.35)),
    _fb_resnet(152, (22.16, 6.16), (20.69, 5.21)),
)

# Table 2's pre-activation ResNets (Figure 4, middle and right; C10 and C100 were run by the
# paper's authors). Figure 4's other ResNet points are drawn only, without numbers.
PREACT_RESNETS: tuple[Baseline, ...] = (
    _preact(164, 1.7, 11.26, 5.46, 35.58, 24.33),
    _preact(1001, 10.2, 10.56, 4.62, 33.47, 22.71),
)
