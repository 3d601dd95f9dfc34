"""The GPU check (``make gpu-check``): its CPU dry run runs every part it can, so the command
cannot rot between the rare GPU loans; without a GPU it says so in one line."""

from __future__ import annotations

import pytest
import torch
from report_tables import number, table_after

from densenet_lit import gpu_check

PROBE = """import pytest

@pytest.mark.gpu
def test_probe():
    assert True
"""


def test_without_a_gpu_it_says_so_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path)]) is None
    assert capsys.readouterr().out.splitlines() == [
        "gpu_check: torch sees no CUDA device here; nothing to check (exit 0)."
    ]
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_dry_run_writes_one_report_with_every_part(tmp_path):
    probe = tmp_path / "probe" / "test_probe.py"  # what `pytest -m gpu` runs, in seconds
    probe.parent.mkdir()
    probe.write_text(PROBE)
    out = tmp_path / "out"
    path = gpu_check.main(["--dry_run", "--out", str(out), "--pytest_paths", f"[{probe}]"])
    assert list(out.iterdir()) == [path] and path.name.startswith("gpu-check-cpu-")
    report = path.read_text()
    assert report.startswith("## densenet_lit GPU check (CPU dry run)")
    assert "failed:" not in report
    assert "1 passed" in report  # pytest's summary line, from the subprocess
    (step,) = table_after(report, "### Training step")
    assert step["mode"] == "bf16-mixed" and "plain loop, our net img/s" not in step
    if not step["Lightning img/s"].startswith("n/a"):  # a CPU without bf16 kernels: n/a
        assert number(step["plain loop img/s"]) > 0 and number(step["Lightning / plain"]) > 0
    levels = table_after(report, "### Memory levels")
    assert [r["level"] for r in levels] == ["0", "1", "2", "3"]
    deepest = report.split("\n| 3 | ")[1].split(" | ")  # activation MiB, vs level 0, ...
    assert number(deepest[2]) < 1  # the deepest level keeps the fewest bytes
    assert "### nvJPEG against PIL\n\nskipped: no GPU" in report
    epoch = report[report.index("### ImageNet-layout epoch") :]
    assert "--data.init_args.decode device" in epoch and "- 3 batches of 2:" in epoch
    assert number(epoch.split("images/s (ThroughputMonitor): ")[1].split()[0]) > 0


def test_a_part_past_its_share_of_the_budget_is_stopped_and_the_next_one_runs(
    monkeypatch, tmp_path
):
    """The budget holds whatever a part does: a part that would run for a minute is stopped
    at its share (a 6-second budget here), the report says so and the later parts run."""
    import time

    calls = []

    def stuck(*args):
        calls.append("step")
        time.sleep(60)

    def quick(name):
        return lambda *args: calls.append(name) or [f"{name} done"]

    monkeypatch.setattr(gpu_check, "run_pytest", quick("pytest"))
    monkeypatch.setattr(gpu_check, "training_step", stuck)
    monkeypatch.setattr(gpu_check, "memory_levels", quick("memory"))
    monkeypatch.setattr(gpu_check, "cli_epoch", quick("cli"))
    start = time.monotonic()
    path = gpu_check.main(["--dry_run", "--out", str(tmp_path), "--minutes", "0.1"])
    assert time.monotonic() - start < 8  # 6 s of budget; the stuck part alone would take 60
    assert calls == ["pytest", "step", "memory", "cli"]
    report = path.read_text()
    step = report[report.index("### Training step") : report.index("### Memory levels")]
    assert "failed: out of time, stopped after its" in step
    assert "memory done" in report and "cli done" in report


def test_a_budget_of_no_time_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stopped:
        gpu_check.main(["--dry_run", "--minutes", "0"])
    assert stopped.value.code == 2
    assert "minutes=0.0, batch=64, steps=10: the budget must be above 0" in capsys.readouterr().err
