"""DDP with two CPU processes (gloo), launched the way users launch it: one run directory,
the paper's global batch split over the ranks, identical weights and metrics on every rank,
validation and test metrics exactly those of one process (odd-sized sets, ranks that run
different numbers of batches), and a preemption that stops every rank at the same step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_args import IMAGENET, cli_args

from densenet_lit import rundir
from densenet_lit.callbacks import Preempted
from densenet_lit.checkpoints import load_checkpoint
from densenet_lit.cli import run

TESTS = Path(__file__).resolve().parent
GLOBAL_BATCH = 32
# Odd-sized sets: on 2 ranks of 16 images a batch, rank 0 gets 81 validation images (6 batches)
# and 49 test images (4 batches), rank 1 80 (5 batches) and 48 (3 batches)
ODD_SETS = ["--data.init_args.val_size", "161", "--data.init_args.test_size", "97"]


def ddp_args(root: Path, name: str, *extra: str, devices: int = 2) -> list[str]:
    """One epoch of 4 steps on the bundled digits, the global batch split over ``devices``
    CPU processes; ``--run.wandb`` is left to each test."""
    return cli_args(
        "fit",
        root,
        *extra,
        batch_size=GLOBAL_BATCH,
        data_init={"image_size": 16},
        seed=5,
        trainer={
            "devices": devices,
            "strategy": "ddp" if devices > 1 else "auto",
            "max_epochs": 1,
            "limit_train_batches": 4,
        },
        wandb=None,
        name=name,
    )


def launch(
    args: list[str], cwd: Path, probe: Path, **env_extra: str
) -> subprocess.CompletedProcess:
    """``python -m densenet_lit ...`` as a user runs it; Lightning starts the second rank."""
    env = {k: v for k, v in os.environ.items() if k != rundir.RUN_DIR_ENV}
    # this checkout's densenet_lit (not an installed copy) and the probes of tests/
    path = os.pathsep.join([str(TESTS.parent), str(TESTS)])
    env.update(PYTHONPATH=path, PROBE_DIR=str(probe), **env_extra)
    return subprocess.run(
        [sys.executable, "-m", "densenet_lit", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_ddp_processes_share_one_run_dir_and_agree(tmp_path):
    """Two processes (Lightning's DDP launcher re-runs the command) with the memory-efficient
    network and an EMA of the weights: one run directory, one config, one W&B run; each rank
    loads half of the global batch; both end with the same trained weights, the same average
    (weights and buffers) and the same logged metrics; the validation metrics (of the average,
    which rank the best checkpoint) and those of the test after fit are those of one process
    on the whole, odd-sized sets (each image once; ranks run different numbers of batches)."""
    probe = tmp_path / "probe"
    args = ddp_args(tmp_path / "runs", "ddp", "--run.wandb", "true", *ODD_SETS)
    args += ["--model.memory_efficient", "true", "--trainer.callbacks+=run_probes.RankProbe"]
    args += ["--run.test_after_fit", "true"]
    args += ["--trainer.callbacks+=EMAWeightAveraging", "--trainer.callbacks.decay", "0.5"]
    args += ["--trainer.callbacks+=run_probes.WeightsPerStep"]  # the trained weights
    proc = launch(args, tmp_path, probe, WANDB_MODE="offline")
    assert proc.returncode == 0, proc.stderr[-3000:]

    (run_dir,) = (tmp_path / "runs" / "ddp").iterdir()
    assert sorted(p.name for p in run_dir.glob("config*.yaml")) == ["config.yaml"]
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert proc.stdout.count("wandb sync") == 1

    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    states = [torch.load(probe / f"state_rank{r}.pt") for r in (0, 1)]
    for info in ranks:
        assert info["world_size"] == 2 and info["global_step"] == 4
        # the paper's global batch is kept: each of the 2 ranks loads half of it
        assert info["batch_sizes"] == [GLOBAL_BATCH // 2] * 4
    assert sum(info["batch_sizes"][0] for info in ranks) == GLOBAL_BATCH
    # the ranks hold the same network, and logged the same (reduced) metrics
    assert states[0].keys() == states[1].keys()
    assert [k for k in states[0] if not torch.equal(states[0][k], states[1][k])] == []
    assert ranks[0]["metrics"] == ranks[1]["metrics"]
    assert {"train/loss", "train/loss_step", "train/error", "val/error", "val/loss"} <= set(
        ranks[0]["metrics"]
    )
    # the module ends with the average (the EMA callback's on_train_end); the trained weights
    # after the last step are the same on both ranks too, and differ from the average. (The
    # batch-norm statistics of a step are each rank's own until DDP broadcasts rank 0's at
    # the next forward, also at validation, where the average is in the module: so the
    # averages agree at every validation and at the end, as `states` shows.)
    raw = [torch.load(probe / f"raw_rank{r}.pt") for r in (0, 1)]
    params = [k for k in raw[0] if not k.endswith(("running_mean", "running_var", "_tracked"))]
    assert len(params) == 29 and [k for k in params if not torch.equal(raw[0][k], raw[1][k])] == []
    key = "model.classifier.weight"
    assert not torch.equal(raw[0][key], states[0][key])
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    saved = ckpt["state_dict"]  # the average ...
    assert all(torch.equal(saved[k], states[0][k]) for k in saved)
    trained = ckpt["current_model_state"]  # ... and the trained weights
    assert all(torch.equal(trained[k], raw[0][k]) for k in trained)

    # val/error of DDP is over the whole validation set: each rank saw a different half, each
    # image once (161 validation images), in one batch more on rank 0 ...
    assert [info["val_samples"] for info in ranks] == [81, 80]
    assert [info["val_batches"] for info in ranks] == [6, 5]
    tests = [json.loads((probe / f"test_rank{r}.json").read_text()) for r in (0, 1)]
    assert [(t["test_samples"], t["test_batches"]) for t in tests] == [(49, 4), (48, 3)]
    assert tests[0]["metrics"] == tests[1]["metrics"]
    # ... and the metrics equal those of one process evaluating the saved weights on all of it
    one = ddp_args(tmp_path / "runs", "ddp", "--run.wandb", "false", *ODD_SETS, devices=1)[1:]
    one += ["--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt")]
    for subcommand, info in (("validate", ranks[0]), ("test", tests[0])):
        single = run([subcommand, *one])
        stage = "val" if subcommand == "validate" else "test"
        metrics = single.trainer.callback_metrics
        for name in (f"{stage}/error", f"{stage}/loss"):
            assert float(metrics[name]) == pytest.approx(info["metrics"][name], rel=1e-6, abs=1e-6)


@pytest.mark.slow
def test_ddp_predict_writes_each_image_once_in_the_data_sets_order(fake_data, tmp_path):
    """``predict`` with ten-crop evaluation on 2 processes, of a class-folder set of 9 images
    in global batches of 4: rank 0 predicts 5 images (3 batches), rank 1 4 (2 batches). One
    ``predictions.pt`` holds each image once, in the data set's order, with the
    probabilities of one process (the same seed draws the same network)."""
    root, _ = fake_data("imagenet", n_classes=3, n_per_class=1, n_val_per_class=3, size=(20, 24))
    data = {"data_dir": root, "eval_resize": 18, "eval_crop": 16, "eval_crops": 10}

    def predict_args(devices: int) -> list[str]:
        trainer = {"devices": devices, "strategy": "ddp" if devices > 1 else "auto"}
        data_init = {**data, "num_workers": 0}
        return cli_args(
            "predict", tmp_path / "runs", data=IMAGENET, batch_size=4, data_init=data_init,
            seed=3, trainer=trainer, name=f"predict{devices}",
        )  # fmt: skip

    proc = launch(predict_args(2), tmp_path, tmp_path / "probe")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("Predictions of 9 images saved") == 1  # by rank 0
    (run_dir,) = (tmp_path / "runs" / "predict2").iterdir()
    assert [p.name for p in run_dir.glob("predictions*")] == ["predictions.pt"]
    ddp = torch.load(run_dir / "predictions.pt")
    single = torch.load(run(predict_args(1)).run_dir / "predictions.pt")
    assert ddp["indices"].tolist() == list(range(9))
    assert ddp["targets"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert ddp["probabilities"].shape == single["probabilities"].shape == (9, 3)
    assert torch.allclose(ddp["probabilities"], single["probabilities"], rtol=0, atol=1e-6)
    assert torch.equal(ddp["predictions"], single["predictions"])


@pytest.mark.slow
def test_preempting_rank_zero_stops_every_rank_at_the_same_step(tmp_path):
    """SIGTERM reaches rank 0 only (the launching process) during step 1: the ranks agree to
    stop after the same step, save one checkpoint and all exit with 143. Under DDP the
    decision is read a step after it is queued (no step waits for it), so they stop after
    step 2. The run then continues, here on one process with the same global batch."""
    probe = tmp_path / "probe"
    args = ddp_args(tmp_path / "runs", "pre", "--run.wandb", "false")
    args += ["--trainer.callbacks+=run_probes.Heartbeat"]
    args += [
        "--trainer.callbacks+=run_probes.SignalAt",
        "--trainer.callbacks.signals",
        "{1: SIGTERM}",
    ]
    proc = launch(args, tmp_path, probe)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    assert proc.stderr.count("Continue the run with:") == 1  # printed by rank zero only
    assert [int((probe / f"step_rank{r}").read_text()) for r in (0, 1)] == [2, 2]
    (run_dir,) = (tmp_path / "runs" / "pre").iterdir()
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    saved = load_checkpoint(ckpt)
    assert saved["global_step"] == 2
    # the epoch's running sums cover both ranks: 2 steps of the global batch
    sums = saved["densenet_lit_train_sums"]
    assert sums["mid_epoch"] and float(sums["sums"]["train_loss"]["weight"]) == 2 * GLOBAL_BATCH

    resumed = run(
        ddp_args(tmp_path / "runs", "pre", "--run.wandb", "false", "--ckpt_path", "last", devices=1)
    )
    assert resumed.run_dir == run_dir and resumed.trainer.global_step == 4
    assert resumed.config.fit.weights_only is True  # Lightning restored it safely


@pytest.mark.slow
@pytest.mark.parametrize("check", ["every_step", "deferred"])
def test_a_nan_on_one_rank_stops_every_rank_at_the_same_step(tmp_path, check):
    """A NaN image in rank 1's batch of step 2: both ranks stop with the error naming step 2
    (rank 0's says the loss is bad on another rank), and nothing is saved after it."""
    probe = tmp_path / "probe"
    args = ddp_args(tmp_path / "runs", "nan", "--run.wandb", "false")
    args += ["--trainer.callbacks+=run_probes.PoisonAt", "--trainer.callbacks.step", "2"]
    args += ["--trainer.callbacks.rank", "1"]
    args += ["--trainer.callbacks+=FiniteLossGuard", "--trainer.callbacks.check", check]
    proc = launch(args, tmp_path, probe)
    assert proc.returncode == 1
    assert "[rank 1] error: The training loss is nan at global step 2" in proc.stderr
    assert (
        "\nerror: The training loss is not finite on another DDP rank at global step 2"
        in proc.stderr
    )
    (run_dir,) = (tmp_path / "runs" / "nan").iterdir()
    assert not list(run_dir.rglob("*.ckpt"))  # the first checkpoint would come at epoch end


@pytest.mark.slow
def test_non_finite_weights_on_one_rank_stop_every_rank_before_the_checkpoint(tmp_path):
    """Rank 1's batch-norm statistics turn infinite at the end of the epoch, before its
    checkpoint (the loss was finite): the verdict on the weights is shared, so both ranks stop
    with the error (neither waits in a collective for the other) and nothing is saved."""
    probe = tmp_path / "probe"
    args = ddp_args(tmp_path / "runs", "inf", "--run.wandb", "false")
    args += ["--trainer.callbacks+=run_probes.PoisonAt", "--trainer.callbacks.step", "4"]
    args += ["--trainer.callbacks.what", "norm_stats", "--trainer.callbacks.rank", "1"]
    proc = launch(args, tmp_path, probe)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert (
        "[rank 1] error: The weights hold NaN or infinite values "
        "(model.features.denseblock1.denselayer1.norm1.running_var) at global step 4"
    ) in proc.stderr
    assert (
        "\nerror: The weights hold NaN or infinite values on another DDP rank at global step 4"
        in proc.stderr
    )
    (run_dir,) = (tmp_path / "runs" / "inf").iterdir()
    assert not list(run_dir.rglob("*.ckpt"))


@pytest.mark.slow
def test_ddp_steps_between_logging_steps_issue_no_blocking_collective_of_ours(tmp_path):
    """Every collective of the training steps, counted on both ranks (6 steps, metrics logged
    every 3rd). Ours, between logging steps: one queued (``async_op=True``) reduction for the
    loss check and one for the preemption signal, no barrier and nothing the host waits for;
    at a logging step also the mean of ``train/loss_step`` over the ranks (no barrier). The
    one blocking collective left is Lightning's own: its broadcast of rank 0's SIGTERM flag
    before every step (Lightning 2.6)."""
    probe = tmp_path / "probe"
    args = ddp_args(tmp_path / "runs", "count", "--run.wandb", "false")
    args += ["--trainer.limit_train_batches", "6", "--trainer.log_every_n_steps", "3"]
    args += ["--trainer.callbacks+=run_probes.CollectiveCounter"]
    proc = launch(args, tmp_path, probe)
    assert proc.returncode == 0, proc.stderr[-3000:]
    queued = ["all_reduce", True, "densenet_lit"]  # [name, async_op, whose]
    lightning = ["broadcast", False, "lightning"]
    for rank in (0, 1):
        steps = json.loads((probe / f"collectives_rank{rank}.json").read_text())
        assert [(s["step"], s["logged"]) for s in steps] == [
            (1, False),
            (2, False),
            (3, True),
            (4, False),
            (5, False),
        ]  # the 6th, the epoch's last, is followed by validation
        for s in steps:
            expected = [queued, queued, lightning]
            if s["logged"]:
                expected.append(["all_reduce", False, "densenet_lit"])  # train/loss_step
            assert sorted(s["calls"]) == sorted(expected), (rank, s)


def test_sync_batchnorm_on_cpu_is_a_clear_error(tmp_path):
    """PyTorch's SyncBatchNorm runs on CUDA only (DDP refuses it on the CPU)."""
    args = ddp_args(tmp_path, "sbn", "--run.wandb", "false", devices=1)
    args[args.index("--trainer.strategy") + 1] = "ddp"
    with pytest.raises(ValueError, match="sync_batchnorm=true needs GPUs"):
        run([*args, "--trainer.sync_batchnorm", "true"])


def test_preempted_is_a_clean_exit_with_the_signal_status():
    stop = Preempted(int(signal.SIGUSR1), "x/last.ckpt", 12, 3)
    assert isinstance(stop, SystemExit) and stop.code == 138
    assert (
        str(stop)
        == "Stopped by SIGUSR1 at global step 12 (epoch 3); checkpoint saved to x/last.ckpt."
    )
