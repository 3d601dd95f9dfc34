"""Activation memory of a training step, on any device.

``python -m densenet_lit.models.memory`` prints how many bytes the autograd graph holds
for the backward pass after one forward pass, with and without ``memory_efficient``.
The count comes from ``torch.autograd.graph.saved_tensors_hooks``: every tensor saved for
backward is seen once per storage, parameters excluded. It is exact and needs no GPU
(on a GPU the benchmark suite also reports ``torch.cuda.max_memory_allocated``).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from densenet_lit.models.zoo import build_model


def activation_bytes(model: nn.Module, batch: torch.Tensor) -> int:
    """Bytes of the distinct tensors the graph of ``model(batch)`` keeps for backward."""
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in param_storages:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(batch)
    out.sum().backward()  # keeps the measurement honest: the graph was usable
    model.zero_grad(set_to_none=True)
    return sum(storages.values())


def compare(arch: str, batch_size: int, image_size: int, **kwargs) -> dict[str, int]:
    """Activation bytes of ``arch`` in the normal and the memory-efficient mode."""
    batch = torch.randn(batch_size, 3, image_size, image_size)
    result = {}
    for efficient in (False, True):
        torch.manual_seed(0)
        model = build_model(arch, memory_efficient=efficient, **kwargs)
        result["memory_efficient" if efficient else "normal"] = activation_bytes(model, batch)
    return result


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m densenet_lit.models.memory",
        description="Activation memory, normal vs memory_efficient",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    opts = parser.parse_args(args)
    if opts.batch_size < 1:
        parser.error(f"--batch-size {opts.batch_size}: expected a positive number of images")
    cases = [
        ("DenseNet-BC (L=100, k=12), 32x32", "densenet_cifar", 32, {"depth": 100, "growth_rate": 12}),
        ("DenseNet-BC (L=190, k=40), 32x32", "densenet_cifar", 32, {"depth": 190, "growth_rate": 40}),
        ("DenseNet-121, 224x224", "densenet121", 224, {}),
    ]  # fmt: skip
    print(f"Activation memory held for backward, batch {opts.batch_size} (MiB)")
    print("| model | normal | memory_efficient | ratio |")
    print("|---|---|---|---|")
    for label, arch, size, kwargs in cases:
        r = compare(arch, opts.batch_size, size, **kwargs)
        n, e = r["normal"] / 2**20, r["memory_efficient"] / 2**20
        print(f"| {label} | {n:.1f} | {e:.1f} | {e / n:.2f} |")


if __name__ == "__main__":
    main()
