"""The one owner of a run directory's layout: where a run lives, what it holds, and which
checkpoint continues it.

A run of ``python -m densenet_lit`` writes ``<root>/<experiment>/<run-id>/``::

    config.yaml, config-1.yaml ...   the resolved config of the run and of each continuation
    checkpoints/last.ckpt            rewritten at the end of every epoch (and on preemption,
                                     written as .preempting-<pid>.tmp first)
    checkpoints/best-*.ckpt          the lowest val/error, when the run has a validation set
    hpc_ckpt_<n>.ckpt                Lightning's SLURM requeue checkpoints
    metrics.csv, hparams.yaml        the CSV logger
    wandb/, wandb_run_id             the W&B run (and its id, so a resumed run continues it)
    predictions.pt                   what ``predict`` wrote

The CLI, the callbacks and the analysis tools ask this module for these paths; nothing else
spells them out. It imports neither Lightning nor jsonargparse (the analysis tools use it).
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
import zipfile
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from densenet_lit.metric_names import VAL_ERROR

# --------------------------------------------------------------------------------- layout
CHECKPOINT_DIR = "checkpoints"
LAST_NAME = "last"  # checkpoints/last.ckpt (ModelCheckpoint's own CHECKPOINT_NAME_LAST)
LAST_FILE = f"{LAST_NAME}.ckpt"
BEST_PREFIX = "best"
# ModelCheckpoint's filename template of the best checkpoint (experiments/defaults/base.yaml
# spells it out too; tests/test_experiments.py checks that the two agree)
BEST_FILENAME = BEST_PREFIX + "-epoch{epoch:03d}-val_error{" + VAL_ERROR + ":.2f}"
REQUEUE_PREFIX = "hpc_ckpt_"  # Lightning's SLURM requeue checkpoints, in the run directory
# The preemption callback's checkpoint before it is renamed into place: a name that neither
# `last*.ckpt` nor Lightning's requeue scan (any name containing `hpc_ckpt_`) matches, so a
# kill while saving leaves nothing a resumption picks up.
PREEMPTION_TEMP = ".preempting-{pid}.tmp"
CONFIG_NAME = "config.yaml"
METRICS_FILE = "metrics.csv"
HPARAMS_FILE = "hparams.yaml"
WANDB_ID_FILE = "wandb_run_id"
PREDICTIONS_FILE = "predictions.pt"
DEFAULT_ROOT = "runs"
# Config files in these directories are shared pieces, not experiments: they do not name runs.
SHARED_CONFIG_DIRS = ("overlays", "defaults")
# The run directory chosen by the launching process, for Lightning's DDP worker processes
# (which parse the same command line) and for every rank of a torchrun or SLURM job.
RUN_DIR_ENV = "DENSENET_LIT_RUN_DIR"
# The process that set RUN_DIR_ENV: a value set by this very process belongs to an earlier
# run in it (tests, notebooks) and is not reused.
RUN_DIR_OWNER_ENV = "DENSENET_LIT_RUN_DIR_PID"
# Values of --ckpt_path this module resolves; others are files, directories or Lightning's.
RESUME_LATEST = "last"
RESUME_OR_START = "auto"


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def last_checkpoint(run_dir: str | os.PathLike) -> Path:
    return checkpoint_dir(run_dir) / LAST_FILE


def preemption_temp(path: Path) -> Path:
    """Where this process writes the checkpoint that is to become ``path``."""
    return path.with_name(PREEMPTION_TEMP.format(pid=os.getpid()))


def requeue_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Lightning's SLURM requeue checkpoints of a run, oldest (lowest number) first."""

    def number(p: Path) -> int:
        suffix = p.stem.removeprefix(REQUEUE_PREFIX)
        return int(suffix) if suffix.isdigit() else -1

    found = [p for p in Path(run_dir).glob(f"{REQUEUE_PREFIX}*.ckpt") if number(p) >= 0]
    return sorted(found, key=number)


