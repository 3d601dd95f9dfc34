"""Ten-crop ImageNet evaluation (``eval_crops: 10``) against an independent evaluation.

The reference is written here with torchvision's own ``transforms.TenCrop`` on the JPEG files
and torchvision's DenseNet-121; the data module, our network (loaded with
``load_torchvision_weights``) and the LightningModule's metrics must give the same numbers.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T
import yaml
from cli_args import IMAGENET, cli_args
from lightning.pytorch import Trainer
from PIL import Image

from densenet_lit.analysis import report
from densenet_lit.cli import run
from densenet_lit.data import ImageNetDataModule
from densenet_lit.data.imagenet import MEAN, STD
from densenet_lit.data.synthetic import digit_photos, write_imagenet_val
from densenet_lit.data.ten_crop import crop_averaged_logits
from densenet_lit.module import DenseNetModule

# fake_data("imagenet", **IMAGENET_3X2): 3 classes of 1 training and 2 validation images, 40x48
IMAGENET_3X2 = {"n_classes": 3, "n_per_class": 1, "n_val_per_class": 2, "size": (40, 48)}
SIZES = [(300, 360), (320, 270), (288, 288)]  # (h, w): landscape, portrait, square; > 256
LIVE = 6  # classes the classifier ranks; the other 994 get a logit of -1e4


def quiet_trainer() -> Trainer:
    return Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )


def reference_crops(path, resize: int = 256, crop: int = 224) -> torch.Tensor:
    """[10, 3, crop, crop] of one file, with torchvision's v1 transforms only."""
    image = Image.open(path).convert("RGB")
    image = T.Resize(resize, interpolation=T.InterpolationMode.BICUBIC)(image)
    to_input = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    return torch.stack([to_input(c) for c in T.TenCrop(crop)(image)])


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three real images (one per class) in ImageNet's val/ layout, and their files."""
    root = tmp_path_factory.mktemp("imagenet_photos")
    files = write_imagenet_val(root, [[p] for p in digit_photos(SIZES, seed=0)])
    return root, files


@pytest.fixture(scope="module")
def seeded_densenet121(photos, tmp_path_factory):
    """torchvision's DenseNet-121 with seeded weights, saved as a weight file, and its
    reference logits ``[images, 10 crops, 1000]``. The classifier ranks six classes by the
    images' features (seeded weights, centred on these images), so that top-1 and top-5
    errors are neither 0 nor 100 %."""
    _, files = photos
    torch.manual_seed(0)
    net = torchvision.models.densenet121(weights=None).eval()
    crops = torch.stack([reference_crops(f) for f in files])  # [3, 10, 3, 224, 224]
    with torch.no_grad():
        features = net.features(crops.flatten(0, 1))
        features = F.adaptive_avg_pool2d(F.relu(features), 1).flatten(1)
        weight = torch.zeros(1000, features.shape[1])
        seeded = torch.Generator().manual_seed(2)
        weight[:LIVE] = torch.randn(LIVE, features.shape[1], generator=seeded)
        bias = torch.full((1000,), -1e4)
        bias[:LIVE] = -weight[:LIVE] @ features.mean(0)
        net.classifier.weight.copy_(weight)
        net.classifier.bias.copy_(bias)
        logits = net.classifier(features).unflatten(0, crops.shape[:2])  # = net(crops)
    path = tmp_path_factory.mktemp("weights") / "densenet121_seeded.pth"
    torch.save(net.state_dict(), path)
    return path, logits


def expected_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    top5 = logits.topk(5, dim=1).indices
    return {
        "val/loss": F.cross_entropy(logits, labels).item(),
        "val/error": 100.0 * (logits.argmax(1) != labels).float().mean().item(),
        "val/error_top5": 100.0 * (~(top5 == labels[:, None]).any(1)).float().mean().item(),
    }


