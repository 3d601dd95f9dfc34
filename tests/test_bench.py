"""Smoke tests of the benchmark suite: it runs end to end and writes a well-formed report.

Performance claims never live here: the tests check that every row is present and every
measured number is a positive number, not how large it is.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from PIL import Image
from report_tables import number, table_after

from densenet_lit.bench import epoch as bench_epoch
from densenet_lit.bench import main
from densenet_lit.bench import suite as bench_suite
from densenet_lit.bench.common import guarded
from densenet_lit.bench.config import MODES, Settings, model_specs
from densenet_lit.bench.epoch import OURS_PIPELINE, EpochClock
from densenet_lit.bench.report import epoch_section
from densenet_lit.bench.steps import make_module, random_batch, trainer_kwargs
from densenet_lit.callbacks import default_callbacks
from densenet_lit.data import ImageNetDataModule
from densenet_lit.data.synthetic import write_photo_imagenet
from densenet_lit.tracking import RunCSVLogger

QUICK_MODES = ("fp32", "channels_last", "bf16-mixed", "memory_efficient", "modern")


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
    assert raw["complete"] is True and raw["error"] is None
    assert not list(path.parent.glob("*.partial.json"))  # the final JSON replaced it


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
    # the modern recipe's step (mixing, smoothing, EMA) measured beside the paper's fp32 step
    assert number(by_mode["modern"]["Lightning vs fp32"]) > 0


@pytest.mark.slow
def test_loader_and_epoch_tables(quick_report):
    _, report = quick_report
    loaders = table_after(report, "### Data loaders alone")
    names = {(r["loader"], r["pipeline"].split(":")[0], r["workers"]) for r in loaders}
    assert ("CIFAR-10", "ours", "0") in names
    assert ("CIFAR-10", "torchvision", "0") in names
    assert any(n[0].startswith("SVHN") for n in names)
    assert any(n[0].startswith("digits") for n in names)
    imagenet = [r for r in loaders if r["loader"].startswith("ImageNet")]
    assert all("500x375 JPEGs" in r["loader"] for r in imagenet)
    pil, bytes_only, decode, both = imagenet  # PIL path, then the device path in parts
    assert pil["pipeline"].startswith("ours: decode + fb.resnet.torch")
    # the data module's own default worker count, as a training run would use it
    assert int(pil["workers"]) == ImageNetDataModule().resolved_num_workers >= 1
    assert "workers read bytes" in bytes_only["pipeline"]
    assert "augmentation on the CPU alone" in decode["pipeline"] and decode["workers"] == "0"
    assert "end to end" in both["pipeline"]
    assert bytes_only["workers"] == both["workers"] == pil["workers"]
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
            "[cifar]",
            "--modes",
            "[fp32,compile]",
            "--sections",
            "[steps]",
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
    write_photo_imagenet(tmp_path, n_train=20, n_classes=4)
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
    from lightning.pytorch.cli import LightningCLI  # here: the rest runs without jsonargparse

    from densenet_lit.cli import DenseNetCLI

    captured: dict = {}

    class Capture(LightningCLI):  # stands in for LightningCLI: records what DenseNetCLI passes
        def __init__(self, *args, **kwargs):
            captured.update(kwargs)

    class Probe(DenseNetCLI, Capture):
        pass

    Probe(args=[])
    cli_defaults = captured["trainer_defaults"]["callbacks"]
    assert [type(c) for c in default_callbacks()] == [type(c) for c in cli_defaults]


def test_lightning_side_runs_with_the_cli_callbacks_and_csv_logger(tmp_path):
    settings = Settings(device="cpu", quick=True)
    spec, mode = model_specs(quick=True)["cifar"], MODES["fp32"]
    batches = itertools.repeat(random_batch(spec, 4, settings.device))
    trainer = Trainer(max_steps=3, **trainer_kwargs(settings, mode, str(tmp_path)))
    trainer.fit(make_module(spec, mode), train_dataloaders=batches)
    assert trainer.global_step == 3
    kinds = [type(c) for c in trainer.callbacks]
    assert kinds == [type(c) for c in default_callbacks()]  # and nothing else
    assert not any(isinstance(c, ModelCheckpoint | ProgressBar) for c in trainer.callbacks)
    assert isinstance(trainer.logger, RunCSVLogger) and len(trainer.loggers) == 1
    metrics = (tmp_path / "metrics.csv").read_text()  # the logger wrote, like a CLI run's
    assert "perf/images_per_sec" in metrics  # ThroughputMonitor ran and logged
    assert not list(tmp_path.rglob("*.ckpt"))


def test_the_busy_window_is_in_the_middle_of_the_epoch():
    windows = [EpochClock("cuda", n, w) for n, w in ((100, 20), (10, 50), (10, 0))]
    assert [(c.first, c.last) for c in windows] == [(40, 60), (0, 10), (5, 5)]
    assert (EpochClock("cpu", 100, 20).first, EpochClock("cpu", 100, 20).last) == (50, 50)


def test_number_helper_reads_report_cells():
    assert number("1,234") == 1234 and number("0.98x") == 0.98 and number("12.5 *") == 12.5
    with pytest.raises(ValueError):
        number("n/a")


def tiny_run(out: Path, sections: str = "steps") -> list[str]:
    """Arguments of the smallest run through main(): one tiny model, one mode, one step."""
    return [
        *("--quick", "--device", "cpu", "--models", "[cifar]", "--modes", "[fp32]"),
        *("--sections", f"[{sections}]", "--warmup", "1", "--steps", "1", "--windows", "1"),
        *("--rounds", "1", "--out", str(out)),
    ]


# ------------------------------------------------------------------ results are never lost


@pytest.mark.slow
def test_json_is_written_even_when_rendering_fails(monkeypatch, tmp_path, capsys):
    def broken_render(*args, **kwargs):
        raise ZeroDivisionError("a bug in the report")

    monkeypatch.setattr(bench_suite, "render", broken_render)
    path = main(tiny_run(tmp_path))
    raw = json.loads(path.with_suffix(".json").read_text())
    assert raw["complete"] is True
    assert raw["steps"]["cifar"][0]["runs"]["lightning"]["images_per_s"] > 0
    assert "Rendering this report failed" in path.read_text()
    assert "ZeroDivisionError: a bug in the report" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.partial.json"))


@pytest.mark.slow
def test_partial_json_after_each_section_survives_a_kill(monkeypatch, tmp_path):
    seen: dict = {}

    def killed_in_the_epoch(settings, spec, step_rows, cifar_root, rows, save):
        (partial,) = tmp_path.glob("*.partial.json")  # written before the next section began
        seen.update(json.loads(partial.read_text()))
        raise KeyboardInterrupt  # what a time limit's signal looks like to the suite

    monkeypatch.setattr(bench_suite, "run_epochs", killed_in_the_epoch)
    with pytest.raises(KeyboardInterrupt):
        main(tiny_run(tmp_path, sections="steps,epoch"))
    assert seen["complete"] is False
    assert seen["steps"]["cifar"][0]["runs"]["lightning"]["images_per_s"] > 0
    (partial,) = tmp_path.glob("*.partial.json")
    raw = json.loads(partial.read_text())
    assert raw["error"] == "KeyboardInterrupt" and raw["steps"] == seen["steps"]
    assert not list(tmp_path.glob("*.md"))


# ------------------------------------------------------------------------- GPU busy meter


class FakeProfiler:
    """Stands in for ``torch.profiler.profile``: fails where told, else returns ``events``."""

    def __init__(self, events=(), fail: str | None = None):
        self._events, self.fail, self.running = list(events), fail, False

    def start(self):
        if self.fail == "start":
            raise RuntimeError("CUPTI_ERROR_NOT_INITIALIZED")
        self.running = True

    def stop(self):
        self.running = False

    def events(self):
        return self._events


def gpu_event(start_us: float, end_us: float, device=torch.autograd.DeviceType.CUDA):
    return SimpleNamespace(
        device_type=device, time_range=SimpleNamespace(start=start_us, end=end_us)
    )


def clock_with(monkeypatch, profiler: FakeProfiler, batches: int = 100) -> EpochClock:
    """An EpochClock profiling 20 batches as on a GPU, with ``profiler`` and a clock that
    advances 0.5 s per reading."""
    monkeypatch.setattr(bench_epoch, "profile", lambda **kwargs: profiler)
    ticks = itertools.count(0.0, 0.5)
    monkeypatch.setattr(bench_epoch, "now", lambda device: next(ticks))
    clock = EpochClock(torch.device("cuda"), batches=batches, window=20)
    clock.device = torch.device("cpu")  # no CUDA call; the logic is the same as on CUDA
    return clock


def run_epoch(clock: EpochClock) -> dict:
    clock.on_train_epoch_start()
    for i in range(clock.batches):
        clock.on_train_batch_start(None, None, None, i)
        clock.on_train_batch_end(None, None, None, None, i)
    clock.on_train_epoch_end()
    return clock.result(OURS_PIPELINE, MODES["fp32"], 0, 64, clock.batches)


def test_gpu_busy_is_kernel_time_over_the_window_left_out_of_images_per_s(monkeypatch):
    events = [gpu_event(0, 150_000), gpu_event(200_000, 250_000)]  # 200 ms of kernels
    events.append(gpu_event(0, 500_000, torch.autograd.DeviceType.CPU))  # host events: ignored
    profiler = FakeProfiler(events)
    row = run_epoch(clock_with(monkeypatch, profiler))
    assert not profiler.running
    # readings: epoch start 0; window: outer 0.5, inner 1.0, end 1.5, outer end 2.0; epoch end 2.5
    assert row["busy"] == pytest.approx(0.2 / 0.5) and row["busy_batches"] == 20
    assert row["seconds"] == 2.5
    assert row["images_per_s"] == pytest.approx(64 * 80 / (2.5 - 1.5))
    only = run_epoch(clock_with(monkeypatch, FakeProfiler(events), batches=20))
    assert only["images_per_s"] == pytest.approx(64 * 20 / only["seconds"])


def test_gpu_busy_without_gpu_events_is_na_not_zero(monkeypatch):
    row = run_epoch(clock_with(monkeypatch, FakeProfiler([])))
    assert row["busy"] == "n/a (no GPU activity)"


def test_a_failing_profiler_is_an_na_cell_of_the_epoch_table(monkeypatch, capsys):
    clock = clock_with(monkeypatch, FakeProfiler(fail="start"))
    cell = guarded(lambda: run_epoch(clock), "epoch fp32", "cpu")
    assert cell == "n/a (RuntimeError: CUPTI_ERROR_NOT_INITIALIZED)"
    assert "epoch fp32 failed" in capsys.readouterr().err
    row = {"pipeline": OURS_PIPELINE, "mode": "fp32", "error": cell}
    assert f"| {OURS_PIPELINE} | fp32 |  |  |  | {cell} |  |  |" in epoch_section([row])


@pytest.mark.gpu
def test_busy_meter_measures_real_gpu_work():
    clock = EpochClock(torch.device("cuda"), batches=20, window=20)
    x = torch.randn(2048, 2048, device="cuda")
    clock.on_train_epoch_start()
    for i in range(20):
        clock.on_train_batch_start(None, None, None, i)
        x = torch.tanh(x @ x)
        clock.on_train_batch_end(None, None, None, None, i)
    clock.on_train_epoch_end()
    row = clock.result(OURS_PIPELINE, MODES["fp32"], 0, 64, 20)
    assert 0 < row["busy"] <= 1 and row["busy_batches"] == 20 and clock.window_s > 0


@pytest.mark.gpu
@pytest.mark.slow
def test_quick_run_on_cuda_reports_peak_memory_and_gpu_busy(tmp_path):
    path = main(
        ["--quick", "--device", "cuda", "--modes", "[fp32,bf16-mixed]", "--out", str(tmp_path)]
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
    assert "- fp32 math: torch.backends.cudnn.allow_tf32=" in report
    assert json.loads(path.with_suffix(".json").read_text())["complete"] is True
