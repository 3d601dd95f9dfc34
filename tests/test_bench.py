"""Smoke tests of the benchmark suite: it runs end to end and writes a well-formed report.

Performance claims never live here: the tests check that every row is present and every
measured number is a positive number, not how large it is.
"""

from __future__ import annotations

import json

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningCLI
from PIL import Image

from densenet_lit.bench import main
from densenet_lit.bench.common import MODES, default_settings, model_specs
from densenet_lit.bench.epoch import busy_range, merged_length
from densenet_lit.bench.loaders import write_synthetic_imagenet
from densenet_lit.bench.steps import (
    RepeatBatch,
    cli_callbacks,
    make_module,
    random_batch,
    trainer_kwargs,
)
from densenet_lit.cli import DenseNetCLI, RunCSVLogger
from densenet_lit.data import ImageNetDataModule

QUICK_MODES = ("fp32", "channels_last", "bf16-mixed", "memory_efficient")


def number(text: str) -> float:
    """A table cell as a float ('1,234.5' and '0.98x' included); ValueError for 'n/a'."""
    return float(text.strip().rstrip("x *").replace(",", ""))


def table_after(report: str, heading: str) -> list[dict[str, str]]:
    """The first Markdown table after ``heading``, as one dict per row."""
    lines = report[report.index(heading) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    header, body = rows[0], rows[2:]
    return [dict(zip(header, r, strict=True)) for r in body]


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    path = main(["--quick", "--device", "cpu", "--out", str(out)])
    return path, path.read_text()


@pytest.mark.slow
def test_quick_run_writes_report_and_json(quick_report):
    path, report = quick_report
    assert path.suffix == ".md" and path.name.startswith("bench-cpu-")
    for key in ("date", "machine", "torch", "lightning", "device", "command"):
        assert f"- {key}:" in report
    raw = json.loads(path.with_suffix(".json").read_text())
    assert set(raw) >= {"environment", "steps", "loaders", "epochs", "settings"}
    assert raw["settings"]["device"] == "cpu"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("heading", "img_columns"),
    [
        ("### tiny DenseNet-BC", ["plain loop img/s", "Lightning img/s"]),
        (
            "### tiny DenseNet (4 blocks",
            ["plain loop img/s", "plain loop, our net img/s", "Lightning img/s"],
        ),
    ],
)
def test_step_tables_have_every_mode_with_positive_numbers(quick_report, heading, img_columns):
    _, report = quick_report
    rows = table_after(report, heading)
    assert [r["mode"] for r in rows] == list(QUICK_MODES)
    for row in rows:
        for column in [*img_columns, "Lightning / plain", "activation MiB Lightning"]:
            if row["mode"] == "bf16-mixed" and row[column].startswith("n/a"):
                continue  # a CPU without bf16 kernels reports n/a instead of failing
            assert number(row[column]) > 0, (row["mode"], column, row[column])
    by_mode = {r["mode"]: r for r in rows}
    assert number(by_mode["fp32"]["Lightning vs fp32"]) == 1.0
    # memory_efficient stores less for backward than the normal mode (exact byte counts)
    assert number(by_mode["memory_efficient"]["memory vs fp32"]) < 1.0


@pytest.mark.slow
def test_loader_and_epoch_tables(quick_report):
    _, report = quick_report
    loaders = table_after(report, "### Data loaders alone")
    names = {(r["loader"], r["pipeline"].split(":")[0], r["workers"]) for r in loaders}
    assert ("CIFAR-10", "ours", "0") in names
    assert ("CIFAR-10", "torchvision", "0") in names
    assert any(n[0].startswith("SVHN") for n in names)
    assert any(n[0].startswith("digits") for n in names)
    (imagenet,) = [r for r in loaders if r["loader"].startswith("ImageNet")]
    assert "500x375 JPEGs" in imagenet["loader"] and imagenet["pipeline"].startswith("ours")
    # the data module's own default worker count, as a training run would use it
    assert int(imagenet["workers"]) == ImageNetDataModule().resolved_num_workers >= 1
    assert all(number(r["img/s"]) > 0 for r in loaders)

    epochs = table_after(report, "### CIFAR-10 epoch")
    assert [r["pipeline"].split(":")[0] for r in epochs] == ["ours", "plain"]
    for row in epochs:
        assert number(row["img/s"]) > 0 and number(row["time s"]) > 0
        assert row["batches x batch"] == "3 x 4"
        assert row["GPU busy"] == "n/a (CPU)"

    targets = table_after(report, "### Targets")
    assert len(targets) >= 3
    assert all("not judged" in r["verdict"] for r in targets)  # CPU run: GPU targets


