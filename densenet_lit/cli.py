"""``python -m densenet_lit {fit,validate,test,predict}``: the LightningCLI of the project.

What it adds to Lightning's CLI:

* ``model`` is :class:`~densenet_lit.module.DenseNetModule`; ``data`` is any
  ``LightningDataModule`` given by ``class_path``. ``num_classes`` and ``in_channels`` of the
  model come from the data module (linked; do not set them).
* Every run gets its own directory ``<root>/<experiment>/<YYYYmmdd-HHMMSS>-<6 hex>/`` holding
  ``config.yaml`` (the resolved config), ``checkpoints/`` (``last.ckpt`` and the best by
  validation error), ``metrics.csv`` + ``hparams.yaml`` and ``wandb/``. ``<root>`` is
  ``trainer.default_root_dir`` or ``runs``; ``<experiment>`` is ``--run.name`` or the name of
  the last ``--config`` file that is not an overlay. Nothing is ever overwritten.
* Logging goes to a CSV file and to W&B (project ``densenet-lit``, grouped and tagged by data
  set and model, the whole config in the run's config). Without an API key or network the W&B
  run is offline, and one line says how to ``wandb sync`` it; ``WANDB_MODE`` is respected.
* ``--ckpt_path`` resumes: ``last`` picks the newest ``last.ckpt`` (or SLURM requeue
  checkpoint) of the same experiment, a run directory picks its newest one. ``fit`` continues
  in the run directory of the checkpoint. Model arguments that differ from the checkpoint's
  are an error, not silently replaced; so are a checkpoint that cannot be read (truncated,
  not a checkpoint) and one whose weights do not fit the network (another model or data set).
* Checkpoints are read with torch's safe unpickler only (our pre-check and Lightning's restore,
  ``weights_only=True``): a file holding other objects is an error, unless
  ``--run.trust_checkpoint true`` vouches for it (a warning is printed).
* Fault tolerance: SIGTERM or SIGUSR1 saves a checkpoint and stops with a line saying how to
  resume (exit status 128 + signal, see :class:`~densenet_lit.callbacks.PreemptionCheckpoint`);
  a requeued SLURM job resumes from its requeue checkpoint by itself; a NaN or infinite loss
  stops training naming the step and the last good checkpoint
  (:class:`~densenet_lit.callbacks.FiniteLossGuard`); W&B failures are warnings.
* ``--run.test_after_fit true`` tests at the end of ``fit`` (the paper's final runs).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import inspect
import netrc
import os
import re
import secrets
import shlex
import shutil
import sys
import threading
import warnings
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import yaml
from jsonargparse import Namespace
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.strategies import ParallelStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from densenet_lit.callbacks import (
    PredictionWriter,
    Preempted,
    RunCheckpoint,
    default_callbacks,
)
from densenet_lit.checkpoints import (
    CheckpointError,
    UntrustedCheckpointError,
    load_checkpoint,
    refusal_error,
)
from densenet_lit.data.base import batch_per_process
from densenet_lit.data.errors import DataError
from densenet_lit.loggers import RunCSVLogger
from densenet_lit.models.zoo import CIFAR_ARCH, with_cifar_defaults
from densenet_lit.module import RUNTIME_ARGS, DenseNetModule, model_key

WANDB_PROJECT = "densenet-lit"
RUN_DIR_ENV = "DENSENET_LIT_RUN_DIR"
# How a user vouches for a checkpoint that the safe unpickler refuses.
TRUST_OPT_IN = "give --run.trust_checkpoint true (a warning is printed)"
# Config files in these directories are shared pieces, not experiments: they do not name runs.
SHARED_CONFIG_DIRS = ("overlays", "defaults")
# Key of a config file naming the files it builds on (expanded by this CLI, see config_chain).
EXTENDS_KEY = "extends"

# Seconds finishing a W&B run may take before the process moves on (without network,
# wandb.finish() can wait for its uploads until the job is killed).
WANDB_FINISH_TIMEOUT = 120.0
# W&B runs started in this process, finished (and their sync hint printed) by main().
_OPEN_WANDB: list[WandbLogger] = []
# The CLI object of the run() in progress, so that a failed run can be inspected.
_LATEST_CLI: list[Any] = []
# The run directory this process chose last; a value of RUN_DIR_ENV equal to it was set by us
# (for the DDP worker processes) and is not reused by the next run started in this process.
_RUN_DIR_SET_HERE: list[str] = []


class CheckpointMismatchError(CheckpointError):
    """The model arguments given differ from those stored in the checkpoint."""


# --------------------------------------------------------------------------------- extends
def config_chain(path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> list[Path]:
    """``path`` preceded (recursively) by the files its ``extends:`` key names.

    ``extends`` holds one path or a list, relative to the file that names it. The result is the
    order in which the files are applied: bases first, ``path`` last.
    """
    path = Path(path)
    resolved = path.resolve()
    if resolved in _seen:
        cycle = " -> ".join(str(p) for p in (*_seen, resolved))
        raise ValueError(f"extends: files include each other in a cycle: {cycle}")
    try:
        with open(path) as f:
            content = yaml.safe_load(f)
    except OSError:
        return [path]  # jsonargparse reports the missing file
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"{path}: not valid YAML{at}: {problem}.") from err
    bases = content.get(EXTENDS_KEY) if isinstance(content, dict) else None
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    chain: list[Path] = []
    for base in bases:
        base_path = Path(base) if os.path.isabs(base) else resolved.parent / base
        if not base_path.is_file():
            raise FileNotFoundError(f"{path}: extends: {base} -> no such file {base_path}")
        chain.extend(config_chain(base_path, (*_seen, resolved)))
    return [*chain, path]


def expand_config_args(args: list[str]) -> list[str]:
    """Put the files each ``--config FILE`` extends in front of it, as extra ``--config`` flags.

    Several ``--config`` files compose (later values win, lists are replaced); ``extends:``
    makes one file compose on top of shared defaults without copying them. Only the options
    after the subcommand are expanded; ``--extends null`` is appended so that the resolved
    config (``--print_config``, the run's config.yaml) is complete on its own.
    """
    subcommands = set(LightningCLI.subcommands())
    start = next((i + 1 for i, a in enumerate(args) if a in subcommands), None)
    if start is None:
        return list(args)
    out, expanded = list(args[:start]), False
    i = start
    while i < len(args):
        arg = args[i]
        if arg in ("--config", "-c") and i + 1 < len(args):
            value, i = args[i + 1], i + 2
        elif arg.startswith("--config="):
            value, i = arg.split("=", 1)[1], i + 1
        else:
            out.append(arg)
            i += 1
            continue
        if not os.path.isfile(value):
            out += ["--config", value]  # a YAML string, or a missing file jsonargparse reports
            continue
        for base in config_chain(value)[:-1]:
            out += ["--config", str(base)]
            expanded = True
        out += ["--config", value]
    if expanded:
        out += [f"--{EXTENDS_KEY}", "null"]
    return out


# ----------------------------------------------------------------------------------- run dir
def experiment_name(config_files: list[Any] | None, name: str | None = None) -> str:
    """``--run.name``, else the stem of the last config file outside overlays/ and defaults/."""
    if name:
        return name
    for path in reversed(config_files or []):
        absolute = getattr(path, "absolute", None)
        p = Path(absolute if isinstance(absolute, str) else os.path.abspath(str(path)))
        if p.parent.name not in SHARED_CONFIG_DIRS:
            return p.stem
    return "default"


def _run_id() -> str:
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        # All tasks of a SLURM job (and the job after a requeue) share one run directory,
        # where Lightning also finds its requeue checkpoint.
        array = os.environ.get("SLURM_ARRAY_TASK_ID")
        return f"slurm-{job}" + (f"_{array}" if array else "")
    return f"{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def choose_run_dir(root: str | os.PathLike, experiment: str) -> Path:
    """A new directory for this run, or the one the launching process chose for us.

    Lightning's DDP launcher starts worker processes that parse the same command line; they
    find the parent's choice in the environment variable ``DENSENET_LIT_RUN_DIR`` (which can
    also be set by hand, e.g. the same value on every node of a torchrun job).
    """
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited and inherited not in _RUN_DIR_SET_HERE:
        return Path(inherited)
    run_id = _run_id()
    path = Path(root) / experiment / run_id
    if not run_id.startswith("slurm-"):
        while path.exists():
            path = Path(root) / experiment / f"{run_id}-{secrets.token_hex(2)}"
    os.environ[RUN_DIR_ENV] = str(path)
    _RUN_DIR_SET_HERE.append(str(path))
    return path


def adopt_run_dir(path: Path) -> Path:
    """Use an existing run directory (resumption), and pass it on to DDP worker processes."""
    os.environ[RUN_DIR_ENV] = str(path)
    _RUN_DIR_SET_HERE.append(str(path))
    return path


# Lightning's SLURM requeue checkpoints, saved in the run directory (default_root_dir).
REQUEUE_CHECKPOINTS = "hpc_ckpt_*.ckpt"


def run_dir_of(ckpt_path: str | os.PathLike) -> Path | None:
    """The run directory holding a checkpoint, if it is one: ``<run>/checkpoints/x.ckpt`` or
    a SLURM requeue checkpoint ``<run>/hpc_ckpt_<n>.ckpt``."""
    path = Path(ckpt_path)
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    if (path.parent.name == "checkpoints" or path.name.startswith("hpc_ckpt_")) and any(
        run_dir.glob("config*.yaml")
    ):
        return run_dir
    return None


def resumable_checkpoints(run_dir: Path) -> list[Path]:
    """The checkpoints of a run directory to continue from, newest first: ``last*.ckpt`` and
    Lightning's SLURM requeue checkpoints ``hpc_ckpt_<n>.ckpt``."""
    files = [*run_dir.glob("checkpoints/last*.ckpt"), *run_dir.glob(REQUEUE_CHECKPOINTS)]
    return sorted((f for f in files if f.is_file()), key=lambda f: -f.stat().st_mtime)


