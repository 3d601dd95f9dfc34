"""Exact evaluation on several devices, without starting processes: in a fake world of ranks,
the evaluation loaders of every data pipeline (in-memory tensors, PIL with ten crops, the
device decoder) split a set into shares that hold each image exactly once, and the module's
metrics merged over the shares (as their sync over the ranks sums them) equal those of one
process. tests/test_ddp.py runs the same with real processes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from densenet_lit.data import DigitsDataModule, ImageNetDataModule
from densenet_lit.data.shards import EvaluationShard
from densenet_lit.data.ten_crop import crop_averaged_logits
from densenet_lit.metrics import ClassificationError, WeightedMean
from densenet_lit.module import DenseNetModule

# fake_data("imagenet", **NINE): 3 classes of 3 validation images (the test set), 20x24
NINE = {"n_classes": 3, "n_per_class": 1, "n_val_per_class": 3, "size": (20, 24)}


def rank_batches(dm, stage: str, world_size: int) -> list[list[tuple[torch.Tensor, ...]]]:
    """For each rank of ``world_size``, the batches of ``dm``'s ``stage`` loader after the
    on-device transform, ``(x, y)``."""
    batches = []
    for rank in range(world_size):
        dm.trainer = SimpleNamespace(world_size=world_size, global_rank=rank, training=False)
        loader = getattr(dm, f"{stage}_dataloader")()
        batches.append([dm.transform_batch(batch, train=False) for batch in loader])
    dm.trainer = None
    return batches


def metrics_of(batches, network, num_classes: int) -> tuple[WeightedMean, ClassificationError]:
    """The module's evaluation metrics after ``batches`` (the loss weighted by batch size)."""
    loss, error = WeightedMean(), ClassificationError(num_classes)
    for x, y in batches:
        logits = crop_averaged_logits(network, x)
        loss.update(F.cross_entropy(logits, y), x.shape[0])
        error.update(logits, y)
    return loss, error


def digits(fake_data):
    dm = DigitsDataModule(batch_size=4, image_size=8, val_size=21, test_size=13)
    dm.setup("test")
    return dm


def imagenet(decode: str, crops: int):
    def make(fake_data):
        root, _ = fake_data("imagenet", **NINE)
        dm = ImageNetDataModule(
            data_dir=str(root), batch_size=4, eval_resize=18, eval_crop=16, eval_crops=crops,
            decode=decode, num_workers=0,
        )  # fmt: skip
        dm.setup("test")
        return dm

    return make


@pytest.mark.parametrize(
    ("make", "stage", "batches"),
    [
        (digits, "val", [6, 5]),  # 21 images: 11 and 10 in batches of 2
        (digits, "test", [4, 3]),  # 13 images: 7 and 6
        (digits, "predict", [4, 3]),
        (imagenet("pil", 10), "test", [3, 2]),  # 9 images: 5 and 4, ten crops each
        (imagenet("device", 1), "test", [3, 2]),
    ],
    ids=["digits-val", "digits-test", "digits-predict", "pil-ten-crops", "device-decode"],
)
def test_two_ranks_evaluate_each_image_once_and_merge_to_the_single_process_metrics(
    fake_data, make, stage, batches
):
    dm = make(fake_data)
    (whole,) = rank_batches(dm, stage, 1)
    shares = rank_batches(dm, stage, 2)
    assert [len(share) for share in shares] == batches  # rank 1 runs one batch less
    x, y = (torch.cat(parts) for parts in zip(*whole, strict=True))
    for rank, share in enumerate(shares):
        x_r, y_r = (torch.cat(parts) for parts in zip(*share, strict=True))
        assert torch.equal(x_r, x[rank::2]) and torch.equal(y_r, y[rank::2])

    torch.manual_seed(0)
    classes = dm.num_classes
    weight = torch.randn(x.shape[-3:].numel(), classes)  # a linear map of one crop

    def network(images):
        return images.flatten(1) @ weight

    loss, error = metrics_of(whole, network, classes)
    merged_loss, merged_error = metrics_of(shares[0], network, classes)
    other_loss, other_error = metrics_of(shares[1], network, classes)
    merged_loss.merge_state(other_loss)  # what the sync over the ranks does: sum the states
    merged_error.merge_state(other_error)
    assert float(merged_error.compute()) == float(error.compute())
    assert float(merged_loss.compute()) == pytest.approx(float(loss.compute()), rel=1e-6)
    assert float(merged_loss.weight) == len(y)


def test_the_shards_of_three_ranks_and_a_set_smaller_than_the_ranks():
    data = list(range(7))
    assert [list(EvaluationShard(data, 3, r, "test")) for r in range(3)] == [
        [0, 3, 6],
        [1, 4],
        [2, 5],
    ]
    assert [len(EvaluationShard(data, 3, r, "test")) for r in range(3)] == [3, 2, 2]
    with pytest.raises(ValueError, match=r"validation set has 2 image\(s\), fewer than the 3"):
        EvaluationShard([0, 1], 3, 0, "validation")


def test_compiled_networks_pad_each_ranks_last_batch_to_the_plain_networks_outputs(
    fake_data, monkeypatch
):
    """``compile: true``: each rank's module pads its own smaller last batch (13 test images:
    batches of 2, 2, 2, 1 and 2, 2, 2) and gives the plain network's outputs for its share."""
    compile_ = torch.compile
    monkeypatch.setattr(
        torch, "compile", lambda model, **kw: compile_(model, **{**kw, "backend": "eager"})
    )
    torch.compiler.reset()
    dm = digits(fake_data)
    (whole,) = rank_batches(dm, "test", 1)
    shares = rank_batches(dm, "test", 2)
    tiny = {"depth": 10, "growth_rate": 4, "num_classes": 10, "in_channels": 1}
    plain = DenseNetModule(**tiny).eval()
    with torch.no_grad():
        expected = plain(torch.cat([x for x, _ in whole]))
        for rank, share in enumerate(shares):
            module = DenseNetModule(**tiny, compile=True)
            module.load_state_dict(plain.state_dict())
            module.configure_model()
            module.eval()
            out = torch.cat([module(x) for x, _ in share])
            assert module.compiled and module.eval_batch_size == 2
            assert torch.allclose(out, expected[rank::2], rtol=0, atol=1e-5)
