"""W&B: an offline run is written by itself and holds the logged metrics and the whole config;
a run preempted and resumed is one W&B run."""

from __future__ import annotations

import csv
import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import wandb
from cli_args import cli_args

from densenet_lit import rundir
from densenet_lit.callbacks import Preempted
from densenet_lit.cli import run


def wandb_args(root: Path, name: str | None = None) -> list[str]:
    """A quick run on the bundled digits, tested after fitting, logging a step at a time, with
    W&B left to the CLI's default (on)."""
    return cli_args(
        "fit",
        root,
        trainer={
            "max_epochs": 1,
            "limit_train_batches": 3,
            "limit_val_batches": 2,
            "limit_test_batches": 2,
            "log_every_n_steps": 1,
        },
        wandb=None,
        run={"test_after_fit": True},
        name=name,
    )


def wandb_records(path: Path) -> Iterator:
    """The protobuf records of a ``.wandb`` file (W&B's LevelDB-style log: 7-byte header,
    32 KiB blocks of chunks with a 7-byte header each: crc32, length, type)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1, "not a W&B transaction log"
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the rest of a block too small for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""
        elif kind == 0 and length == 0:
            pending = b""


@pytest.mark.slow
def test_offline_run_holds_metrics_and_config(tmp_path, no_wandb_account, capsys):
    root = tmp_path / "runs"
    c = run(wandb_args(root, "wb"))
    # this process's W&B service writes the run's file to disk when it shuts down
    wandb.teardown()
    out = capsys.readouterr().out
    sync_lines = [line for line in out.splitlines() if "wandb sync" in line]
    assert len(sync_lines) == 1 and "offline" in sync_lines[0]

    offline = list((c.run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and str(offline[0]) in sync_lines[0]
    (log,) = offline[0].glob("*.wandb")

    history, config, run_record = {}, {}, None
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            for item in record.history.item:
                history.setdefault(item.key or "/".join(item.nested_key), []).append(
                    json.loads(item.value_json)
                )
        elif kind == "config":
            for item in record.config.update:
                config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "run":
            run_record = record.run

    for key in ("train/loss", "train/error", "val/loss", "val/error", "test/error", "lr"):
        assert key in history, f"{key} not logged to W&B"
    assert "perf/images_per_sec" in history
    # the values of the run's CSV log (1 epoch: one validation)
    with open(c.run_dir / "metrics.csv", newline="") as f:
        csv_errors = [float(r["val/error"]) for r in csv.DictReader(f) if r["val/error"]]
    assert len(csv_errors) == 1 and history["val/error"] == csv_errors

    # the whole resolved config, nested as in config.yaml
    assert config["model"]["depth"] == 10 and config["model"]["growth_rate"] == 4
    assert config["data"]["class_path"] == "densenet_lit.data.DigitsDataModule"
    assert config["trainer"]["max_epochs"] == 1
    assert config["run"]["name"] == "wb"

    assert run_record.project == "densenet-lit"
    assert run_record.run_group == "digits-densenet_bc_10_4"
    assert {"digits", "densenet_bc_10_4", "wb"} <= set(run_record.tags)
    # and the local CSV of every run
    assert "val/error" in (c.run_dir / "metrics.csv").read_text()


def test_wandb_mode_disabled_is_respected(tmp_path, no_wandb_account, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    c = run(wandb_args(tmp_path / "runs"))
    assert not (c.run_dir / "wandb").exists()
    assert (c.run_dir / "metrics.csv").is_file()
    assert "wandb sync" not in capsys.readouterr().out


def test_a_wandb_failure_does_not_stop_training(tmp_path, no_wandb_account, monkeypatch):
    import wandb

    def broken_init(*args, **kwargs):
        raise RuntimeError("W&B service unavailable")

    monkeypatch.setattr(wandb, "init", broken_init)
    with pytest.warns(UserWarning, match="W&B could not start"):
        c = run(wandb_args(tmp_path / "runs"))
    assert "test/error" in (c.run_dir / "metrics.csv").read_text()


# ------------------------------------------------------------ one W&B run across resumptions
def offline_parts(run_dir: Path) -> list[dict]:
    """Each offline W&B run directory of ``run_dir``, oldest first, read as
    ``{"run": RunRecord, "history": [row dicts], "metrics": [MetricRecord], "config": {...},
    "summary": [(key, value) updates in order], "artifacts": [ArtifactRecord]}``."""
    parts = []
    for directory in (run_dir / "wandb").glob("offline-run-*"):
        (log,) = directory.glob("*.wandb")
        part: dict = {"dir": directory, "history": [], "metrics": [], "config": {}}
        part.update(summary=[], artifacts=[])
        for record in wandb_records(log):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                part["run"] = record.run
            elif kind == "history":
                part["history"].append(
                    {
                        item.key or "/".join(item.nested_key): json.loads(item.value_json)
                        for item in record.history.item
                    }
                )
            elif kind == "metric":
                part["metrics"].append(record.metric)
            elif kind == "config":
                for item in record.config.update:
                    part["config"][item.key or "/".join(item.nested_key)] = json.loads(
                        item.value_json
                    )
            elif kind == "summary":
                for item in record.summary.update:
                    key = item.key or "/".join(item.nested_key)
                    part["summary"].append((key, json.loads(item.value_json)))
            elif kind == "artifact":
                part["artifacts"].append(record.artifact)
        parts.append(part)
    return sorted(parts, key=lambda part: part["run"].start_time.ToMicroseconds())


def resumable_args(root: Path, *extra: str) -> list[str]:
    """4 epochs of 3 steps on the digits (one validation batch), W&B on (offline)."""
    return cli_args(
        "fit",
        root,
        *extra,
        data_init={"image_size": 16},
        seed=3,
        trainer={
            "max_epochs": 4,
            "limit_train_batches": 3,
            "limit_val_batches": 1,
            "log_every_n_steps": 1,
        },
        wandb=None,
        name="wr",
    )


def sigterm_at(step: int) -> list[str]:
    return ["--trainer.callbacks+=run_probes.SignalAt", "--trainer.callbacks.signals"] + [
        f"{{{step}: SIGTERM}}"
    ]


@pytest.mark.slow
def test_a_run_preempted_twice_is_one_wandb_run(tmp_path, no_wandb_account, monkeypatch, capsys):
    """Preempted in epoch 1, continued from its run directory, preempted in epoch 2 and
    continued with --ckpt_path auto: the three offline pieces are one W&B run (one id, that
    of wandb_run_id) whose history holds every epoch and every step once, plotted against
    the epoch and the global step; the runs table gets the best val/error of the whole run;
    the config is the resolved one; the checkpoints uploaded at the end carry best/latest."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv(rundir.RUN_DIR_ENV, raising=False)
    root = tmp_path / "runs"
    with pytest.raises(Preempted):
        run(resumable_args(root, *sigterm_at(4)))
    (run_dir,) = (root / "wr").iterdir()
    with pytest.raises(Preempted):
        run(resumable_args(root, "--ckpt_path", str(run_dir), *sigterm_at(8)))
    last = run(resumable_args(root, "--ckpt_path", "auto", "--run.wandb_log_model", "true"))
    assert last.run_dir == run_dir and last.trainer.global_step == 12
    # the pieces share this process's W&B service, which writes the last one's file to disk
    # when it shuts down (a process of its own would at its exit)
    wandb.teardown()

    parts = offline_parts(run_dir)
    run_id = (run_dir / rundir.WANDB_ID_FILE).read_text().strip()
    assert len(parts) == 3
    assert [p["run"].run_id for p in parts] == [run_id] * 3
    # offline-run-<time>-<id>, with "-1" ... when two parts start within the same second
    named = [re.search(rf"-{run_id}(-\d+)?$", p["dir"].name) for p in parts]
    assert all(named), [p["dir"].name for p in parts]
    assert {p["run"].display_name for p in parts} == {f"wr/{run_dir.name}"}
    assert {p["run"].run_group for p in parts} == {"digits-densenet_bc_10_4"}
    # the last part says how to upload all of them
    hints = [line for line in capsys.readouterr().out.splitlines() if "wandb sync" in line]
    assert hints[-1].endswith(f"wandb sync {run_dir}/wandb/offline-run-*-{run_id}*")
    assert sorted(run_dir.glob(f"wandb/offline-run-*-{run_id}*")) == sorted(p["dir"] for p in parts)

    # every epoch's val/error and train/loss once, every step's train/loss_step once
    rows = [row for p in parts for row in p["history"]]
    val = {row["epoch"]: row["val/error"] for row in rows if "val/error" in row}
    assert sorted(row["epoch"] for row in rows if "val/error" in row) == [0, 1, 2, 3]
    assert sorted(row["epoch"] for row in rows if "train/loss" in row) == [0, 1, 2, 3]
    steps = [row["trainer/global_step"] for row in rows if "train/loss_step" in row]
    assert sorted(steps) == list(range(12))
    # the pieces split the run where it stopped: epoch 1 in the second, 2 and 3 in the third
    assert [sorted(r["epoch"] for r in p["history"] if "val/error" in r) for p in parts] == [
        [0],
        [1],
        [2, 3],
    ]

    # summaries and x-axes, as each piece defines them
    for part in parts:
        named = {m.name: m for m in part["metrics"] if m.name}
        globs = {m.glob_name: m.step_metric for m in part["metrics"] if m.glob_name}
        for name in ("val/error", "test/error"):
            assert named[name].step_metric == "epoch"
            assert named[name].summary.min and named[name].summary.last
        assert named["train/loss"].summary.last and not named["train/loss"].summary.min
        assert named["train/loss_step"].step_metric == "trainer/global_step"
        assert named["lr"].step_metric == "trainer/global_step"
        assert globs["val/*"] == "epoch" and globs["test/*"] == "epoch"
    # the summary after all pieces (synced in order): the minimum over the whole run, whose
    # best epoch came before the last resumption, and the last value
    summary = dict(update for p in parts for update in p["summary"])
    best_epoch = min(val, key=val.get)
    assert best_epoch < 2  # the last piece alone would give a higher minimum
    assert summary["val/error"] == {"min": val[best_epoch], "last": val[3]}

    # the whole resolved config (nested as in config.yaml), of the last piece
    config = parts[-1]["config"]
    assert config["model"]["depth"] == 10 and config["model"]["growth_rate"] == 4
    assert config["data"]["class_path"] == "densenet_lit.data.DigitsDataModule"
    assert config["trainer"]["max_epochs"] == 4 and config["seed_everything"] == 3
    assert config["run"]["name"] == "wr" and config["run"]["wandb_log_model"] is True
    assert config["ckpt_path"] == str(last.trainer.ckpt_path)

    # log_model: at the end of training, the best checkpoint (saved before the last
    # resumption), then last.ckpt, which W&B makes the latest
    uploads = [
        (json.loads(a.metadata)["original_filename"], sorted(a.aliases), a.name)
        for a in parts[-1]["artifacts"]
    ]
    (best,) = (run_dir / "checkpoints").glob("best-*.ckpt")
    assert uploads == [
        (best.name, ["best", "latest"], f"model-{run_id}"),
        ("last.ckpt", ["latest"], f"model-{run_id}"),
    ]
    assert f"epoch{best_epoch:03d}" in best.name
