"""The benchmark suite: ``python -m densenet_lit.bench`` (``make bench``); see docs/benchmarks.md.

One run, on one device (CUDA when present, else CPU), measures the training step of
DenseNet-BC (L=100, k=12) and DenseNet-121 in several modes, as a plain PyTorch loop and as
``DenseNetModule`` in a Lightning ``Trainer`` side by side; the data loaders alone; and a
CIFAR-10 epoch end to end. ``python -m densenet_lit.bench.gpu_check`` (``make gpu-check``) is
the few-minute check of a lent GPU.
"""

from densenet_lit.bench.suite import main

__all__ = ["main"]
