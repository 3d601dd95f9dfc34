"""The resolved config of a run: written into the run directory (never overwriting; a
continuation gets ``config-1.yaml``, ...) and sent to W&B as the run's config, so that runs
can be filtered and grouped by any hyperparameter in the dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from densenet_lit.rundir import CONFIG_NAME, unique_path

# Keys of the parsed config that are about parsing, not about the run.
NOT_RUN_SETTINGS = ("config", "extends")


class RunConfigSaver(SaveConfigCallback):
    """Write the resolved config into the run directory and into W&B."""

    def __init__(self, parser: LightningArgumentParser, config: Namespace, **kwargs: Any) -> None:
        kwargs["save_to_log_dir"] = False
        kwargs.setdefault("config_filename", CONFIG_NAME)
        super().__init__(parser, config, **kwargs)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        run_dir = Path(trainer.default_root_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = unique_path(run_dir / self.config_filename)
        self.parser.save(self.config, str(path), skip_unset=False, overwrite=False)
        rank_zero_info(f"Run directory: {run_dir} (config: {path.name})")
        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not wandb_loggers:
            return
        try:
            resolved = yaml.safe_load(self.parser.dump(self.config, skip_unset=False))
            for key in NOT_RUN_SETTINGS:
                resolved.pop(key, None)
            for logger in wandb_loggers:
                logger.experiment.config.update(resolved, allow_val_change=True)
        except Exception as err:
            rank_zero_warn(f"Could not send the config to W&B: {err!r}")
