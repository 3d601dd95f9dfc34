"""Tests of densenet_lit.analysis: feature reuse on hand-set weights, checkpoint loading, and the
comparison / report on run directories with known contents (written in the CLI's format)."""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
import torch
import torchvision
import yaml
from plots import assert_png_not_blank
from run_dirs import epoch_rows, write_fake_run

from densenet_lit.analysis import checkpoint as ck
from densenet_lit.analysis import compare, costs, feature_reuse, paper_plots, report, runs
from densenet_lit.models import DenseNet, densenet_cifar
from densenet_lit.models.summary import count_macs, count_parameters

NAN = math.nan


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
        "| imagenet121 | run-d | imagenet | DenseNet-121 (k=32) | 25.02 | 24.50 (val) | -0.52 "
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


def test_wandb_unavailable_is_one_clean_message(
    fake_runs, tmp_path, capsys, no_wandb_account, monkeypatch
):
    """No API key, no ~/.netrc, an unreachable server: what an offline machine looks like."""
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
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
            "benchmark": "cifar10plus",
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


def test_a_run_without_config_is_known_by_its_declared_benchmark(tmp_path):
    """The data set of a run is what its data module declared (``benchmark`` among the logged
    hyperparameters), never guessed from class or experiment names."""
    d = tmp_path / "cifar100plus_densenet_bc_100_12" / "r1"
    d.mkdir(parents=True)
    (d / "metrics.csv").write_text("epoch,step,train/loss,val/error\n0,9,1.5,30.5\n")
    hparams = "depth: 100\ngrowth_rate: 12\nnum_classes: 100\n"
    (d / "hparams.yaml").write_text(hparams + "benchmark: cifar100plus\n")
    (run,) = runs.collect_local_runs([tmp_path])
    assert runs.benchmark(run) == "c100+"
    assert runs.paper_error(run) == 22.27
    assert runs.final_error(run) == (30.5, "val")
    # without the declaration the name of the experiment is not read for it
    (d / "hparams.yaml").write_text(hparams)
    (run,) = runs.collect_local_runs([tmp_path])
    assert runs.benchmark(run) is None and runs.paper_error(run) is None


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


# ---------------------------------------------------------------- ImageNet: 1 or 10 crops
def imagenet_eval_run(root: Path, run_id: str, arch: str, eval_crops: int | None) -> Path:
    """A finished ImageNet run tested with ``eval_crops`` crops (None: not in its config)."""
    data_args = {"data_dir": "data/imagenet", "batch_size": 256, "eval_crop": 224}
    if eval_crops is not None:
        data_args["eval_crops"] = eval_crops
    rows = epoch_rows([30.0, 24.5])
    rows.append({"epoch": 2, "step": 19, "test/error": 23.0, "test/error_top5": 6.5})
    return write_fake_run(
        root, f"imagenet_{arch}", run_id, data_class="ImageNetDataModule", data_args=data_args,
        model_args={"arch": arch, "schedule": "step"}, rows=rows, max_epochs=2,
    )  # fmt: skip


def test_imagenet_runs_are_compared_with_the_column_of_their_crops(tmp_path):
    """Table 3's single-crop or 10-crop top-1 error, by the run's ``data.eval_crops``;
    DenseNet-161 has no 10-crop number anywhere, so its 10-crop run has none to compare."""
    root = tmp_path / "runs"
    imagenet_eval_run(root, "one", "densenet121", 1)
    imagenet_eval_run(root, "ten", "densenet121", 10)
    imagenet_eval_run(root, "unsaid", "densenet169", None)  # older configs: single-crop
    imagenet_eval_run(root, "ten161", "densenet161", 10)
    rows = {r.run_id: r for r in report.report_rows(runs.collect_local_runs([root]))}
    got = {k: (r.benchmark, r.eval_crops, r.paper) for k, r in rows.items()}
    assert got == {
        "one": ("imagenet", 1, 25.02),
        "ten": ("imagenet", 10, 23.61),
        "unsaid": ("imagenet", 1, 23.80),
        "ten161": ("imagenet", 10, None),
    }
    assert rows["ten"].difference == pytest.approx(23.0 - 23.61)
    table = report.format_report(list(rows.values()))
    assert (
        "| ten | imagenet (10-crop) | DenseNet-121 (k=32) | 23.61 | 23.00 (test) | -0.61 |" in table
    )
    assert "| one | imagenet | DenseNet-121 (k=32) | 25.02 | 23.00 (test) | -2.02 |" in table


