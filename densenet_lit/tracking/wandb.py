"""Weights & Biases: starting a run (online, offline or not at all), continuing it when the
run resumes, and finishing it without ever stopping training.

One training run is one W&B run, however often it is preempted and resumed: the W&B run id
is kept in the run directory (``wandb_run_id``) when the run starts, and a run resumed in
that directory continues the same W&B run (``resume="allow"``), online and offline alike (the
offline pieces of one run share its id and ``wandb sync`` uploads them as one run). The
logger itself (summaries over the whole run, checkpoint uploads) is
:class:`~densenet_lit.tracking.wandb_logger.SafeWandbLogger`.
"""

from __future__ import annotations

import netrc
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

from densenet_lit.metric_names import LR, PERF, TEST, TRAIN_ERROR, TRAIN_LOSS, TRAIN_LOSS_STEP, VAL
from densenet_lit.rundir import WANDB_ID_FILE
from densenet_lit.tracking.wandb_logger import SafeWandbLogger, define_summaries, minimums_so_far

# Seconds finishing a W&B run may take before the process moves on (without network,
# wandb.finish() can wait for its uploads until the job is killed).
WANDB_FINISH_TIMEOUT = 120.0
# What the metrics are plotted against: epoch metrics against the epoch, per-step ones against
# the trainer's global step (both continue where a resumed run stopped; W&B's own ``_step``
# counts this process's log calls). How the runs table summarises them: SafeWandbLogger's.
EPOCH_METRICS = (TRAIN_LOSS, f"{TRAIN_ERROR}*", f"{VAL}/*", f"{TEST}/*", f"{PERF}/*")
STEP_METRICS = (TRAIN_LOSS_STEP, LR)
# The x-axes: Lightning logs both with every row.
EPOCH_AXIS, STEP_AXIS = "epoch", "trainer/global_step"


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Does the W&B server answer an HTTP request within ``timeout`` seconds?

    Any HTTP response counts (even an error status); no DNS, no connection, a TLS failure (an
    intercepting proxy) or no answer in time does not. The probe runs in a daemon thread, so a
    stalled name lookup cannot hold the run up either.
    """
    import urllib.error
    import urllib.request

    result: list[bool] = []

    def probe() -> None:
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/healthz", timeout=timeout):
                result.append(True)
        except urllib.error.HTTPError:
            result.append(True)
        except Exception:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def has_api_key(base_url: str) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(base_url).hostname or "api.wandb.ai"
    try:
        auth = netrc.netrc().authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def wandb_mode() -> tuple[str, str]:
    """``(mode, reason)``: an explicit ``WANDB_MODE`` wins; no API key or no network: offline."""
    explicit = os.environ.get("WANDB_MODE")
    if explicit:
        return explicit, "WANDB_MODE"
    if os.environ.get("WANDB_DISABLED", "").lower() in ("1", "true", "yes"):
        return "disabled", "WANDB_DISABLED"
    base_url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    if not has_api_key(base_url):
        return "offline", "no W&B API key (WANDB_API_KEY or ~/.netrc)"
    if not reachable(base_url):
        return "offline", f"{base_url} is not reachable"
    return "online", "API key found"


@dataclass
class WandbRun:
    """A W&B run this process started: its logger, where an offline run waits for
    ``wandb sync`` (None when online) and why it is in its mode."""

    logger: SafeWandbLogger
    sync_dir: Path | None
    mode_reason: str


def run_id(run_dir: Path) -> str:
    """The W&B run id of ``run_dir``: the one stored there, or a new one, stored: the run id a
    W&B sweep agent gave this process (so that the sweep sees its run), else a random one."""
    path = run_dir / WANDB_ID_FILE
    if path.is_file():
        stored = path.read_text().strip()
        if stored:
            return stored
    new = sweep_run_id() or secrets.token_hex(4)  # W&B ids: letters and digits
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(new + "\n")
    return new


def sweep_run_id() -> str | None:
    """The run id a W&B sweep agent set for the process it started (``WANDB_RUN_ID`` beside
    ``WANDB_SWEEP_ID``), or None outside a sweep."""
    if os.environ.get("WANDB_SWEEP_ID"):
        return os.environ.get("WANDB_RUN_ID") or None
    return None


def describe_metrics(run: Any) -> None:
    """The epoch as the x-axis of epoch metrics and the global step as that of per-step
    metrics (no ``*`` glob for the latter: W&B matches overlapping globs in no fixed order),
    and the logger's summaries."""
    run.define_metric(EPOCH_AXIS, hidden=True)
    run.define_metric(STEP_AXIS, hidden=True)
    for pattern in EPOCH_METRICS:
        run.define_metric(pattern, step_metric=EPOCH_AXIS)
    for name in STEP_METRICS:
        run.define_metric(name, step_metric=STEP_AXIS)
    define_summaries(run, step_metric=EPOCH_AXIS)


