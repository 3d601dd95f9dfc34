"""Sorting user errors from bugs, and saying them in one line.

A user error (a bad value, missing data, an unusable checkpoint, a diverged run) ends the
process with ``error: <message>`` and exit status 1; a bug keeps its traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import yaml
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from densenet_lit.checkpoints import CheckpointError
from densenet_lit.data.errors import DataError

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
PACKAGE_DIR = Path(__file__).resolve().parent.parent


def raised_in_package(err: BaseException) -> bool:
    """Whether the innermost frame of ``err``'s traceback is densenet_lit's own code."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(
        PACKAGE_DIR
    )


def exception_chain(err: BaseException) -> list[BaseException]:
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
        or (isinstance(e, ValueError | FileNotFoundError) and raised_in_package(e))
        for e in exception_chain(err)
    )


def user_error_message(err: BaseException) -> str:
    """The message to show for ``err``: that of the outermost exception in its chain raised
    by densenet_lit itself (jsonargparse wraps an error raised while it builds the data module
    or the model in its own; the outermost of ours says most in the user's terms), else
    ``err``'s."""
    ours = [e for e in exception_chain(err) if raised_in_package(e) and str(e)]
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


def say(text: str) -> None:
    """Write ``text`` and a newline to stderr in one write.

    DDP ranks share the launching shell's stderr. ``print`` writes its ``end`` separately and
    a line-buffered stderr flushes in between, so another rank's message could land inside
    this one; a single write below the pipe's atomic size cannot be split.
    """
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
