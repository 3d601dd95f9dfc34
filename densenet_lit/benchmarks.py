"""The one owner of the benchmarks' names: what a data module declares (and every run logs with
its hyperparameters), the key of the paper's tables, and what the data set is.

A run on augmented CIFAR-10 logs ``benchmark: cifar10plus``; the paper's tables call it
``c10+``. The data modules, the paper's tables (:mod:`densenet_lit.paper`) and the analysis
tools all read this table, so the names of runs logged long ago (``cifar10plus``) keep their
meaning. ImageNet's 1,000 classes are its own fact here (:data:`IMAGENET_CLASSES`): the module's
top-5 default and the transfer of pretrained classifiers ask it.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: a data set, with or without the standard augmentation (the paper's "+")."""

    name: str  # what the data module declares and runs log: "cifar10plus"
    key: str  # the paper's tables: "c10+"
    label: str  # as the paper prints it: "CIFAR-10+ (augmented)"
    dataset: str  # the data set, without the augmentation mark: "cifar10"
    num_classes: int
    in_channels: int = 3
    image_size: int = 32  # the side of a training image


CIFAR10 = Benchmark("cifar10", "c10", "CIFAR-10", "cifar10", 10)
CIFAR10_PLUS = Benchmark("cifar10plus", "c10+", "CIFAR-10+ (augmented)", "cifar10", 10)
CIFAR100 = Benchmark("cifar100", "c100", "CIFAR-100", "cifar100", 100)
CIFAR100_PLUS = Benchmark("cifar100plus", "c100+", "CIFAR-100+ (augmented)", "cifar100", 100)
SVHN = Benchmark("svhn", "svhn", "SVHN", "svhn", 10)
IMAGENET = Benchmark(
    "imagenet", "imagenet", "ImageNet", "imagenet", IMAGENET_CLASSES, image_size=224
)
DIGITS = Benchmark("digits", "digits", "scikit-learn digits", "digits", 10, in_channels=1)

BENCHMARKS: tuple[Benchmark, ...] = (
    CIFAR10,
    CIFAR10_PLUS,
    CIFAR100,
    CIFAR100_PLUS,
    SVHN,
    IMAGENET,
    DIGITS,
)


def find_benchmark(name: str | None) -> Benchmark | None:
    """The benchmark a run declared (``cifar10plus``) or the paper's key of it (``c10+``);
    None for any other name (another class-folder set such as ``imagenette``)."""
    for benchmark in BENCHMARKS:
        if name in (benchmark.name, benchmark.key):
            return benchmark
    return None
