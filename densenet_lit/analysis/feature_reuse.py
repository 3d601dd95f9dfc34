"""Feature reuse: how strongly each layer of a trained DenseNet reads each earlier layer
(Figure 5 and Section 5 "Feature Reuse" of Huang et al., CVPR 2017).

For dense block ``b`` with ``n`` layers the *sources* are ``s = 0`` (the block's input: the
stem's output for the first block, the previous transition's output otherwise) and
``s = 1..n`` (the ``k`` new feature maps of layer ``s``). The *targets* are the block's layers
``l = 1..n``, followed by the layer that reads the whole block output: the transition after the
block, or the classifier after the last block. Layer ``l`` reads the channels
``[source 0 | source 1 | ... | source l-1]`` with its first convolution (``conv1``: the 1x1
bottleneck convolution of DenseNet-B/BC, the 3x3 convolution of the plain DenseNet); the
transition's 1x1 convolution and the classifier (``Linear`` on the pooled, BN-ReLU'd features
of the last block, same channel order) read sources ``0..n``.

Raw value (the paper's caption: "the average L1 norm (normalized by the number of input
feature-maps) of the weights connecting" ``s`` to ``l``)::

    raw[l, s] = mean |W_l[:, channels of s, ...]|

the mean of the absolute weights over every output channel, every input channel of source
``s`` and every kernel position. Being a mean, it does not grow with a source's width, so the
block input (``c0`` channels) and a layer's output (``k`` channels) compare. Entries where a
target cannot read a source (``s >= l`` for the block's layers) are NaN. Only weights are
measured; the batch-norm scales in front of each convolution are not folded in, as in the
paper.

Normalised value (what the heat map shows), ``normalize=``:

* ``"target"`` (default): each target's row divided by its largest entry, so every target's
  most-read source is 1. Transition and classifier weights have scales unlike the
  convolutions', and deep layers have smaller weights than shallow ones; a per-target scale
  makes "which sources does this layer use" visible for every column of the figure, which is
  what the paper's observations are about. (The paper does not state its colour scale; this
  is the normalisation most re-creations of Figure 5 use.)
* ``"block"``: the whole block matrix divided by its largest entry.
* ``"none"``: the raw values.

``python -m densenet_lit.analysis.feature_reuse RUN_DIR_OR_CKPT --out heatmap.png`` draws the
heat maps of a trained network.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from torch import nn

from densenet_lit.analysis.checkpoint import CheckpointError, load_model, unwrap_model
from densenet_lit.models import DenseBlock, DenseNet
from densenet_lit.toolcli import run_tool

Normalization = Literal["target", "block", "none"]
NORMALIZATIONS = get_args(Normalization)


@dataclass
class BlockReuse:
    """Feature reuse of one dense block.

    ``raw`` and ``normalized`` have shape ``[n + 1 targets, n + 1 sources]``: rows are the
    block's layers 1..n and then the transition (or classifier); columns are source 0 (the
    block input) and layers 1..n. NaN where a target cannot read a source.
    """

    block: int  # 1-based
    raw: np.ndarray
    normalized: np.ndarray
    source_labels: list[str]
    target_labels: list[str]
    final_target: str  # "transition" or "classifier"
    input_channels: int
    growth_rate: int

    @property
    def num_layers(self) -> int:
        return self.raw.shape[0] - 1


def source_slices(input_channels: int, growth_rate: int, num_layers: int) -> list[slice]:
    """Input-channel ranges of the sources 0..num_layers in a block's concatenated features."""
    slices = [slice(0, input_channels)]
    for s in range(1, num_layers + 1):
        start = input_channels + (s - 1) * growth_rate
        slices.append(slice(start, start + growth_rate))
    return slices


def mean_abs_by_source(weight: torch.Tensor, slices: Sequence[slice]) -> np.ndarray:
    """Mean |w| over the input channels of each source (dimension 1 of a conv or linear weight),
    all output channels and kernel positions."""
    w = weight.detach().abs().double()
    if slices and slices[-1].stop != w.shape[1]:
        raise ValueError(
            f"weight reads {w.shape[1]} input channels, but the sources cover {slices[-1].stop}"
        )
    return np.array([w[:, sl].mean().item() for sl in slices], dtype=np.float64)


