"""Checks before any training step: each turns a mistake that would fail late (or silently)
into a clear error naming the value and what to change.

* ``--ckpt_path``: the checkpoint is readable, its model arguments are the config's, and its
  weights fit the network built (another model or data set would fail inside Lightning);
  a fit resumes a checkpoint of an EMA run only with the EMA callback;
* the data's images are large enough for the network;
* the global batch splits evenly over the processes (before DDP starts them);
* SyncBatchNorm is not asked for on the CPU;
* ``validate`` has a validation set; ``--run.test_ckpt`` names a file.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.strategies import ParallelStrategy
from lightning.pytorch.utilities import rank_zero_info

from densenet_lit.callbacks.averaging import check_resume
from densenet_lit.checkpoints import CheckpointError, UntrustedCheckpointError, load_checkpoint
from densenet_lit.cli.options import TRUST_OPT_IN
from densenet_lit.data.base import batch_per_process
from densenet_lit.models.spec import RUNTIME_ARGS, is_network_arg, network_spec
from densenet_lit.models.zoo import CIFAR_ARCH
from densenet_lit.rundir import config_files, other_checkpoints, run_dir_of


class CheckpointMismatchError(CheckpointError):
    """The model arguments given differ from those stored in the checkpoint."""


def read_checkpoint(ckpt_path: str | Path, trust: bool = False) -> dict[str, Any]:
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
        others = other_checkpoints(path)
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


def comparable(args: dict[str, Any]) -> dict[str, Any]:
    """Module arguments as a checkpoint and a config can be compared: the network's arguments
    as :func:`~densenet_lit.models.spec.network_spec` resolves them (None and the default
    agree), lists for tuples, runtime-only options and private keys left out."""
    out = {k: v for k, v in args.items() if not k.startswith("_") and k not in RUNTIME_ARGS}
    with contextlib.suppress(ValueError):  # an unknown arch is reported where it is built
        out.update(network_spec(args).kwargs)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def compare_with_checkpoint(given: dict[str, Any], stored: dict[str, Any]) -> dict[str, tuple]:
    """Model arguments whose given value differs from the checkpoint's: ``{key: (given, ckpt)}``.

    Keys the config does not hold (linked from the data module) and the runtime-only
    arguments (compile, channels_last, memory_efficient, pretrained) are not compared.
    """
    given_args, stored_args = comparable(given), comparable(stored)
    return {
        key: (given_args[key], value)
        for key, value in stored_args.items()
        if key in given and key in given_args and given_args[key] != value
    }


def split_recipe(
    differ: dict[str, tuple], given: dict[str, Any], stored: dict[str, Any]
) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """``differ`` split into the network's arguments and the recipe (every other argument:
    learning rate, schedule, weight decay, metrics ...), by the architectures of both sides."""
    archs = tuple({given.get("arch") or CIFAR_ARCH, stored.get("arch") or CIFAR_ARCH})
    network = {k: v for k, v in differ.items() if is_network_arg(k, archs)}
    return network, {k: v for k, v in differ.items() if k not in network}


def check_checkpoint_args(
    ckpt_path: str,
    model_cfg: Any,
    trust: bool = False,
    stage: str = "fit",
    averaging: bool = False,
) -> dict:
    """Read ``ckpt_path``, check its model arguments against the config's and return its
    weights' shapes (name -> shape) for :func:`check_checkpoint_fits`.

    ``fit`` continues the checkpoint's network and recipe: any difference is an error, and
    an averaged checkpoint needs the EMA callback (``averaging``). The other stages
    (``validate``, ``test``, ``predict``) only evaluate its network: recipe values that
    differ are a one-line note, network arguments that differ an error."""
    ckpt = read_checkpoint(ckpt_path, trust=trust)
    if stage == "fit":
        check_resume(ckpt, averaging, ckpt_path)
    shapes = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items() if hasattr(v, "shape")}
    stored = dict(ckpt.get("hyper_parameters", {}))
    del ckpt
    given = model_cfg.as_dict() if isinstance(model_cfg, Namespace) else dict(model_cfg)
    differ = compare_with_checkpoint(given, stored)
    if stage != "fit":
        differ, recipe = split_recipe(differ, given, stored)
        if recipe:
            values = "; ".join(
                f"model.{k}: {v!r} (checkpoint {c!r})" for k, (v, c) in recipe.items()
            )
            rank_zero_info(
                f"Note: {stage} evaluates the checkpoint's network; these recipe values differ "
                f"from the checkpoint's and are not used: {values}"
            )
    if differ:
        rows = "\n".join(
            f"  model.{k}: given {v!r}, checkpoint {c!r}" for k, (v, c) in differ.items()
        )
        run_dir = run_dir_of(Path(ckpt_path).resolve())
        configs = config_files(run_dir) if run_dir is not None else []
        hint_text = f" (that run's config is {configs[-1]})" if configs else ""
        raise CheckpointMismatchError(
            f"The model arguments differ from those of the checkpoint {ckpt_path}:\n{rows}\n"
            "A checkpoint restores its own network and recipe, so these values would be "
            "ignored. Use the checkpoint's values (pass the config it was trained with"
            f"{hint_text}), or start a new run without --ckpt_path."
        )
    return shapes


def check_checkpoint_fits(shapes: dict | None, model: LightningModule, ckpt_path: Any) -> None:
    """Before Lightning loads ``--ckpt_path``: do its weights fit the network built?"""
    if shapes is None or model is None:
        return
    problems = compare_state_shapes(
        shapes, {k: tuple(v.shape) for k, v in model.state_dict().items()}
    )
    if problems:
        rows = "\n".join(f"  {p}" for p in problems[:8])
        raise CheckpointMismatchError(
            f"The checkpoint {ckpt_path} does not fit this network:\n{rows}\nIt was "
            "trained with another model or data set (num_classes and in_channels come from "
            "the data module). Use the config it was trained with (config.yaml in its run "
            "directory), or start a new run without --ckpt_path."
        )


def check_image_size(datamodule: LightningDataModule, model: LightningModule) -> None:
    """Can the network take the data's images at all?"""
    size = getattr(datamodule, "image_size", None)
    network = getattr(model, "model", None)
    if not isinstance(size, int) or not hasattr(network, "feature_map_size"):
        return
    if network.feature_map_size(size) < 1:
        arch = model.hparams.get("arch")
        smallest = network.smallest_image_size()
        raise ValueError(
            f"model.arch={arch!r} cannot take the data's {size}x{size} images: its stem and "
            f"transitions halve them to nothing. It needs images of at least "
            f"{smallest}x{smallest} (ImageNet: 224). For small images use "
            f"model.arch={CIFAR_ARCH!r}."
        )