def next_requeue_checkpoint(run_dir: str | os.PathLike) -> Path:
    """Where Lightning looks for a requeued job's checkpoint: ``hpc_ckpt_<n+1>.ckpt`` after
    the highest ``n`` in the run directory (Lightning resumes from the highest)."""
    existing = requeue_checkpoints(run_dir)
    n = int(existing[-1].stem.removeprefix(REQUEUE_PREFIX)) if existing else 0
    return Path(run_dir) / f"{REQUEUE_PREFIX}{n + 1}.ckpt"


def config_files(run_dir: str | os.PathLike) -> list[Path]:
    """``config.yaml`` and the continuations' ``config-<n>.yaml``, oldest first."""
    return sorted(Path(run_dir).glob("config*.yaml"), key=lambda p: (len(p.name), p.name))


def unique_path(path: Path) -> Path:
    """``path`` if free, else ``stem-1.suffix``, ``stem-2.suffix``, ..."""
    candidate, i = path, 0
    while candidate.exists():
        i += 1
        candidate = path.with_name(f"{path.stem}-{i}{path.suffix}")
    return candidate


def is_run_dir(path: str | os.PathLike) -> bool:
    """A directory written by the CLI: it holds a config or a checkpoints folder."""
    p = Path(path)
    return p.is_dir() and (bool(config_files(p)) or checkpoint_dir(p).is_dir())


def _newest_first(files: Iterable[Path]) -> list[Path]:
    return sorted((f for f in files if f.is_file()), key=lambda f: -f.stat().st_mtime)


def resumable_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The checkpoints a run continues from, newest first: ``checkpoints/last*.ckpt`` and the
    SLURM requeue checkpoints."""
    run_dir = Path(run_dir)
    return _newest_first(
        [*checkpoint_dir(run_dir).glob(f"{LAST_NAME}*.ckpt"), *requeue_checkpoints(run_dir)]
    )


def all_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Every checkpoint of a run (last, best, requeue), newest first."""
    run_dir = Path(run_dir)
    return _newest_first([*checkpoint_dir(run_dir).glob("*.ckpt"), *requeue_checkpoints(run_dir)])


def run_dir_of(ckpt_path: str | os.PathLike) -> Path | None:
    """The run directory holding a checkpoint, if it is one: ``<run>/checkpoints/x.ckpt`` or a
    SLURM requeue checkpoint ``<run>/hpc_ckpt_<n>.ckpt``."""
    path = Path(ckpt_path)
    in_checkpoints = path.parent.name == CHECKPOINT_DIR
    run_dir = path.parent.parent if in_checkpoints else path.parent
    if (in_checkpoints or path.name.startswith(REQUEUE_PREFIX)) and config_files(run_dir):
        return run_dir
    return None


def other_checkpoints(path: Path) -> list[Path]:
    """Readable-looking checkpoints beside ``path`` (its run), newest first, to suggest
    instead of it (``torch.save`` files are zip archives)."""
    run_dir = run_dir_of(path) or path.parent
    files = {*all_checkpoints(run_dir), *path.parent.glob("*.ckpt")}
    return _newest_first(
        f for f in files if f.resolve() != path.resolve() and zipfile.is_zipfile(f)
    )


def find_checkpoint(path: str | os.PathLike, which: str = "last") -> Path:
    """A checkpoint file from a file or a run directory (for the analysis tools).

    In a directory: ``which="last"`` picks ``checkpoints/last.ckpt`` (else the newest
    ``last*.ckpt``, else the newest checkpoint); ``which="best"`` picks the newest ``best*``
    (a run without one, e.g. without a validation set, falls back to ``last``).
    Raises FileNotFoundError naming the path when there is none.
    """
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: no such checkpoint file or run directory.")
    ckpts = _newest_first(c for c in p.rglob("*.ckpt") if "wandb" not in c.parts)
    if not ckpts:
        raise FileNotFoundError(f"{p}: a directory without any .ckpt file (not a finished run?).")
    if which == "best":
        best = [c for c in ckpts if c.name.startswith(BEST_PREFIX)]
        if best:
            return best[0]
    if last_checkpoint(p).is_file():
        return last_checkpoint(p)
    last = [c for c in ckpts if c.name.startswith(LAST_NAME)]
    return (last or ckpts)[0]