def newer_requeue_checkpoint(ckpt_path: str) -> str:
    """``ckpt_path``, or the newest SLURM requeue checkpoint of its run saved after it.

    A requeued SLURM job re-runs its command line: when that names a checkpoint, the requeue
    checkpoint saved since in the same run directory holds the latest state and wins. (Without
    --ckpt_path, Lightning itself resumes a SLURM job from its requeue checkpoint.)
    """
    run_dir = run_dir_of(ckpt_path) if Path(ckpt_path).is_file() else None
    if run_dir is None:
        return ckpt_path
    given = Path(ckpt_path).stat().st_mtime
    newer = [p for p in run_dir.glob(REQUEUE_CHECKPOINTS) if p.stat().st_mtime > given]
    if not newer:
        return ckpt_path
    latest = str(max(newer, key=lambda p: p.stat().st_mtime))
    rank_zero_info(f"Requeued SLURM job: resuming from {latest} instead of {ckpt_path}")
    return latest


def slurm_requeued() -> bool:
    """Whether this process is a SLURM job that was requeued (after preemption or a time-limit
    signal): SLURM counts the restarts in ``SLURM_RESTART_COUNT``."""
    try:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return False
    return restarts > 0 and SLURMEnvironment.detect()


def unique_path(path: Path) -> Path:
    """``path`` if free, else ``stem-1.suffix``, ``stem-2.suffix``, ..."""
    candidate, i = path, 0
    while candidate.exists():
        i += 1
        candidate = path.with_name(f"{path.stem}-{i}{path.suffix}")
    return candidate


