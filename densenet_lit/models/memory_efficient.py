"""Memory levels of a dense layer: what its forward pass keeps for backward, and what the
backward pass recomputes instead (Pleiss et al., "Memory-Efficient Implementation of
DenseNets", arXiv 1707.06990; the authors' Torch code has such levels as ``optMemory``).

Left alone, autograd keeps for every layer l of a block the concatenation of all earlier
feature maps and its BN-ReLU copy (both grow with l, so a block's memory grows
quadratically with its depth), then the bottleneck convolution's output and its BN-ReLU
copy (4k channels each), and the layer's k new channels.

- Level 0 (``False``): keep everything.
- Level 1 (``True``): recompute the concatenation and the first BN-ReLU; memory grows
  linearly with depth. The authors' ``optMemory 4`` keeps the same.
- Level 2: recompute both BN-ReLU pairs; a layer keeps its convolutions' outputs (4k + k
  channels), the part it cannot recompute cheaply.
- Level 3: recompute the bottleneck convolution as well; a layer keeps only its k new
  channels, which the next layers read anyway.

A layer without bottleneck (BN-ReLU-Conv3x3) is the same at levels 1 to 3.

Each recomputing level runs one or two parts of the layer, each ending at a convolution,
under ``torch.utils.checkpoint`` (:func:`recomputed`); recomputation stops once what backward
needs is back, before that last convolution runs again. Which parts a level recomputes is the
layer's own business (:meth:`densenet_lit.models.densenet.DenseLayer.recomputed_forward`);
this module holds the tools it uses, none of which knows a layer's insides.
Batch norm inside a recomputed region runs twice per step, so there it normalises with the
batch statistics through ``F.batch_norm`` and writes them into fresh tensors; the running
statistics are updated once, after the region, as ``nn.BatchNorm2d`` would update them.
That works the same in eager and compiled graphs (a compiled graph cannot see Python-side
changes such as a momentum set to 0 while recomputing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

# level -> what the backward pass recomputes instead of keeping
LEVELS = {
    0: "nothing",
    1: "concatenation and first BN-ReLU",
    2: "concatenation and both BN-ReLUs",
    3: "all but each layer's last convolution",
}
DEEPEST = max(LEVELS)


def memory_level(value: bool | int) -> int:
    """The level of a ``memory_efficient`` argument: ``False`` is 0, ``True`` is 1."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in LEVELS:
        return value
    levels = "; ".join(f"{n}: {what}" for n, what in LEVELS.items())
    raise ValueError(
        f"memory_efficient={value!r}: expected False, True (level 1) or a memory level "
        f"{min(LEVELS)} to {DEEPEST}, by what the backward pass recomputes instead of "
        f"keeping ({levels})."
    )


def bn_relu_conv(x: Tensor, norm: nn.BatchNorm2d, conv: nn.Conv2d) -> tuple[Tensor, ...]:
    """``conv(relu(norm(x)))`` for a recomputed region, and the batch statistics that
    :func:`recomputed` folds into ``norm``'s running estimates once (see :func:`normalize`).
    """
    # ReLU in place saves a copy, but a region that torch.compile traces must not mutate.
    out, stats = normalize(x, norm)
    return conv(F.relu(out, inplace=not torch.compiler.is_compiling())), *stats


def recomputed(
    region: Callable[..., tuple[Tensor, ...]],
    inputs: Sequence[Tensor],
    norms: list[nn.BatchNorm2d],
    random: bool = False,
) -> Tensor:
    """The output of ``region(*inputs)``, whose activations backward recomputes; then the
    running statistics of ``norms`` (the batch norms in ``region``) updated once.

    ``region`` ends at a convolution and returns its output and the batch statistics of
    :func:`normalize`, in the order of ``norms``. Recomputation stops once what backward
    needs is back, before that last convolution runs again. ``random``: the region draws
    random numbers (dropout), which its recomputation must draw again the same (a compiled
    graph keeps the forward pass's masks instead).
    """
    out, *stats = checkpoint(region, *inputs, use_reentrant=False, preserve_rng_state=random)
    updating = [norm for norm in norms if _updates_running_stats(norm)]
    for norm, mean, var in zip(updating, stats[0::2], stats[1::2], strict=True):
        _update_running_stats(norm, mean, var)
    return out


