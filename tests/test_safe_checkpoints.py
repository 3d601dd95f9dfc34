"""A checkpoint from someone else must not run code: every entry point that reads a checkpoint
(the CLI's --ckpt_path and --run.test_ckpt, Lightning's own restore, the analysis tools,
pretrained weights) uses torch's safe unpickler, refuses a file holding anything else with a
clear error, and loads it only with an explicit opt-in, which warns."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_args import QUICK, TINY_MODEL, cli_args

from densenet_lit import cli, rundir
from densenet_lit.analysis import compare, feature_reuse, report
from densenet_lit.analysis.checkpoint import load_model
from densenet_lit.checkpoints import UntrustedCheckpointError, load_checkpoint
from densenet_lit.cli import preflight
from densenet_lit.cli.errors import TRACEBACK_ENV
from densenet_lit.models import build_model
from densenet_lit.models.pretrained import load_torchvision_weights

REPO = Path(__file__).resolve().parents[1]
REFUSED = "refused to load this checkpoint"


class Payload:
    """Unpickling this runs a shell command that creates ``marker`` (the attack of issue 13:
    an extra pickled object whose ``__reduce__`` calls ``os.system``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def with_payload(content: dict, dest: Path, marker: Path) -> Path:
    torch.save({**content, "extra": Payload(marker)}, dest)
    return dest


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> cli.DenseNetCLI:
    """One tiny run of the CLI that keeps last.ckpt and the best, and tests the best."""
    root = tmp_path_factory.mktemp("runs")
    mp = pytest.MonkeyPatch()
    mp.delenv(rundir.RUN_DIR_ENV, raising=False)
    try:
        args = ["--run.test_after_fit", "true", "--run.test_ckpt", "best"]
        c = cli.run(cli_args("fit", root, "--run.name", "clean", *args, trainer=QUICK))
    finally:
        mp.undo()
    assert "test/error" in c.trainer.callback_metrics  # the best restored by Lightning, safely
    return c


@pytest.fixture
def evil(trained, tmp_path) -> tuple[Path, Path]:
    """``(file, marker)``: the run's last.ckpt (a real Lightning checkpoint) with the payload."""
    marker = tmp_path / "PWNED"
    last = load_checkpoint(trained.run_dir / "checkpoints" / "last.ckpt")
    return with_payload(last, tmp_path / "evil.ckpt", marker), marker


def assert_refused(message: str, path: Path, how_to_trust: str) -> None:
    assert f"{path}: {REFUSED}" in message
    assert "does not build: posix.system." in message  # the refused global, named
    assert how_to_trust in message


# ------------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_the_cli_refuses_a_checkpoint_that_would_run_code(
    run_args, evil, tmp_path, capsys, subcommand
):
    path, marker = evil
    with pytest.raises(SystemExit) as stopped:
        cli.main(run_args("--ckpt_path", str(path), subcommand=subcommand))
    assert stopped.value.code == 1
    assert_refused(capsys.readouterr().err, path, "give --run.trust_checkpoint true")
    assert not marker.exists()
    assert not (tmp_path / "runs").exists()  # refused before a run directory was made


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_lightnings_restore_is_asked_for_the_safe_unpickler_too(
    run_args, evil, trained, monkeypatch, subcommand
):
    """Past the CLI's own reading (skipped here), Lightning's restore is told weights_only=True:
    even where the environment makes torch.load's default the full unpickler, the file is
    refused, with the same clear error."""
    path, marker = evil
    clean = load_checkpoint(trained.run_dir / "checkpoints" / "last.ckpt")
    monkeypatch.setattr(preflight, "read_checkpoint", lambda *args, **kwargs: clean)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(UntrustedCheckpointError) as error:
        cli.run(run_args("--ckpt_path", str(path), subcommand=subcommand))
    assert_refused(str(error.value), path, "give --run.trust_checkpoint true")
    assert not marker.exists()


