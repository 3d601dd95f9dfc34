"""W&B: an offline run is written by itself and holds the logged metrics and the whole config."""

from __future__ import annotations

import csv
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_args import cli_args

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
