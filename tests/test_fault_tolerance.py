"""Fault tolerance: exact resumption, preemption signals, SLURM requeue, non-finite losses,
unusable checkpoints, W&B failures and reproducibility, all through the CLI on real data."""

from __future__ import annotations

import csv
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from cli_args import IMAGENET_RESUME_DATA, QUICK, cli_args, imagenet_resume_args
from weights import assert_same_weights, final_weights

from densenet_lit import rundir
from densenet_lit.callbacks import Preempted
from densenet_lit.checkpoints import CheckpointError, load_checkpoint
from densenet_lit.cli import run
from densenet_lit.cli.extends import config_chain
from densenet_lit.cli.preflight import CheckpointMismatchError
from densenet_lit.tracking import wandb as tracking_wandb

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
BATCHES = 5  # training batches per epoch
EPOCHS = 4


def tiny_args(root: Path, name: str, *extra: str, subcommand: str = "fit") -> list[str]:
    """A deterministic run on the bundled digits: a tiny DenseNet-BC with dropout, the random
    crops of the data module, and the step schedule (lr / 10 at epochs 2 and 3)."""
    return cli_args(
        subcommand,
        root,
        *extra,
        data_init={"image_size": 16},
        # milestones in epochs, so that a first part run with max_epochs 2 has the same schedule
        model={"drop_rate": 0.2, "milestones": "[2, 3]"},
        seed=7,
        trainer={
            **QUICK,
            "deterministic": True,
            "max_epochs": EPOCHS,
            "limit_train_batches": BATCHES,
            "log_every_n_steps": 1,
        },
        name=name,
    )


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv without the throughput, which is a timing."""
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in row.items() if not k.startswith("perf/")} for row in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """The uninterrupted run: its run directory and final weights."""
    root = tmp_path_factory.mktemp("reference")
    c = run(tiny_args(root, "reference"))
    assert c.trainer.global_step == EPOCHS * BATCHES
    return c.run_dir, final_weights(c)


# ------------------------------------------------------------------------ reproducibility
@pytest.mark.slow
def test_same_config_and_seed_give_the_same_run(reference, tmp_path):
    run_dir, state = reference
    again = run(tiny_args(tmp_path, "again"))
    assert metric_rows(again.run_dir) == metric_rows(run_dir)
    assert_same_weights(final_weights(again), state)
    # the comparison has teeth: values for every epoch, and the lr schedule stepped
    rows = metric_rows(run_dir)
    assert {r["epoch"] for r in rows if r["val/error"]} == {"0", "1", "2", "3"}
    assert {r["lr"] for r in rows if r["lr"]} >= {"0.10000000149011612", "0.009999999776482582"}


# -------------------------------------------------------------------------- exact resume
INTERRUPTIONS = {
    # the run ends after epoch 1 (as if killed then): resume from its last.ckpt
    "killed-after-epoch": ["--trainer.max_epochs", "2"],
    # SIGTERM at the last batch of epoch 1: the epoch finishes, then the run stops
    "signal-after-epoch": ["--trainer.callbacks.signals", f"{{{2 * BATCHES}: SIGTERM}}"],
    # SIGTERM in the middle of epoch 1
    "signal-mid-epoch": ["--trainer.callbacks.signals", f"{{{BATCHES + 2}: SIGTERM}}"],
}


@pytest.mark.slow
@pytest.mark.parametrize("how", list(INTERRUPTIONS))
def test_interrupted_run_resumes_exactly(reference, tmp_path, how):
    """A run interrupted in epoch 1 and continued with ``fit --ckpt_path last`` ends with the
    same weights and logs the same metrics as the run never interrupted. The signals are
    real (the process sends them to itself at a chosen step; the handler runs as usual)."""
    run_dir, state = reference
    first = INTERRUPTIONS[how]
    if how.startswith("signal"):
        first = ["--trainer.callbacks+=run_probes.SignalAt", *first]
        with pytest.raises(Preempted) as stopped:
            run(tiny_args(tmp_path, "exp", *first))
        assert stopped.value.code == 128 + signal.SIGTERM
        ckpt = stopped.value.ckpt_path
    else:
        c = run(tiny_args(tmp_path, "exp", *first))
        ckpt = str(c.run_dir / "checkpoints" / "last.ckpt")
    saved = load_checkpoint(ckpt)
    assert saved["global_step"] == (BATCHES + 2 if how == "signal-mid-epoch" else 2 * BATCHES)

    resumed = run(tiny_args(tmp_path, "exp", "--ckpt_path", "last"))
    assert resumed.config.fit.ckpt_path == ckpt
    assert resumed.run_dir == Path(ckpt).parents[1]
    assert resumed.trainer.global_step == EPOCHS * BATCHES
    assert_same_weights(final_weights(resumed), state)
    # every metric of every step and epoch, also the epoch means of the interrupted epoch
    assert metric_rows(resumed.run_dir) == metric_rows(run_dir)


@pytest.mark.slow
def test_a_checkpoint_of_an_epochs_last_batch_resumes_exactly(reference, tmp_path):
    """A checkpoint written at the last batch of epoch 1, before the epoch's end (here
    ModelCheckpoint(every_n_train_steps); also a SLURM requeue checkpoint): Lightning closes
    that epoch on resumption, and epoch 2 starts whole, with fresh epoch means."""
    run_dir, state = reference
    steps = ["--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.every_n_train_steps"]
    steps += [str(BATCHES), "--trainer.callbacks.save_top_k", "-1"]
    steps += ["--trainer.callbacks.save_on_train_epoch_end", "false", "--trainer.max_epochs", "2"]
    first = run(tiny_args(tmp_path, "exp", *steps))
    ckpt = first.run_dir / "checkpoints" / f"epoch=1-step={2 * BATCHES}.ckpt"
    assert load_checkpoint(ckpt)["global_step"] == 2 * BATCHES

    resumed = run(tiny_args(tmp_path, "exp", "--ckpt_path", str(ckpt)))
    assert resumed.trainer.global_step == EPOCHS * BATCHES
    assert_same_weights(final_weights(resumed), state)

    def epoch_means(rows):
        return {r["epoch"]: r["train/loss"] for r in rows if r["train/loss"]}

    assert epoch_means(metric_rows(resumed.run_dir)) == epoch_means(metric_rows(run_dir))


# ----------------------------------------------------------------------------- preemption
@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGUSR1"])
def test_signal_to_a_training_process_saves_and_the_run_resumes(tmp_path, monkeypatch, signame):
    """A real `python -m densenet_lit fit` process gets the signal while it trains: it saves
    a checkpoint, exits with 128 + signal and prints the command that continues the run."""
    probe = tmp_path / "probe"
    env = {k: v for k, v in os.environ.items() if k != rundir.RUN_DIR_ENV}
    path = os.pathsep.join([str(REPO), str(TESTS)])  # this checkout's densenet_lit, the probes
    env.update(PYTHONPATH=path, PROBE_DIR=str(probe), WANDB_MODE="disabled")
    args = [
        "fit",
        "--config",
        str(REPO / "experiments/demo_digits.yaml"),
        "--model.depth",
        "10",
        "--model.growth_rate",
        "4",
        "--trainer.max_epochs",
        "200",  # far longer than the test waits: it must stop on the signal
        "--trainer.limit_train_batches",
        "4",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(tmp_path / "runs"),
        "--run.wandb",
        "false",
        "--run.test_after_fit",
        "false",
        "--trainer.callbacks+=run_probes.Heartbeat",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "densenet_lit", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        heartbeat = probe / "step_rank0"
        while not heartbeat.is_file() or int(heartbeat.read_text()) < 6:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.1)
        proc.send_signal(getattr(signal, signame))
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + getattr(signal, signame), stderr[-3000:]
    assert f"Stopped by {signame} at global step" in stderr
    (run_dir,) = (tmp_path / "runs" / "demo_digits").iterdir()
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    saved = load_checkpoint(ckpt)
    assert saved["global_step"] >= 6
    assert not list(run_dir.glob("checkpoints/.*"))  # no temporary file left behind

    # the printed command continues the run (here for 3 more steps)
    (line,) = [x for x in stderr.splitlines() if x.strip().startswith("python -m densenet_lit")]
    command = shlex.split(line)[3:]
    assert command[-2:] == ["--ckpt_path", str(ckpt)]
    monkeypatch.setenv("PROBE_DIR", str(probe))
    resumed = run([*command, "--trainer.max_steps", str(saved["global_step"] + 3)])
    assert resumed.run_dir == run_dir
    assert resumed.trainer.global_step == saved["global_step"] + 3
    assert resumed.trainer.current_epoch >= saved["epoch"]
    assert (run_dir / "config-1.yaml").is_file()
    steps = [int(r["step"]) for r in metric_rows(run_dir)]
    assert max(steps) >= saved["global_step"] + 2


@pytest.mark.slow
def test_requeued_slurm_job_resumes_from_its_requeue_checkpoint(tmp_path, monkeypatch):
    """Under SLURM, SIGUSR1 is Lightning's: it saves hpc_ckpt_1.ckpt and asks `scontrol
    requeue` (absent here: a warning). The SIGTERM of the requeue then saves hpc_ckpt_2.ckpt
    and stops. The requeued job (same job id, SLURM_RESTART_COUNT=1) runs the same command
    and continues from hpc_ckpt_2.ckpt in the same run directory."""
    for var, value in {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "densenet",
        "SLURM_NTASKS": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
    }.items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    monkeypatch.delenv(rundir.RUN_DIR_ENV, raising=False)
    signals = ["--trainer.callbacks+=run_probes.SignalAt"]
    signals += ["--trainer.callbacks.signals", "{3: SIGUSR1, 7: SIGTERM}"]
    with pytest.raises(Preempted) as stopped:
        run(tiny_args(tmp_path, "slurm", *signals))
    run_dir = tmp_path / "slurm" / "slurm-4242"
    assert stopped.value.ckpt_path == str(run_dir / "hpc_ckpt_2.ckpt")
    first = load_checkpoint(run_dir / "hpc_ckpt_1.ckpt")
    second = load_checkpoint(run_dir / "hpc_ckpt_2.ckpt")
    assert first["global_step"] == 3 and second["global_step"] == 7

    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    requeued = run(tiny_args(tmp_path, "slurm"))  # the job script's command, unchanged
    assert requeued.run_dir == run_dir
    assert requeued.trainer.ckpt_path == str(run_dir / "hpc_ckpt_2.ckpt")
    assert requeued.config.fit.weights_only is True  # Lightning restored it safely
    assert requeued.trainer.global_step == EPOCHS * BATCHES
    assert sorted(p.name for p in run_dir.glob("config*.yaml")) == ["config-1.yaml", "config.yaml"]

    # a job script that names a checkpoint: the requeue checkpoint saved since wins
    (run_dir / "hpc_ckpt_3.ckpt").write_bytes((run_dir / "hpc_ckpt_2.ckpt").read_bytes())
    older = run_dir / "checkpoints" / "last.ckpt"
    os.utime(older, (time.time() - 60, time.time() - 60))
    assert rundir.newer_requeue_checkpoint(str(older)) == str(run_dir / "hpc_ckpt_3.ckpt")


# ------------------------------------------------------------------------ non-finite loss
@pytest.mark.parametrize(
    "what, check, step",
    [
        ("data", "every_step", 7),
        ("data", "deferred", 7),  # found at the next step
        ("data", "deferred", 2 * BATCHES - 1),  # the last of epoch 1: found at its end
        ("weights", "every_step", 2 * BATCHES),  # the last of epoch 1, saved at its end
    ],
)
def test_non_finite_values_stop_training_naming_the_step_and_checkpoint(
    tmp_path, what, check, step
):
    """A NaN image or an infinite weight after a step: training stops with an error naming
    the step and the last good checkpoint, which is never overwritten with the bad weights.
    Checked every step, the optimizer never steps on the NaN; deferred (the GPU default), the
    check of a step is read at the next one or before the epoch's checkpoint, whichever
    comes first."""
    poison = ["--trainer.callbacks+=run_probes.PoisonAt", "--trainer.callbacks.step", str(step)]
    poison += ["--trainer.callbacks.what", what]
    guard = ["--trainer.callbacks+=densenet_lit.callbacks.FiniteLossGuard"]
    guard += ["--trainer.callbacks.check", check]
    with pytest.raises(FloatingPointError) as error:
        run(tiny_args(tmp_path, "nan", *poison, *guard))
    (run_dir,) = (tmp_path / "nan").iterdir()
    last = run_dir / "checkpoints" / "last.ckpt"
    message = str(error.value)
    batch = step - BATCHES if what == "data" else BATCHES - 1  # the weights: at the epoch end
    assert f"at global step {step} (epoch 1, batch {batch})" in message
    assert f"Last good checkpoint: {last}" in message
    if what == "data":
        assert "The training loss is nan" in message
    else:
        assert "The weights hold NaN or infinite values" in message
    saved = load_checkpoint(last)
    assert saved["global_step"] == BATCHES  # the end of epoch 0
    assert all(v.isfinite().all() for v in saved["state_dict"].values() if v.is_floating_point())
    trained = [int(r["step"]) for r in metric_rows(run_dir) if r["train/loss_step"]]
    if check == "every_step":
        assert max(trained) < step  # no step was trained on the NaN
    else:
        assert max(trained) == step  # the bad step trained, and nothing after it
    epochs = [int(r["epoch"]) for r in metric_rows(run_dir) if r.get("train/loss")]
    assert epochs == [0]  # no epoch average over a bad step was logged


# ---------------------------------------------------------------------- bad checkpoints
@pytest.fixture
def trained_ckpt(reference, tmp_path) -> Path:
    run_dir, _ = reference
    copy = tmp_path / "runs" / "exp" / "run1"
    shutil.copytree(run_dir, copy)
    return copy / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_truncated_checkpoint_is_a_clear_error(trained_ckpt, tmp_path, subcommand):
    data = trained_ckpt.read_bytes()
    broken = trained_ckpt.with_name("broken.ckpt")
    broken.write_bytes(data[: len(data) // 2])  # a kill while saving
    args = tiny_args(tmp_path / "runs", "exp", "--ckpt_path", str(broken), subcommand=subcommand)
    with pytest.raises(CheckpointError) as error:
        run(args)
    message = str(error.value)
    assert f"Cannot read the checkpoint {broken}" in message and "truncated" in message
    assert str(trained_ckpt) in message  # an intact checkpoint of the run is suggested
    assert not isinstance(error.value, CheckpointMismatchError)


def test_a_file_that_is_not_a_lightning_checkpoint_is_a_clear_error(trained_ckpt, tmp_path):
    weights = tmp_path / "weights.pth"
    torch.save({"conv0.weight": torch.zeros(1)}, weights)  # e.g. torchvision weights
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint.*--model.pretrained"):
        run(tiny_args(tmp_path, "x", "--ckpt_path", str(weights), subcommand="validate"))


@pytest.mark.parametrize("subcommand", ["fit", "test"])
def test_checkpoint_of_another_model_is_a_clear_error(trained_ckpt, tmp_path, subcommand):
    args = tiny_args(tmp_path, "x", "--ckpt_path", str(trained_ckpt), subcommand=subcommand)
    with pytest.raises(CheckpointMismatchError, match="model.depth: given 16, checkpoint 10"):
        run([*args, "--model.depth", "16"])


def test_checkpoint_of_another_data_set_is_a_clear_error(trained_ckpt, fake_data, tmp_path):
    """Same model arguments, but a 3-channel, 100-class data set: the weights do not fit."""
    cifar100, _ = fake_data("cifar100", n_train=40, n_test=16)
    args = tiny_args(tmp_path, "x", "--ckpt_path", str(trained_ckpt), subcommand="test")
    args[args.index("--data") + 1] = "densenet_lit.data.CIFAR100DataModule"
    i = args.index("--data.init_args.image_size")
    args[i : i + 2] = ["--data.init_args.data_dir", str(cifar100)]
    with pytest.raises(CheckpointMismatchError) as error:
        run(args)
    message = str(error.value)
    assert f"The checkpoint {trained_ckpt} does not fit this network" in message
    assert "model.features.conv0.weight: checkpoint [8, 1, 3, 3], this model [8, 3, 3, 3]" in (
        message
    )
    assert "model.classifier.weight" in message and "data module" in message


# ----------------------------------------------------------------------------------- W&B
@pytest.mark.slow
def test_wandb_failing_in_the_middle_of_a_run_does_not_stop_training(tmp_path, monkeypatch):
    """W&B logging breaks after a few calls (its service died, the disk filled up), and its
    finish hangs (no network): training, testing and the CSV log go on; the process does not
    wait for W&B longer than WANDB_FINISH_TIMEOUT."""
    from wandb.sdk.wandb_run import Run

    monkeypatch.setenv("WANDB_MODE", "offline")
    calls = {"log": 0}
    original_log, original_finish = Run.log, Run.finish

    def failing_log(self, *args, **kwargs):
        calls["log"] += 1
        if calls["log"] > 3:
            raise ConnectionError("wandb service unreachable")
        return original_log(self, *args, **kwargs)

    released = threading.Event()

    def slow_finish(self, *args, **kwargs):  # hangs for 120 s unless the test releases it
        released.wait(120)
        return original_finish(self, *args, **kwargs)

    monkeypatch.setattr(Run, "log", failing_log)
    monkeypatch.setattr(Run, "finish", slow_finish)
    monkeypatch.setattr(tracking_wandb, "WANDB_FINISH_TIMEOUT", 0.5)
    args = tiny_args(tmp_path, "wb", "--run.wandb", "true", "--run.test_after_fit", "true")
    args += ["--trainer.max_epochs", "2"]
    start = time.monotonic()
    with pytest.warns(UserWarning) as warned:
        c = run(args)
    elapsed = time.monotonic() - start
    messages = [str(w.message) for w in warned]
    assert any("W&B logging failed and is switched off" in m for m in messages)
    assert any("W&B did not finish within" in m and "wandb sync" in m for m in messages)
    assert calls["log"] == 4  # switched off after the first failure
    assert c.trainer.global_step == 2 * BATCHES
    rows = metric_rows(c.run_dir)
    assert {r["epoch"] for r in rows if r["val/error"]} == {"0", "1"}
    assert any(r["test/error"] for r in rows)
    assert elapsed < 60  # without the timeout, run() would wait the whole 120 s
    released.set()
    for thread in threading.enumerate():  # let the slow finish end before the next test
        if thread.name == "wandb-finish":
            thread.join(30)


# ------------------------------------------------------------------------------- configs
def test_every_experiment_keeps_a_last_checkpoint():
    """Every experiment (and every overlay on top of it) keeps last.ckpt through one stock
    ModelCheckpoint, and the best by val/error through another where there is a validation
    set (the CLI drops it when there is none; ImageNet, whose validation images are the test
    set, asks for none)."""

    def callbacks(files: list[Path]) -> list[dict]:
        result: list[dict] = []
        for path in files:
            trainer = (yaml.safe_load(path.read_text()) or {}).get("trainer") or {}
            if "callbacks" in trainer:
                result = list(trainer["callbacks"])  # a list replaces the earlier one
            result += trainer.get("callbacks+") or []
        return result

    overlays = sorted((REPO / "experiments/overlays").glob("*.yaml"))
    for path in sorted((REPO / "experiments").glob("*.yaml")):
        for overlay in [None, *overlays]:
            files = config_chain(path) + (config_chain(overlay) if overlay else [])
            checkpoints = [
                c.get("init_args") or {}
                for c in callbacks(files)
                if c["class_path"] == "lightning.pytorch.callbacks.ModelCheckpoint"
            ]
            last = [c for c in checkpoints if c.get("filename") == "last"]
            best = [c for c in checkpoints if c.get("monitor") == "val/error"]
            where = f"{path.name} + {overlay and overlay.name}"
            assert len(last) == 1 and last[0]["monitor"] is None, where
            assert last[0]["save_top_k"] == 1 and last[0]["enable_version_counter"] is False
            if path.stem.startswith("imagenet"):
                assert best == [], where
            else:
                assert len(best) == 1 and best[0]["mode"] == "min", where


# ------------------------------------------------------------ loaders with worker processes
IMAGENET_BATCHES = 6  # 24 training images in batches of 4


@pytest.mark.slow
def test_worker_loaders_resume_exactly_and_augment_independently_of_workers(fake_data, tmp_path):
    """ImageNet's loader decodes and augments each image in worker processes: the run with 2
    workers equals the run with none (each image's augmentation is seeded by its place in the
    epoch, not drawn from a worker's RNG), and a run with 2 workers interrupted in the middle
    of epoch 1 and resumed equals the uninterrupted one."""
    data, _ = fake_data("imagenet", **IMAGENET_RESUME_DATA)
    runs = tmp_path / "runs"

    def imagenet_args(name: str, workers: int, *extra: str) -> list[str]:
        return imagenet_resume_args(runs, data, name, workers, *extra)

    two = run(imagenet_args("two", 2))
    assert two.trainer.global_step == 2 * IMAGENET_BATCHES
    none = run(imagenet_args("none", 0))
    assert_same_weights(final_weights(none), final_weights(two))

    mid_epoch = IMAGENET_BATCHES + 2
    signals = ["--trainer.callbacks+=run_probes.SignalAt"]
    signals += ["--trainer.callbacks.signals", f"{{{mid_epoch}: SIGTERM}}"]
    with pytest.raises(Preempted) as stopped:
        run(imagenet_args("cut", 2, *signals))
    saved = load_checkpoint(stopped.value.ckpt_path)
    assert saved["global_step"] == mid_epoch
    resumed = run(imagenet_args("cut", 2, "--ckpt_path", "last"))
    assert resumed.trainer.global_step == 2 * IMAGENET_BATCHES
    assert_same_weights(final_weights(resumed), final_weights(two))
