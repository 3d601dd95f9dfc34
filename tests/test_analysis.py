"""Tests of densenet_lit.analysis: feature reuse on hand-set weights, checkpoint loading, and the
comparison / report on run directories with known contents (written in the CLI's format)."""

from __future__ import annotations

import csv
import math
import os
import sys
import types
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
import yaml

from densenet_lit.analysis import checkpoint as ck
from densenet_lit.analysis import compare, costs, feature_reuse, paper_plots, report, runs
from densenet_lit.models import DenseNet, densenet_cifar
from densenet_lit.models.summary import count_macs, count_parameters

NAN = math.nan


# ------------------------------------------------------------------------------ helpers
def assert_png_not_blank(path: Path, min_bytes: int = 5_000) -> None:
    """The PNG exists, is not tiny, and its pixels vary (not a blank canvas)."""
    path = Path(path)
    assert path.is_file(), f"{path} was not written"
    assert path.stat().st_size > min_bytes, f"{path} is only {path.stat().st_size} bytes"
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert float(pixels[..., :3].std()) > 0.02, f"{path} looks blank"
    # more than a couple of colours: something was drawn
    colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 20, f"{path} has only {len(colours)} colours"


def write_fake_run(
    root: Path,
    experiment: str,
    run_id: str,
    *,
    data_class: str,
    data_args: dict,
    model_args: dict,
    rows: list[dict],
    max_epochs: int,
    metrics_subdir: str = "",
    checkpoint: bool = True,
    start: float | None = None,
    end: float | None = None,
) -> Path:
    """A run directory as ``python -m densenet_lit fit`` writes it: config.yaml (the resolved
    LightningCLI config), hparams.yaml + metrics.csv (CSVLogger) and checkpoints/. ``rows`` are
    the CSV rows (missing keys are empty cells). ``start``/``end`` set the files' times."""
    run_dir = root / experiment / run_id
    (run_dir / metrics_subdir).mkdir(parents=True, exist_ok=True)
    config = {
        "seed_everything": 0,
        "trainer": {"max_epochs": max_epochs, "default_root_dir": str(root), "logger": None},
        "model": {"arch": "densenet_cifar", "drop_rate": 0.0, "lr": 0.1, **model_args},
        "data": {"class_path": f"densenet_lit.data.{data_class}", "init_args": data_args},
        "run": {"name": None, "wandb": False, "test_after_fit": True},
        "ckpt_path": None,
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    hparams = {"_instantiator": "lightning.pytorch.cli.instantiate_module", **config["model"]}
    hparams.update(data_args)
    metrics_dir = run_dir / metrics_subdir
    (metrics_dir / "hparams.yaml").write_text(yaml.safe_dump(hparams))
    columns = sorted({k for row in rows for k in row} | {"epoch", "step"})
    with open(metrics_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in columns})
    files = [run_dir / "config.yaml", metrics_dir / "hparams.yaml", metrics_dir / "metrics.csv"]
    if checkpoint:
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"not needed by the report")
        files.append(run_dir / "checkpoints" / "last.ckpt")
    if start is not None:
        for f in files[:2]:
            os.utime(f, (start, start))
    if end is not None:
        for f in files[2:]:
            os.utime(f, (end, end))
    return run_dir


def epoch_rows(val_errors, train_errors=None, images_per_sec=None, steps_per_epoch=10):
    """CSV rows as Lightning's CSVLogger writes them: a validation row and a training row per
    epoch, NaN (empty) where a metric is not logged."""
    rows = []
    for e, val in enumerate(val_errors):
        step = (e + 1) * steps_per_epoch - 1
        rows.append({"epoch": e, "step": step, "val/error": val, "val/loss": val / 10})
        train = {"epoch": e, "step": step, "train/loss": 1.0 / (e + 1)}
        if train_errors is not None:
            train["train/error"] = train_errors[e]
        if images_per_sec is not None:
            train["perf/images_per_sec"] = images_per_sec[e]
        rows.append(train)
    return rows


