"""Where a run's numbers go: the CSV logger, Weights & Biases, and the saved config."""

from densenet_lit.tracking.csv_logger import RunCSVLogger

__all__ = ["RunCSVLogger"]
