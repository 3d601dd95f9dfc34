"""Save what ``predict`` computes: ``predictions.pt`` in the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from densenet_lit.collectives import gather_to_rank_zero, is_distributed
from densenet_lit.rundir import PREDICTIONS_FILE


class PredictionWriter(BasePredictionWriter):
    """Save what ``predict`` computes: ``predictions.pt`` in the run directory.

    A dict of ``probabilities`` (float ``[N, classes]``, the softmax the module's
    ``predict_step`` returns), ``predictions`` (the top-1 class, ``[N]``), ``targets`` (the
    labels, when the loader yields them), ``indices`` (each image's index in the data set)
    and ``classes`` (the class names, when the data module has them), in the data set's
    order. Under DDP each rank predicts its own share of the images, each image once (see
    :mod:`densenet_lit.data.shards`); rank 0 gathers the shares at the end and writes the
    one file.
    """

    def __init__(self, filename: str = PREDICTIONS_FILE) -> None:
        super().__init__(write_interval="batch")
        self.filename = filename
        self._parts: dict[str, list[torch.Tensor]] = {}

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._parts = {"probabilities": [], "targets": [], "indices": []}

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        self._parts["probabilities"].append(prediction.detach().float().cpu())
        if isinstance(batch, list | tuple) and len(batch) > 1 and torch.is_tensor(batch[1]):
            self._parts["targets"].append(batch[1].detach().cpu())
        if batch_indices is not None:
            self._parts["indices"].append(torch.as_tensor(list(batch_indices), dtype=torch.long))

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        parts, self._parts = self._parts, {}
        if is_distributed(trainer):  # every rank takes part, whatever it predicted
            gathered = gather_to_rank_zero(parts)
            if gathered is None:
                return
            parts = {k: [t for rank in gathered for t in rank.get(k, [])] for k in parts}
        if not parts.get("probabilities"):
            return
        out: dict[str, Any] = {k: torch.cat(v) for k, v in parts.items() if v}
        if "indices" in out:  # the data set's order (the ranks' shares are interleaved)
            order = out["indices"].argsort(stable=True)
            out = {k: v[order] for k, v in out.items()}
        out["predictions"] = out["probabilities"].argmax(dim=1)
        classes = getattr(trainer.datamodule, "classes", None)
        if classes:
            out["classes"] = list(classes)
        path = Path(trainer.default_root_dir) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(out, path)
        print(f"Predictions of {len(out['predictions'])} images saved to {path}", flush=True)
