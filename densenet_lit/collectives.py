"""Reductions over the DDP ranks for decisions every rank must share (stop on a bad loss, on a
preemption signal), made so that a training step does not wait for them.

Lightning's ``strategy.reduce`` and ``reduce_boolean_decision`` put a barrier before every
reduction, and reading the result makes the host wait: under NCCL, for the GPU to finish all
the work queued before it; under gloo, for the slowest process. :class:`QueuedReduction`
queues the reduction (``async_op=True``) and reads it later, when it has long arrived;
:func:`reduce_now` is for the places where the host reads the result at once anyway (an
epoch's end, a checkpoint), without the barrier; :func:`gather_to_rank_zero` collects what
each rank computed (its predictions). They use ``torch.distributed`` directly.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch import Trainer


def is_distributed(trainer: Trainer) -> bool:
    """Whether this run has several processes whose decisions must agree."""
    return trainer.world_size > 1 and dist.is_available() and dist.is_initialized()


def reduce_now(values: torch.Tensor, op: Any = dist.ReduceOp.MAX) -> torch.Tensor:
    """``values`` reduced over the ranks (a new tensor), with no barrier before it."""
    values = values.clone()
    dist.all_reduce(values, op=op)
    return values


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over the ranks, in float32, with no barrier before it."""
    total = reduce_now(value.detach().float(), op=dist.ReduceOp.SUM)  # gloo has no AVG
    return total / dist.get_world_size()


class QueuedReduction:
    """``reduced`` reduced over the ranks with ``op`` (when ``distributed``), and the rank's
    own ``local`` values beside it, queued now and read with :meth:`result` later.

    Nothing here makes the host wait: the reduction is queued with ``async_op=True``. On a
    CUDA device its result (and ``local``) is then copied to pinned host memory without
    waiting, behind an event; under gloo (CPU tensors) the reduction runs in the background.
    :meth:`result` waits for whatever has not arrived yet: a step later, nothing has.

    Every rank must create its reductions in the same order, as for any collective.
    """

    def __init__(
        self,
        reduced: torch.Tensor,
        op: Any = dist.ReduceOp.MAX,
        local: torch.Tensor | None = None,
        distributed: bool = True,
    ) -> None:
        values = reduced.detach().reshape(-1).clone()
        self._work = dist.all_reduce(values, op=op, async_op=True) if distributed else None
        self._size = values.numel()
        if local is not None:
            local = local.detach().reshape(-1).to(values.dtype)
        self._event: torch.cuda.Event | None = None
        self._local: torch.Tensor | None = None
        if values.device.type == "cuda":
            if self._work is not None:
                # NCCL: the current stream waits for the reduction; the host does not
                self._work.wait()
                self._work = None
            both = values if local is None else torch.cat([values, local])
            self._host = torch.empty(both.shape, dtype=both.dtype, pin_memory=True)
            self._host.copy_(both, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record(torch.cuda.current_stream(values.device))
        else:  # gloo: reduced in place in the background
            self._host = values
            self._local = local

    def result(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The reduced values and the local ones (None if none were given), as CPU tensors,
        waiting for them if they have not arrived yet."""
        if self._work is not None:
            self._work.wait()
            self._work = None
        if self._event is None:  # CPU tensors
            return self._host, self._local
        self._event.synchronize()
        reduced, local = self._host[: self._size], self._host[self._size :]
        return reduced, (local if local.numel() else None)


def gather_to_rank_zero(value: Any) -> list[Any] | None:
    """Every rank's ``value`` (any picklable object), on rank 0 in rank order; None on the
    other ranks. A collective: every rank must call it (at an epoch's end, not in a step)."""
    gathered = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(value, gathered, dst=0)
    return gathered