def test_report_lists_evaluation_runs_when_asked(tmp_path, capsys):
    """A 10-crop ``test`` of a checkpoint (no training metrics) is left out by default and
    listed with ``--evaluations``."""
    run_dir = tmp_path / "runs" / "imagenet121" / "test-10crop"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.csv").write_text("epoch,step,test/error,test/error_top5\n0,0,23.5,6.9\n")
    config = {
        "model": {"arch": "densenet121"},
        "data": {
            "class_path": "densenet_lit.data.ImageNetDataModule",
            "init_args": {"eval_crops": 10},
        },
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "hparams.yaml").write_text("benchmark: imagenet\neval_crops: 10\n")
    assert report.main([str(tmp_path / "runs")]) == 0
    assert "No finished runs found." in capsys.readouterr().out
    assert report.main([str(tmp_path / "runs"), "--evaluations"]) == 0
    out = capsys.readouterr().out
    assert "| imagenet121 | test-10crop | imagenet (10-crop) | DenseNet-121 (k=32) | 23.61 " in out


# ----------------------------------------------------------------------- Figures 3 and 4
def c10plus_run(root: Path, depth: int, bottleneck: bool, compression: float, curve, test):
    """A finished C10+ run of a k=12 CIFAR DenseNet: validation errors ``curve``, then ``test``."""
    variant = ("b" if bottleneck else "") + ("c" if compression < 1 else "")
    name = f"cifar10plus_densenet_{variant + '_' if variant else ''}{depth}_12"
    rows = epoch_rows(curve)
    rows.append({"epoch": len(curve), "step": 10 * len(curve), "test/error": test})
    model = {
        "depth": depth,
        "growth_rate": 12,
        "bottleneck": bottleneck,
        "compression": compression,
    }
    return write_fake_run(
        root, name, "r1", data_class="CIFAR10DataModule", data_args={"augment": True},
        model_args=model, rows=rows, max_epochs=len(curve),
    )  # fmt: skip


@pytest.fixture
def figure_runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    c10plus_run(root, 40, True, 1.0, [50.0, 20.0, 9.0], 6.0)  # DenseNet-B
    c10plus_run(root, 70, True, 1.0, [45.0, 18.0, 8.0], 5.5)
    c10plus_run(root, 40, False, 0.5, [50.0, 21.0, 9.5], 6.25)  # DenseNet-C
    c10plus_run(root, 100, True, 0.5, [40.0, 15.0, 6.0, 5.0], 4.75)  # DenseNet-BC (L=100)
    write_fake_run(  # C100+: in no panel of Figure 4
        root, "cifar100plus_densenet_bc_100_12", "r1", data_class="CIFAR100DataModule",
        data_args={"augment": True}, model_args={"depth": 100, "growth_rate": 12},
        rows=epoch_rows([60.0, 30.0]), max_epochs=2,
    )  # fmt: skip
    imagenet_eval_run(root, "one", "densenet121", 1)  # test error 23.0
    imagenet_eval_run(root, "ten", "densenet169", 10)
    return root


