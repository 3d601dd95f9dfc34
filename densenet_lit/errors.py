"""Errors shared by the CLI and the analysis tools, in a module that imports nothing heavy.

The analysis package (run reports, comparisons) reads checkpoints without Lightning or
jsonargparse; defining its error here keeps ``import densenet_lit.analysis.runs`` light.
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint cannot be used: missing, unreadable (truncated, not a checkpoint), or not
    this model's. Raised by the CLI's ``--ckpt_path`` and by densenet_lit.analysis alike."""
