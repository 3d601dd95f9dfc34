"""The one owner of the names of the metrics a run logs.

The module logs them, the checkpoint callbacks rank by one, the run directory's checkpoint
names carry one, W&B summarises them and the analysis tools read them back: all import them
from here. A name is ``<stage>/<quantity>`` (``val/error``: top-1 error in %, per epoch),
except the learning rate ``lr``. YAML files that name a metric
(``experiments/defaults/base.yaml``: the best checkpoint's ``monitor``) are checked against
this module by ``tests/test_owners.py``.
"""

from __future__ import annotations

# stages and quantities: metric_name(stage, quantity) -> "<stage>/<quantity>"
TRAIN, VAL, TEST, PERF = "train", "val", "test", "perf"
LOSS, ERROR, ERROR_TOP5 = "loss", "error", "error_top5"


def metric_name(stage: str, quantity: str) -> str:
    """The name of ``quantity`` logged in ``stage``: ``metric_name("val", "error") == "val/error"``."""
    return f"{stage}/{quantity}"


TRAIN_LOSS = metric_name(TRAIN, LOSS)  # epoch mean of the training loss
TRAIN_LOSS_STEP = metric_name(TRAIN, "loss_step")  # the loss of each training step
TRAIN_ERROR = metric_name(TRAIN, ERROR)
VAL_ERROR = metric_name(VAL, ERROR)  # what the best checkpoint is chosen by
VAL_ERROR_TOP5 = metric_name(VAL, ERROR_TOP5)
TEST_ERROR = metric_name(TEST, ERROR)
TEST_ERROR_TOP5 = metric_name(TEST, ERROR_TOP5)
LR = "lr"  # the learning rate of each training step
IMAGES_PER_SEC = metric_name(PERF, "images_per_sec")  # the throughput callback, once an epoch
PEAK_MEMORY_GIB = metric_name(PERF, "peak_memory_gib")