def normalize_matrix(raw: np.ndarray, how: str = "target") -> np.ndarray:
    """Scale a block matrix as described in the module docstring (NaN entries stay NaN)."""
    if how not in NORMALIZATIONS:
        raise ValueError(f"normalize={how!r}: expected one of {', '.join(NORMALIZATIONS)}.")
    if how == "none":
        return raw.copy()
    if how == "block":
        top = np.nanmax(raw)
        return raw / top if top > 0 else raw.copy()
    top = np.nanmax(raw, axis=1, keepdims=True)
    top = np.where(top > 0, top, 1.0)
    return raw / top


def _blocks(net: DenseNet) -> list[tuple[int, DenseBlock, nn.Module, str]]:
    """(index, block, the module reading its output, "transition"/"classifier") per block."""
    children = dict(net.features.named_children())
    blocks = [(name, m) for name, m in children.items() if isinstance(m, DenseBlock)]
    out = []
    for i, (name, block) in enumerate(blocks, start=1):
        suffix = name.removeprefix("denseblock")
        transition = children.get(f"transition{suffix}")
        if transition is not None:
            out.append((i, block, transition.conv, "transition"))
        elif i == len(blocks):
            out.append((i, block, net.classifier, "classifier"))
        else:
            raise ValueError(f"{name} is not the last block but has no transition{suffix}")
    return out


@torch.no_grad()
def feature_reuse(model: nn.Module, normalize: str = "target") -> list[BlockReuse]:
    """Per dense block, the mean absolute weight each target assigns to each earlier source.

    Args:
        model: a :class:`~densenet_lit.models.DenseNet`, or a LightningModule holding one as
            ``.model`` (e.g. :class:`~densenet_lit.module.DenseNetModule`).
        normalize: ``"target"``, ``"block"`` or ``"none"`` (see the module docstring).

    Returns:
        One :class:`BlockReuse` per block, with the raw and the normalised matrix.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize={normalize!r}: expected one of {', '.join(NORMALIZATIONS)}.")
    net = unwrap_model(model)
    results = []
    for b, block, reader, kind in _blocks(net):
        layers = list(block.values())
        n = len(layers)
        c0 = layers[0].conv1.in_channels
        k = (block.out_channels - c0) // n
        slices = source_slices(c0, k, n)
        raw = np.full((n + 1, n + 1), np.nan)
        for j, layer in enumerate(layers, start=1):
            if layer.conv1.in_channels != c0 + (j - 1) * k:
                raise ValueError(
                    f"denseblock{b}.denselayer{j}.conv1 reads {layer.conv1.in_channels} channels; "
                    f"expected {c0 + (j - 1) * k} (input {c0} + {j - 1} x growth {k})."
                )
            raw[j - 1, :j] = mean_abs_by_source(layer.conv1.weight, slices[:j])
        raw[n, :] = mean_abs_by_source(reader.weight, slices)
        final = f"T{b}" if kind == "transition" else "C"
        results.append(
            BlockReuse(
                block=b,
                raw=raw,
                normalized=normalize_matrix(raw, normalize),
                source_labels=[str(s) for s in range(n + 1)],
                target_labels=[str(t) for t in range(1, n + 1)] + [final],
                final_target=kind,
                input_channels=c0,
                growth_rate=k,
            )
        )
    return results


def _tick_positions(n: int, max_ticks: int = 13) -> list[int]:
    step = max(1, math.ceil(n / max_ticks))
    return list(range(0, n, step))


def plot_feature_reuse(
    blocks: Sequence[BlockReuse],
    path: str | os.PathLike | None = None,
    title: str | None = None,
    cmap: str = "jet",
    use_raw: bool = False,
    vmin: float = 0.0,
):
    """Draw one triangular heat map per block, like the paper's Figure 5.

    x axis: target layer (1..n, then the transition "T<b>" or the classifier "C", outlined in
    black); y axis: source layer (0 = the block input, at the top). Blank cells: a layer cannot
    read later layers. Colours show ``normalized`` (``raw`` with ``use_raw``) on one scale for all
    blocks, from ``vmin`` (default 0, so a colour is a fraction of the largest value; pass a
    larger value, e.g. the smallest entry, for more contrast) to the largest value. Saves a PNG
    when ``path`` is given; returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if not blocks:
        raise ValueError("no blocks to draw")
    values = [b.raw if use_raw else b.normalized for b in blocks]
    vmax = max(float(np.nanmax(v)) for v in values)
    if vmin >= vmax:
        vmin = 0.0 if vmax > 0 else vmax - 1.0
    fig, axes = plt.subplots(
        1, len(blocks), figsize=(3.6 * len(blocks) + 1.0, 4.2), squeeze=False, layout="constrained"
    )
    image = None
    for ax, blk, val in zip(axes[0], blocks, values, strict=True):
        grid = np.ma.masked_invalid(val.T)  # rows: sources, columns: targets
        cm = plt.get_cmap(cmap).with_extremes(bad="white")
        image = ax.imshow(
            grid, cmap=cm, vmin=vmin, vmax=vmax, aspect="equal", interpolation="nearest"
        )
        n_sources, n_targets = grid.shape
        ax.add_patch(
            Rectangle(
                (n_targets - 1.5, -0.5), 1, n_sources, fill=False, edgecolor="black", linewidth=1.5
            )
        )
        xt = _tick_positions(n_targets - 1) + [n_targets - 1]
        ax.set_xticks(xt, [blk.target_labels[i] for i in xt], fontsize=7)
        yt = _tick_positions(n_sources)
        ax.set_yticks(yt, [blk.source_labels[i] for i in yt], fontsize=7)
        last = "transition" if blk.final_target == "transition" else "classifier"
        ax.set_title(f"Dense block {blk.block}", fontsize=10)
        ax.set_xlabel(f"Target layer (l); last column: {last}", fontsize=8)
        ax.set_ylabel("Source layer (s); 0 = block input", fontsize=8)
    label = "mean |w|" if use_raw else "normalised mean |w|"
    fig.colorbar(image, ax=list(axes[0]), shrink=0.85, label=label)
    if title:
        fig.suptitle(title, fontsize=11)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def format_matrices(blocks: Sequence[BlockReuse], raw: bool = False, digits: int = 2) -> str:
    """The matrices as text: one table per block, targets as rows, sources as columns."""
    lines = []
    for blk in blocks:
        m = blk.raw if raw else blk.normalized
        width = max(5, digits + 3)
        lines.append(
            f"dense block {blk.block} (rows: targets, columns: sources 0..{blk.num_layers})"
        )
        lines.append("      " + "".join(f"{s:>{width}}" for s in blk.source_labels))
        for t, row in zip(blk.target_labels, m, strict=True):
            cells = "".join(
                f"{'':>{width}}" if np.isnan(v) else f"{v:>{width}.{digits}f}" for v in row
            )
            lines.append(f"{t:>5} {cells}")
        lines.append("")
    return "\n".join(lines)