def resolve_ckpt_path(ckpt_path: str | None, root: Path, experiment: str) -> str | None:
    """Expand ``last`` and run directories into a checkpoint file; leave other values alone."""
    if not ckpt_path or ckpt_path in ("best", "hpc") or ckpt_path.startswith("registry:"):
        return ckpt_path
    if ckpt_path == "last":
        runs = [d for d in (root / experiment).glob("*") if d.is_dir()]
        candidates = [c for d in runs for c in resumable_checkpoints(d)]
        if not candidates:
            raise FileNotFoundError(
                f"--ckpt_path last: no run of experiment {experiment!r} under "
                f"{root / experiment} has a checkpoints/last.ckpt. Give the checkpoint's path or "
                "its run directory instead (or --run.name to name the experiment)."
            )
        return str(max(candidates, key=lambda p: p.stat().st_mtime))
    path = Path(ckpt_path)
    if path.is_dir():
        candidates = resumable_checkpoints(path)
        if not candidates and (path / "last.ckpt").is_file():
            candidates = [path / "last.ckpt"]
        if not candidates:
            raise FileNotFoundError(
                f"--ckpt_path {ckpt_path}: a directory without checkpoints/last.ckpt."
            )
        return str(candidates[0])
    if not path.is_file():
        raise FileNotFoundError(f"--ckpt_path {ckpt_path}: no such checkpoint file.")
    return ckpt_path


def _other_checkpoints(path: Path) -> list[Path]:
    """Checkpoints beside ``path`` (its run), newest first, to suggest instead of it."""
    run_dir = run_dir_of(path) or path.parent
    files = {*run_dir.glob("checkpoints/*.ckpt"), *run_dir.glob(REQUEUE_CHECKPOINTS)}
    files |= set(path.parent.glob("*.ckpt"))
    others = [
        f
        for f in files
        if f.is_file() and f.resolve() != path.resolve() and zipfile.is_zipfile(f)  # torch.save
    ]
    return sorted(others, key=lambda f: -f.stat().st_mtime)


def read_checkpoint(ckpt_path: str | os.PathLike, trust: bool = False) -> dict[str, Any]:
    """Load a Lightning checkpoint on the CPU (:func:`densenet_lit.checkpoints.load_checkpoint`,
    the safe unpickler unless ``trust``); when it cannot be read, the :class:`CheckpointError`
    also names the run's other readable checkpoints to resume from. Also an error: a checkpoint
    without weights."""
    path = Path(ckpt_path)
    try:
        ckpt = load_checkpoint(path, trust=trust, opt_in=TRUST_OPT_IN)
    except UntrustedCheckpointError:
        raise  # readable, but not to be unpickled: another checkpoint is no answer
    except CheckpointError as err:
        others = _other_checkpoints(path)
        if others:
            listed = "\n".join(f"  {p}" for p in others[:5])
            where = "of the run" if run_dir_of(path) is not None else "beside it"
            what_to_do = f"Resume from another checkpoint {where} instead (newest first):\n{listed}"
        else:
            what_to_do = (
                "There is no other checkpoint beside it: start a new run without --ckpt_path."
            )
        raise CheckpointError(f"{err} {what_to_do}") from err.__cause__
    if not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(
            f"{path} is not a Lightning checkpoint of this project (it holds no 'state_dict'). "
            "--ckpt_path takes a checkpoint written by `python -m densenet_lit fit` (a "
            "checkpoints/*.ckpt of a run); to start from torchvision ImageNet weights use "
            "--model.pretrained instead."
        )
    return ckpt


def compare_state_shapes(
    stored: dict[str, tuple[int, ...]], model: dict[str, tuple[int, ...]]
) -> list[str]:
    """How a checkpoint's weights (name -> shape) differ from a model's: one line per problem."""
    problems = [
        f"{k}: checkpoint {list(shape)}, this model {list(model[k])}"
        for k, shape in stored.items()
        if k in model and tuple(model[k]) != tuple(shape)
    ]
    missing = [k for k in model if k not in stored]
    unexpected = [k for k in stored if k not in model]
    for label, keys in (("not in the checkpoint", missing), ("not in this model", unexpected)):
        if keys:
            shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
            problems.append(f"{len(keys)} weights {label}: {shown}")
    return problems


def compare_with_checkpoint(given: dict[str, Any], stored: dict[str, Any]) -> dict[str, tuple]:
    """Model arguments whose given value differs from the checkpoint's: ``{key: (given, ckpt)}``.

    Keys the config does not hold (linked from the data module) and the runtime-only
    arguments (compile, channels_last, memory_efficient, pretrained) are not compared.
    """
    if given.get("arch", CIFAR_ARCH) == CIFAR_ARCH and stored.get("arch", CIFAR_ARCH) == CIFAR_ARCH:
        # None means the default network (DenseNet-BC L=100 k=12): None and 100 agree
        given, stored = with_cifar_defaults(given), with_cifar_defaults(stored)
    differ = {}
    for key, ckpt_value in stored.items():
        if key.startswith("_") or key in RUNTIME_ARGS or key not in given:
            continue
        value = given[key]
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(ckpt_value, tuple):
            ckpt_value = list(ckpt_value)
        if value != ckpt_value:
            differ[key] = (value, ckpt_value)
    return differ