def check_global_batch(datamodule: LightningDataModule, trainer: Trainer) -> None:
    """The global batch must split evenly over the processes, checked before DDP starts them
    (the data module checks it again in each process)."""
    batch_size = getattr(datamodule, "batch_size", None)
    if isinstance(batch_size, int):
        batch_per_process(batch_size, trainer.world_size)


def check_sync_batchnorm(trainer_cfg: Any, trainer: Trainer) -> None:
    strategy = trainer.strategy
    if (
        trainer_cfg.get("sync_batchnorm")
        and isinstance(strategy, ParallelStrategy)
        and strategy.root_device.type == "cpu"
    ):
        raise ValueError(
            "trainer.sync_batchnorm=true needs GPUs: PyTorch's SyncBatchNorm does not run on "
            "the CPU (DDP refuses it). Remove --trainer.sync_batchnorm for CPU runs; each "
            "process then normalises with the statistics of its own part of the batch."
        )


def check_has_validation(datamodule: LightningDataModule) -> None:
    if getattr(datamodule, "has_validation_set", True) is False:
        raise ValueError(
            "validate: this config has no validation set (data.val_size=0: the paper's "
            "final runs train on all training images), so there is nothing to validate on. "
            "Use `test` for the test set; for a run trained with a held-out split, give "
            "its config (e.g. --config experiments/overlays/holdout.yaml)."
        )


def check_test_ckpt(test_ckpt: str | None, trust: bool = False) -> None:
    """``--run.test_ckpt`` names a readable checkpoint, refused before training, not after."""
    if test_ckpt in (None, "best"):
        return
    if not Path(test_ckpt).is_file():
        raise FileNotFoundError(
            f"--run.test_ckpt {test_ckpt}: no such checkpoint file. Give 'best' (the "
            "checkpoint with the lowest validation error), null (the weights at the end "
            "of training) or the path of a .ckpt file."
        )
    read_checkpoint(test_ckpt, trust)


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
