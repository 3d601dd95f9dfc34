"""The memory table of the authors' memory-efficient code beside ours: DenseNet-BC
(L=100, k=12) on 32x32 images, batch 64.

``python -m densenet_lit.models.authors_memory`` prints the authors' table and, for each of
our memory levels, the activation memory held for backward and the time of a training step
(:func:`densenet_lit.models.memory.measure`) on this machine's CPU, or a GPU with
``--device cuda`` (which adds the step's peak memory).

The authors measured a whole Torch process on an NVIDIA TitanX (GPU memory in MB, seconds
per mini-batch); we count activation bytes, which leave out the weights, the workspace and
the allocator. So compare each side's ratios to its own standard run, not the raw numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from densenet_lit.markdown import table
from densenet_lit.models.memory import StepOptions, level_table
from densenet_lit.toolcli import run_tool

# The authors' table: liuzhuang13/DenseNet, models/README.md (commit 90388f7), "benchmarked
# on a DenseNet-BC (l=100, k=12) on CIFAR-10, and on an NVIDIA TitanX GPU", batch 64 as in
# its example command. Rows: (optMemory, GPU memory MB, seconds per mini-batch, what it does).
# The main README's Wide-DenseNet table has the standard run too: 5452MB, 0.156s.
AUTHORS_SOURCE = "liuzhuang13/DenseNet models/README.md (TitanX, Torch)"
AUTHORS = (
    (0, 5453, 0.153, "original implementation"),
    (1, 3746, 0.153, "optnet"),
    (2, 2969, 0.152, "shareGradInput"),
    (3, 2188, 0.155, "custom layer: + shared concatenation buffers"),
    (4, 1655, 0.175, "custom layer: + shared BN outputs (recomputed)"),
)
# Our level whose layer keeps what the authors' level keeps: optMemory 4 recomputes the
# batch norm before each 1x1 convolution and shares the concatenation, as our level 1 does.
SAME_AS_OURS = {4: 1}
ARCH, DEPTH, GROWTH, IMAGE = "densenet_cifar", 100, 12, 32


def authors_rows() -> list[list[str]]:
    base_mb, base_s = AUTHORS[0][1], AUTHORS[0][2]
    return [
        [str(level), what, str(mb), f"{mb / base_mb:.2f}x", f"{s:.3f}", f"{s / base_s:.2f}x"]
        for level, mb, s, what in AUTHORS
    ]


@dataclass(frozen=True)
class AuthorsOptions(StepOptions):
    """The authors' memory table (DenseNet-BC-100, batch 64) beside our memory levels.

    Args:
        batch_size: images per training step (the authors': 64)
    """

    batch_size: int = 64


def main(args: list[str] | None = None) -> int:
    opts = run_tool(AuthorsOptions, args)
    head = ["optMemory", "what it shares", "memory MB", "vs 0", "s / batch", "vs 0"]
    print(f"DenseNet-BC (L=100, k=12), 32x32, batch 64. The authors: {AUTHORS_SOURCE}\n")
    print(table(head, authors_rows()))
    costs = opts.measure(ARCH, IMAGE, depth=DEPTH, growth_rate=GROWTH)
    timing = f", step: fastest of {opts.rounds}" if opts.rounds else ""
    print(f"\nOurs, batch {opts.batch_size}, {opts.device}{timing}\n")
    print(level_table(costs))
    ours = {c.level: c for c in costs}
    for theirs, level in SAME_AS_OURS.items():
        _, mb, s, _ = AUTHORS[theirs]
        line = (
            f"\noptMemory {theirs} and our level {level} keep the same: the authors "
            f"{mb / AUTHORS[0][1]:.2f}x memory at {s / AUTHORS[0][2]:.2f}x time; ours "
            f"{ours[level].activation_bytes / ours[0].activation_bytes:.2f}x activation memory"
        )
        if ours[level].step_seconds:
            line += f" at {ours[level].step_seconds / ours[0].step_seconds:.2f}x time"
        if ours[level].cpu_seconds:
            line += f" ({ours[level].cpu_seconds / ours[0].cpu_seconds:.2f}x CPU time)"
        print(line + ".")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