# ---------------------------------------------------------------------------------------- W&B
def _reachable(url: str, timeout: float = 3.0) -> bool:
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


def _has_api_key(base_url: str) -> bool:
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
    if not _has_api_key(base_url):
        return "offline", "no W&B API key (WANDB_API_KEY or ~/.netrc)"
    if not _reachable(base_url):
        return "offline", f"{base_url} is not reachable"
    return "online", "API key found"


class SafeWandbLogger(WandbLogger):
    """A WandbLogger whose failures are warnings: W&B must never stop training."""

    _broken = False

    def _guard(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._broken:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # the W&B service died, disk full, ...
            self._broken = True
            rank_zero_warn(f"W&B logging failed and is switched off for this run: {err!r}")
            return None

    def log_metrics(self, *args: Any, **kwargs: Any) -> None:
        self._guard(super().log_metrics, *args, **kwargs)

    def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
        self._guard(super().log_hyperparams, *args, **kwargs)

    def after_save_checkpoint(self, *args: Any, **kwargs: Any) -> None:
        self._guard(super().after_save_checkpoint, *args, **kwargs)

    def finalize(self, *args: Any, **kwargs: Any) -> None:
        self._guard(super().finalize, *args, **kwargs)


def make_wandb_logger(
    run_dir: Path, name: str, group: str, tags: list[str], project: str, job_type: str
) -> WandbLogger | None:
    """Start the W&B run (rank zero only), offline when it cannot be online; None on failure."""
    mode, reason = wandb_mode()
    if mode == "disabled":
        return None
    try:
        import wandb

        settings = wandb.Settings(silent=True, init_timeout=60, console="off")
        logger = SafeWandbLogger(
            project=project,
            name=name,
            group=group,
            tags=tags,
            save_dir=str(run_dir),
            job_type=job_type,
            mode=mode,
            settings=settings,
        )
        logger._wandb_init.pop("anonymous", None)  # deprecated in wandb; it warns when given
        if rank_zero_only.rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            run = logger.experiment  # start it now, so a failure surfaces here
            logger._sync_dir = Path(run.dir).parent if mode in ("offline", "dryrun") else None
            logger._mode_reason = reason
            _OPEN_WANDB.append(logger)
        return logger
    except Exception as err:
        rank_zero_warn(f"W&B could not start ({err!r}); this run logs to CSV only.")
        return None


def _finish_within(logger: WandbLogger, timeout: float) -> bool:
    """``logger.experiment.finish()`` in a daemon thread; False if it took longer than
    ``timeout`` seconds (it then goes on in the background) or failed (a warning says why)."""
    failed: list[BaseException] = []

    def finish() -> None:
        try:
            logger.experiment.finish()
        except Exception as err:
            failed.append(err)

    thread = threading.Thread(target=finish, name="wandb-finish", daemon=True)
    thread.start()
    thread.join(timeout)
    if failed:
        rank_zero_warn(f"W&B did not finish cleanly: {failed[0]!r}")
        return False
    return not thread.is_alive()


def finish_wandb(sync_hint: bool = True) -> None:
    """Finish the W&B runs of this process and print how to upload the offline ones
    (unless ``sync_hint`` is False).

    Finishing waits for W&B's uploads; without network that can take until the job is killed,
    so it is given :data:`WANDB_FINISH_TIMEOUT` seconds. The run's data stays in its directory
    either way, for ``wandb sync``.
    """
    while _OPEN_WANDB:
        logger = _OPEN_WANDB.pop()
        sync_dir = getattr(logger, "_sync_dir", None)
        if not _finish_within(logger, WANDB_FINISH_TIMEOUT):
            run_dir = sync_dir
            if run_dir is None:
                with contextlib.suppress(Exception):
                    run_dir = Path(logger.experiment.dir).parent
            rank_zero_warn(
                f"W&B did not finish within {WANDB_FINISH_TIMEOUT:.0f} s (no network?); "
                "training is not affected. What was not uploaded is kept"
                + (f" in {run_dir}; upload it later with: wandb sync {run_dir}" if run_dir else ".")
            )
            continue
        if sync_dir is not None and sync_hint:
            print(
                f"W&B run saved offline ({logger._mode_reason}); upload it with: "
                f"wandb sync {sync_dir}",
                flush=True,
            )


# ---------------------------------------------------------------------------------- config
class RunConfigSaver(SaveConfigCallback):
    """Write the resolved config into the run directory (never overwriting) and into W&B."""

    def __init__(self, parser: LightningArgumentParser, config: Namespace, **kwargs: Any) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(parser, config, **kwargs)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        run_dir = Path(trainer.default_root_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = unique_path(run_dir / self.config_filename)
        self.parser.save(self.config, str(path), skip_unset=False, overwrite=False)
        rank_zero_info(f"Run directory: {run_dir} (config: {path.name})")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                try:
                    import yaml

                    resolved = yaml.safe_load(self.parser.dump(self.config, skip_unset=False))
                    resolved.pop("config", None)
                    resolved.pop(EXTENDS_KEY, None)
                    logger.experiment.config.update(resolved, allow_val_change=True)
                except Exception as err:
                    rank_zero_warn(f"Could not send the config to W&B: {err!r}")


# -------------------------------------------------------------------------------------- CLI
def dataset_key(datamodule: Any) -> str:
    """``cifar10``, ``cifar10plus`` (augmented), ``cifar100``, ``svhn``, ``imagenet``, ``digits``."""
    if datamodule is None:
        return "nodata"
    name = type(datamodule).__name__
    name = name.removesuffix("DataModule").removesuffix("Datamodule").lower() or "data"
    if name.startswith("cifar") and getattr(datamodule, "augment", False):
        name += "plus"
    return name


class DenseNetArgumentParser(LightningArgumentParser):
    """Lightning's parser, with a one-line usage before an error message (not every option)
    and a suggestion for a misspelt option."""

    def print_usage(self, file: Any = None) -> None:
        prog = self.prog.replace(" [options]", "")
        print(f"usage: {prog} [-h] [--config CONFIG] [options]", file=file or sys.stderr)

    def error(self, message: str, ex: Exception | None = None) -> Any:
        return super().error(message + self._did_you_mean(message), ex)

    def _option_names(self) -> list[str]:
        names, parsers = [], [self]
        while parsers:
            parser = parsers.pop()
            for action in parser._actions:
                names.append(action.dest)
                choices = getattr(action, "choices", None)
                if isinstance(choices, dict):
                    parsers += [
                        c for c in choices.values() if isinstance(c, argparse.ArgumentParser)
                    ]
        return names

    def _did_you_mean(self, message: str) -> str:
        """`` Did you mean 'model.growth_rate'?`` for an option that is not known, if one is
        close to it; else ''."""
        option = re.search(
            r"does not accept option '([\w.]+)'|unrecognized arguments: --([\w.]+)", message
        )
        in_class = re.search(r"class_path '([\w.]+)':\s*Option '(\w+)' is not accepted", message)
        if option:
            given, known = option.group(1) or option.group(2), self._option_names()
        elif in_class:
            given = in_class.group(2)
            try:
                module, _, name = in_class.group(1).rpartition(".")
                cls = getattr(importlib.import_module(module), name)
                known = list(inspect.signature(cls.__init__).parameters)
            except Exception:
                return ""
        else:
            return ""
        close = difflib.get_close_matches(given, known, n=1, cutoff=0.6)
        return f"\nDid you mean '{close[0]}'?" if close else ""


class DenseNetCLI(LightningCLI):
    """LightningCLI with run directories, CSV + W&B logging and checked resumption."""

    def __init__(self, args: Any = None, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_callback", RunConfigSaver)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("parser_kwargs", {"prog": "python -m densenet_lit"})
        kwargs.setdefault("parser_class", DenseNetArgumentParser)
        kwargs.setdefault("trainer_defaults", {"callbacks": default_callbacks()})
        _LATEST_CLI[:] = [self]
        self.run_dir: Path | None = None
        self.resume_dir: Path | None = None
        self.experiment: str | None = None
        self._ckpt_shapes: dict[str, tuple[int, ...]] | None = None
        super().__init__(DenseNetModule, LightningDataModule, args=args, **kwargs)

    # parser -----------------------------------------------------------------------------
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            f"--{EXTENDS_KEY}",
            type=str | list[str] | None,
            default=None,
            help="In a config file: the config file(s) it builds on, relative to it. They are "
            "applied first, as if given as earlier --config options.",
        )
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_channels", "model.in_channels", apply_on="instantiate")
        parser.add_argument(
            "--run.name",
            type=str | None,
            default=None,
            help="Experiment name: runs go to <root>/<name>/<id>/. Default: the name of the "
            "last --config file that is not in overlays/ or defaults/.",
        )
        parser.add_argument(
            "--run.wandb", type=bool, default=True, help="Log to W&B (besides the CSV file)."
        )
        parser.add_argument("--run.wandb_project", type=str, default=WANDB_PROJECT)
        parser.add_argument(
            "--run.tags", type=list[str], default=[], help="Extra W&B tags for this run."
        )
        parser.add_argument(
            "--run.test_after_fit",
            type=bool,
            default=False,
            help="Run the test set at the end of fit (the paper's final runs).",
        )
        parser.add_argument(
            "--run.test_ckpt",
            type=str | None,
            default=None,
            help="Weights tested after fit: null = those at the end of training, 'best' = the "
            "checkpoint with the lowest validation error (SVHN), or a path.",
        )
        parser.add_argument(
            "--run.trust_checkpoint",
            type=bool,
            default=False,
            help="Load --ckpt_path (and --run.test_ckpt) with the full unpickler, which runs "
            "any code pickled in the file. Only for a checkpoint whose origin you trust that "
            "the safe loader refuses; densenet_lit's own checkpoints never need it.",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        if args is None:
            args = sys.argv[1:]
        if isinstance(args, list | tuple):
            args = expand_config_args([str(a) for a in args])
        if isinstance(args, dict | Namespace):
            self.config = parser.parse_object(args)
        else:
            self.config = parser.parse_args(args)
        sub = self.config.get("subcommand")
        if not sub:
            return
        cfg = self.config[sub]
        cfg[EXTENDS_KEY] = None  # already applied; the saved config is complete without it
        self.experiment = experiment_name(cfg.get("config"), cfg.run.name)
        self.root = Path(cfg.trainer.default_root_dir or "runs")
        ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), self.root, self.experiment)
        if sub == "fit" and ckpt_path and slurm_requeued():
            ckpt_path = newer_requeue_checkpoint(ckpt_path)
        cfg.ckpt_path = ckpt_path
        trust = cfg.run.trust_checkpoint
        cfg.weights_only = weights_only_for(cfg.get("weights_only"), trust)
        test_ckpt = cfg.run.test_ckpt
        testing = sub == "fit" and cfg.run.test_after_fit
        if testing and test_ckpt not in (None, "best") and not Path(test_ckpt).is_file():
            raise FileNotFoundError(
                f"--run.test_ckpt {test_ckpt}: no such checkpoint file. Give 'best' (the "
                "checkpoint with the lowest validation error), null (the weights at the end "
                "of training) or the path of a .ckpt file."
            )
        if testing and test_ckpt not in (None, "best"):
            read_checkpoint(test_ckpt, trust)  # refused before training, not after it
        self.resume_dir = None
        self._ckpt_shapes = None
        if ckpt_path and Path(ckpt_path).is_file():
            self._check_checkpoint(ckpt_path, cfg.model, trust)
            if sub == "fit":
                self.resume_dir = run_dir_of(ckpt_path)

    def _check_checkpoint(self, ckpt_path: str, model_cfg: Namespace, trust: bool) -> None:
        ckpt = read_checkpoint(ckpt_path, trust)
        self._ckpt_shapes = {
            k: tuple(v.shape) for k, v in ckpt["state_dict"].items() if hasattr(v, "shape")
        }
        stored = dict(ckpt.get("hyper_parameters", {}))
        del ckpt
        given = model_cfg.as_dict() if isinstance(model_cfg, Namespace) else dict(model_cfg)
        differ = compare_with_checkpoint(given, stored)
        if differ:
            rows = "\n".join(
                f"  model.{k}: given {v!r}, checkpoint {c!r}" for k, (v, c) in differ.items()
            )
            hint = Path(ckpt_path).resolve().parent.parent / "config.yaml"
            hint_text = f" (that run's config is {hint})" if hint.is_file() else ""
            raise CheckpointMismatchError(
                f"The model arguments differ from those of the checkpoint {ckpt_path}:\n{rows}\n"
                "A checkpoint restores its own network and recipe, so these values would be "
                "ignored. Use the checkpoint's values (pass the config it was trained with"
                f"{hint_text}), or start a new run without --ckpt_path."
            )

    def _check_checkpoint_fits(self) -> None:
        """Before Lightning loads ``--ckpt_path``: do its weights fit the network built?"""
        if self._ckpt_shapes is None or self.model is None:
            return
        model = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
        problems = compare_state_shapes(self._ckpt_shapes, model)
        if problems:
            ckpt_path = self._get(self.config, "ckpt_path")
            rows = "\n".join(f"  {p}" for p in problems[:8])
            raise CheckpointMismatchError(
                f"The checkpoint {ckpt_path} does not fit this network:\n{rows}\nIt was "
                "trained with another model or data set (num_classes and in_channels come from "
                "the data module). Use the config it was trained with (config.yaml in its run "
                "directory), or start a new run without --ckpt_path."
            )

    def before_fit(self) -> None:
        self._check_checkpoint_fits()
        self._check_image_size()
        self._check_global_batch()
        self._check_sync_batchnorm()

    def _check_image_size(self) -> None:
        """Before any step: can the network take the data's images at all?"""
        size = getattr(self.datamodule, "image_size", None)
        network = getattr(self.model, "model", None)
        if not isinstance(size, int) or not hasattr(network, "feature_map_size"):
            return
        if network.feature_map_size(size) < 1:
            arch = self.model.hparams.get("arch")
            raise ValueError(
                f"model.arch={arch!r} cannot take the data's {size}x{size} images: its stem and "
                f"transitions halve them to nothing. It needs images of at least "
                f"{network.smallest_image_size()}x{network.smallest_image_size()} (ImageNet: "
                f"224). For small images use model.arch={CIFAR_ARCH!r}."
            )

    def _check_global_batch(self) -> None:
        """The global batch must split evenly over the processes, checked before DDP starts
        them (the data module checks it again in each process)."""
        batch_size = getattr(self.datamodule, "batch_size", None)
        if isinstance(batch_size, int):
            batch_per_process(batch_size, self.trainer.world_size)

    def _check_sync_batchnorm(self) -> None:
        cfg = self._get(self.config_init, "trainer", default={})
        strategy = self.trainer.strategy
        if (
            cfg.get("sync_batchnorm")
            and isinstance(strategy, ParallelStrategy)
            and strategy.root_device.type == "cpu"
        ):
            raise ValueError(
                "trainer.sync_batchnorm=true needs GPUs: PyTorch's SyncBatchNorm does not run on "
                "the CPU (DDP refuses it). Remove --trainer.sync_batchnorm for CPU runs; each "
                "process then normalises with the statistics of its own part of the batch."
            )

    def before_validate(self) -> None:
        self._check_checkpoint_fits()
        self._check_image_size()
        if getattr(self.datamodule, "has_validation_set", True) is False:
            raise ValueError(
                "validate: this config has no validation set (data.val_size=0: the paper's "
                "final runs train on all training images), so there is nothing to validate on. "
                "Use `test` for the test set; for a run trained with a held-out split, give "
                "its config (e.g. --config experiments/overlays/holdout.yaml)."
            )

    def before_test(self) -> None:
        self._check_checkpoint_fits()
        self._check_image_size()

    def before_predict(self) -> None:
        self._check_checkpoint_fits()
        self._check_image_size()

    def _parse_ckpt_path(self) -> None:
        # Lightning would replace the model arguments by the checkpoint's without a word;
        # parse_arguments has already checked that they agree (runtime options may differ).
        return

    # instantiation ----------------------------------------------------------------------
    def before_instantiate_classes(self) -> None:
        sub = self.subcommand
        if sub is None:
            return
        if self.resume_dir is not None:
            # fit --ckpt_path continues that run in its own directory: checkpoints (and the
            # best-so-far bookkeeping) carry on, metrics.csv is appended to, the config of
            # the continuation is saved as config-1.yaml, ...
            self.run_dir = adopt_run_dir(self.resume_dir)
            rank_zero_info(f"Resuming the run in {self.run_dir}")
        else:
            self.run_dir = choose_run_dir(self.root, self.experiment)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        cfg = self._get(self.config_init, "trainer", default={})
        run = self._get(self.config, "run")
        kwargs["default_root_dir"] = str(self.run_dir)
        logger = cfg.get("logger")
        if cfg.get("fast_dev_run"):
            kwargs["logger"] = False
        elif logger is None or logger is True:
            kwargs["logger"] = self._make_loggers(run)
        callbacks = cfg.get("callbacks") or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        if (
            self.subcommand == "fit"
            and cfg.get("enable_checkpointing") is not False
            and not any(isinstance(c, ModelCheckpoint) for c in callbacks)
        ):
            # runs without an experiment config also keep last.ckpt (and the best by val/error)
            cfg["callbacks"] = [*callbacks, RunCheckpoint()]
        if self.subcommand == "predict" and not any(
            isinstance(c, BasePredictionWriter) for c in callbacks
        ):
            cfg["callbacks"] = [*callbacks, PredictionWriter()]  # predictions.pt in the run dir
        # a default callback the user configured (`--trainer.callbacks+=FiniteLossGuard
        # --trainer.callbacks.check every_step`) replaces the default instance
        given = {type(c) for c in callbacks}
        defaults = self.trainer_defaults.get("callbacks") or []
        self.trainer_defaults["callbacks"] = [c for c in defaults if type(c) not in given]
        return super().instantiate_trainer(**kwargs)

    def _make_loggers(self, run: Namespace) -> list[Logger]:
        loggers: list[Logger] = [RunCSVLogger(str(self.run_dir))]
        if run.wandb:
            hp = dict(self.model.hparams)
            dataset, model = dataset_key(self.datamodule), model_key(hp)
            if hp.get("schedule") == "cosine":
                model += "_cosine"
            tags = [dataset, model, self.experiment, self.subcommand, *run.tags]
            wandb_logger = make_wandb_logger(
                self.run_dir,
                name=f"{self.experiment}/{self.run_dir.name}"
                + ("-resumed" if self.resume_dir is not None else ""),
                group=f"{dataset}-{model}",
                tags=list(dict.fromkeys(t[:64] for t in tags)),
                project=run.wandb_project,
                job_type=self.subcommand,
            )
            if wandb_logger is not None:
                loggers.append(wandb_logger)
        return loggers

    # subcommands ------------------------------------------------------------------------
    def after_fit(self) -> None:
        run = self._get(self.config, "run")
        if not run.test_after_fit or self.trainer.interrupted:
            return
        ckpt_path = run.test_ckpt
        if self.trainer.fast_dev_run:
            ckpt_path = None  # fast_dev_run saves no checkpoints
        elif ckpt_path == "best":
            callback = self.trainer.checkpoint_callback
            if callback is None or not getattr(callback, "best_model_path", ""):
                rank_zero_warn(
                    "run.test_ckpt='best' but no best checkpoint was kept (no validation set?): "
                    "testing the weights at the end of training."
                )
                ckpt_path = None
        weights_only = not run.trust_checkpoint
        self.trainer.test(
            self.model, datamodule=self.datamodule, ckpt_path=ckpt_path, weights_only=weights_only
        )


def weights_only_for(given: bool | None, trust: bool) -> bool:
    """The ``weights_only`` the CLI passes to Lightning's restore: False only with
    ``--run.trust_checkpoint true``. A ``--weights_only false`` without it is an error (a
    saved config.yaml holds the ``true`` this sets, which is fine)."""
    if given is False and not trust:
        raise CheckpointError(
            "--weights_only false: the CLI sets weights_only itself, from --run.trust_checkpoint. "
            "To load a checkpoint with the full unpickler, give --run.trust_checkpoint true."
        )
    return not trust


def resume_command(args: Any, ckpt_path: str) -> str | None:
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


def say(text: str) -> None:
    """Write ``text`` and a newline to stderr in one write.

    DDP ranks share the launching shell's stderr. ``print`` writes its ``end`` separately and
    a line-buffered stderr flushes in between, so another rank's message could land inside
    this one; a single write below the pipe's atomic size cannot be split.
    """
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _explain_preemption(stop: Preempted, args: Any) -> None:
    lines = [str(stop)]
    if SLURMEnvironment.detect():
        lines.append(
            "A requeued SLURM job (sbatch --requeue) resumes from it by itself, in the same run "
            "directory. To continue by hand:"
        )
    else:
        lines.append("Continue the run with:")
    command = resume_command(args, stop.ckpt_path)
    lines.append(f"  {command}" if command else f"  ... fit --ckpt_path {stop.ckpt_path}")
    lines.append(f"(exit status {stop.code}: 128 + {stop.signal_name})")
    if rank_zero_only.rank == 0:
        say("\n".join(lines))


def run(args: Any = None) -> DenseNetCLI:
    """Run the CLI in-process and return it (``args`` as on the command line, e.g.
    ``["fit", "--config", "experiments/imagenet121.yaml"]``).

    A run stopped by a preemption signal raises :class:`~densenet_lit.callbacks.Preempted`
    (a ``SystemExit`` with status 128 + signal) after printing how to resume it.
    """
    with warnings.catch_warnings():
        # The in-memory 32x32 data sets gather whole batches with one index op: no workers
        # needed, so Lightning's advice to add some is noise.
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        # validate/test/predict --ckpt_path: the checkpoint callback's state is not needed
        warnings.filterwarnings(
            "ignore", message=r".*callbacks used to create the checkpoint need to be provided.*"
        )
        # fit --ckpt_path continues in the checkpoint's run directory on purpose
        warnings.filterwarnings(
            "ignore", message=r"Checkpoint directory .* exists and is not empty"
        )
        # validate/test/predict of a checkpoint run in a directory of their own on purpose
        warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
        # val_size 0 (the paper's final runs): the data module returns no validation loader
        warnings.filterwarnings("ignore", message=r"Total length of .* across ranks is zero")
        _LATEST_CLI.clear()
        failed = False
        try:
            return DenseNetCLI(args=args)
        except Preempted as stop:
            _explain_preemption(stop, args)
            raise
        except BaseException as err:
            failed = True
            # Lightning's restore refused a checkpoint the CLI did not read first (the SLURM
            # requeue checkpoint it finds itself, `best`): the same clear error
            trainer = getattr(_LATEST_CLI[0], "trainer", None) if _LATEST_CLI else None
            ckpt = getattr(trainer, "ckpt_path", None)
            refused = refusal_error(err, ckpt, TRUST_OPT_IN) if ckpt else None
            if refused is not None:
                raise refused from err
            raise
        finally:
            untrained = untrained_run_dir(_LATEST_CLI[0]) if failed and _LATEST_CLI else None
            finish_wandb(sync_hint=untrained is None)  # no hint to upload what is deleted next
            if untrained is not None:
                shutil.rmtree(untrained, ignore_errors=True)
                with contextlib.suppress(OSError):
                    untrained.parent.rmdir()  # the experiment's folder, if this was its only run


def untrained_run_dir(cli: DenseNetCLI) -> Path | None:
    """The directory of ``cli``'s failed run if it is to go: a new run (not a resumed one, not
    one a DDP parent chose) that stopped before training began (a missing data set, a value
    rejected at setup), so that retries leave no trail of empty runs. Kept: a run whose
    Trainer took an optimizer step (its own logger may write elsewhere), and any directory
    with a checkpoint, metrics or ``hparams.yaml`` (written once setup is done)."""
    run_dir = cli.run_dir
    if run_dir is None or cli.resume_dir is not None or str(run_dir) not in _RUN_DIR_SET_HERE:
        return None
    trainer = getattr(cli, "trainer", None)
    if rank_zero_only.rank != 0 or getattr(trainer, "global_step", 0) or not run_dir.is_dir():
        return None
    kept = ("hparams.yaml", "metrics.csv")
    if any(run_dir.rglob("*.ckpt")) or any((run_dir / name).is_file() for name in kept):
        return None
    return run_dir


# Errors that say what to change wherever they are raised; ValueError and FileNotFoundError
# only when densenet_lit raised them (see is_user_error).
USER_ERRORS = (
    DataError,
    CheckpointError,
    FloatingPointError,
    yaml.YAMLError,
    MisconfigurationException,  # Lightning's, e.g. GPUs asked for where there are none
)
TRACEBACK_ENV = "DENSENET_LIT_TRACEBACK"
_PACKAGE_DIR = Path(__file__).resolve().parent


def _raised_in_package(err: BaseException) -> bool:
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(
        _PACKAGE_DIR
    )


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from, outermost first."""
    chain, current = [], err
    while current is not None and all(current is not c for c in chain):
        chain.append(current)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return chain


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` says what the user has to change: a ValueError or FileNotFoundError of
    densenet_lit's own checks (possibly wrapped by jsonargparse), or one of
    :data:`USER_ERRORS`. A ``ValueError`` from inside torch is not (it keeps its traceback)."""
    return any(
        isinstance(e, USER_ERRORS)
        or (isinstance(e, ValueError | FileNotFoundError) and _raised_in_package(e))
        for e in _chain(err)
    )


def user_error_message(err: BaseException) -> str:
    """The message to show for ``err``: that of the outermost exception in its chain raised
    by densenet_lit itself (jsonargparse wraps an error raised while it builds the data module
    or the model in its own; the outermost of ours says most in the user's terms), else
    ``err``'s."""
    ours = [e for e in _chain(err) if _raised_in_package(e) and str(e)]
    chosen = ours[0] if ours else err
    message = str(chosen) or type(chosen).__name__
    about_gpus = any(word in message.lower() for word in ("gpu", "cuda"))
    no_gpu = about_gpus and not torch.cuda.is_available()
    if isinstance(chosen, MisconfigurationException) and no_gpu:
        message += (
            " PyTorch sees no GPU on this machine: run with --trainer.accelerator cpu, "
            "without the GPU overlays (ddp.yaml, multinode.yaml)."
        )
    return message


def main(args: Any = None) -> None:
    """Entry point of ``python -m densenet_lit`` and the ``densenet-lit`` script.

    Like :func:`run`, but a user error (a bad value, missing data, an unusable checkpoint, a
    diverged run) ends the process with its message and exit status 1, not a traceback.
    """
    try:
        run(args)
    except Exception as err:
        if os.environ.get(TRACEBACK_ENV) or not is_user_error(err):
            raise
        rank = rank_zero_only.rank  # DDP ranks can fail differently: each says its own
        say(
            f"{f'[rank {rank}] ' if rank else ''}error: {user_error_message(err)}\n"
            f"(run with {TRACEBACK_ENV}=1 for the traceback)"
        )
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
