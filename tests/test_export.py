"""The export (python -m densenet_lit.export): each format round-trips on a small trained network
of each family (CIFAR-style on digits, DenseNet-121 and an any-block ImageNet network on a tiny
ImageNet), torchvision loads the ImageNet weights, the README's snippets run, memory levels and
compile export as the plain network, and bad input is one clear error leaving nothing behind."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("safetensors")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytestmark = pytest.mark.slow  # trains two tiny networks and exports three (about 30 s of CPU)

import onnx  # noqa: E402
import onnxruntime  # noqa: E402
import torchvision  # noqa: E402
from export_runs import (  # noqa: E402
    IMAGENET_DATA,
    real_images,
    run_snippet,
    train_digits,
    train_imagenet,
    with_network,
)
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from densenet_lit.analysis.checkpoint import find_checkpoint, load_model  # noqa: E402
from densenet_lit.analysis.runs import load_run  # noqa: E402
from densenet_lit.export import export  # noqa: E402
from densenet_lit.models import build_model  # noqa: E402


def metadata(folder) -> dict:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return {k: json.loads(v) for k, v in f.metadata().items()}


def metadata_of_onnx(folder) -> dict:
    model = onnx.load(str(folder / "model.onnx"))
    return {p.key: json.loads(p.value) for p in model.metadata_props}


def images_for(meta: dict, n: int = 6) -> torch.Tensor:
    channels, size, _ = meta["input_size"]
    return real_images(n, channels, size, meta["mean"], meta["std"])


def assert_onnx_matches(net, folder, images) -> None:
    """Full check, then onnxruntime on two batch sizes (dynamic batch) within 1e-4."""
    onnx.checker.check_model(str(folder / "model.onnx"), full_check=True)
    session = onnxruntime.InferenceSession(
        str(folder / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    for batch in (images[:1], images):
        (got,) = session.run(["logits"], {"images": batch.numpy()})
        assert got.shape == (len(batch), net.classifier.out_features)
        assert (torch.from_numpy(got) - net(batch)).abs().max().item() <= 1e-4


def assert_pt2_matches(net, folder, images) -> None:
    program = torch.export.load(str(folder / "model.pt2")).module()
    for batch in (images[:2], images):
        assert (program(batch) - net(batch)).abs().max().item() <= 1e-5


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    return train_digits(tmp_path_factory.mktemp("digits") / "runs")


@pytest.fixture(scope="module")
def imagenet_data(fake_data):
    """The tiny ImageNet's root and its class folders (conftest's shared fake data)."""
    return fake_data("imagenet", **IMAGENET_DATA)


@pytest.fixture(scope="module")
def any_block_run(tmp_path_factory, imagenet_data):
    root = tmp_path_factory.mktemp("anyblock") / "runs"
    model = {"arch": "densenet_imagenet", "growth_rate": 4, "block_config": "[1,2,2,1]"}
    return train_imagenet(root, imagenet_data[0], **model)


@pytest.fixture(scope="module")
def densenet121_ckpt(tmp_path_factory, any_block_run):
    """The any-block run's best checkpoint holding a DenseNet-121 (not trained: too slow)."""
    source = find_checkpoint(any_block_run, "best")
    target = tmp_path_factory.mktemp("d121") / "densenet121.ckpt"
    return with_network(source, target, arch="densenet121")


