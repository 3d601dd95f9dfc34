"""The export's bad input (python -m densenet_lit.export): one clear error each, and nothing
half-written left behind; EMA weights; the command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import get_args

import pytest
import torch

pytest.importorskip("safetensors")

from export_runs import tiny_checkpoint  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from densenet_lit.checkpoints import CheckpointError, UntrustedCheckpointError  # noqa: E402
from densenet_lit.export import (  # noqa: E402
    FORMATS,
    ExportError,
    Format,
    export,
    main,
    onnx_file,
)
from densenet_lit.export.source import weights_kind  # noqa: E402
from densenet_lit.models import IMAGENET_CONFIGS, build_model  # noqa: E402
from densenet_lit.models.pretrained import torchvision_equivalent  # noqa: E402

ST = ["safetensors"]


def listing(folder) -> list[str]:
    """Everything under ``folder``, hidden entries included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_unknown_format_is_one_error_naming_it(tmp_path):
    with pytest.raises(ExportError, match=r"'torchscript'.*safetensors, onnx, pt2"):
        export(tiny_checkpoint(tmp_path / "a.ckpt"), tmp_path / "out", formats=["torchscript"])
    assert listing(tmp_path) == ["a.ckpt"]


def test_missing_truncated_and_foreign_checkpoints_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file or run directory"):
        export(tmp_path / "nothing.ckpt", tmp_path / "out", formats=ST)
    good = tiny_checkpoint(tmp_path / "good.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        export(tmp_path / "cut.ckpt", tmp_path / "out", formats=ST)
    torch.save({"state_dict": {}, "payload": argparse.Namespace(x=1)}, tmp_path / "evil.ckpt")
    with pytest.raises(UntrustedCheckpointError, match="argparse.Namespace"):
        export(tmp_path / "evil.ckpt", tmp_path / "out", formats=ST)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="without any .ckpt file"):
        export(tmp_path / "run", tmp_path / "out", formats=ST)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_output_folder_with_files_is_left_alone(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "a.ckpt")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    with pytest.raises(ExportError, match=r"out.*holds 1 entries \(mine.txt\)"):
        export(ckpt, tmp_path / "out", formats=ST)
    assert listing(tmp_path) == ["a.ckpt", "out", "out/mine.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="a file is in the way"):
        export(ckpt, tmp_path / "file", formats=ST)


def test_a_failure_midway_leaves_nothing_behind(tmp_path, monkeypatch):
    ckpt = tiny_checkpoint(tmp_path / "a.ckpt")
    (tmp_path / "empty").mkdir()
    before = listing(tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("the exporter broke")

    monkeypatch.setattr(onnx_file, "write", broken)
    with pytest.raises(RuntimeError, match="the exporter broke"):
        export(ckpt, tmp_path / "empty", formats=["safetensors", "onnx"])  # safetensors written
    for new in ("new", "made/for/it"):  # the folders made for the export are removed too
        with pytest.raises(RuntimeError, match="the exporter broke"):
            export(ckpt, tmp_path / new, formats=["safetensors", "onnx"])
    assert listing(tmp_path) == before


def test_the_formats_of_the_command_line_are_the_writers():
    assert get_args(Format) == FORMATS == ("safetensors", "onnx", "pt2")


def test_a_missing_library_names_the_extra(tmp_path, monkeypatch):
    ckpt = tiny_checkpoint(tmp_path / "a.ckpt")
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now fails
    with pytest.raises(ExportError, match=r"'onnx'.*pip install densenet_lit\[export\]"):
        export(ckpt, tmp_path / "out", formats=["onnx"])
    assert listing(tmp_path) == ["a.ckpt"]


def test_ema_checkpoints_export_the_averaged_weights(tmp_path):
    raw = tiny_checkpoint(tmp_path / "raw.ckpt", seed=0)
    averaged = torch.load(tiny_checkpoint(tmp_path / "avg.ckpt", seed=1), weights_only=True)
    raw_state = torch.load(raw, weights_only=True)["state_dict"]
    # Lightning's EMAWeightAveraging's layout: state_dict averaged, current_model_state the raw weights
    ema = tiny_checkpoint(
        tmp_path / "ema.ckpt", seed=1, current_model_state=raw_state, averaging_state={}
    )
    for ckpt, weights, state in ((ema, "ema", averaged["state_dict"]), (raw, "raw", raw_state)):
        out = export(ckpt, tmp_path / f"out-{weights}", formats=ST)
        with safe_open(str(out / "model.safetensors"), "pt") as f:
            assert json.loads(f.metadata()["weights"]) == weights
        exported = load_file(str(out / "model.safetensors"))
        assert all(torch.equal(exported[k.removeprefix("model.")], v) for k, v in state.items())
    key = "model.features.conv0.weight"  # the two sets differ: the test tells them apart
    assert not torch.equal(raw_state[key], averaged["state_dict"][key])


def test_command_line(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "a.ckpt")
    assert main([str(ckpt), "--out", str(tmp_path / "out"), "--formats", "[safetensors]"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "out" / n) for n in ("MODEL_CARD.md", "model.safetensors")]
    modes = {p.stat().st_mode for p in (tmp_path / "out").iterdir()}
    assert len(modes) == 1  # the weights as readable as the card (safetensors writes 0600)
    assert main([str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "none.ckpt" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as stop:
        main([str(ckpt), "--out", str(tmp_path / "o3"), "--formats", "[torchscript]"])
    assert stop.value.code == 2 and "torchscript" in capsys.readouterr().err


def test_ema_is_recognised_by_the_callback_state_too():
    ema = {"callbacks": {"EMAWeightAveraging": {"n_averaged": 3}}, "state_dict": {}}
    plain = {"callbacks": {"ModelCheckpoint{'monitor': 'val/error'}": {}}, "state_dict": {}}
    assert (weights_kind(ema), weights_kind(plain)) == ("ema", "raw")


@pytest.mark.parametrize("arch", [*IMAGENET_CONFIGS, "densenet_imagenet"])
def test_every_imagenet_network_has_torchvision_names_and_shapes(arch):
    """Built without weights (meta device): the torchvision builder the export names holds
    exactly our tensors (DenseNet-264 and any-block networks: torchvision's DenseNet class)."""
    import torchvision

    kwargs = {"num_classes": 7}
    if arch == "densenet_imagenet":
        kwargs |= {"block_config": [2, 3, 4, 5], "growth_rate": 12, "bn_size": 2}
    name, tv_kwargs = torchvision_equivalent(arch, kwargs)
    assert name == (
        arch if arch in ("densenet121", "densenet161", "densenet169", "densenet201") else "DenseNet"
    )
    with torch.device("meta"):
        ours = build_model(arch, **kwargs).state_dict()
        theirs = getattr(torchvision.models, name)(**tv_kwargs).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert torchvision_equivalent("densenet_cifar", {"depth": 10}) is None
    assert torchvision_equivalent(arch, {**kwargs, "in_channels": 1}) is None