def _updates_running_stats(norm: nn.BatchNorm2d) -> bool:
    return norm.training and norm.running_mean is not None


def normalize(x: Tensor, norm: nn.BatchNorm2d) -> tuple[Tensor, list[Tensor]]:
    """``norm(x)`` without touching ``norm``'s buffers, and ``[batch mean, unbiased batch
    variance]`` when ``norm`` would fold them into its running statistics (else ``[]``).

    With momentum 1, ``F.batch_norm`` overwrites the running estimates it is given with the
    batch statistics; fresh tensors take their place, so recomputing changes nothing.
    """
    group = _sync_group(norm)
    if group is not None:
        return _synced_batch_norm(x, norm, group)
    if _updates_running_stats(norm):
        mean = torch.zeros_like(norm.running_mean)
        var = torch.ones_like(norm.running_var)
        y = F.batch_norm(x, mean, var, norm.weight, norm.bias, True, 1.0, norm.eps)
        return y, [mean, var]
    batch_stats = norm.training or norm.running_mean is None
    y = F.batch_norm(
        x, norm.running_mean, norm.running_var, norm.weight, norm.bias, batch_stats, 0.0, norm.eps
    )
    return y, []


def _sync_group(norm: nn.BatchNorm2d) -> dist.ProcessGroup | None:
    """The process group over which a ``SyncBatchNorm`` in training mode pools its batch
    statistics; None when there is nothing to pool with."""
    if not (isinstance(norm, nn.SyncBatchNorm) and norm.training):
        return None
    if not (dist.is_available() and dist.is_initialized()):
        return None
    group = norm.process_group or dist.group.WORLD
    return group if dist.get_world_size(group) > 1 else None


def _synced_batch_norm(
    x: Tensor, norm: nn.BatchNorm2d, group: dist.ProcessGroup
) -> tuple[Tensor, list[Tensor]]:
    """Batch norm with the statistics of the batches of every rank in ``group``, as
    ``nn.SyncBatchNorm`` computes it, written out so that it can run in a recomputed region
    (the module would update its running statistics there)."""
    dims = [d for d in range(x.dim()) if d != 1]
    shape = [-1 if d == 1 else 1 for d in range(x.dim())]
    xf = x.float()
    count = torch.full((1,), x.numel() // x.shape[1], dtype=xf.dtype, device=x.device)
    total = _SumOverRanks.apply(torch.cat([xf.sum(dims), count]), group)
    n, mean = total[-1], total[:-1] / total[-1]
    centered = xf - mean.view(shape)
    var = _SumOverRanks.apply(centered.square().sum(dims), group) / n
    scale = torch.rsqrt(var + norm.eps) * norm.weight
    y = (centered * scale.view(shape) + norm.bias.view(shape)).to(x.dtype)
    if norm.running_mean is None:
        return y, []
    return y, [mean.detach(), (var * n / (n - 1)).detach()]


class _SumOverRanks(torch.autograd.Function):
    """The sum of a tensor over the ranks of a process group. Every rank's loss depends on
    every rank's share of the sum, so the gradient is summed over the ranks too."""

    @staticmethod
    def forward(ctx, tensor: Tensor, group: dist.ProcessGroup) -> Tensor:
        ctx.group = group
        total = tensor.clone()
        dist.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        total = grad.clone()
        dist.all_reduce(total, group=ctx.group)
        return total, None


@torch.no_grad()
def _update_running_stats(norm: nn.BatchNorm2d, mean: Tensor, var: Tensor) -> None:
    """Fold one batch's statistics into ``norm``'s running estimates, as its forward does:
    an exponential average with ``momentum``, or the cumulative average when it is None."""
    norm.num_batches_tracked.add_(1)
    factor = 1.0 / norm.num_batches_tracked if norm.momentum is None else norm.momentum
    norm.running_mean.mul_(1 - factor).add_(mean * factor)
    norm.running_var.mul_(1 - factor).add_(var * factor)