# ------------------------------------------------------------------------- choosing a run
def experiment_name(config_files: list | None, name: str | None = None) -> str:
    """``--run.name``, else the stem of the last config file outside overlays/ and defaults/."""
    if name:
        return name
    for path in reversed(config_files or []):
        absolute = getattr(path, "absolute", None)  # jsonargparse's Path object
        p = Path(absolute if isinstance(absolute, str) else os.path.abspath(str(path)))
        if p.parent.name not in SHARED_CONFIG_DIRS:
            return p.stem
    return "default"


def job_run_id() -> str | None:
    """The id every process of a SLURM or torchrun job agrees on, or None.

    All tasks of a SLURM job (and the job after a requeue) share one run directory, where
    Lightning also finds its requeue checkpoint; so do all ranks of a torchrun job on every
    node and after every restart (torchrun's rendezvous id, ``--rdzv-id``).
    """
    job = os.environ.get("SLURM_JOB_ID")
    # an interactive allocation (salloc, srun --pty bash) runs many commands: not one run
    interactive = os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive")
    if job and not interactive:
        array = os.environ.get("SLURM_ARRAY_TASK_ID")
        return f"slurm-{job}" + (f"_{array}" if array else "")
    torchrun = os.environ.get("TORCHELASTIC_RUN_ID")
    if torchrun and torchrun != "none":
        return f"torchrun-{torchrun}"
    return None


def job_run_dir(root: str | os.PathLike, experiment: str) -> Path | None:
    """The run directory of this SLURM or torchrun job, if it is one."""
    run_id = job_run_id()
    return None if run_id is None else Path(root) / experiment / run_id


def inherited_run_dir() -> Path | None:
    """The run directory a launching process (or the user) chose, if this process did not
    set it itself for an earlier run."""
    value = os.environ.get(RUN_DIR_ENV)
    if not value or os.environ.get(RUN_DIR_OWNER_ENV) == str(os.getpid()):
        return None
    return Path(value)


def hand_down(path: Path) -> Path:
    """Make ``path`` the run directory of the processes this one starts (DDP workers)."""
    os.environ[RUN_DIR_ENV] = str(path)
    os.environ[RUN_DIR_OWNER_ENV] = str(os.getpid())
    return path


def chosen_here(path: Path) -> bool:
    """Whether this process chose ``path`` itself (rather than inheriting it)."""
    return os.environ.get(RUN_DIR_ENV) == str(path) and os.environ.get(RUN_DIR_OWNER_ENV) == str(
        os.getpid()
    )


def choose_run_dir(root: str | os.PathLike, experiment: str) -> Path:
    """A new directory for this run, or the one the launching process chose for us.

    Lightning's DDP launcher starts worker processes that parse the same command line; they
    find the parent's choice in ``DENSENET_LIT_RUN_DIR`` (which can also be set by hand). The
    ranks of a SLURM or torchrun job agree on the job's id without it.
    """
    inherited = inherited_run_dir()
    if inherited is not None:
        return inherited
    job = job_run_dir(root, experiment)
    if job is not None:
        return hand_down(job)
    run_id = f"{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    path = Path(root) / experiment / run_id
    while path.exists():
        path = Path(root) / experiment / f"{run_id}-{secrets.token_hex(2)}"
    return hand_down(path)


def removable_if_untrained(run_dir: Path) -> bool:
    """Whether a failed run's directory holds nothing of value: no checkpoint, no metrics, no
    ``hparams.yaml`` (written once setup is done), so that retries leave no empty runs."""
    if not run_dir.is_dir():
        return True
    kept = (METRICS_FILE, HPARAMS_FILE)
    return not any(run_dir.rglob("*.ckpt")) and not any((run_dir / n).is_file() for n in kept)


