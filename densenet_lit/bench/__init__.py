"""The benchmark suite (``python -m densenet_lit.bench``, ``make bench``); see docs/benchmarks.md."""

from densenet_lit.bench.suite import main

__all__ = ["main"]