START_A = datetime(2025, 1, 1, 10, 0, 0).timestamp()


@pytest.fixture
def fake_runs(tmp_path: Path) -> Path:
    """Four finished/unfinished runs with known numbers under tmp_path/runs."""
    root = tmp_path / "runs"
    # A: DenseNet-BC (L=100, k=12) on C10+, 3 epochs of 3, tested: 4.75 vs the paper's 4.51.
    rows_a = epoch_rows([10.0, 7.5, 6.25], [20.0, 12.0, 8.0], [100.0, 120.0, 110.0])
    rows_a.append({"epoch": 3, "step": 29, "test/error": 4.75, "test/loss": 0.2})
    write_fake_run(
        root, "cifar10plus_densenet_bc_100_12", "20250101-100000-aaaaaa",
        data_class="CIFAR10DataModule",
        data_args={"data_dir": "data/cifar10", "batch_size": 64, "augment": True, "val_size": 5000},
        model_args={"depth": 100, "growth_rate": 12, "bottleneck": None, "compression": None},
        rows=rows_a, max_epochs=3, end=START_A + 3600,
    )  # fmt: skip
    # B: DenseNet (L=40, k=12) on SVHN, 2 of 4 epochs, no test: unfinished, ours = last val.
    t0 = datetime(2025, 2, 1, 8, 0, 0).timestamp()
    write_fake_run(
        root, "svhn_densenet_40_12", "run-b",
        data_class="SVHNDataModule",
        data_args={"data_dir": "data/svhn", "batch_size": 64, "val_size": 6000},
        model_args={"depth": 40, "growth_rate": 12, "bottleneck": False, "compression": 1.0,
                    "drop_rate": 0.2},
        rows=epoch_rows([3.0, 2.5]), max_epochs=4, start=t0, end=t0 + 90,
    )  # fmt: skip
    # C: DenseNet (L=40, k=12) on C100 (no augmentation), metrics.csv nested, no checkpoints.
    rows_c = epoch_rows([40.0, 35.0])
    rows_c.append({"epoch": 2, "step": 19, "test/error": 30.0})
    write_fake_run(
        root, "cifar100_densenet_40_12", "run-c",
        data_class="CIFAR100DataModule",
        data_args={"data_dir": "data/cifar100", "batch_size": 64, "augment": False, "val_size": 5000},
        model_args={"depth": 40, "growth_rate": 12, "bottleneck": False, "compression": 1.0},
        rows=rows_c, max_epochs=2, metrics_subdir="csv", checkpoint=False, start=t0, end=t0 + 45,
    )  # fmt: skip
    # D: DenseNet-121 on ImageNet, 2 of 2 epochs, val error only (24.5 vs 25.0).
    write_fake_run(
        root, "imagenet121", "run-d",
        data_class="ImageNetDataModule",
        data_args={"data_dir": "data/imagenet", "batch_size": 256, "eval_crop": 224},
        model_args={"arch": "densenet121", "schedule": "step"},
        rows=epoch_rows([30.0, 24.5], images_per_sec=[900.0, 1000.0]), max_epochs=2,
        start=t0, end=t0 + 9000,
    )  # fmt: skip
    return root


# ------------------------------------------------------------------------- feature reuse
# Hand-set weights: every weight reading source s of target t has |w| = VALUES[block][t][s]
# (random signs), so the mean absolute weights are known exactly.
def _sign_pattern(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0)


