"""Entry points: :func:`run` (in-process, for tests and notebooks) and :func:`main`
(``python -m densenet_lit``), which turns user errors into one line and preemption into a
message saying how to continue."""

from __future__ import annotations

import os
import warnings
from typing import Any

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_only

from densenet_lit.callbacks import Preempted
from densenet_lit.cli.app import DenseNetCLI
from densenet_lit.cli.errors import TRACEBACK_ENV, is_user_error, say, user_error_message
from densenet_lit.rundir import resume_command

# Lightning warnings that say nothing to a user of this CLI.
QUIET = (
    # The in-memory 32x32 data sets gather whole batches with one index op: no workers needed.
    r".*does not have many workers.*",
    # validate/test/predict --ckpt_path: the checkpoint callbacks' state is not needed
    r".*callbacks used to create the checkpoint need to be provided.*",
    # fit --ckpt_path continues in the checkpoint's run directory on purpose
    r"Checkpoint directory .* exists and is not empty",
    # validate/test/predict of a checkpoint run in a directory of their own on purpose
    r"The dirpath has changed from",
    # val_size 0 (the paper's final runs): the data module returns no validation loader
    r"Total length of .* across ranks is zero",
    # the data modules resume their loaders themselves (densenet_lit.data.resume)
    r"You're resuming from a checkpoint that ended before",
    # EMAWeightAveraging: the module's configure_model only compiles, it shards nothing
    r"You're using the WeightAveraging callback with a model that overrides the configure_model",
)


def explain_preemption(stop: Preempted, args: Any) -> None:
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
        for message in QUIET:
            warnings.filterwarnings("ignore", message=message)
        try:
            return DenseNetCLI(args=args)
        except Preempted as stop:
            explain_preemption(stop, args)
            raise


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
