"""Distributed edges of ``--ckpt_path``: every rank takes rank zero's ``last``/``auto``
decision (inherited from the launching process, or read from the job's decision file), and
a requeued SLURM job finds its requeue checkpoint even when the command line names a
checkpoint outside any run directory."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from cli_args import QUICK, cli_args

from densenet_lit import ckpt_decision as cd
from densenet_lit import rundir
from densenet_lit.cli import run


def write_run(root: Path, name: str, age_s: float) -> Path:
    """A run directory of experiment ``exp`` with a config and a last.ckpt ``age_s`` old."""
    run_dir = root / "exp" / name
    rundir.checkpoint_dir(run_dir).mkdir(parents=True)
    (run_dir / rundir.CONFIG_NAME).write_text("model: {}\n")
    last = rundir.last_checkpoint(run_dir)
    last.write_bytes(b"weights of " + name.encode())
    os.utime(last, (time.time() - age_s, time.time() - age_s))
    return last


def resolver(root: Path, given: str = rundir.RESUME_LATEST):
    return lambda: rundir.resolve_ckpt_path(given, root, "exp")


def test_every_rank_takes_rank_zeros_decision_not_its_own(tmp_path):
    """Rank 0 resolves ``last``; a newer checkpoint appears before rank 1 looks: rank 1 still
    resumes from rank 0's choice, which its own resolution would no longer give."""
    older = write_run(tmp_path, "a", age_s=60)
    job = tmp_path / "exp" / "torchrun-j1"  # the job's run directory
    chosen = cd.decide("last", resolver(tmp_path), job, (0, 2), "port1")
    assert chosen == str(older)
    newer = write_run(tmp_path, "b", age_s=0)
    assert resolver(tmp_path)() == str(newer)  # what rank 1 would pick by itself
    assert cd.decide("last", resolver(tmp_path), job, (1, 2), "port1") == str(older)
    # the next round of the job (a restart: another port) decides again
    assert cd.decide("last", resolver(tmp_path), job, (0, 2), "port2") == str(newer)
    decision = json.loads(cd.decision_file(job, "port1").read_text())
    assert decision == {"given": "last", "resolved": str(older)}


def test_a_rank_waits_for_rank_zero(tmp_path):
    """Rank 1 starts first and waits; ``auto`` with nothing to resume is None (start) on both."""
    got: list = []
    job = tmp_path / "exp" / "slurm-7"

    def rank1() -> None:
        got.append(cd.decide("auto", lambda: "never used", job, (1, 2), "requeue0", wait_s=30))

    waiting = threading.Thread(target=rank1)
    waiting.start()
    time.sleep(0.5)
    assert waiting.is_alive() and not got
    assert cd.decide("auto", resolver(tmp_path, "auto"), job, (0, 2), "requeue0") is None
    waiting.join(10)
    assert got == [None]


def test_rank_zeros_error_is_every_ranks_and_a_missing_rank_zero_times_out(tmp_path):
    job = tmp_path / "exp" / "slurm-8"
    with pytest.raises(FileNotFoundError, match="--ckpt_path last: no run") as zero:
        cd.decide("last", resolver(tmp_path), job, (0, 2), "requeue0")
    with pytest.raises(FileNotFoundError) as one:
        cd.decide("last", resolver(tmp_path), job, (1, 2), "requeue0")
    assert str(one.value) == str(zero.value)
    with pytest.raises(TimeoutError, match=r"rank 3: rank 0 did not share .* within 0 s"):
        cd.decide("last", resolver(tmp_path), job, (3, 4), "requeue1", wait_s=0.3)