def set_hand_weights(net: DenseNet, values: list[list[list[float]]]) -> None:
    """values[b][t][s]: |weight| of target t (layers, then transition/classifier) on source s."""
    blocks = [m for n, m in net.features.named_children() if n.startswith("denseblock")]
    k = net.growth_rate
    with torch.no_grad():
        for b, block in enumerate(blocks):
            layers = list(block.values())
            c0 = layers[0].conv1.in_channels
            readers = [layer.conv1.weight for layer in layers]
            reader = getattr(net.features, f"transition{b + 1}", None)
            readers.append(reader.conv.weight if reader is not None else net.classifier.weight)
            for t, w in enumerate(readers):
                bounds = [0, c0] + [c0 + s * k for s in range(1, w.shape[1] // k + 1)]
                bounds = [x for x in bounds if x <= w.shape[1]]
                assert bounds[-1] == w.shape[1]
                signs = _sign_pattern(w.shape, seed=100 * b + t)
                for s in range(len(bounds) - 1):
                    sl = slice(bounds[s], bounds[s + 1])
                    w[:, sl] = values[b][t][s] * signs[:, sl]


# Two blocks: block 1 has 2 layers (sources 0..2), block 2 has 3 layers (sources 0..3).
HAND_VALUES = [
    [[0.5], [0.25, 1.0], [0.125, 0.5, 0.25]],
    [[0.75], [0.375, 0.1875], [0.3, 0.6, 0.15], [0.05, 0.2, 0.4, 0.1]],
]
EXPECTED_RAW = [
    np.array([[0.5, NAN, NAN], [0.25, 1.0, NAN], [0.125, 0.5, 0.25]]),
    np.array(
        [
            [0.75, NAN, NAN, NAN],
            [0.375, 0.1875, NAN, NAN],
            [0.3, 0.6, 0.15, NAN],
            [0.05, 0.2, 0.4, 0.1],
        ]
    ),
]
EXPECTED_BY_TARGET = [
    np.array([[1.0, NAN, NAN], [0.25, 1.0, NAN], [0.25, 1.0, 0.5]]),
    np.array(
        [
            [1.0, NAN, NAN, NAN],
            [1.0, 0.5, NAN, NAN],
            [0.5, 1.0, 0.25, NAN],
            [0.125, 0.5, 1.0, 0.25],
        ]
    ),
]


def tiny_densenet(bottleneck: bool) -> DenseNet:
    return DenseNet(
        block_config=(2, 3), growth_rate=2, stem_channels=3, imagenet_stem=False,
        bottleneck=bottleneck, compression=0.5, num_classes=4, in_channels=1,
    )  # fmt: skip


def f32(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32).astype(np.float64)  # the weights are stored in float32


@pytest.mark.parametrize("bottleneck", [True, False], ids=["bottleneck-1x1", "plain-3x3"])
def test_feature_reuse_hand_set_matrix(bottleneck):
    net = tiny_densenet(bottleneck)
    set_hand_weights(net, HAND_VALUES)
    blocks = feature_reuse.feature_reuse(net)
    assert len(blocks) == 2
    for blk, raw, norm in zip(blocks, EXPECTED_RAW, EXPECTED_BY_TARGET, strict=True):
        np.testing.assert_allclose(blk.raw, f32(raw), rtol=1e-12, atol=0)
        np.testing.assert_allclose(blk.normalized, norm, rtol=1e-6, atol=0)
        assert np.array_equal(np.isnan(blk.raw), np.isnan(raw))
    assert blocks[0].source_labels == ["0", "1", "2"]
    assert blocks[0].target_labels == ["1", "2", "T1"]
    assert blocks[0].final_target == "transition"
    assert blocks[1].target_labels == ["1", "2", "3", "C"]
    assert blocks[1].final_target == "classifier"
    assert (blocks[0].input_channels, blocks[1].input_channels) == (3, 3)  # floor(0.5 * 7) = 3


def test_feature_reuse_other_normalisations():
    net = tiny_densenet(True)
    set_hand_weights(net, HAND_VALUES)
    by_block = feature_reuse.feature_reuse(net, normalize="block")
    np.testing.assert_allclose(by_block[0].normalized, EXPECTED_RAW[0] / 1.0, rtol=1e-6)
    np.testing.assert_allclose(by_block[1].normalized, EXPECTED_RAW[1] / 0.75, rtol=1e-6)
    none = feature_reuse.feature_reuse(net, normalize="none")
    np.testing.assert_allclose(none[1].normalized, f32(EXPECTED_RAW[1]), rtol=1e-12)
    with pytest.raises(ValueError, match="normalize"):
        feature_reuse.feature_reuse(net, normalize="max")


def test_mean_abs_is_a_mean_over_the_slice():
    # source 0: |w| in {1, 3} -> mean 2 (not the max 3, not the sum); source 1: 0.5
    w = torch.tensor([[[[1.0]], [[-3.0]], [[0.5]]], [[[-3.0]], [[1.0]], [[-0.5]]]])
    got = feature_reuse.mean_abs_by_source(w, [slice(0, 2), slice(2, 3)])
    np.testing.assert_array_equal(got, [2.0, 0.5])


def test_feature_reuse_of_lightning_like_wrapper_and_heat_map(tmp_path):
    net = tiny_densenet(True)
    set_hand_weights(net, HAND_VALUES)
    wrapper = torch.nn.Module()
    wrapper.model = net
    blocks = feature_reuse.feature_reuse(wrapper)
    np.testing.assert_allclose(blocks[1].raw, f32(EXPECTED_RAW[1]), rtol=1e-12)
    out = tmp_path / "reuse.png"
    fig = feature_reuse.plot_feature_reuse(blocks, out, title="hand-set")
    assert len(fig.axes) == 3  # two heat maps and the colour bar
    assert_png_not_blank(out)
    text = feature_reuse.format_matrices(blocks[:1])
    assert "T1" in text and "0.25" in text


def _save_lightning_ckpt(path: Path, net: DenseNet, hparams: dict, compiled: bool = False):
    prefix = "model._orig_mod." if compiled else "model."
    state = {prefix + k: v for k, v in net.state_dict().items()}
    state["train_error.tp"] = torch.zeros(1)  # a module's other state is ignored
    torch.save(
        {"state_dict": state, "hyper_parameters": hparams, "epoch": 3, "global_step": 30}, path
    )


@pytest.mark.parametrize("compiled", [False, True])
def test_load_model_from_checkpoint_and_run_dir(tmp_path, compiled):
    # densenet_cifar(16, 2): BC, 2 layers per block, as the CLI's module builds it
    hparams = {"arch": "densenet_cifar", "depth": 16, "growth_rate": 2, "bottleneck": None,
               "compression": None, "drop_rate": 0.0, "num_classes": 4, "in_channels": 1,
               "lr": 0.1, "schedule": "step", "memory_efficient": False}  # fmt: skip
    net = densenet_cifar(16, 2, num_classes=4, in_channels=1)
    values = [
        [[0.5], [0.25, 1.0], [0.125, 0.5, 0.25]],
        [[0.4], [0.1, 0.2], [0.3, 0.6, 0.15]],
        [[0.8], [0.2, 0.4], [0.05, 0.1, 0.2]],
    ]
    set_hand_weights(net, values)
    run_dir = tmp_path / "exp" / "20250101-000000-abcdef"
    (run_dir / "checkpoints").mkdir(parents=True)
    _save_lightning_ckpt(run_dir / "checkpoints" / "last.ckpt", net, hparams, compiled)
    model = ck.load_model(run_dir)
    assert isinstance(model, DenseNet) and not model.training
    for b, blk in enumerate(feature_reuse.feature_reuse(model, normalize="none")):
        expected = np.full((3, 3), NAN)
        for t, row in enumerate(values[b]):
            expected[t, : len(row)] = row
        np.testing.assert_allclose(blk.raw, f32(expected), rtol=1e-12)
    # the command on the checkpoint file
    out = tmp_path / "heat.png"
    assert feature_reuse.main([str(run_dir / "checkpoints" / "last.ckpt"), "--out", str(out),
                               "--npz", str(tmp_path / "m.npz"), "--quiet"]) == 0  # fmt: skip
    assert_png_not_blank(out)
    saved = np.load(tmp_path / "m.npz")
    np.testing.assert_allclose(saved["block3_raw"][0, 0], np.float32(0.8), rtol=1e-12)


def test_find_checkpoint_prefers_last_or_best(tmp_path):
    d = tmp_path / "run" / "checkpoints"
    d.mkdir(parents=True)
    for name in ("best-epoch001-val_error5.00.ckpt", "last.ckpt"):
        (d / name).write_bytes(b"x")
    assert ck.find_checkpoint(tmp_path / "run").name == "last.ckpt"
    assert ck.find_checkpoint(tmp_path / "run", which="best").name.startswith("best")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ck.CheckpointError, match="without any .ckpt"):
        ck.find_checkpoint(empty)


def test_bad_checkpoints_give_clear_errors(tmp_path, capsys):
    text = tmp_path / "notes.ckpt"
    text.write_text("this is not a checkpoint\n")
    with pytest.raises(ck.CheckpointError, match="notes.ckpt.*not a readable PyTorch checkpoint"):
        ck.load_model(text)

    net = densenet_cifar(16, 2, num_classes=4, in_channels=1)
    good = tmp_path / "good.ckpt"
    _save_lightning_ckpt(good, net, {"arch": "densenet_cifar", "depth": 16, "growth_rate": 2,
                                     "num_classes": 4, "in_channels": 1})  # fmt: skip
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ck.CheckpointError, match="truncated.ckpt.*truncated"):
        ck.load_model(truncated)

    with pytest.raises(ck.CheckpointError, match="no such"):
        ck.load_model(tmp_path / "missing.ckpt")

    wrong = tmp_path / "wrong.ckpt"
    _save_lightning_ckpt(wrong, net, {"arch": "densenet_cifar", "depth": 40, "growth_rate": 12})
    with pytest.raises(ck.CheckpointError, match="wrong.ckpt: the weights do not fit"):
        ck.load_model(wrong)

    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": {"model.x": torch.zeros(1)}}, bare)
    with pytest.raises(ck.CheckpointError, match="hyper_parameters"):
        ck.load_model(bare)

    # the command: one line naming the file, exit status 2, no traceback
    assert feature_reuse.main([str(truncated), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "truncated.ckpt" in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_network_spec_for_imagenet_and_defaults():
    arch, kwargs = ck.network_spec({"arch": "densenet121", "depth": None, "num_classes": 1000,
                                    "in_channels": 3, "lr": 0.1, "memory_efficient": True})  # fmt: skip
    assert (arch, kwargs) == ("densenet121", {"num_classes": 1000, "in_channels": 3})
    arch, kwargs = ck.network_spec({"arch": "densenet_cifar", "depth": None, "num_classes": 10})
    assert kwargs == {"depth": 100, "growth_rate": 12, "bottleneck": True, "compression": 0.5,
                      "num_classes": 10}  # fmt: skip


# -------------------------------------------------------------------------------- costs
def test_meta_costs_equal_the_real_counts():
    for kwargs in ({"depth": 40, "growth_rate": 12, "bottleneck": False, "compression": 1},
                   {"depth": 16, "growth_rate": 4, "in_channels": 1}):  # fmt: skip
        net = densenet_cifar(**kwargs)
        size = (kwargs.get("in_channels", 3), 32, 32)
        cost = costs.network_cost("densenet_cifar", size, **kwargs)
        assert cost == costs.Cost(count_parameters(net), count_macs(net, size))


def test_paper_costs_match_the_paper_parameter_counts():
    rows = costs.paper_costs()
    checked = 0
    for r in rows:
        if r.model.params_m is not None:
            assert abs(r.params_m - r.model.params_m) <= 0.051, r.model.label
            checked += 1
    assert checked == 13
    by_key = {r.model.key: r for r in rows}
    assert by_key["densenet_bc_100_12"].cost == costs.Cost(769_162, 287_929_692)
    assert by_key["densenet121"].cost == costs.Cost(7_978_856, 2_834_161_664)
    table = costs.format_cost_table(rows)
    assert "| DenseNet-BC (L=100, k=12) | 32x32 | 0.77M | 0.8M | 0.288 |" in table


# ------------------------------------------------------------------------- runs, report
def test_runs_are_found_and_read(fake_runs):
    found = runs.collect_local_runs([fake_runs])
    assert [r.name for r in found] == [
        "cifar100_densenet_40_12/run-c",
        "cifar10plus_densenet_bc_100_12/20250101-100000-aaaaaa",
        "imagenet121/run-d",
        "svhn_densenet_40_12/run-b",
    ]
    by = {r.experiment: r for r in found}
    a, b, c, d = (by[k] for k in ("cifar10plus_densenet_bc_100_12", "svhn_densenet_40_12",
                                  "cifar100_densenet_40_12", "imagenet121"))  # fmt: skip
    assert [runs.benchmark(r) for r in (a, b, c, d)] == ["c10+", "svhn", "c100", "imagenet"]
    assert runs.final_error(a) == (4.75, "test")
    assert runs.final_error(b) == (2.5, "val")
    assert runs.validation_curve(a) == [(0, 10.0), (1, 7.5), (2, 6.25)]
    assert runs.best_validation(b) == (2.5, 1)
    assert runs.epochs_trained(a) == 3  # the test row's epoch counter (3) is not an epoch
    assert [runs.is_finished(r) for r in (a, b, c, d)] == [True, False, True, True]
    assert runs.images_per_second(a) == 110.0
    assert runs.images_per_second(b) is None
    assert runs.wall_time(a) == (3600.0, "files")  # run-id start to the last write
    assert runs.wall_time(b) == (90.0, "files")  # config.yaml's time to the last write
    assert runs.paper_row(a).key == "densenet_bc_100_12"
    assert runs.paper_row(b).key == "densenet_40_12"
    assert runs.paper_row(d).key == "densenet121"
    assert runs.input_size(d) == (3, 224, 224)
    assert runs.run_cost(c).params == count_parameters(
        densenet_cifar(40, 12, bottleneck=False, compression=1, num_classes=100)
    )
    # a single run directory, and a metrics.csv file, are accepted too
    assert [r.name for r in runs.collect_local_runs([c.path])] == [c.name]
    assert [r.name for r in runs.collect_local_runs([c.path / "csv" / "metrics.csv"])] == [c.name]


def test_report_table_has_the_exact_numbers(fake_runs, tmp_path):
    out = tmp_path / "report.md"
    assert report.main([str(fake_runs), "--out", str(out)]) == 0
    text = out.read_text()
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| experiment | run | benchmark | model | paper (%) | ours (%)")
    body = lines[1:]
    assert body == [
        "| cifar100_densenet_40_12 | run-c | c100 | DenseNet (L=40, k=12) | 27.55 | 30.00 (test) "
        "| +2.45 | 1.06M | 0.265 | 2 | 45 s |  |",
        "| cifar10plus_densenet_bc_100_12 | 20250101-100000-aaaaaa | c10+ | DenseNet-BC (L=100, "
        "k=12) | 4.51 | 4.75 (test) | +0.24 | 0.77M | 0.288 | 3 | 60.0 min | 110 |",
        "| imagenet121 | run-d | imagenet | DenseNet-121 (k=32) | 25.00 | 24.50 (val) | -0.50 "
        "| 7.98M | 2.83 | 2 | 2.5 h | 950 |",
    ]
    assert "svhn_densenet_40_12" not in text  # unfinished (2 of 4 epochs)
    rows = report.report_rows(runs.collect_local_runs([fake_runs]), include_unfinished=True)
    svhn = next(r for r in rows if r.benchmark == "svhn")
    assert (svhn.paper, svhn.ours, svhn.ours_from) == (1.79, 2.5, "val")
    assert math.isclose(svhn.difference, 0.71)
    assert svhn.params == count_parameters(densenet_cifar(40, 12, False, 1.0, drop_rate=0.2))
    assert "2/4" in report.format_report([svhn])


def test_compare_table_plot_and_selection(fake_runs, tmp_path, capsys):
    found = compare.collect_runs([fake_runs], select=["cifar10*", "svhn"])
    assert [r.experiment for r in found] == [
        "cifar100_densenet_40_12", "cifar10plus_densenet_bc_100_12", "svhn_densenet_40_12",
    ]  # fmt: skip
    rows = {r.name.split("/")[0]: r for r in compare.final_errors(found)}
    a = rows["cifar10plus_densenet_bc_100_12"]
    assert (a.last_val, a.best_val, a.best_val_epoch, a.test, a.paper) == (
        6.25,
        6.25,
        3,
        4.75,
        4.51,
    )
    b = rows["svhn_densenet_40_12"]
    assert (b.epochs, b.max_epochs, b.test, b.paper) == (2, 4, None, 1.79)
    table = compare.format_final_errors(list(rows.values()))
    assert (
        "| svhn_densenet_40_12/run-b | local | svhn | 2/4 | 2.50 | 2.50 (2) | - | 1.79 |" in table
    )

    out = tmp_path / "compare.png"
    assert compare.main([str(fake_runs), "--out", str(out), "--select", "cifar*"]) == 0
    printed = capsys.readouterr().out
    assert "cifar10plus_densenet_bc_100_12/20250101-100000-aaaaaa" in printed
    assert "svhn" not in printed
    assert_png_not_blank(out)


def test_compare_without_runs_fails_cleanly(tmp_path, capsys):
    assert compare.main([str(tmp_path), "--out", str(tmp_path / "x.png")]) == 1
    assert "no runs found" in capsys.readouterr().err
    assert compare.main([str(tmp_path / "missing"), "--out", str(tmp_path / "x.png")]) == 2


@pytest.fixture
def no_wandb_login(tmp_path, monkeypatch):
    """No API key, no ~/.netrc, an unreachable server: what an offline machine looks like."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")


def test_wandb_unavailable_is_one_clean_message(fake_runs, tmp_path, capsys, no_wandb_login):
    with pytest.raises(runs.WandbUnavailable, match="Could not read W&B project 'me/densenet-lit'"):
        runs.collect_wandb_runs("me/densenet-lit", timeout=5)
    # the command still compares the local runs, with one warning line
    out = tmp_path / "c.png"
    assert (
        compare.main([str(fake_runs), "--wandb-project", "me/densenet-lit", "--out", str(out)]) == 0
    )
    captured = capsys.readouterr()
    assert captured.err.count("Could not read W&B project") == 1
    assert "Traceback" not in captured.err
    assert "wandb login" in captured.err
    assert "cifar10plus_densenet_bc_100_12" in captured.out
    assert_png_not_blank(out)
    # and without local runs it fails with status 1
    assert compare.main(["--wandb-project", "me/densenet-lit", "--out", str(out)]) == 1
    capsys.readouterr()
    # the report too: local runs reported, one warning
    md = tmp_path / "r.md"
    assert (
        report.main([str(fake_runs), "--wandb-project", "me/densenet-lit", "--out", str(md)]) == 0
    )
    captured = capsys.readouterr()
    assert captured.err.count("Could not read W&B project") == 1
    assert "| cifar10plus_densenet_bc_100_12 |" in md.read_text()


class _FakeWandbRun:
    def __init__(self):
        self.name = "cifar10plus_densenet_bc_100_12/20250301-120000-cafe00"
        self.id = "abc123"
        self.group = "cifar10plus-densenet_bc_100_12"
        self.url = "https://wandb.ai/me/densenet-lit/runs/abc123"
        self.config = {
            "arch": "densenet_cifar", "depth": 100, "growth_rate": 12, "num_classes": 10,
            "model": {"arch": "densenet_cifar", "depth": 100, "growth_rate": 12},
            "data": {"class_path": "densenet_lit.data.CIFAR10DataModule",
                     "init_args": {"augment": True}},
            "trainer": {"max_epochs": 2},
        }  # fmt: skip
        self.summary = {"_runtime": 7200.0, "test/error": 4.6}

    def scan_history(self):
        yield {"epoch": 0, "trainer/global_step": 9, "val/error": 8.0, "_step": 0}
        yield {"epoch": 0, "trainer/global_step": 9, "train/error": 12.0, "_step": 1}
        yield {"epoch": 1, "trainer/global_step": 19, "val/error": 6.0, "_step": 2}
        yield {"epoch": 1, "trainer/global_step": 19, "perf/images_per_sec": 2500.0, "_step": 3}
        yield {"epoch": 2, "trainer/global_step": 19, "test/error": 4.6, "_step": 4}


def test_wandb_runs_become_runs(monkeypatch, fake_runs):
    calls = {}

    class FakeApi:
        def __init__(self, timeout=None):
            calls["timeout"] = timeout

        def runs(self, path, per_page=50):
            calls["path"] = path
            return [_FakeWandbRun()]

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(Api=FakeApi))
    got = compare.collect_runs([fake_runs], wandb_project="densenet-lit", wandb_entity="me",
                               select=["*cafe00"])  # fmt: skip
    assert calls["path"] == "me/densenet-lit"
    assert len(got) == 1
    run = got[0]
    assert (run.source, run.experiment, run.run_id) == (
        "wandb",
        "cifar10plus_densenet_bc_100_12",
        "20250301-120000-cafe00",
    )
    assert runs.validation_curve(run) == [(0, 8.0), (1, 6.0)]
    assert runs.final_error(run) == (4.6, "test")
    assert runs.wall_time(run) == (7200.0, "W&B _runtime")
    row = report.report_row(run)
    assert (row.benchmark, row.paper, row.params, row.epochs, row.images_per_sec) == (
        "c10+",
        4.51,
        769_162,
        2,
        2500.0,
    )
    assert math.isclose(row.difference, 0.09)


def test_experiment_name_fallbacks_without_config(tmp_path):
    d = tmp_path / "cifar100plus_densenet_bc_100_12" / "r1"
    d.mkdir(parents=True)
    (d / "metrics.csv").write_text("epoch,step,train/loss,val/error\n0,9,1.5,30.5\n")
    (d / "hparams.yaml").write_text("depth: 100\ngrowth_rate: 12\nnum_classes: 100\n")
    (run,) = runs.collect_local_runs([tmp_path])
    assert runs.benchmark(run) == "c100+"
    assert runs.paper_error(run) == 22.27
    assert runs.final_error(run) == (30.5, "val")


def test_evaluation_runs_are_not_counted_as_training_runs(tmp_path):
    """``validate``/``test`` of a checkpoint write their own run directory with evaluation
    metrics only; comparisons and reports leave them out unless asked for."""
    fit, test = tmp_path / "exp" / "fit1", tmp_path / "exp" / "test1"
    for d in (fit, test):
        d.mkdir(parents=True)
    (fit / "metrics.csv").write_text("epoch,step,lr,train/loss,test/error\n0,9,0.1,1.5,7.0\n")
    (test / "metrics.csv").write_text("epoch,step,test/error\n0,0,7.0\n")
    assert [r.run_id for r in runs.collect_local_runs([tmp_path])] == ["fit1"]
    everything = runs.collect_local_runs([tmp_path], training_only=False)
    assert [r.run_id for r in everything] == ["fit1", "test1"]


# -------------------------------------------------------------------------- paper plots
def test_paper_points_and_figure(fake_runs, tmp_path):
    pts = paper_plots.paper_points("c10+")
    assert len(pts) == 9
    assert {p.model.key: p.error for p in pts}["densenet_bc_190_40"] == 3.46
    assert len(paper_plots.paper_points("imagenet")) == 8
    rows = report.report_rows(runs.collect_local_runs([fake_runs]))
    out = tmp_path / "fig.png"
    fig = paper_plots.plot_paper_figure(("c10+", "imagenet"), rows, out)
    labels = [t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()]
    assert "your runs" in labels and "DenseNet-BC (paper)" in labels
    assert_png_not_blank(out)
