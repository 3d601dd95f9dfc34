"""The benchmark suite: ``python -m densenet_lit.bench`` (``make bench``).

Measures, in one run and on one device (CUDA when present, else CPU):

- the training step (images/s after warm-up, and memory) of DenseNet-BC (L=100, k=12) at
  32x32 and DenseNet-121 at 224x224 in the modes fp32, channels_last, bf16-mixed, compile,
  fast (all three) and memory_efficient, each as a plain PyTorch loop (torchvision's
  DenseNet-121; our CIFAR network, torchvision has none) and as ``DenseNetModule`` in a
  Lightning ``Trainer``, side by side;
- the data loaders' images/s alone, ours against torchvision's per-image transforms;
- a CIFAR-10 epoch end to end, ours against the plain recipe (GPU busy fraction on CUDA).

It prints a Markdown report and writes it (plus the raw numbers as JSON) to
``bench_results/``. See ``docs/benchmarks.md``.
"""

from densenet_lit.bench.suite import main

__all__ = ["main"]