def feature_reuse_command(
    checkpoint: str,
    out: str = "feature_reuse.png",
    which: Literal["last", "best"] = "last",
    normalize: Normalization = "target",
    npz: str | None = None,
    quiet: bool = False,
    trust_checkpoint: bool = False,
) -> int:
    """Draw the feature-reuse heat maps (the paper's Figure 5) of a trained DenseNet.

    Args:
        checkpoint: a .ckpt file or a run directory (runs/<exp>/<id>)
        out: PNG to write
        which: checkpoint of a run directory
        normalize: colour scale (default: each target's row divided by its maximum)
        npz: also save the raw and normalised matrices to this .npz
        quiet: do not print the matrices
        trust_checkpoint: load with the full unpickler, which runs any code pickled in the
            file: only for a checkpoint you trust that the safe loader refuses
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = load_model(checkpoint, which=which, trust=trust_checkpoint)
    blocks = feature_reuse(model, normalize=normalize)
    if not quiet:
        print(format_matrices(blocks))
    fig = plot_feature_reuse(blocks, out, title=f"Feature reuse: {checkpoint}")
    plt.close(fig)
    print(f"heat map written to {out}")
    if npz:
        arrays = {}
        for blk in blocks:
            arrays[f"block{blk.block}_raw"] = blk.raw
            arrays[f"block{blk.block}_normalized"] = blk.normalized
        np.savez(npz, **arrays)
        print(f"matrices written to {npz}")
    return 0


def main(args: Sequence[str] | None = None) -> int:
    return run_tool(feature_reuse_command, args, input_errors=(CheckpointError,))


__all__ = [
    "NORMALIZATIONS",
    "BlockReuse",
    "feature_reuse",
    "format_matrices",
    "mean_abs_by_source",
    "normalize_matrix",
    "plot_feature_reuse",
    "source_slices",
]

if __name__ == "__main__":
    sys.exit(main())