def test_the_job_and_the_launchers_workers_share_the_decision(tmp_path, monkeypatch):
    """Through the environment: a torchrun rank reads the decision file of its job and
    round; a worker started by Lightning's launcher inherits its parent's decision."""
    older = write_run(tmp_path, "a", age_s=60)
    for var in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_ID", cd.DECISION_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "j2")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "3")  # per node: not the round's name
    monkeypatch.setenv("MASTER_PORT", "29517")
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    job = rundir.job_run_dir(tmp_path, "exp")
    assert job == tmp_path / "exp" / "torchrun-j2"
    cd.write_decision(cd.decision_file(job, "port29517"), {"given": "last", "resolved": str(older)})
    newer = write_run(tmp_path, "b", age_s=0)
    assert cd.shared_ckpt_path("last", resolver(tmp_path), job) == str(older)
    # torchrun sharing its rendezvous store: one port for every round, no round name
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    assert cd.job_round() is None
    monkeypatch.delenv(cd.DECISION_ENV)
    assert cd.shared_ckpt_path("last", resolver(tmp_path), job) == str(newer)

    for var in ("TORCHELASTIC_RUN_ID", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var)
    parent = {"given": "last", "resolved": str(older), "pid": os.getpid() + 1}
    monkeypatch.setenv(cd.DECISION_ENV, json.dumps(parent))
    assert cd.shared_ckpt_path("last", resolver(tmp_path), job) == str(older)
    # handed down as this process's own: a later run in this process decides for itself
    assert json.loads(os.environ[cd.DECISION_ENV])["pid"] == os.getpid()
    assert cd.shared_ckpt_path("last", resolver(tmp_path), job) == str(newer)


# ------------------------------------------------------------------------ SLURM requeue
def test_requeue_checkpoint_of_a_run_started_from_an_outside_checkpoint(tmp_path):
    external = tmp_path / "shared" / "pretrained.ckpt"
    external.parent.mkdir()
    external.write_bytes(b"x")
    os.utime(external, (time.time() - 60, time.time() - 60))
    job_dir = tmp_path / "runs" / "exp" / "slurm-11"
    job_dir.mkdir(parents=True)
    (job_dir / rundir.CONFIG_NAME).write_text("model: {}\n")
    assert rundir.newer_requeue_checkpoint(str(external), job_dir) is None
    for age in (30, 20):  # hpc_ckpt_1, then hpc_ckpt_2: both saved after the external one
        saved = rundir.next_requeue_checkpoint(job_dir)
        saved.write_bytes(b"state")
        os.utime(saved, (time.time() - age, time.time() - age))
    assert rundir.newer_requeue_checkpoint(str(external)) is None  # not in a run directory
    found = rundir.newer_requeue_checkpoint(str(external), job_dir)
    assert found == str(job_dir / "hpc_ckpt_2.ckpt")


@pytest.mark.slow
def test_a_requeued_job_resumes_from_its_requeue_checkpoint_not_the_outside_one(
    tmp_path, monkeypatch
):
    """The job script names a checkpoint outside any run directory; the job (id 4343) saved
    hpc_ckpt_1.ckpt in its run directory before it was requeued: the requeued job (same
    command) resumes from that, in that directory."""
    first = run(cli_args("fit", tmp_path / "runs", trainer=QUICK, name="exp"))
    external = tmp_path / "shared" / "start.ckpt"
    external.parent.mkdir()
    shutil.copy(rundir.last_checkpoint(first.run_dir), external)
    os.utime(external, (time.time() - 60, time.time() - 60))
    job_dir = tmp_path / "runs" / "exp" / "slurm-4343"  # what the job wrote before the requeue
    rundir.checkpoint_dir(job_dir).mkdir(parents=True)
    shutil.copy(first.run_dir / rundir.CONFIG_NAME, job_dir / rundir.CONFIG_NAME)
    shutil.copy(rundir.last_checkpoint(first.run_dir), job_dir / "hpc_ckpt_1.ckpt")
    slurm = {"SLURM_JOB_ID": "4343", "SLURM_JOB_NAME": "densenet", "SLURM_NTASKS": "1"}
    slurm |= {"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
    for var, value in {**slurm, "SLURM_RESTART_COUNT": "1"}.items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    monkeypatch.delenv(rundir.RUN_DIR_ENV, raising=False)
    args = cli_args("fit", tmp_path / "runs", trainer={**QUICK, "max_epochs": 2}, name="exp")
    requeued = run([*args, "--ckpt_path", str(external)])
    assert requeued.trainer.ckpt_path == str(job_dir / "hpc_ckpt_1.ckpt")
    assert requeued.run_dir == job_dir and requeued.trainer.current_epoch == 2
