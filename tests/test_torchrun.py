"""torchrun: one command line (``--ckpt_path auto``) that starts a DDP run and, after torchrun
restarts a failed worker group, resumes it, on a simulated two-node job (two launcher
processes on the loopback address, one CPU worker each, gloo)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_args import cli_args

from densenet_lit import rundir

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
LOOPBACK = "127.0.0.1"
JOB_TIMEOUT = 300  # seconds for a whole two-node job, restarts included
EPOCHS, BATCHES = 3, 3
CRASH_STEP = 5  # in the middle of epoch 1: the restart resumes from last.ckpt of epoch 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def elastic_args(root: Path, *extra: str) -> list[str]:
    """The command every worker runs (the same after a restart): 3 epochs of 3 steps, the
    global batch of 32 split over 2 nodes x 1 CPU process, start or resume (``auto``)."""
    return cli_args(
        "fit",
        root,
        "--ckpt_path",
        "auto",
        "--trainer.callbacks+=run_probes.RankProbe",
        *extra,
        data_init={"image_size": 16},
        seed=5,
        trainer={
            "strategy": "ddp",
            "num_nodes": 2,
            "devices": 1,
            "deterministic": True,
            "max_epochs": EPOCHS,
            "limit_train_batches": BATCHES,
            "limit_val_batches": 1,
        },
        wandb=None,
        name="elastic",
    )


def start_two_node_job(cwd: Path, rdzv_id: str, args: list[str], probe: Path) -> list:
    """Two torchrun launchers (two "nodes") meeting at a c10d rendezvous on the loopback
    address, one restart allowed; each in its own session, so that it and its workers can be
    ended together."""
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k != rundir.RUN_DIR_ENV and not k.startswith(("TORCHELASTIC_", "SLURM_"))
    }
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS)]),
        PROBE_DIR=str(probe),
        WANDB_MODE="offline",
        OMP_NUM_THREADS="1",
        GLOO_SOCKET_IFNAME="lo",
        # torchrun's shared rendezvous store keeps the failed group's keys (pytorch#135712)
        TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1",
    )
    launchers = []
    for is_host in (1, 0):
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2"]
        command += ["--nproc-per-node", "1", "--max-restarts", "1", "--rdzv-backend", "c10d"]
        command += ["--rdzv-endpoint", f"{LOOPBACK}:{port}", "--rdzv-id", rdzv_id]
        command += ["--rdzv-conf", f"is_host={is_host}", "--local-addr", LOOPBACK]
        command += ["--monitor-interval", "0.5", "-m", "densenet_lit", *args]
        launchers.append(
            subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        )
    return launchers


def wait_for(launchers: list, deadline: float) -> list[tuple[int, str]]:
    """Each launcher's exit status and output; a launcher still running at ``deadline`` is
    ended with its workers (its own process group) and fails the test."""
    results = []
    try:
        for proc in launchers:
            output = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
            results.append((proc.returncode, output))
    except subprocess.TimeoutExpired:
        pytest.fail("the torchrun job did not end in time")
    finally:
        for proc in launchers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
    return results


def probes(probe: Path) -> tuple[list[dict], list[dict[str, torch.Tensor]]]:
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    states = [torch.load(probe / f"state_rank{r}.pt", weights_only=True) for r in (0, 1)]
    return ranks, states


def differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.mark.slow
def test_a_torchrun_restart_resumes_the_run_in_its_directory(tmp_path):
    """Rank 1 dies in the middle of epoch 1 (os._exit, no checkpoint); torchrun restarts the
    group on both nodes with the same command; the workers resume from last.ckpt of epoch 0
    in the job's run directory (runs/elastic/torchrun-<rdzv id>, the same W&B run) and end
    with the weights of the same job never interrupted, on both ranks."""
    deadline = time.monotonic() + JOB_TIMEOUT
    crash = ["--trainer.callbacks+=run_probes.CrashOnce", "--trainer.callbacks.step"]
    crash += [str(CRASH_STEP)]
    jobs = {
        "crashed": start_two_node_job(
            tmp_path, "job-a", elastic_args(tmp_path / "a", *crash), tmp_path / "probe-a"
        ),
        "reference": start_two_node_job(
            tmp_path, "job-b", elastic_args(tmp_path / "b"), tmp_path / "probe-b"
        ),
    }
    results = {name: wait_for(launchers, deadline) for name, launchers in jobs.items()}
    for name, result in results.items():
        for status, output in result:
            assert status == 0, f"{name}: {output[-4000:]}"

    # the crash happened, once, and torchrun restarted the workers
    assert (tmp_path / "probe-a" / "crashed").read_text() == str(CRASH_STEP)
    crashed_output = "\n".join(output for _, output in results["crashed"])
    assert "failed (exitcode: 1)" in crashed_output

    # one run directory, named by the rendezvous id, continued by the restarted workers
    run_dir = tmp_path / "a" / "elastic" / "torchrun-job-a"
    assert list((tmp_path / "a" / "elastic").iterdir()) == [run_dir]
    assert f"Resuming the run in {run_dir}" in crashed_output
    assert sorted(p.name for p in run_dir.glob("config*.yaml")) == ["config-1.yaml", "config.yaml"]
    ranks, states = probes(tmp_path / "probe-a")
    for info in ranks:
        assert info["run_dir"] == str(run_dir) and info["world_size"] == 2
        assert info["ckpt_path"] == str(run_dir / "checkpoints" / "last.ckpt")
        assert info["start_step"] == BATCHES  # the end of epoch 0
        assert info["global_step"] == EPOCHS * BATCHES
    # one W&B run: the restarted job continued the id stored in the run directory
    run_id = (run_dir / rundir.WANDB_ID_FILE).read_text().strip()
    offline = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(name.endswith(f"-{run_id}") for name in offline)

    # the uninterrupted job: trained from the start, in its own run directory
    ref_ranks, ref_states = probes(tmp_path / "probe-b")
    assert [info["start_step"] for info in ref_ranks] == [0, 0]
    assert ref_ranks[0]["run_dir"] == str(tmp_path / "b" / "elastic" / "torchrun-job-b")

    # the same weights and buffers on both ranks, and as the uninterrupted job's
    assert differing(states[0], states[1]) == []
    assert differing(ref_states[0], ref_states[1]) == []
    assert differing(states[0], ref_states[0]) == []

    def logged(info: dict) -> dict:
        return {k: v for k, v in info["metrics"].items() if not k.startswith("perf/")}

    assert logged(ranks[0]) == logged(ref_ranks[0])
