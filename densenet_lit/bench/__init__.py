"""The benchmark suite (``python -m densenet_lit.bench``, ``make bench``) and the GPU check
(``python -m densenet_lit.bench.gpu_check``, ``make gpu-check``); see docs/benchmarks.md."""

from densenet_lit.bench.suite import main

__all__ = ["main"]