@pytest.mark.slow
def test_single_and_ten_crop_scores_equal_an_independent_evaluation(photos, seeded_densenet121):
    root, files = photos
    weights, reference = seeded_densenet121
    labels = torch.arange(len(files))  # one image per class folder, in folder order
    expected = {
        1: expected_metrics(reference[:, 4], labels),  # TenCrop's fifth crop is the centre
        10: expected_metrics(reference.mean(dim=1), labels),
    }
    # the two evaluations disagree on these images, so each is checked for what it is
    assert expected[1]["val/error"] != expected[10]["val/error"]
    assert 0 < expected[10]["val/error_top5"] < 100

    for crops in (1, 10):
        module = DenseNetModule(arch="densenet121", num_classes=1000, pretrained=str(weights))
        data = ImageNetDataModule(str(root), batch_size=2, num_workers=0, eval_crops=crops)
        (metrics,) = quiet_trainer().validate(module, datamodule=data)
        for name, value in expected[crops].items():
            assert metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-4), (crops, name)
    assert module.hparams.num_classes == 1000 and data.hparams.eval_crops == 10


def test_ten_crop_items_are_torchvisions_ten_crops(photos):
    root, files = photos
    data = ImageNetDataModule(str(root), batch_size=2, num_workers=0, eval_crops=10)
    data.setup("test")
    images, labels = next(iter(data.test_dataloader()))
    assert images.shape == (2, 10, 3, 224, 224) and labels.tolist() == [0, 1]
    for got, path in zip(images, files, strict=False):
        torch.testing.assert_close(got, reference_crops(path), atol=1e-5, rtol=0)


def test_predict_averages_the_crops(fake_data):
    """``predict`` with ``eval_crops: 10``: one probability row per image, the softmax of the
    mean logits of its ten crops (a tiny network on small crops keeps this fast)."""
    root, _ = fake_data("imagenet", **IMAGENET_3X2)
    data = ImageNetDataModule(
        str(root), batch_size=4, num_workers=0, eval_resize=36, eval_crop=32, eval_crops=10
    )
    torch.manual_seed(0)
    module = DenseNetModule(depth=10, growth_rate=4, num_classes=3).eval()
    probs = torch.cat(quiet_trainer().predict(module, datamodule=data))
    files = sorted((root / "val").rglob("*.JPEG"), key=lambda p: (p.parent.name, p.name))
    crops = torch.stack([reference_crops(f, resize=36, crop=32) for f in files])
    with torch.no_grad():
        want = module.model(crops.flatten(0, 1)).unflatten(0, (len(files), 10)).mean(1)
    assert probs.shape == (6, 3)
    torch.testing.assert_close(probs, want.softmax(-1), atol=1e-5, rtol=1e-4)
    single = module.model(crops[:, 4]).softmax(-1).detach()
    assert (probs - single).abs().max() > 1e-3  # not just the centre crop


def test_crop_averaged_logits_of_images_and_crops():
    def net(x):
        return x.flatten(1)[:, :3]

    x = torch.arange(2 * 3 * 1 * 1 * 4, dtype=torch.float32).view(2, 3, 1, 1, 4)
    assert crop_averaged_logits(net, x).tolist() == [[4.0, 5.0, 6.0], [16.0, 17.0, 18.0]]
    assert crop_averaged_logits(net, x[:, 0]).tolist() == [[0.0, 1.0, 2.0], [12.0, 13.0, 14.0]]


@pytest.mark.parametrize("bad", [0, 5, 2])
def test_eval_crops_other_than_1_or_10_is_a_clear_error(bad, tmp_path):
    with pytest.raises(ValueError, match=rf"eval_crops={bad}: expected 1 .* or 10"):
        ImageNetDataModule(str(tmp_path), eval_crops=bad)


def test_cli_test_run_records_its_crops_for_the_report(fake_data, tmp_path, capsys):
    """``test --data.init_args.eval_crops 10`` keeps the setting in the run's config.yaml, and
    the report (``--evaluations``) lists the run as a 10-crop ImageNet run."""
    root, _ = fake_data("imagenet", **IMAGENET_3X2)
    data = {"data_dir": root, "num_workers": 0, "eval_resize": 36}
    data |= {"eval_crop": 32, "eval_crops": 10}
    args = cli_args("test", tmp_path / "runs", data=IMAGENET, batch_size=4, data_init=data)
    c = run(args)
    assert c.trainer.callback_metrics["test/error"] >= 0
    config = yaml.safe_load((c.run_dir / "config.yaml").read_text())
    assert config["data"]["init_args"]["eval_crops"] == 10
    assert report.main([str(tmp_path / "runs"), "--evaluations"]) == 0
    assert f"| {c.run_dir.name} | imagenet (10-crop) |" in capsys.readouterr().out
