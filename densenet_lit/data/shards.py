"""Exact evaluation on any number of devices: each DDP rank evaluates its own share of the
images, and every image counts exactly once.

Lightning's default under DDP is torch's ``DistributedSampler``, which pads an uneven set
with repeated images so that every rank runs the same number of batches: a 297-image test
set on 2 ranks is scored as 298 images. Two ways out (LIGHTNING_NOTES "Evaluation under
DDP"): keep the padded sampler and drop the repeats by image index when reducing, or give
each rank an unrepeated share and let the ranks run different numbers of batches. We do the
second - it needs no index bookkeeping in the metrics, and the metrics are the same
torchmetrics states as on one device:

* :class:`EvaluationShard` gives rank ``r`` of ``W`` the images ``r, r + W, r + 2W, ...``
  (torch's order, without the repeats). It is a ``DistributedSampler``, so Lightning keeps it
  as it is: with ``use_distributed_sampler`` on (the default) it replaces only samplers that
  are not, off it replaces none. So does the training sampler
  :class:`~densenet_lit.data.resume.EpochOrder`; both take their rank and world size from
  the data module, and Lightning calls ``set_epoch`` either way.
* The module's loss and errors are torchmetrics states summed over the images (the loss is a
  :class:`~densenet_lit.metrics.WeightedMean`, not a mean of per-batch means), reduced over
  the ranks once, when the epoch's value is computed, which every rank does.
* Ranks may then run one batch more or less than the others, so nothing may communicate per
  evaluation step: no ``self.log(..., sync_dist=True)`` in a step (it would average the ranks'
  means anyway), SyncBatchNorm in eval mode uses its running statistics (no reduction), and
  our callbacks communicate at epoch ends only. The one collective inside an evaluation is
  DDP's broadcast of rank 0's buffers at the first forward after training, which every rank
  runs: each rank has at least one image (:class:`EvaluationShard` refuses fewer images than
  ranks).
* ``predict`` writes each image once, in the data set's order: the prediction writer gathers
  the ranks' parts by image index (:mod:`densenet_lit.callbacks.predictions`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

from torch.utils.data import Dataset, DistributedSampler


class EvaluationShard(DistributedSampler):
    """Rank ``rank`` of ``num_replicas`` evaluates the images ``rank, rank + num_replicas,
    ...`` of ``dataset``, in order: together the ranks see every image exactly once (the
    ranks' counts differ by at most one). ``what`` names the set in the error raised when it
    has fewer images than there are ranks."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, what: str) -> None:
        size = len(dataset) if isinstance(dataset, Sized) else 0
        if size < num_replicas:
            raise ValueError(
                f"The {what} set has {size} image(s), fewer than the {num_replicas} processes "
                "(trainer.devices x trainer.num_nodes): every process must evaluate at least "
                f"one image. Evaluate on at most {max(size, 1)} device(s)."
            )
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.num_samples = len(range(rank, size, num_replicas))
        self.total_size = size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples
