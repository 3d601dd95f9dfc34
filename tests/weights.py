"""The weights of a finished run, compared tensor by tensor (for the tests of exact
resumption: an interrupted-and-resumed run must end with exactly the weights of an
uninterrupted one)."""

from __future__ import annotations

import torch


def final_weights(cli) -> dict[str, torch.Tensor]:
    """A copy of the state dict of a finished ``densenet_lit.cli.run``'s module."""
    return {k: v.detach().clone() for k, v in cli.model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Same keys and bit-identical tensors; names a few of those that differ."""
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"
