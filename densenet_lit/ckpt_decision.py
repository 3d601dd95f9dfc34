"""One ``--ckpt_path`` decision for every process of a run: the one rank zero made.

The CLI resolves ``--ckpt_path last``/``auto`` (and a run directory, and a SLURM requeue's
newer checkpoint) while it parses its command line, because the decision also chooses the run
directory (``fit`` continues in the checkpoint's). That is before any process group exists:
under torchrun and SLURM every rank runs the CLI on its own, and Lightning creates the group
only in ``trainer.fit``, so ``torch.distributed`` cannot broadcast it yet. Resolved by each
process from the file system, the ranks could disagree: a checkpoint saved in between (another
run of the experiment), a node whose NFS attribute cache does not show the newest file yet.
So rank zero decides and the others take its decision:

* Lightning's DDP launcher starts its workers from the process that parsed first (rank zero),
  re-running the command line: they inherit its decision through the environment
  (:data:`DECISION_ENV`), as they inherit its run directory (``DENSENET_LIT_RUN_DIR``).
* The ranks of a torchrun or SLURM job (``RANK``/``WORLD_SIZE``, else
  ``SLURM_PROCID``/``SLURM_NTASKS``) start independently: rank zero writes its decision to a
  file named by the round of the job (:func:`job_round`) in the job's run directory
  (:func:`densenet_lit.rundir.job_run_dir`), which every rank knows; the others wait for it.
  (Creating the process group early to broadcast it would take the group's backend, timeout
  and device from Lightning's strategy, which only exists later; a file needs nothing but the
  directory the run shares anyway.)

Imports nothing beyond the standard library (the caller hands it the job's run directory).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

DECISION_ENV = "DENSENET_LIT_CKPT_DECISION"  # JSON: given, resolved, pid of the deciding process
DECISION_PREFIX = ".ckpt_path-"  # <job run dir>/.ckpt_path-<round>.json
WAIT_S = 600.0  # how long a rank waits for rank zero's decision (it may still be importing)
POLL_S = 0.2


def job_rank() -> tuple[int, int] | None:
    """``(rank, number of processes)`` of a process of a torchrun or SLURM job, else None."""
    for rank_var, world_var in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        rank, world = os.environ.get(rank_var), os.environ.get(world_var)
        if rank and world and rank.isdigit() and world.isdigit():
            return int(rank), int(world)
    return None


def job_round() -> str | None:
    """A name for this start of the job that all its ranks share, or None where there is none.

    SLURM: the job's requeue count (``SLURM_RESTART_COUNT``, the same for all its tasks).
    torchrun: the port of the round's store (``MASTER_PORT``), a free port its rank-0 agent
    draws for every round. Not torchrun's ``TORCHELASTIC_RESTART_COUNT``: each agent counts
    its own restarts, and a node whose worker did not fail keeps its count. With the
    rendezvous store shared with the workers (``TORCHELASTIC_USE_AGENT_STORE=True``, torchrun's
    default unless ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``) the port is the same in every
    round, so there is no name: each rank then decides for itself, as a lone process does.
    """
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        shared = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
        port = os.environ.get("MASTER_PORT")
        return None if shared or not port else f"port{port}"
    if os.environ.get("SLURM_JOB_ID"):
        return f"requeue{os.environ.get('SLURM_RESTART_COUNT') or 0}"
    return None


def inherited(given: str) -> tuple[bool, str | None]:
    """``(True, path)`` when the launching process decided ``given`` (not this process, whose
    earlier runs in tests and notebooks leave the variable set), else ``(False, None)``."""
    try:
        decision = json.loads(os.environ.get(DECISION_ENV) or "{}")
    except json.JSONDecodeError:
        return False, None
    if decision.get("given") != given or decision.get("pid") == os.getpid():
        return False, None
    return True, decision.get("resolved")


def decision_file(job_dir: Path, round_name: str) -> Path:
    return job_dir / f"{DECISION_PREFIX}{round_name}.json"


def write_decision(path: Path, decision: dict) -> None:
    """Written whole or not at all (another rank may read it at any moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(decision))
    os.replace(tmp, path)


def read_decision(path: Path, given: str, rank: int, wait_s: float = WAIT_S) -> str | None:
    """Rank zero's decision for ``given`` from ``path``, waiting up to ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while not path.is_file():
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"rank {rank}: rank 0 did not share its --ckpt_path {given} decision within "
                f"{wait_s:.0f} s (expected in {path}). Did rank 0 start, with the same "
                "--trainer.default_root_dir? Its log says why not."
            )
        time.sleep(POLL_S)
    decision = json.loads(path.read_text())
    if "error" in decision:
        raise FileNotFoundError(decision["error"])
    if decision.get("given") != given:
        raise ValueError(
            f"rank {rank}: --ckpt_path {given}, but rank 0 was given {decision.get('given')}: "
            "every process of a job must run the same command line."
        )
    return decision["resolved"]


def decide(
    given: str,
    resolve: Callable[[], str | None],
    job_dir: Path | None,
    ranks: tuple[int, int] | None,
    round_name: str | None,
    wait_s: float = WAIT_S,
) -> str | None:
    """``resolve()`` on rank zero (or alone); the other ranks of this round of the job read
    its result from the job's run directory ``job_dir``. Rank zero's error (``last`` with no checkpoint) is every
    rank's."""
    if job_dir is None or round_name is None or ranks is None or ranks[1] < 2:
        return resolve()
    path = decision_file(job_dir, round_name)
    if ranks[0] != 0:
        return read_decision(path, given, ranks[0], wait_s)
    try:
        resolved = resolve()
    except FileNotFoundError as err:
        write_decision(path, {"given": given, "error": str(err)})
        raise
    write_decision(path, {"given": given, "resolved": resolved})
    return resolved


def shared_ckpt_path(
    given: str, resolve: Callable[[], str | None], job_dir: Path | None
) -> str | None:
    """The checkpoint every process of this run resumes from (None: start the run): the
    launching process's decision if this one inherited it, else :func:`decide`'s for the job
    whose run directory is ``job_dir`` (None: not a job); handed down to the processes this
    one starts."""
    found, resolved = inherited(given)
    if not found:
        resolved = decide(given, resolve, job_dir, job_rank(), job_round())
    os.environ[DECISION_ENV] = json.dumps(
        {"given": given, "resolved": resolved, "pid": os.getpid()}
    )
    return resolved
