"""The exponential moving average (EMA) of the weights is Lightning's stock
``lightning.pytorch.callbacks.EMAWeightAveraging``, configured in YAML (decay, first step and
update interval are its init_args). This module holds what the rest of densenet_lit must know
about it: its checkpoint layout, which configs and callbacks are averaging ones, and the
checks of its values.

Checkpoint layout (``WeightAveraging.on_save_checkpoint``): ``state_dict`` holds the *averaged*
weights, ``current_model_state`` the trained (raw) ones and ``averaging_state`` the count of
updates. Every checkpoint written during fit has it (last, best, preemption, SLURM requeue:
each goes through ``trainer.save_checkpoint``). So validate/test/predict of a checkpoint, the
analysis tools and ``load_from_checkpoint`` get the EMA weights from ``state_dict``, and a fit
that resumes with the callback reloads the raw weights and the average.

Why the stock callback needs the CLI's help (:mod:`densenet_lit.cli.app`), without a subclass:

* outside fit it has nothing to restore and only warns, so validate/test/predict runs leave it
  out (the checkpoint's ``state_dict`` already is the average);
* after fit it keeps its average, and a test of the ``best`` checkpoint in the same process
  would reload that checkpoint's raw weights: the test after fit runs without it (at the end
  of fit the module holds the averaged weights, as does the checkpoint's ``state_dict``);
* a fit resumed from an averaged checkpoint without the callback would train on from the
  averaged weights: an error (:func:`check_resume`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lightning.pytorch.callbacks import Callback, EMAWeightAveraging, WeightAveraging

from densenet_lit.checkpoints import RAW_WEIGHTS_KEY
from densenet_lit.class_path import named_class


def is_averaging(callback: Any) -> bool:
    return isinstance(callback, WeightAveraging)


def without_averaging(callbacks: Iterable[Callback]) -> list[Callback]:
    return [c for c in callbacks if not is_averaging(c)]


def holds_averaged_weights(checkpoint: dict[str, Any]) -> bool:
    """Whether ``state_dict`` of a checkpoint is an average (and the raw weights are apart)."""
    return RAW_WEIGHTS_KEY in checkpoint


def config_class(entry: Any) -> type | None:
    """The class a ``trainer.callbacks`` entry of a parsed config names (None if none)."""
    return named_class(entry.get("class_path") if hasattr(entry, "get") else None)


def averaging_configs(callbacks_cfg: Any) -> list[Any]:
    """The entries of ``trainer.callbacks`` (parsed, not built) that average the weights."""
    if callbacks_cfg is None:
        return []
    entries = callbacks_cfg if isinstance(callbacks_cfg, list) else [callbacks_cfg]
    return [e for e in entries if (c := config_class(e)) and issubclass(c, WeightAveraging)]


def check_ema_values(callbacks_cfg: Any) -> None:
    """Each EMA callback of the config: decay in (0, 1), an update interval of at least 1
    step, and first step / epoch None or >= 0. A ValueError names the value."""
    for entry in averaging_configs(callbacks_cfg):
        if not issubclass(config_class(entry), EMAWeightAveraging):
            continue
        args = entry.get("init_args") or {}
        get = args.get if hasattr(args, "get") else dict(args).get
        decay = get("decay", 0.999)
        if not (isinstance(decay, int | float) and 0.0 < decay < 1.0):
            raise ValueError(
                f"EMAWeightAveraging decay={decay!r}: expected 0 < decay < 1, the weight of the "
                "average at each update (e.g. 0.9998 per 32 steps; see "
                "experiments/imagenet121_modern.yaml for how it scales with the batch)."
            )
        every = get("update_every_n_steps", 1)
        if not (isinstance(every, int) and every >= 1):
            raise ValueError(
                f"EMAWeightAveraging update_every_n_steps={every!r}: expected a whole number "
                "of optimizer steps >= 1."
            )
        for name in ("update_starting_at_step", "update_starting_at_epoch"):
            value = get(name)
            if value is not None and not (isinstance(value, int) and value >= 0):
                raise ValueError(
                    f"EMAWeightAveraging {name}={value!r}: expected None (from the start) or "
                    "a step / epoch number >= 0."
                )


def check_resume(checkpoint: dict[str, Any], averaging: bool, ckpt_path: Any) -> None:
    """A fit resumed from a checkpoint of an averaging run needs the averaging callback."""
    if holds_averaged_weights(checkpoint) and not averaging:
        raise ValueError(
            f"The checkpoint {ckpt_path} was written by a run with an EMA of the weights "
            "(EMAWeightAveraging): its state_dict holds the average, the trained weights are "
            f"in '{RAW_WEIGHTS_KEY}'. Resuming it without the callback would train on from "
            "the average. Resume with the run's config (its trainer.callbacks), or evaluate "
            "the checkpoint with validate/test instead."
        )
