"""The CLI: links, run directories, config composition, resumption and W&B mode selection."""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from densenet_lit import rundir
from densenet_lit.checkpoints import CheckpointError
from densenet_lit.cli import main, preflight, run
from densenet_lit.cli.errors import TRACEBACK_ENV
from densenet_lit.cli.extends import config_chain, expand_config_args
from densenet_lit.cli.preflight import CheckpointMismatchError
from densenet_lit.tracking import wandb as tracking_wandb
from densenet_lit.tracking.wandb import wandb_mode

REPO = Path(__file__).resolve().parents[1]


def run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*/*") if p.is_dir())


# --------------------------------------------------------------------------------- links
def test_num_classes_and_in_channels_come_from_the_data(run_args):
    c = run(run_args("--trainer.fast_dev_run", "true"))
    assert c.model.hparams.num_classes == 10 and c.model.hparams.in_channels == 1
    assert c.model.model.features.conv0.in_channels == 1


def test_num_classes_cannot_be_set_by_hand(run_args, capsys):
    with pytest.raises(SystemExit) as stopped:
        run(run_args("--model.num_classes", "3", "--trainer.fast_dev_run", "true"))
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert 'error: Linked "model.num_classes" must be given via "data.num_classes".' in err


def test_print_config(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(REPO / "experiments/imagenet121.yaml"), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["arch"] == "densenet121"
    assert printed["data"]["init_args"]["batch_size"] == 256
    assert printed["trainer"]["max_epochs"] == 90
    assert printed["extends"] is None  # the printed config stands on its own


# ------------------------------------------------------------------------ config composition
def test_extends_chain_order():
    chain = config_chain(REPO / "experiments/cifar10plus_densenet_bc_100_12.yaml")
    names = [p.name for p in chain]
    assert names == ["base.yaml", "cifar.yaml", "cifar10plus.yaml", chain[-1].name]


def test_extends_cycle_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        config_chain(tmp_path / "a.yaml")


def test_expand_config_args_keeps_order():
    run_cfg = str(REPO / "experiments/svhn_densenet_bc_100_12.yaml")
    overlay = str(REPO / "experiments/overlays/debug.yaml")
    out = expand_config_args(["fit", "--config", run_cfg, f"--config={overlay}", "--x", "1"])
    configs = [out[i + 1] for i, a in enumerate(out) if a == "--config"]
    assert [Path(c).name for c in configs] == [
        "base.yaml",
        "svhn.yaml",
        "svhn_densenet_bc_100_12.yaml",
        "debug.yaml",
    ]
    assert out[-2:] == ["--extends", "null"]


def test_a_configured_default_callback_replaces_the_default(run_args):
    from densenet_lit.callbacks import FiniteLossGuard, PreemptionCheckpoint, ThroughputMonitor

    guard = ["--trainer.callbacks+=densenet_lit.callbacks.FiniteLossGuard"]
    guard += ["--trainer.callbacks.check", "every_step"]
    c = run(run_args(*guard, "--trainer.fast_dev_run", "true"))
    kinds = [type(cb) for cb in c.trainer.callbacks]
    guards = [cb for cb in c.trainer.callbacks if isinstance(cb, FiniteLossGuard)]
    assert [g.check for g in guards] == ["every_step"]
    # the other defaults stay
    assert kinds.count(ThroughputMonitor) == 1 and kinds.count(PreemptionCheckpoint) == 1
    default = run(run_args("--trainer.fast_dev_run", "true"))
    assert [cb.check for cb in default.trainer.callbacks if isinstance(cb, FiniteLossGuard)] == [
        "auto"
    ]


def test_later_configs_win_and_overlays_keep_base_callbacks(capsys):
    with pytest.raises(SystemExit) as printed:
        main(
            [
                "fit",
                "--config",
                str(REPO / "experiments/cifar100_densenet_40_12.yaml"),
                "--config",
                str(REPO / "experiments/overlays/multinode.yaml"),
                "--trainer.max_epochs",
                "3",
                "--print_config",
            ]
        )
    assert printed.value.code in (0, None)  # printed, not a parser error
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["trainer"]["max_epochs"] == 3  # command line over files
    assert cfg["trainer"]["num_nodes"] == 2 and cfg["trainer"]["strategy"] == "ddp"
    callbacks = [c["class_path"] for c in cfg["trainer"]["callbacks"]]
    assert callbacks[:2] == ["lightning.pytorch.callbacks.ModelCheckpoint"] * 2  # last, best
    assert "lightning.pytorch.callbacks.TQDMProgressBar" in callbacks
    # the data-set file's values survive the overlay
    assert cfg["model"]["drop_rate"] == 0.2 and cfg["model"]["depth"] == 40
    assert cfg["data"]["class_path"].endswith("CIFAR100DataModule")
    assert cfg["data"]["init_args"]["val_size"] == 0


def test_experiment_name():
    assert rundir.experiment_name(["experiments/imagenet121.yaml", "x/overlays/fast.yaml"]) == (
        "imagenet121"
    )
    assert rundir.experiment_name(["experiments/defaults/base.yaml"]) == "default"
    assert rundir.experiment_name(["a.yaml"], name="mine") == "mine"


# ---------------------------------------------------------------------------- run dirs
def test_two_runs_get_their_own_directories(run_args, tmp_path):
    first = run(run_args("--run.name", "same"))
    second = run(run_args("--run.name", "same"))
    dirs = run_dirs(tmp_path / "runs")
    assert len(dirs) == 2 and dirs[0] != dirs[1]
    assert {first.run_dir, second.run_dir} == set(dirs)
    for d in dirs:
        assert d.parent.name == "same"
        assert (d / "config.yaml").is_file()
        assert (d / "metrics.csv").is_file()
        assert (d / "checkpoints" / "last.ckpt").is_file()
        saved = yaml.safe_load((d / "config.yaml").read_text())
        assert saved["model"]["depth"] == 10 and saved["run"]["name"] == "same"


def test_config_file_is_never_overwritten(tmp_path):
    rundir.unique_path(tmp_path / "config.yaml").write_text("a")
    second = rundir.unique_path(tmp_path / "config.yaml")
    assert second.name == "config-1.yaml"


def test_ddp_workers_reuse_the_parents_run_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(rundir.RUN_DIR_ENV, raising=False)  # restored after the test
    monkeypatch.delenv(rundir.RUN_DIR_OWNER_ENV, raising=False)
    parent = rundir.choose_run_dir(tmp_path, "exp")
    # a worker process started by Lightning's launcher sees the variable, set by another process
    monkeypatch.setenv(rundir.RUN_DIR_OWNER_ENV, "1")
    assert rundir.choose_run_dir(tmp_path, "exp") == parent
    # the next run of this process gets a new directory
    monkeypatch.setenv(rundir.RUN_DIR_OWNER_ENV, str(os.getpid()))
    assert rundir.choose_run_dir(tmp_path, "exp") != parent


def test_slurm_tasks_share_a_run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    monkeypatch.delenv(rundir.RUN_DIR_ENV, raising=False)
    assert rundir.choose_run_dir(tmp_path, "exp") == tmp_path / "exp" / "slurm-4242"


def test_test_after_fit_writes_test_metrics(run_args):
    c = run(run_args("--run.test_after_fit", "true", "--run.test_ckpt", "best"))
    metrics = (c.run_dir / "metrics.csv").read_text()
    assert "test/error" in metrics and "val/error" in metrics and "train/loss" in metrics
    assert list((c.run_dir / "checkpoints").glob("best-*.ckpt"))


# ------------------------------------------------------------------------------ resume
@pytest.mark.slow
def test_resume_continues_and_checks_model_arguments(run_args, tmp_path):
    first = run(run_args("--run.name", "exp"))
    last = first.run_dir / "checkpoints" / "last.ckpt"
    assert last.is_file()

    # changed network: refused, naming the argument
    with pytest.raises(CheckpointMismatchError, match="growth_rate: given 8, checkpoint 4"):
        run(run_args("--run.name", "exp", "--ckpt_path", "last", "--model.growth_rate", "8"))

    # same arguments: `last` finds the newest run's last.ckpt and training continues
    resumed = run(run_args("--run.name", "exp", "--ckpt_path", "last", "--trainer.max_epochs", "2"))
    assert resumed.trainer.current_epoch == 2
    assert resumed.config.fit.ckpt_path == str(last)
    # fractional milestones follow the new max_epochs (0.5, 0.75 of 2 epochs), not the saved 1, 1
    scheduler = resumed.trainer.lr_scheduler_configs[0].scheduler
    assert sorted(scheduler.milestones.elements()) == [1, 2]
    # the run continues in its own directory; nothing of it is overwritten
    assert resumed.run_dir == first.run_dir
    assert (first.run_dir / "config.yaml").is_file() and (first.run_dir / "config-1.yaml").is_file()
    epochs = {row.split(",")[0] for row in (first.run_dir / "metrics.csv").read_text().splitlines()}
    assert {"0", "1"} <= epochs
    assert len(run_dirs(tmp_path / "runs")) == 1

    # a run directory stands for its last.ckpt; runtime options may differ
    validated = run(
        run_args(
            "--ckpt_path",
            str(resumed.run_dir),
            "--model.channels_last",
            "true",
            subcommand="validate",
        )
    )
    assert validated.config.validate.ckpt_path == str(resumed.run_dir / "checkpoints/last.ckpt")


def test_ckpt_path_last_without_runs_is_a_clear_error(run_args):
    with pytest.raises(FileNotFoundError, match="no run of experiment 'nothing'"):
        run(run_args("--run.name", "nothing", "--ckpt_path", "last"))


def test_predict_and_test_subcommands(run_args):
    first = run(run_args("--run.name", "p"))
    ckpt = str(first.run_dir / "checkpoints" / "last.ckpt")
    tested = run(run_args("--ckpt_path", ckpt, subcommand="test"))
    assert "test/error" in tested.trainer.callback_metrics
    predicted = run(
        run_args(
            "--ckpt_path",
            ckpt,
            "--trainer.limit_predict_batches",
            "2",
            subcommand="predict",
        )
    )
    saved = torch.load(predicted.run_dir / "predictions.pt")
    probabilities, predictions = saved["probabilities"], saved["predictions"]
    assert probabilities.shape == (64, 10)  # 2 batches of 32 test digits, 10 classes
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(64))
    assert torch.equal(predictions, probabilities.argmax(dim=1))
    assert saved["targets"].shape == (64,) and saved["indices"].tolist() == list(range(64))
    # the probabilities of the checkpoint's network on the first test batch
    dm = predicted.datamodule
    x, y = dm.transform_batch(next(iter(dm.predict_dataloader())), train=False)
    with torch.no_grad():
        expected = predicted.model.eval()(x).softmax(dim=1)
    assert torch.allclose(probabilities[:32], expected, atol=1e-6)
    assert torch.equal(saved["targets"][:32], y)


# --------------------------------------------------------------------------------- W&B mode
def test_wandb_mode_respects_wandb_mode(no_wandb_account, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode()[0] == "disabled"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert wandb_mode()[0] == "online"


def test_wandb_mode_without_key_is_offline(no_wandb_account):
    mode, reason = wandb_mode()
    assert mode == "offline" and "API key" in reason


def test_wandb_mode_with_key_but_no_network_is_offline_quickly(no_wandb_account, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    # a non-routable address: the probe must give up after its timeout, not hang
    monkeypatch.setenv("WANDB_BASE_URL", "https://10.255.255.1:9")
    start = time.monotonic()
    mode, reason = wandb_mode()
    assert mode == "offline" and "not reachable" in reason
    assert time.monotonic() - start < 10


def test_wandb_mode_reads_netrc(no_wandb_account, monkeypatch):
    netrc = no_wandb_account / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    netrc.chmod(0o600)
    monkeypatch.setattr(tracking_wandb, "reachable", lambda url, timeout=3.0: True)
    assert wandb_mode()[0] == "online"


# ------------------------------------------------------------------------- user errors
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model.depth", "101"], "error: model.depth=101: a 3-block DenseNet-B/BC"),
        # raised while jsonargparse builds the data module: its own wrapper is not shown
        (["--data.init_args.batch_size", "0"], "error: data.batch_size=0: expected a positive"),
        (["--ckpt_path", "missing.ckpt"], "error: --ckpt_path missing.ckpt: no such checkpoint"),
    ],
)
def test_main_prints_a_user_error_without_traceback(run_args, capsys, monkeypatch, extra, message):
    monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    with pytest.raises(SystemExit) as stopped:
        main(run_args(*extra))
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert f"{TRACEBACK_ENV}=1" in err
    monkeypatch.setenv(TRACEBACK_ENV, "1")
    with pytest.raises((ValueError, FileNotFoundError)):
        main(run_args(*extra))


def test_a_user_error_reaches_stderr_in_one_write(run_args, monkeypatch):
    """DDP ranks share one stderr pipe: a message written in pieces can land inside another
    rank's (seen: "...for the traceback)error: ..."). One write below the pipe's atomic size
    keeps every rank's message on its own lines."""
    writes: list[str] = []

    class Recorder(io.StringIO):
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

    monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    monkeypatch.setattr(sys, "stderr", Recorder())
    with pytest.raises(SystemExit) as stopped:
        main(run_args("--model.depth", "101"))
    assert stopped.value.code == 1
    (message,) = [w for w in writes if "error: model.depth=101" in w]
    assert message.startswith("error: ") and message.endswith("for the traceback)\n")
    assert len(message.encode()) < 4096  # PIPE_BUF on Linux: written to a pipe in one piece


def test_a_parser_error_shows_one_usage_line_not_every_option(run_args, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(run_args("--model.depth", "abc"))
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "usage: python -m densenet_lit fit [-h] [--config CONFIG] [options]" in err
    assert 'Parser key "model.depth"' in err and "Given value: abc" in err
    assert len(err.splitlines()) < 15 and "--trainer.max_epochs" not in err


def test_invalid_yaml_names_the_file_and_the_line(run_args, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  depth: [40\n")
    with pytest.raises(ValueError, match=r"bad.yaml: not valid YAML \(line 3, column 1\)"):
        run(run_args("--config", str(bad)))


def test_a_missing_test_checkpoint_is_an_error_before_training(run_args, tmp_path):
    extra = ["--run.test_after_fit", "true", "--run.test_ckpt", str(tmp_path / "no.ckpt")]
    with pytest.raises(FileNotFoundError, match="--run.test_ckpt .*no.ckpt: no such checkpoint"):
        run(run_args(*extra))
    assert run_dirs(tmp_path / "runs") == []  # nothing started


def test_an_imagenet_network_on_small_images_is_an_error_before_training(run_args):
    extra = ["--model.arch", "densenet121", "--model.depth", "null", "--model.growth_rate", "null"]
    extra += ["--data.init_args.image_size", "16"]
    with pytest.raises(ValueError, match=r"densenet121.*16x16 images.*at least 29x29"):
        run(run_args(*extra))


def test_a_global_batch_that_does_not_split_is_an_error_before_ddp_starts(run_args):
    extra = ["--trainer.devices", "2", "--trainer.strategy", "ddp"]
    extra += ["--data.init_args.batch_size", "33"]
    with pytest.raises(ValueError, match=r"data.batch_size=33 .* 2 processes.* e.g. 32 or 34"):
        run(run_args(*extra))


def test_default_network_arguments_match_a_checkpoint_that_left_them_unset():
    stored = {"arch": "densenet_cifar", "depth": None, "bottleneck": None, "lr": 0.1}
    given = {"arch": "densenet_cifar", "depth": 100, "bottleneck": True, "lr": 0.1}
    assert preflight.compare_with_checkpoint(given, stored) == {}
    assert preflight.compare_with_checkpoint({**given, "depth": 40}, stored) == {"depth": (40, 100)}


def test_an_unreadable_checkpoint_suggests_only_readable_ones(tmp_path):
    ckpts = tmp_path / "runs" / "exp" / "run1" / "checkpoints"
    ckpts.mkdir(parents=True)
    torch.save({"state_dict": {}}, ckpts / "good.ckpt")
    (ckpts / "random.ckpt").write_bytes(bytes(range(256)) * 4)
    (ckpts / "last.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError) as error:
        preflight.read_checkpoint(ckpts / "last.ckpt")
    message = str(error.value)
    assert str(ckpts / "good.ckpt") in message and "random.ckpt" not in message


@pytest.mark.parametrize(
    ("where", "suggested"),
    [
        ("yaml", "model.growth_rate"),  # a typo in a config file
        ("flag", "model.growth_rate"),  # a typo on the command line
        ("init_args", "batch_size"),  # a typo among the data module's arguments
    ],
)
def test_a_misspelt_option_gets_a_suggestion(run_args, tmp_path, capsys, where, suggested):
    extra = {
        "yaml": ["--config", str(tmp_path / "typo.yaml")],
        "flag": ["--model.growthrate", "12"],
        "init_args": ["--data.init_args.batchsize", "12"],
    }[where]
    (tmp_path / "typo.yaml").write_text("model:\n  growth: 12\n")
    with pytest.raises(SystemExit) as stopped:
        main(run_args(*extra))
    assert stopped.value.code == 2
    assert f"Did you mean '{suggested}'?" in capsys.readouterr().err


def test_a_run_that_fails_before_training_leaves_no_run_directory(tmp_path, capsys):
    """A data set that is not there: no empty run directory is left behind for each retry.
    A run that got as far as training keeps its directory (see test_fault_tolerance)."""
    args = [
        "fit",
        "--config",
        str(REPO / "experiments/cifar10_densenet_40_12.yaml"),
        "--data.data_dir",
        str(tmp_path / "nowhere"),
        "--trainer.default_root_dir",
        str(tmp_path / "runs"),
        "--run.wandb",
        "true",  # offline here: its folder goes too
    ]
    from densenet_lit.data import DataError

    with pytest.raises(DataError, match="CIFAR-10 not found"):
        run(args)
    assert list((tmp_path / "runs").glob("*")) == []
    assert "wandb sync" not in capsys.readouterr().out  # no hint to upload a deleted run


def test_validate_without_a_validation_set_says_what_to_do(run_args):
    args = run_args("--data.init_args.val_size", "0", subcommand="validate")
    with pytest.raises(ValueError, match=r"no validation set \(data.val_size=0.*Use `test`"):
        run(args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_asking_for_a_gpu_on_a_machine_without_one_says_how_to_run_on_the_cpu(run_args, capsys):
    args = run_args("--config", str(REPO / "experiments/overlays/ddp.yaml"))
    with pytest.raises(SystemExit) as stopped:
        main(args)
    err = capsys.readouterr().err
    assert stopped.value.code == 1 and "Traceback" not in err
    assert "PyTorch sees no GPU on this machine: run with --trainer.accelerator cpu" in err


def test_a_run_with_its_own_logger_keeps_its_directory_when_it_fails_after_training(
    run_args, tmp_path
):
    """Its checkpoints and metrics go to the logger's folder, so the run directory holds only
    the config; after steps were trained, a failure must not delete it."""
    extra = ["--trainer.logger", "lightning.pytorch.loggers.CSVLogger"]
    extra += ["--trainer.logger.save_dir", str(tmp_path / "elsewhere")]
    extra += ["--trainer.callbacks+=run_probes.PoisonAt", "--trainer.callbacks.step", "1"]
    extra += ["--run.name", "own_logger"]
    with pytest.raises(FloatingPointError, match="global step 1"):
        run(run_args(*extra))
    (run_dir,) = run_dirs(tmp_path / "runs")
    assert (run_dir / "config.yaml").is_file()


def test_an_error_from_outside_the_package_during_training_keeps_its_traceback(run_args):
    """Only densenet_lit's own checks (and data, checkpoint, YAML, Lightning configuration
    errors) become one-line messages; a ValueError raised elsewhere mid-training is a bug
    to be seen whole."""
    extra = ["--trainer.callbacks+=run_probes.RaiseAt", "--trainer.callbacks.step", "1"]
    with pytest.raises(ValueError, match="raised by a test callback"):
        main(run_args(*extra))


def test_evaluating_a_checkpoint_needs_no_training_length(run_args):
    first = run(run_args("--run.name", "p"))
    ckpt = str(first.run_dir / "checkpoints" / "last.ckpt")
    tested = run(run_args("--ckpt_path", ckpt, "--trainer.max_epochs", "null", subcommand="test"))
    assert "test/error" in tested.trainer.callback_metrics