# --------------------------------------------------------------------- resolving --ckpt_path
def latest_resumable(root: Path, experiment: str) -> Path | None:
    """The newest checkpoint to continue from among the runs of ``experiment``."""
    runs = [d for d in (root / experiment).glob("*") if d.is_dir()]
    candidates = [c for d in runs for c in resumable_checkpoints(d)]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def resolve_ckpt_path(ckpt_path: str | None, root: Path, experiment: str) -> str | None:
    """Expand ``last``, ``auto`` and run directories into a checkpoint file.

    ``last``: the newest ``last.ckpt`` or requeue checkpoint of the experiment's runs (an
    error when there is none). ``auto``: the same, or None (start a new run) when there is
    none, so that one command line both starts a run and resumes it after a restart; within
    a SLURM or torchrun job (or with DENSENET_LIT_RUN_DIR set) only its own run directory counts. Other
    values (a file, Lightning's ``best``/``hpc``/``registry:``) are left alone; a missing
    file is a FileNotFoundError.
    """
    if not ckpt_path or ckpt_path in ("best", "hpc") or ckpt_path.startswith("registry:"):
        return ckpt_path
    own = inherited_run_dir() or job_run_dir(root, experiment)
    if ckpt_path == RESUME_OR_START and own is not None:
        # a restarted job continues its own run, never an older run of the experiment
        found = resumable_checkpoints(own)
        return str(found[0]) if found else None
    if ckpt_path in (RESUME_LATEST, RESUME_OR_START):
        latest = latest_resumable(root, experiment)
        if latest is None and ckpt_path == RESUME_OR_START:
            return None
        if latest is None:
            raise FileNotFoundError(
                f"--ckpt_path last: no run of experiment {experiment!r} under "
                f"{root / experiment} has a checkpoints/last*.ckpt or a SLURM requeue checkpoint "
                f"({REQUEUE_PREFIX}<n>.ckpt). Give the checkpoint's path or "
                "its run directory instead (or --run.name to name the experiment), or use "
                "--ckpt_path auto to start the run when it has no checkpoint yet."
            )
        return str(latest)
    path = Path(ckpt_path)
    if path.is_dir():
        candidates = resumable_checkpoints(path)
        if not candidates and (path / LAST_FILE).is_file():
            candidates = [path / LAST_FILE]
        if not candidates:
            raise FileNotFoundError(
                f"--ckpt_path {ckpt_path}: a directory without checkpoints/last.ckpt."
            )
        return str(candidates[0])
    if not path.is_file():
        raise FileNotFoundError(f"--ckpt_path {ckpt_path}: no such checkpoint file.")
    return ckpt_path


def newer_requeue_checkpoint(
    ckpt_path: str, job_dir: str | os.PathLike | None = None
) -> str | None:
    """The newest SLURM requeue checkpoint saved after ``ckpt_path``, or None.

    A requeued SLURM job re-runs its command line: when that names a checkpoint, the requeue
    checkpoint saved since holds the latest state and wins. It is looked for in the run
    directory of ``ckpt_path`` and in ``job_dir``, the job's own run directory
    (:func:`job_run_dir`), where the job saved it when it started from a checkpoint outside
    any run directory (e.g. a shared or downloaded file).
    """
    given = Path(ckpt_path)
    if not given.is_file():
        return None
    dirs = {d for d in (run_dir_of(given), job_dir) if d is not None and Path(d).is_dir()}
    since = given.stat().st_mtime
    newer = [p for d in dirs for p in requeue_checkpoints(d) if p.stat().st_mtime > since]
    return str(max(newer, key=lambda p: p.stat().st_mtime)) if newer else None


def resume_command(args: list | tuple | None, ckpt_path: str) -> str | None:
    """The command line that continues a stopped run: ``args`` with ``--ckpt_path`` set."""
    if args is None:
        args = sys.argv[1:]
    if not isinstance(args, list | tuple):
        return None
    out, skip = [], False
    for arg in map(str, args):
        if skip:
            skip = False
        elif arg == "--ckpt_path":
            skip = True
        elif not arg.startswith("--ckpt_path="):
            out.append(arg)
    return shlex.join(["python", "-m", "densenet_lit", *out, "--ckpt_path", ckpt_path])