def start_wandb(
    run_dir: Path,
    *,
    name: str,
    group: str,
    tags: list[str],
    project: str,
    job_type: str,
    log_model: bool | str = False,
) -> WandbRun | None:
    """Start (rank zero) or continue the W&B run of ``run_dir``; None when W&B is disabled or
    cannot start (a warning says why; the run then logs to CSV only)."""
    mode, reason = wandb_mode()
    if mode == "disabled":
        return None
    try:
        if rank_zero_only.rank != 0:  # only rank zero creates the run; the others log nothing
            return WandbRun(SafeWandbLogger(project=project, save_dir=str(run_dir)), None, reason)
        import wandb

        run = wandb.init(
            id=run_id(run_dir),
            resume="allow",
            project=project,
            name=name,
            group=group,
            tags=tags,
            job_type=job_type,
            dir=str(run_dir),
            mode=mode,
            settings=wandb.Settings(silent=True, init_timeout=60, console="off"),
        )
        describe_metrics(run)
        logger = SafeWandbLogger(
            experiment=run,
            project=project,
            save_dir=str(run_dir),
            log_model=log_model,
            minimums=minimums_so_far(run_dir),
        )
        offline = mode in ("offline", "dryrun")
        return WandbRun(logger, Path(run.dir).parent if offline else None, reason)
    except Exception as err:
        rank_zero_warn(f"W&B could not start ({err!r}); this run logs to CSV only.")
        return None


def sync_target(sync_dir: Path) -> str:
    """What to give ``wandb sync``: the offline run directory, or all the parts of a resumed
    run (``offline-run-<time>-<id>``, one per part, same id), which it uploads as one run."""
    id_file = sync_dir.parent.parent / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if id_file.is_file() else sync_dir.name.split("-")[-1]
    # W&B adds "-1", "-2" ... to a part that starts within the same second as the one before
    pattern = f"offline-run-*-{run_id}*"
    parts = list(sync_dir.parent.glob(pattern))
    return str(sync_dir) if len(parts) <= 1 else f"{sync_dir.parent}/{pattern}"


def finish_within(run: WandbRun, timeout: float) -> bool:
    """Finish the run in a daemon thread; False if it took longer than ``timeout`` seconds (it
    then goes on in the background) or failed (a warning says why)."""
    failed: list[BaseException] = []

    def finish() -> None:
        try:
            run.logger.experiment.finish()
        except Exception as err:
            failed.append(err)

    thread = threading.Thread(target=finish, name="wandb-finish", daemon=True)
    thread.start()
    thread.join(timeout)
    if failed:
        rank_zero_warn(f"W&B did not finish cleanly: {failed[0]!r}")
        return False
    return not thread.is_alive()


def finish_wandb(runs: list[WandbRun], sync_hint: bool = True) -> None:
    """Finish ``runs`` (emptying the list) and print how to upload the offline ones.

    Finishing waits for W&B's uploads; without network that can take until the job is killed,
    so it is given :data:`WANDB_FINISH_TIMEOUT` seconds. The run's data stays in its directory
    either way, for ``wandb sync``.
    """
    while runs:
        run = runs.pop()
        if rank_zero_only.rank != 0:
            continue
        if not finish_within(run, WANDB_FINISH_TIMEOUT):
            where = run.sync_dir and sync_target(run.sync_dir)
            rank_zero_warn(
                f"W&B did not finish within {WANDB_FINISH_TIMEOUT:.0f} s (no network?); "
                "training is not affected. What was not uploaded is kept"
                + (f" in {where}; upload it later with: wandb sync {where}" if where else ".")
            )
            continue
        if run.sync_dir is not None and sync_hint:
            print(
                f"W&B run saved offline ({run.mode_reason}); upload it with: "
                f"wandb sync {sync_target(run.sync_dir)}",
                flush=True,
            )
