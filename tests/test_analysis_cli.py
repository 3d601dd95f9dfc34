"""End to end: a real (tiny) training run of the CLI, then every analysis command on its run
directory. Guards the contract between densenet_lit.cli's run format and densenet_lit.analysis."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from cli_args import QUICK, cli_args
from plots import assert_png_not_blank

from densenet_lit.analysis import compare, feature_reuse, report, runs
from densenet_lit.analysis.checkpoint import load_model
from densenet_lit.models.summary import count_parameters


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One run of ``python -m densenet_lit fit`` on the digits: 2 epochs of 3 batches, tested."""
    from densenet_lit.cli import run
    from densenet_lit.rundir import RUN_DIR_ENV

    root = tmp_path_factory.mktemp("runs")
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "disabled")
    mp.delenv(RUN_DIR_ENV, raising=False)
    try:
        trainer = {**QUICK, "max_epochs": 2, "limit_train_batches": 3}
        cli = run(
            cli_args(
                "fit",
                root,
                model={"depth": 16},
                trainer=trainer,
                run={"test_after_fit": True},
                name="digits_tiny",
            )
        )
    finally:
        mp.undo()
    return root, cli


@pytest.mark.slow
def test_analysis_reads_a_real_cli_run(trained_run, tmp_path):
    root, cli = trained_run
    (run,) = runs.collect_local_runs([root])
    assert run.experiment == "digits_tiny"
    assert run.path == cli.run_dir
    assert runs.benchmark(run) == "digits"
    assert runs.epochs_trained(run) == 2 and runs.max_epochs(run) == 2
    value, kind = runs.final_error(run)
    assert kind == "test" and value == pytest.approx(
        float(cli.trainer.callback_metrics["test/error"])
    )
    assert len(runs.validation_curve(run)) == 2
    assert runs.images_per_second(run) > 0  # the CLI's ThroughputMonitor
    seconds, source = runs.wall_time(run)
    assert source == "files" and 0 < seconds < 3600
    # parameters of the network built from the config = the trained module's
    assert runs.run_cost(run).params == count_parameters(cli.model.model)
    assert runs.input_size(run) == (1, 32, 32)

    # the rebuilt network holds exactly the checkpoint's weights
    model = load_model(run.path)
    ckpt = torch.load(run.path / "checkpoints" / "last.ckpt", weights_only=True)
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, ckpt["state_dict"]["model." + key]), key
    blocks = feature_reuse.feature_reuse(model)
    assert [b.num_layers for b in blocks] == [2, 2, 2]
    assert all(math.isclose(np.nanmax(row), 1.0) for b in blocks for row in b.normalized)

    out = tmp_path / "out"
    assert feature_reuse.main([str(run.path), "--out", str(out / "reuse.png"), "--quiet"]) == 0
    assert_png_not_blank(out / "reuse.png")
    assert compare.main([str(root), "--out", str(out / "compare.png")]) == 0
    assert_png_not_blank(out / "compare.png")
    assert report.main([str(root), "--out", str(out / "report.md")]) == 0
    text = (out / "report.md").read_text()
    assert f"| digits_tiny | {run.run_id} | digits |" in text
    assert f"{value:.2f} (test)" in text