def line(ax, label: str):
    (found,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
    return list(found.get_xdata()), list(found.get_ydata())


def test_figure3_paper_points_resnets_and_runs(figure_runs, tmp_path):
    from densenet_lit.analysis import figure3

    points = figure3.figure3_points(1)
    assert [(p.label, p.error) for p in points["DenseNet"]] == [
        ("DenseNet-121", 25.02), ("DenseNet-169", 23.80), ("DenseNet-201", 22.58),
        ("DenseNet-264", 22.15),
    ]  # fmt: skip
    resnets = {p.label: (p.error, p.cost.params) for p in points["ResNet"]}
    resnet50 = count_parameters(torchvision.models.resnet50())
    assert resnets["ResNet-50"] == (24.01, resnet50) and resnet50 == 25_557_032
    assert [p.error for p in figure3.figure3_points(10)["ResNet"]] == [24.76, 22.24, 21.08, 20.69]
    found = runs.collect_local_runs([figure_runs])
    (one,) = figure3.imagenet_run_points(found, crops=1)
    (ten,) = figure3.imagenet_run_points(found, crops=10)
    assert (one.label, one.error, ten.label) == (
        "imagenet_densenet121",
        23.0,
        "imagenet_densenet169",
    )
    fig = figure3.plot_figure3(found, crops=1, path=tmp_path / "f3.png")
    params_ax, flops_ax = fig.axes
    assert line(params_ax, "DenseNets (paper, Table 3)")[1] == [25.02, 23.80, 22.58, 22.15]
    stars = flops_ax.collections[0].get_offsets().tolist()
    assert stars == [[pytest.approx(one.cost.macs / 1e9), 23.0]]
    assert_png_not_blank(tmp_path / "f3.png")


def test_figure4_table2_points_baselines_and_runs(figure_runs, tmp_path):
    from densenet_lit.analysis import figure4

    table2 = {(p.family, p.label): p.error for p in figure4.paper_points(12)}
    assert table2 == {("DenseNet", "L=40"): 5.24, ("DenseNet", "L=100"): 4.10,
                      ("DenseNet-BC", "L=100"): 4.51}  # fmt: skip
    bc = [p.error for p in figure4.paper_points(None) if p.family == "DenseNet-BC"]
    assert bc == [4.51, 3.62, 3.46]  # Table 2 only, not the README's Wide-DenseNet-BCs
    assert [(p.params, p.error) for p in figure4.resnet_points()] == [(1.7, 5.46), (10.2, 4.62)]
    found = runs.collect_local_runs([figure_runs])
    mine = {(p.family, p.label): (p.params, p.error) for p in figure4.run_points(found)}
    b40 = costs.network_cost("densenet_cifar", (3, 32, 32), depth=40, growth_rate=12,
                             bottleneck=True, compression=1.0, num_classes=10)  # fmt: skip
    assert mine[("DenseNet-B", "L=40")] == (b40.params / 1e6, 6.0)
    assert sorted(mine) == [("DenseNet-B", "L=40"), ("DenseNet-B", "L=70"),
                            ("DenseNet-BC", "L=100"), ("DenseNet-C", "L=40")]  # fmt: skip
    fig = figure4.plot_figure4(found, path=tmp_path / "f4.png")
    left, middle, right = fig.axes[:3]
    assert line(left, "DenseNet-B (yours)")[1] == [6.0, 5.5]
    assert line(left, "DenseNet (Table 2)")[1] == [5.24, 4.10]
    assert line(middle, "pre-act. ResNet (Table 2)") == ([1.7, 10.2], [5.46, 4.62])
    assert line(middle, "DenseNet-BC (yours)")[1] == [4.75]
    curve = line(right, "cifar10plus_densenet_bc_100_12/r1: test error")
    assert curve == ([1, 2, 3, 4], [40.0, 15.0, 6.0, 5.0])
    hlines = sorted(ln.get_ydata()[0] for ln in right.get_lines() if "(Table 2)" in ln.get_label())
    assert hlines == [4.51, 4.62]
    loss = [ln for ln in fig.axes[3].get_lines() if "training loss" in ln.get_label()]
    assert list(loss[0].get_ydata()) == [1.0, 0.5, 1 / 3, 0.25]
    assert_png_not_blank(tmp_path / "f4.png")


def test_paper_figures_command(figure_runs, tmp_path, capsys):
    out = tmp_path / "figures"
    assert paper_plots.main([str(figure_runs), "--out", str(out), "--crops", "10"]) == 0
    printed = capsys.readouterr().out
    for name in ("figure3_imagenet.png", "figure4_c10plus.png"):
        assert f"wrote {out / name}" in printed
        assert_png_not_blank(out / name)
    assert paper_plots.main([str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_a_densenet_imagenet_run_finds_its_readme_row():
    """Runs of the README's models of any blocks (DenseNet-232, cosine-264 with k=48) are
    compared with their rows, found by blocks, growth rate and schedule."""
    hparams = {"arch": "densenet_imagenet", "block_config": [6, 12, 48, 48], "growth_rate": 48}
    hparams |= {"benchmark": "imagenet", "num_classes": 1000}
    run = runs.Run("imagenet232", "r1", hparams=hparams)
    assert runs.paper_row(run).key == "densenet232" and runs.paper_error(run) == 21.2
    run.hparams |= {"block_config": [6, 12, 64, 48], "schedule": "cosine"}
    assert runs.paper_row(run).key == "densenet264cosine_k48" and runs.paper_error(run) == 20.4
    run.hparams["schedule"] = "step"  # no step-schedule 264 with k=48 in the README
    assert runs.paper_row(run) is None