@pytest.mark.slow
def test_the_command_of_the_issue_leaves_no_trace(evil, tmp_path):
    """``python -m densenet_lit test --config experiments/demo_digits.yaml --ckpt_path
    evil.ckpt``, as a user runs it."""
    path, marker = evil
    args = [
        "test",
        "--config",
        str(REPO / "experiments/demo_digits.yaml"),
        "--ckpt_path",
        "evil.ckpt",
    ]
    args += ["--trainer.default_root_dir", str(tmp_path / "runs"), "--run.wandb", "false"]
    env = {k: v for k, v in os.environ.items() if k not in (rundir.RUN_DIR_ENV, TRACEBACK_ENV)}
    proc = subprocess.run(
        [sys.executable, "-m", "densenet_lit", *args],
        cwd=path.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert_refused(proc.stderr, Path("evil.ckpt"), "give --run.trust_checkpoint true")
    assert "Traceback" not in proc.stderr
    assert not marker.exists()


def test_a_refused_test_checkpoint_stops_the_run_before_training(run_args, evil, tmp_path):
    path, marker = evil
    args = ["--run.test_after_fit", "true", "--run.test_ckpt", str(path)]
    with pytest.raises(UntrustedCheckpointError, match=REFUSED):
        cli.run(run_args(*args))
    assert not marker.exists() and not (tmp_path / "runs").exists()


def test_a_slurm_requeue_checkpoint_lightning_finds_itself_is_refused(
    run_args, evil, tmp_path, monkeypatch
):
    """A requeued SLURM job resumes from the hpc_ckpt_<n>.ckpt of its run directory without
    --ckpt_path: Lightning reads it, with the safe unpickler as well."""
    path, marker = evil
    for var, value in {
        "SLURM_JOB_ID": "77",
        "SLURM_JOB_NAME": "densenet",
        "SLURM_NTASKS": "1",
    }.items():
        monkeypatch.setenv(var, value)
    for var in ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID"):
        monkeypatch.setenv(var, "0")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    monkeypatch.delenv(rundir.RUN_DIR_ENV, raising=False)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    run_dir = tmp_path / "runs" / "slurm" / "slurm-77"
    run_dir.mkdir(parents=True)
    hpc = run_dir / "hpc_ckpt_1.ckpt"
    shutil.copy(path, hpc)
    with pytest.raises(UntrustedCheckpointError) as error:
        cli.run(run_args("--run.name", "slurm"))
    assert_refused(str(error.value), hpc, "give --run.trust_checkpoint true")
    assert not marker.exists()


def test_weights_only_is_the_clis_to_set(run_args, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(run_args("--weights_only", "false", subcommand="test"))
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert "--weights_only false: the CLI sets weights_only itself" in err
    assert "--run.trust_checkpoint true" in err


def test_a_trusted_checkpoint_loads_with_a_warning(run_args, evil):
    """With the opt-in, the CLI and Lightning's restore use the full unpickler (which is why
    the payload runs: the file above really is an attack)."""
    path, marker = evil
    args = run_args("--ckpt_path", str(path), subcommand="test")
    with pytest.warns(UserWarning, match=f"Loading {path} with the full unpickler"):
        tested = cli.run([*args, "--run.trust_checkpoint", "true"])
    assert tested.config.test.weights_only is False
    assert "test/error" in tested.trainer.callback_metrics
    assert marker.exists()


def test_the_projects_own_checkpoints_need_no_trust(run_args, trained):
    """last.ckpt and the best load with the safe unpickler; validating the best restores it
    through Lightning with weights_only=True (preemption, SLURM requeue and DDP checkpoints
    are loaded the same way in test_fault_tolerance and test_ddp)."""
    ckpts = sorted((trained.run_dir / "checkpoints").glob("*.ckpt"))
    assert [p.stem.split("-")[0] for p in ckpts] == ["best", "last"]
    for ckpt in ckpts:
        assert load_checkpoint(ckpt)["global_step"] == 2
    validated = cli.run(run_args("--ckpt_path", str(ckpts[0]), subcommand="validate"))
    assert validated.config.validate.weights_only is True
    assert "val/error" in validated.trainer.callback_metrics


# --------------------------------------------------------------------------------- analysis
def test_feature_reuse_refuses_a_checkpoint_that_would_run_code(evil, tmp_path, capsys):
    path, marker = evil
    out = tmp_path / "reuse.png"
    assert feature_reuse.main([str(path), "--out", str(out), "--quiet"]) == 2
    assert_refused(capsys.readouterr().err, path, "pass --trust-checkpoint (trust=True in Python")
    with pytest.raises(UntrustedCheckpointError) as error:
        load_model(path)
    assert error.value.refused == "posix.system" and error.value.path == path
    assert not marker.exists() and not out.exists()

    with pytest.warns(UserWarning, match="full unpickler"):
        assert (
            feature_reuse.main([str(path), "--out", str(out), "--quiet", "--trust-checkpoint"]) == 0
        )
    assert out.is_file() and marker.exists()
    marker.unlink()
    with pytest.warns(UserWarning, match="full unpickler"):
        model = load_model(path, trust=True)
    assert marker.exists() and model.classifier.out_features == 10


def test_compare_and_report_never_unpickle_checkpoints(evil, trained, tmp_path):
    path, marker = evil
    copy = tmp_path / "runs" / "clean" / trained.run_dir.name
    shutil.copytree(trained.run_dir, copy)
    for ckpt in (copy / "checkpoints").glob("*.ckpt"):
        shutil.copy(path, ckpt)
    assert compare.main([str(tmp_path / "runs"), "--out", str(tmp_path / "c.png")]) == 0
    assert report.main([str(tmp_path / "runs")]) == 0
    assert not marker.exists()


# ------------------------------------------------------------------------------- pretrained
def test_pretrained_weights_that_would_run_code_are_refused(run_args, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    net = build_model("densenet_cifar", **TINY_MODEL, num_classes=10, in_channels=1)
    weights = with_payload(net.state_dict(), tmp_path / "weights.pth", marker)
    with pytest.raises(UntrustedCheckpointError) as error:
        load_torchvision_weights(net, weights)
    assert_refused(str(error.value), weights, "torch.load(path, weights_only=False)")
    with pytest.raises(SystemExit) as stopped:
        cli.main(run_args("--model.pretrained", str(weights)))
    assert stopped.value.code == 1
    assert_refused(capsys.readouterr().err, weights, "pass its tensors")
    assert not marker.exists()