@torch.no_grad()
def test_cifar_network_exports_every_format_with_its_metadata(digits_run, tmp_path):
    out = export(digits_run, tmp_path / "digits-export")
    assert sorted(p.name for p in out.iterdir()) == [
        "MODEL_CARD.md",
        "model.onnx",
        "model.pt2",
        "model.safetensors",
    ]
    meta = metadata(out)
    run = load_run(digits_run)
    val = min(run.values("val/error"))
    assert meta["architecture"] == "densenet_cifar" and meta["key"] == "densenet_bc_10_4"
    assert meta["arguments"] == {
        "depth": 10,
        "growth_rate": 4,
        "bottleneck": True,
        "compression": 0.5,
        "drop_rate": 0.0,
        "num_classes": 10,
        "in_channels": 1,
    }
    assert meta["class_names"] == [str(i) for i in range(10)] and meta["num_classes"] == 10
    assert meta["input_size"] == [1, 16, 16] and meta["dataset"] == "digits"
    assert meta["weights"] == "raw" and meta["torchvision"] is None
    assert math.isclose(meta["best_val_error"], val, abs_tol=1e-4)
    assert math.isclose(meta["test_error"], run.last("test/error"), abs_tol=1e-6)
    assert meta["eval_crop"] is None and len(meta["mean"]) == len(meta["std"]) == 1
    net = load_model(digits_run, which="best")
    images = images_for(meta)
    # the documented builder of CIFAR/SVHN networks loads the weights and gives the outputs
    rebuilt = build_model(meta["architecture"], **meta["arguments"]).eval()
    rebuilt.load_state_dict(load_file(str(out / "model.safetensors")))
    assert torch.equal(rebuilt(images), net(images))
    assert_onnx_matches(net, out, images)
    assert_pt2_matches(net, out, images)
    assert metadata_of_onnx(out) == meta
    card = (out / "MODEL_CARD.md").read_text()
    assert "| 2,522 |" in card and f"{val:.2f} %" in card and "densenet_bc_10_4 (digits)" in card
    assert "The paper's number: none (densenet_bc_10_4 is not a network of the paper" in card


@torch.no_grad()
def test_densenet121_weights_load_in_torchvision(densenet121_ckpt, imagenet_data, tmp_path):
    out = export(densenet121_ckpt, tmp_path / "d121", formats=["safetensors"])
    assert sorted(p.name for p in out.iterdir()) == ["MODEL_CARD.md", "model.safetensors"]
    meta = metadata(out)
    assert meta["torchvision"] == {"builder": "densenet121", "arguments": {"num_classes": 3}}
    assert meta["class_names"] == imagenet_data[1] and meta["dataset"] == "imagenet"
    assert (meta["eval_resize"], meta["eval_crop"], meta["input_size"]) == (36, 32, [3, 32, 32])
    assert meta["mean"] == [0.485, 0.456, 0.406] and meta["std"] == [0.229, 0.224, 0.225]
    net = load_model(densenet121_ckpt)
    images = images_for(meta, n=3)
    # the README's snippet: torchvision.models.densenet121 loads the file (strictly)
    logits = run_snippet("torchvision", out, tmp_path / "work", images)
    assert (logits - net(images)).abs().max().item() <= 1e-5
    assert "Table 3" in (out / "MODEL_CARD.md").read_text()  # the paper's DenseNet-121 row


@torch.no_grad()
def test_any_block_imagenet_network_round_trips(any_block_run, tmp_path):
    out = export(any_block_run, tmp_path / "any")
    meta = metadata(out)
    assert meta["architecture"] == "densenet_imagenet"
    assert meta["torchvision"]["builder"] == "DenseNet"
    net = load_model(any_block_run, which="best")
    images = images_for(meta)
    tv = torchvision.models.DenseNet(**meta["torchvision"]["arguments"]).eval()
    tv.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
    assert (tv(images) - net(images)).abs().max().item() <= 1e-5
    assert_onnx_matches(net, out, images)
    assert_pt2_matches(net, out, images)
    for name, tolerance in (("onnxruntime", 1e-4), ("pt2", 1e-5)):
        logits = run_snippet(name, out, tmp_path / "work", images)
        assert (logits - net(images)).abs().max().item() <= tolerance


@torch.no_grad()
def test_memory_levels_and_compile_export_as_the_plain_network(digits_run, tmp_path):
    """A checkpoint of a network trained with recomputation (the deepest memory level) and
    compiled holds the plain network's state dict: it exports as the plain network, without
    torch.utils.checkpoint or a compiled wrapper in the graph."""
    source = find_checkpoint(digits_run, "best")
    ckpt = torch.load(source, weights_only=True)
    runtime = {"memory_efficient": 3, "compile": True}
    ckpt["hyper_parameters"] = {**ckpt["hyper_parameters"], **runtime}
    torch.save(ckpt, tmp_path / "trained.ckpt")
    out = export(tmp_path / "trained.ckpt", tmp_path / "out", formats=["onnx", "pt2"])
    net = load_model(source)
    images = real_images(4, 1, 16, [0.3], [0.3])
    assert_onnx_matches(net, out, images)
    assert_pt2_matches(net, out, images)
    card = (out / "MODEL_CARD.md").read_text()
    assert "memory_efficient: 3" in card and "compile: true" in card
    assert "memory_efficient" not in metadata_of_onnx(out)["arguments"]
