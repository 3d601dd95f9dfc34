"""The LightningCLI of the project: it wires a run together and leaves every job to the module
that owns it (run directories: :mod:`densenet_lit.rundir`; checks before training:
:mod:`.preflight`; logging: :mod:`densenet_lit.tracking`; callbacks: :mod:`densenet_lit.callbacks`).

What it adds to Lightning's CLI:

* ``model`` is :class:`~densenet_lit.module.DenseNetModule`; ``data`` is any
  ``LightningDataModule`` given by ``class_path``; ``num_classes`` and ``in_channels`` of the
  model come from the data module (linked; do not set them). Config files compose with
  ``extends:`` (:mod:`.extends`).
* Every run gets its own directory ``<root>/<experiment>/<run-id>/`` (see
  :mod:`densenet_lit.rundir`); nothing is ever overwritten.
* Logging goes to ``metrics.csv`` and to W&B (one W&B run per training run, continued when
  the run resumes; offline without an API key or network).
* ``--ckpt_path`` resumes: ``last`` picks the newest checkpoint of the experiment, ``auto``
  does too but starts the run when there is none, a run directory picks its newest one;
  ``fit`` continues in the run directory of the checkpoint.
* ``--run.test_after_fit true`` tests at the end of ``fit`` (the paper's final runs).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

from densenet_lit.callbacks import PredictionWriter, default_callbacks, run_checkpoint_callbacks
from densenet_lit.callbacks.averaging import (
    averaging_configs,
    check_ema_values,
    is_averaging,
    without_averaging,
)
from densenet_lit.callbacks.checkpoints import monitors_validation
from densenet_lit.checkpoints import refusal_error
from densenet_lit.ckpt_decision import shared_ckpt_path
from densenet_lit.cli import preflight
from densenet_lit.cli.extends import EXTENDS_KEY, expand_config_args
from densenet_lit.cli.options import TRUST_OPT_IN, add_run_options
from densenet_lit.cli.parser import DenseNetArgumentParser
from densenet_lit.module import DenseNetModule
from densenet_lit.recipe import PAPER, recipe_name
from densenet_lit.rundir import (
    DEFAULT_ROOT,
    choose_run_dir,
    chosen_here,
    experiment_name,
    hand_down,
    job_run_dir,
    newer_requeue_checkpoint,
    removable_if_untrained,
    resolve_ckpt_path,
    run_dir_of,
)
from densenet_lit.tracking import RunCSVLogger
from densenet_lit.tracking.config import RunConfigSaver
from densenet_lit.tracking.paper import PaperComparison
from densenet_lit.tracking.wandb import WandbRun, finish_wandb, start_wandb


def slurm_requeued() -> bool:
    """Whether this process is a SLURM job that was requeued (after preemption or a time-limit
    signal): SLURM counts the restarts in ``SLURM_RESTART_COUNT``."""
    try:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return False
    return restarts > 0 and SLURMEnvironment.detect()


class DenseNetCLI(LightningCLI):
    """LightningCLI with run directories, CSV + W&B logging and checked resumption."""

    def __init__(self, args: Any = None, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_callback", RunConfigSaver)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("parser_kwargs", {"prog": "python -m densenet_lit"})
        kwargs.setdefault("parser_class", DenseNetArgumentParser)
        kwargs.setdefault("trainer_defaults", {"callbacks": default_callbacks()})
        self.run_dir: Path | None = None
        self.resume_dir: Path | None = None
        self.experiment: str | None = None
        self.ckpt_path: str | None = None
        self.ckpt_shapes: dict[str, tuple[int, ...]] | None = None
        self.given_model: Any = None
        self.wandb_runs: list[WandbRun] = []
        self.parser_family: list[LightningArgumentParser] = []
        try:
            super().__init__(DenseNetModule, LightningDataModule, args=args, **kwargs)
        except BaseException as err:
            self.close(failed=True)
            # Lightning's restore refused a checkpoint the CLI did not read first (the SLURM
            # requeue checkpoint it finds itself, `best`): the same clear error
            ckpt = getattr(getattr(self, "trainer", None), "ckpt_path", None)
            refused = refusal_error(err, ckpt, TRUST_OPT_IN) if ckpt else None
            if refused is not None:
                raise refused from err
            raise
        self.close(failed=False)

    # parser -----------------------------------------------------------------------------
    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """Every parser of this CLI (root and subcommands) knows the others, for suggestions."""
        parser = super().init_parser(**kwargs)
        if isinstance(parser, DenseNetArgumentParser):
            self.parser_family.append(parser)
            parser.family = self.parser_family
        return parser

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
        add_run_options(parser)

    def section(self, name: str, config: Namespace | None = None) -> Any:
        """``config[subcommand][name]`` (or ``config[name]`` without a subcommand)."""
        config = self.config if config is None else config
        if self.subcommand:
            config = config[self.subcommand]
        return config.get(name)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        if isinstance(args, list | tuple):
            args = expand_config_args([str(a) for a in args])
        elif args is None:
            args = expand_config_args(sys.argv[1:])
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
        self.root = Path(cfg.trainer.default_root_dir or DEFAULT_ROOT)
        given = cfg.get("ckpt_path")
        # every process of the run takes the decision of rank zero (see ckpt_decision)
        job_dir = job_run_dir(self.root, self.experiment)
        decide = functools.partial(self.decide_ckpt_path, given, sub, job_dir)
        ckpt_path = shared_ckpt_path(given, decide, job_dir) if given else given
        trust = cfg.run.trust_checkpoint
        check_ema_values(cfg.trainer.get("callbacks"))
        cfg.weights_only = preflight.weights_only_for(cfg.get("weights_only"), trust)
        if sub == "fit" and cfg.run.test_after_fit:
            preflight.check_test_ckpt(cfg.run.test_ckpt, trust)
        if ckpt_path and Path(ckpt_path).is_file():
            averaging = bool(averaging_configs(cfg.trainer.get("callbacks")))
            self.ckpt_shapes = preflight.check_checkpoint_args(
                ckpt_path, cfg.model, trust, stage=sub, averaging=averaging
            )
            if sub == "fit":
                self.resume_dir = run_dir_of(ckpt_path)
        # Lightning would replace the model arguments by the checkpoint's without a word; they
        # have been checked to agree (runtime options may differ), so the checkpoint is handed
        # back only when the classes are built (before_instantiate_classes).
        self.ckpt_path, cfg.ckpt_path = ckpt_path, None

    def decide_ckpt_path(self, given: str, sub: str, job_dir: Path | None) -> str | None:
        """``--ckpt_path`` as a file (None: start the run), :func:`resolve_ckpt_path`; a
        requeued SLURM job's ``fit`` takes the requeue checkpoint saved since, in the
        checkpoint's run directory or the job's own (``job_dir``), if any."""
        ckpt_path = resolve_ckpt_path(given, self.root, self.experiment)
        if sub == "fit" and ckpt_path and slurm_requeued():
            newer = newer_requeue_checkpoint(ckpt_path, job_dir)
            if newer:
                rank_zero_info(f"Requeued SLURM job: resuming from {newer} instead of {ckpt_path}")
                ckpt_path = newer
        return ckpt_path

    def before_instantiate_classes(self) -> None:
        if self.subcommand is None:
            return
        self.config[self.subcommand].ckpt_path = self.ckpt_path
        if self.resume_dir is not None:
            # fit --ckpt_path continues that run in its own directory: checkpoints (and the
            # best-so-far bookkeeping) carry on, metrics.csv and the W&B run are continued,
            # the config of the continuation is saved as config-1.yaml, ...
            self.run_dir = hand_down(self.resume_dir)
            rank_zero_info(f"Resuming the run in {self.run_dir}")
        else:
            self.run_dir = choose_run_dir(self.root, self.experiment)

    # trainer ----------------------------------------------------------------------------
    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        cfg = self.section("trainer", self.config_init)
        run = self.section("run")
        kwargs["default_root_dir"] = str(self.run_dir)
        logger = cfg.get("logger")
        configured = cfg.get("callbacks") or []
        configured = configured if isinstance(configured, list) else [configured]
        if cfg.get("fast_dev_run"):
            kwargs["logger"] = False
        elif logger is None or logger is True:
            kwargs["logger"] = self.make_loggers(run, any(is_averaging(c) for c in configured))
        cfg["callbacks"] = self.run_callbacks(cfg)
        # a default callback the user configured (`--trainer.callbacks+=FiniteLossGuard
        # --trainer.callbacks.check every_step`) replaces the default instance
        given = {type(c) for c in cfg["callbacks"]}
        defaults = self.trainer_defaults.get("callbacks") or []
        self.trainer_defaults["callbacks"] = [c for c in defaults if type(c) not in given]
        return super().instantiate_trainer(**kwargs)

    def run_callbacks(self, cfg: Any) -> list:
        """The configured callbacks, with the checkpoints of a run (last and best) where none
        are configured, the prediction writer for ``predict``, and without a callback ranking
        checkpoints by a validation metric when there is no validation set."""
        callbacks = cfg.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
        if (
            self.subcommand == "fit"
            and cfg.get("enable_checkpointing") is not False
            and not any(isinstance(c, ModelCheckpoint) for c in callbacks)
        ):
            callbacks += run_checkpoint_callbacks()
        no_validation = getattr(self.datamodule, "has_validation_set", True) is False or (
            cfg.get("limit_val_batches") == 0
        )
        if self.subcommand == "fit" and no_validation:
            ranked = [c for c in callbacks if monitors_validation(c)]
            if ranked:
                rank_zero_info("No validation set in this run: keeping only last.ckpt.")
                callbacks = [c for c in callbacks if c not in ranked]
        if self.subcommand != "fit":
            # an EMA callback has nothing to restore outside fit (it would only warn): the
            # checkpoint's state_dict already holds the averaged weights
            callbacks = without_averaging(callbacks)
        if self.wandb_runs:  # the network's costs and the paper's number beside the run
            callbacks.append(PaperComparison())
        if self.subcommand == "predict" and not any(
            isinstance(c, BasePredictionWriter) for c in callbacks
        ):
            callbacks.append(PredictionWriter())  # predictions.pt in the run directory
        return callbacks

    def make_loggers(self, run: Namespace, averaged: bool = False) -> list[Logger]:
        """CSV and W&B loggers. The W&B group is ``<dataset>-<model>``, with ``-modern`` for
        a run of the modern recipe (derived from its values, :mod:`densenet_lit.recipe`;
        ``averaged``: an EMA callback), and the tags name the recipe, so paper and modern
        runs sit side by side in one project."""
        loggers: list[Logger] = [RunCSVLogger(self.run_dir)]
        if not run.wandb:
            return loggers
        dataset = getattr(self.datamodule, "benchmark", None) or "custom"
        model = self.model.spec.key + ("_cosine" if self.model.hparams.schedule == "cosine" else "")
        data_hparams = getattr(self.datamodule, "hparams", None) or {}
        recipe = recipe_name(self.model.hparams, data_hparams, averaged)
        tags = [dataset, model, recipe, self.experiment, self.subcommand, *run.tags]
        group = f"{dataset}-{model}" + ("" if recipe == PAPER else f"-{recipe}")
        wandb_run = start_wandb(
            self.run_dir,
            name=f"{self.experiment}/{self.run_dir.name}",
            group=group,
            tags=list(dict.fromkeys(t[:64] for t in tags)),
            project=run.wandb_project,
            job_type=self.subcommand,
            log_model=run.wandb_log_model,
        )
        if wandb_run is not None:
            self.wandb_runs.append(wandb_run)
            loggers.append(wandb_run.logger)
        return loggers

    # checks before each subcommand ------------------------------------------------------
    def check_checkpoint_and_images(self) -> None:
        preflight.check_checkpoint_fits(self.ckpt_shapes, self.model, self.ckpt_path)
        preflight.check_image_size(self.datamodule, self.model)

    def before_fit(self) -> None:
        self.check_checkpoint_and_images()
        for wandb_run in self.wandb_runs:  # uploaded at the end (--run.wandb_log_model true)
            wandb_run.logger.add_checkpoint_callbacks(self.trainer.checkpoint_callbacks)
        preflight.check_global_batch(self.datamodule, self.trainer)
        preflight.check_sync_batchnorm(self.section("trainer", self.config_init), self.trainer)

    def before_validate(self) -> None:
        self.check_checkpoint_and_images()
        preflight.check_has_validation(self.datamodule)

    def before_test(self) -> None:
        self.check_checkpoint_and_images()

    def before_predict(self) -> None:
        self.check_checkpoint_and_images()

    def after_fit(self) -> None:
        run = self.section("run")
        if not run.test_after_fit or self.trainer.interrupted:
            return
        ckpt_path = run.test_ckpt
        if self.trainer.fast_dev_run:
            ckpt_path = None  # fast_dev_run saves no checkpoints
        elif ckpt_path == "best":
            # the callback ranking by validation error (the first one keeps last.ckpt)
            best = [cb for cb in self.trainer.checkpoint_callbacks if monitors_validation(cb)]
            ckpt_path = best[0].best_model_path if best else ""
            if not ckpt_path:
                rank_zero_warn(
                    "run.test_ckpt='best' but no best checkpoint was kept (no validation set?): "
                    "testing the weights at the end of training."
                )
                ckpt_path = None
        # the test runs without an EMA callback: it would reload the raw weights of a 'best'
        # checkpoint; the module and the checkpoints' state_dict hold the averaged ones
        self.trainer.callbacks = without_averaging(self.trainer.callbacks)
        self.trainer.test(
            self.model,
            datamodule=self.datamodule,
            ckpt_path=ckpt_path,
            weights_only=not run.trust_checkpoint,
        )

    # the end ----------------------------------------------------------------------------
    def close(self, failed: bool) -> None:
        """Finish this run's W&B runs; after a failure, remove the directory of a new run that
        stopped before training began, so that retries leave no trail of empty runs."""
        untrained = self.run_dir if failed and self.is_untrained() else None
        finish_wandb(self.wandb_runs, sync_hint=untrained is None)
        if untrained is not None:
            shutil.rmtree(untrained, ignore_errors=True)
            with contextlib.suppress(OSError):  # the experiment's folder, if this was its only run
                untrained.parent.rmdir()

    def is_untrained(self) -> bool:
        """A new run (not resumed, not one a DDP parent chose) that took no optimizer step and
        left nothing of value (see :func:`densenet_lit.rundir.removable_if_untrained`)."""
        run_dir = self.run_dir
        if run_dir is None or self.resume_dir is not None or not chosen_here(run_dir):
            return False
        trainer = getattr(self, "trainer", None)
        if rank_zero_only.rank != 0 or getattr(trainer, "global_step", 0):
            return False
        return run_dir.is_dir() and removable_if_untrained(run_dir)


__all__ = ["DenseNetCLI", "LightningDataModule"]