@pytest.mark.slow
def test_compile_modes_run_on_cpu(tmp_path):
    path = main(
        [
            "--quick",
            "--device",
            "cpu",
            "--models",
            "cifar",
            "--modes",
            "fp32,compile",
            "--sections",
            "steps",
            "--out",
            str(tmp_path),
        ]
    )
    rows = {r["mode"]: r for r in table_after(path.read_text(), "### tiny DenseNet-BC")}
    for column in ("plain loop img/s", "Lightning img/s"):
        cell = rows["compile"][column]
        assert not cell.startswith("n/a"), f"compile mode, {column}: {cell}"
        assert number(cell) > 0
    assert "### Data loaders" not in path.read_text()


def test_synthetic_imagenet_is_photo_sized_and_loads(tmp_path):
    write_synthetic_imagenet(tmp_path, n_train=20, n_classes=4)
    train = sorted((tmp_path / "train").rglob("*.JPEG"))
    val = sorted((tmp_path / "val").rglob("*.JPEG"))
    assert (len(train), len(val)) == (20, 4)
    with Image.open(train[0]) as image:
        assert image.format == "JPEG" and image.size == (500, 375)
    kib = sum(p.stat().st_size for p in train) / len(train) / 1024
    assert 80 < kib < 150, f"{kib:.0f} KiB per file; an ImageNet JPEG averages about 110 KB"
    dm = ImageNetDataModule(data_dir=str(tmp_path), batch_size=4, num_workers=0)
    dm.setup("fit")
    assert len(dm.classes) == 4 and len(dm.train_set) == 20
    assert dm.train_set[0][0].shape == (3, 224, 224)


def test_cli_callbacks_are_the_ones_the_cli_adds():
    """The step benchmark's callbacks are DenseNetCLI's trainer_defaults (same classes, order)."""
    captured: dict = {}

    class Capture(LightningCLI):  # stands in for LightningCLI: records what DenseNetCLI passes
        def __init__(self, *args, **kwargs):
            captured.update(kwargs)

    class Probe(DenseNetCLI, Capture):
        pass

    Probe(args=[])
    cli_defaults = captured["trainer_defaults"]["callbacks"]
    assert [type(c) for c in cli_callbacks()] == [type(c) for c in cli_defaults]


def test_lightning_side_runs_with_the_cli_callbacks_and_csv_logger(tmp_path):
    settings = default_settings(torch.device("cpu"), quick=True)
    spec, mode = model_specs(quick=True)["cifar"], MODES["fp32"]
    batch = random_batch(spec, 4, settings.device)
    trainer = Trainer(max_steps=3, **trainer_kwargs(settings, mode, str(tmp_path)))
    trainer.fit(make_module(spec, mode), train_dataloaders=RepeatBatch(*batch))
    assert trainer.global_step == 3
    kinds = [type(c) for c in trainer.callbacks]
    assert kinds == [type(c) for c in cli_callbacks()]  # and nothing else
    assert not any(isinstance(c, ModelCheckpoint | ProgressBar) for c in trainer.callbacks)
    assert isinstance(trainer.logger, RunCSVLogger) and len(trainer.loggers) == 1
    metrics = (tmp_path / "metrics.csv").read_text()  # the logger wrote, like a CLI run's
    assert "perf/images_per_sec" in metrics  # ThroughputMonitor ran and logged
    assert not list(tmp_path.rglob("*.ckpt"))


def test_rejects_unknown_modes_and_models():
    with pytest.raises(SystemExit):
        main(["--quick", "--modes", "fp32,fp8"])
    with pytest.raises(SystemExit):
        main(["--quick", "--models", "resnet"])


def test_merged_length_counts_overlaps_once():
    assert merged_length([]) == 0
    assert merged_length([(0, 2), (1, 3), (5, 6)]) == 4
    assert merged_length([(0, 10), (2, 3)]) == 10


def test_busy_range_is_a_middle_window():
    assert busy_range(100, 20) == (40, 60)
    assert busy_range(10, 50) == (0, 10)
    assert busy_range(10, 0) == (5, 5)


def test_number_helper_reads_report_cells():
    assert number("1,234") == 1234 and number("0.98x") == 0.98 and number("12.5 *") == 12.5
    with pytest.raises(ValueError):
        number("n/a")


@pytest.mark.gpu
@pytest.mark.slow
def test_quick_run_on_cuda_reports_peak_memory_and_gpu_busy(tmp_path):
    path = main(
        ["--quick", "--device", "cuda", "--modes", "fp32,bf16-mixed", "--out", str(tmp_path)]
    )
    report = path.read_text()
    rows = table_after(report, "### tiny DenseNet-BC")
    for row in rows:
        assert number(row["peak MiB plain"]) > 0 and number(row["peak MiB Lightning"]) > 0
    epochs = table_after(report, "### CIFAR-10 epoch")
    for row in epochs:
        busy = float(row["GPU busy"].split("%")[0])
        assert 0 < busy <= 100
    assert all(r["verdict"] in ("met", "NOT met") for r in table_after(report, "### Targets"))
