"""The LightningModule: a DenseNet, its loss and metrics, and the paper's optimisation recipe.

Every argument of :class:`DenseNetModule` is a plain value, so the whole network and recipe
can be set from YAML (``model.init_args`` is not needed: ``model: {depth: 40, ...}``).
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import RandomSampler, Sampler
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy

from densenet_lit.models import load_torchvision_weights
from densenet_lit.models.zoo import CIFAR_ARCH
from densenet_lit.network_config import build_network
from densenet_lit.network_config import model_key as model_key  # the CLI's import

# Model arguments that only change how the network runs, not what it computes: they may differ
# between a checkpoint and the run that resumes it (see densenet_lit.cli).
RUNTIME_ARGS = frozenset({"memory_efficient", "channels_last", "compile", "pretrained"})
# Checkpoint key of the running sums of the training metrics (DenseNetModule.on_save_checkpoint)
TRAIN_SUMS_KEY = "densenet_lit_train_sums"


class ClassificationError(MulticlassAccuracy):
    """Top-k error in percent: ``100 * (1 - accuracy)``, accuracy over all samples (micro).

    torchmetrics' input validation is off by default: it counts the distinct targets with
    ``torch.unique``, which makes the host wait for the GPU at every update, and the module
    computes ``cross_entropy`` on the same targets first, which rejects out-of-range labels.
    """

    def __init__(
        self, num_classes: int, top_k: int = 1, validate_args: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            top_k=top_k,
            average="micro",
            validate_args=validate_args,
            **kwargs,
        )

    def compute(self) -> Tensor:
        return 100.0 * (1.0 - super().compute())


class WeightedMean(Metric):
    """Mean of batch values weighted by batch size, e.g. the epoch's training loss.

    torchmetrics' ``MeanMetric`` copies an integer weight to the device with a blocking copy
    at every update (and ignores the weight with ``nan_strategy="disable"``); this one adds
    the Python number on the device.
    """

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("weight", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, value: Tensor, weight: int) -> None:
        self.total += value.detach().double() * weight
        self.weight += weight

    def compute(self) -> Tensor:
        return (self.total / self.weight).float()


def check_milestones(milestones: Sequence[float]) -> None:
    """Raise a ValueError for milestones that are neither fractions (< 1) nor whole epochs."""
    if not milestones:
        raise ValueError("milestones=[]: give at least one milestone, e.g. [0.5, 0.75].")
    for m in milestones:
        if m <= 0:
            raise ValueError(f"milestones={list(milestones)}: every milestone must be > 0.")
        if m >= 1 and m != int(m):
            raise ValueError(
                f"milestones={list(milestones)}: {m} is >= 1, so it is read as an epoch "
                "number, and must be whole. Give fractions of training as values below 1."
            )


def resolve_milestones(milestones: Sequence[float], max_epochs: int | None) -> list[int]:
    """Turn the ``milestones`` argument into epoch numbers (0-based, as Lightning counts).

    A value below 1 is a fraction of ``max_epochs``: the learning rate drops once the epoch
    reaches that fraction of training, i.e. at epoch ``ceil(f * max_epochs)`` (0.5 and 0.75 of
    300 epochs are epochs 150 and 225; lr 0.1 for epochs 0-149). A value of 1 or more is an
    epoch number and must be a whole number (30, 60 for ImageNet).
    """
    check_milestones(milestones)
    epochs = []
    for m in milestones:
        if m < 1:
            if max_epochs is None or max_epochs < 1:
                raise ValueError(
                    f"milestones={list(milestones)} contains fractions of the training length, "
                    f"but trainer.max_epochs={max_epochs} is not a positive number of epochs. "
                    "Set trainer.max_epochs or give the milestones as epoch numbers (>= 1)."
                )
            epochs.append(max(1, math.ceil(m * max_epochs - 1e-9)))
        else:
            epochs.append(int(m))
    return sorted(epochs)


def cosine_factor(step: int, total_steps: int) -> float:
    """The authors' cosine schedule: ``0.5 * (1 + cos(pi * t / T))``, held at 0 after T."""
    t = min(max(step, 0), total_steps)
    return 0.5 * (1.0 + math.cos(math.pi * t / total_steps))


# ------------------------------------------------------------------------------ randomness
_MASK64 = (1 << 64) - 1


def training_seed() -> int | None:
    """The seed of ``seed_everything`` (Lightning keeps it in ``PL_GLOBAL_SEED``), or None."""
    value = os.environ.get("PL_GLOBAL_SEED")
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def mix_seed(*values: int) -> int:
    """A 63-bit seed from a tuple of integers (SplitMix64 steps): neighbouring tuples such as
    ``(seed, rank, 7)`` and ``(seed, rank, 8)`` give unrelated random streams."""
    state = 0
    for value in values:
        z = ((state ^ (value & _MASK64)) + 0x9E3779B97F4A7C15) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        state = z ^ (z >> 31)
    return state >> 1


class _SkipFirst(Sampler):
    """The indices of ``sampler`` without the first ``count``: the rest of an epoch that was
    interrupted after ``count`` samples. ``len()`` stays the whole epoch's, as Lightning
    counts the batches already done itself."""

    def __init__(self, sampler: Sampler, count: int) -> None:
        self.sampler = sampler
        self.count = count

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.sampler), self.count, None)


class _WithSampleSeeds(Sampler):
    """The indices of ``sampler`` paired with a seed for each sample's augmentation, from
    ``(seed, position in the epoch)``; for data sets with ``accepts_sample_seeds``."""

    def __init__(self, sampler: Sampler, seed: int) -> None:
        self.sampler = sampler
        self.seed = seed

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for position, index in enumerate(self.sampler):
            yield index, mix_seed(self.seed, position)


def _unwrapped(sampler: Any) -> Any:
    """The loader's own sampler under the wrappers of an earlier epoch."""
    while isinstance(sampler, _SkipFirst | _WithSampleSeeds):
        sampler = sampler.sampler
    return sampler


def _loaders(loaders: Any) -> list[Any]:
    """The loaders of ``trainer.train_dataloader`` or ``trainer.val_dataloaders``, as a list."""
    if loaders is None:
        return []
    if isinstance(loaders, dict):
        return list(loaders.values())
    if isinstance(loaders, list | tuple):
        return list(loaders)
    return [loaders]


class DenseNetModule(LightningModule):
    """DenseNet trained with cross-entropy and SGD as in Huang et al. (CVPR 2017).

    Network:
        arch: ``densenet_cifar`` (the 3-block CIFAR/SVHN network, sized by ``depth`` and
            ``growth_rate``), one of the ImageNet names ``densenet121/169/201/161/264``,
            whose depth and growth rate come from the name, or ``densenet_imagenet``, the
            ImageNet DenseNet-BC sized by ``block_config`` and ``growth_rate``.
        depth: L of the CIFAR network (``densenet_cifar`` only; default 100).
        growth_rate: k of ``densenet_cifar`` (default 12) and ``densenet_imagenet``.
        bottleneck: 1x1 bottleneck layers, the "B" (``densenet_cifar`` only; default True).
        compression: theta of the transitions, 0.5 for "C", 1 for the plain DenseNet
            (``densenet_cifar`` only; default 0.5).
        block_config: layers of each dense block of ``densenet_imagenet``, e.g.
            ``[6, 12, 48, 48]`` (the authors' ``-d1 -d2 -d3 -d4``).
        drop_rate: dropout after every convolution but the first (paper: 0.2 on C10, C100
            and SVHN, the runs without augmentation).
        num_classes: classifier outputs; the CLI links it from the data module.
        in_channels: input channels; the CLI links it from the data module.
        memory_efficient: memory level, what the backward pass recomputes instead of keeping:
            ``False``/0 nothing; ``True``/1 concatenation and first BN-ReLU; 2 both BN-ReLUs;
            3 all but each layer's last convolution (see densenet_lit.models.memory_efficient).
        pretrained: path of a torchvision ImageNet weight file to initialise the network from
            at the start of fit/validate/test (not the classifier when ``num_classes`` is not
            1000); a checkpoint given with ``ckpt_path`` takes precedence.

    Recipe (defaults are the paper's):
        lr, momentum, nesterov, dampening, weight_decay: SGD; weight decay applies to every
            parameter, batch-norm weights and biases included, as in the authors' code.
        schedule: ``"step"`` divides the learning rate by ``1 / gamma`` at each milestone (per
            epoch); ``"cosine"`` is the official "cosine" models' per-iteration schedule
            ``lr = 0.5 * lr0 * (1 + cos(pi * t / T))`` with T the total number of steps.
        milestones: epochs of the step schedule. Values below 1 are fractions of
            ``trainer.max_epochs`` (0.5, 0.75 for CIFAR and SVHN), values of 1 or more are epoch
            numbers (30, 60 for ImageNet; 30, 60, 90 for DenseNet-161).
        gamma: the factor of each step (0.1).

    Metrics:
        top5: also report top-5 error; default: when there are at least 1000 classes.

    Speed (no effect on the result):
        channels_last: run the network in the channels-last memory format.
        compile: ``torch.compile`` the network (not the LightningModule); checkpoints keep the
            plain parameter names, so they load into uncompiled models.

    Randomness (when a seed is set, as ``seed_everything`` in every config does): the order of
    the training images in epoch ``e`` is the permutation drawn with seed ``seed + e`` (as
    Lightning's ``DistributedSampler`` draws it under DDP), and the augmentation and dropout of
    the ``n``-th training batch use the global torch RNG seeded from ``(seed, rank, n)`` just
    before that batch is fetched. Data sets that augment each image in loader worker
    processes (ImageNet; ``accepts_sample_seeds``) get a seed for every image instead, from
    ``(seed, rank, epoch, position in the epoch)``, so the augmentation of an image does not
    depend on the worker that decodes it, nor on the number of workers. So the randomness of
    a step depends on nothing before it: a run resumed from a checkpoint, at an epoch
    boundary or in the middle of an epoch, draws exactly what the uninterrupted run draws.
    Under DDP every rank augments with its own stream.
    """

    def __init__(
        self,
        arch: str = CIFAR_ARCH,
        depth: int | None = None,
        growth_rate: int | None = None,
        bottleneck: bool | None = None,
        compression: float | None = None,
        block_config: Sequence[int] | None = None,
        drop_rate: float = 0.0,
        num_classes: int = 10,
        in_channels: int = 3,
        memory_efficient: bool | int = False,
        pretrained: str | None = None,
        lr: float = 0.1,
        momentum: float = 0.9,
        nesterov: bool = True,
        dampening: float = 0.0,
        weight_decay: float = 1e-4,
        schedule: Literal["step", "cosine"] = "step",
        milestones: Sequence[float] = (0.5, 0.75),
        gamma: float = 0.1,
        top5: bool | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = build_network(
            arch,
            depth=depth,
            growth_rate=growth_rate,
            bottleneck=bottleneck,
            compression=compression,
            block_config=block_config,
            drop_rate=drop_rate,
            num_classes=num_classes,
            in_channels=in_channels,
            memory_efficient=memory_efficient,
        )
        self._pretrained_loaded = False
        if schedule not in ("step", "cosine"):
            raise ValueError(f"schedule={schedule!r}: expected 'step' or 'cosine'.")
        check_milestones(milestones)
        self.milestones = [float(m) for m in milestones]
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma={gamma!r}: expected 0 < gamma <= 1 (the paper: 0.1).")
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

        self.top5 = num_classes >= 1000 if top5 is None else top5
        if self.top5 and num_classes < 5:
            raise ValueError(f"top5=True needs at least 5 classes, got num_classes={num_classes}.")
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_error", ClassificationError(num_classes))
            if self.top5:
                setattr(self, f"{stage}_error_top5", ClassificationError(num_classes, top_k=5))
        self.train_loss = WeightedMean()
        self._resumed_train_sums: dict[str, dict[str, Tensor]] | None = None
        # The compiled network is kept outside the module tree (a plain attribute in
        # __dict__), so state_dict and checkpoints only hold `model.*`, never `_orig_mod.`.
        self.__dict__["_compiled_model"] = None

    # ----------------------------------------------------------------------------- forward
    def setup(self, stage: str) -> None:
        """Initialise from ``pretrained`` once, before Lightning restores any ``ckpt_path``.

        Loading here rather than in ``__init__`` keeps checkpoints self-contained: resuming,
        testing or ``load_from_checkpoint`` never need the weight file again, and a restored
        checkpoint (loaded after ``setup``) wins over the pretrained weights. With a number of
        classes other than ImageNet's 1000, the classifier keeps its fresh initialisation
        (transfer learning).
        """
        pretrained = self.hparams.get("pretrained")
        if pretrained and not self._pretrained_loaded:
            load_torchvision_weights(
                self.model, pretrained, exclude_classifier=self.hparams.num_classes != 1000
            )
            self._pretrained_loaded = True

    def configure_model(self) -> None:
        if self.hparams.compile and self.__dict__["_compiled_model"] is None:
            # static shapes: training batches all have one size (drop_last); each other size
            # (the last validation batch) gets its own graph rather than a dynamic one for all
            self.__dict__["_compiled_model"] = torch.compile(self.model, dynamic=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.hparams.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        compiled = self.__dict__["_compiled_model"]
        # `is None`, not truthiness: bool() of a compiled module calls len() and raises
        return (self.model if compiled is None else compiled)(x)

    def _shared_step(self, batch: Any, stage: str) -> Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        n = x.shape[0]
        on_step = stage == "train"
        if on_step:
            # a metric, so that its running sums can go into a checkpoint (see on_save_checkpoint)
            self.train_loss(loss, n)
            self.log("train/loss", self.train_loss, on_step=False, on_epoch=True)
        else:
            self.log(
                f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=n, sync_dist=True
            )
        error = getattr(self, f"{stage}_error")
        error(logits, y)
        self.log(f"{stage}/error", error, on_step=False, on_epoch=True, batch_size=n)
        if self.top5:
            error5 = getattr(self, f"{stage}_error_top5")
            error5(logits, y)
            self.log(f"{stage}/error_top5", error5, on_step=False, on_epoch=True, batch_size=n)
        if on_step:
            self.log(
                "train/loss_step", loss, on_step=True, on_epoch=False, batch_size=n, sync_dist=True
            )
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = self._shared_step(batch, "train")
        # Filled on the device: a Python float given to self.log becomes torch.tensor(value,
        # device=...), a blocking copy that makes the host wait for the GPU at every step.
        lr = torch.full((), self.optimizers().param_groups[0]["lr"], device=self.device)
        self.log("lr", lr, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return self(x).softmax(dim=-1)

    # -------------------------------------------------------------------------- randomness
    # The RNG is re-seeded at every point after which the next training batch is fetched and
    # augmented, so nothing drawn elsewhere (sanity check, validation loaders, a restart)
    # shifts the random numbers of a training step.
    def on_train_start(self) -> None:
        fit_loop = self.trainer.fit_loop
        progress = fit_loop.epoch_loop.batch_progress
        done = 0
        # a checkpoint of an epoch's last batch (every_n_train_steps, a SLURM requeue) counts
        # as mid-epoch, but Lightning closes that epoch itself and starts the next afresh
        if fit_loop.restarting and fit_loop.restarted_mid_epoch and not progress.is_last_batch:
            done = progress.current.processed
            if training_seed() is not None:
                # Lightning warns next that the loader cannot resume; the order is resumed here
                warnings.filterwarnings(
                    "ignore", message=r"You're resuming from a checkpoint that ended before"
                )
                rank_zero_info(
                    f"Resuming in the middle of epoch {self.current_epoch}: skipping its first "
                    f"{done} batches, in the order of the interrupted run."
                )
        self._restore_train_sums(mid_epoch=done > 0)
        self._prepare_epoch_order(skip_batches=done)
        self._restart_worker_loaders()
        self._seed_next_batch()

    def on_train_epoch_start(self) -> None:
        self._prepare_epoch_order()
        self._seed_next_batch()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._seed_next_batch()

    def on_validation_end(self) -> None:
        trainer = self.trainer
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._seed_next_batch()  # validation inside an epoch (val_check_interval)

    def _seed_next_batch(self) -> None:
        """Seed the global torch RNG (CPU and devices), which draws the augmentation (applied
        on the device by the data module) and dropout of the next training batch, from
        ``(seed, rank, number of training batches before it)``."""
        seed = training_seed()
        if seed is not None:
            n = self.trainer.fit_loop.epoch_loop.batch_progress.total.ready
            torch.manual_seed(mix_seed(seed, self.trainer.global_rank, n))

    def _prepare_epoch_order(self, skip_batches: int = 0) -> None:
        """Fix this epoch's order of training images and the seeds of their augmentation;
        skip those already trained on when the run resumes in the middle of an epoch.

        Single-device loaders that shuffle with a ``RandomSampler`` get a generator seeded with
        ``seed + epoch``; Lightning's ``DistributedSampler`` (DDP) already draws so. Loaders
        get their own generator for the seed of their worker processes, so that starting an
        iterator does not draw from the global RNG.
        """
        seed = training_seed()
        if seed is None:
            return
        epoch, rank = self.current_epoch, self.trainer.global_rank
        for loader in _loaders(self.trainer.val_dataloaders):
            # starting a validation iterator (also when a resumed run fast-forwards past a
            # validation) then does not draw its worker seed from the global RNG
            if getattr(loader, "generator", True) is None:
                loader.generator = torch.Generator().manual_seed(mix_seed(seed, rank, 3))
        for loader in _loaders(self.trainer.train_dataloader):
            if hasattr(loader, "generator"):
                loader.generator = torch.Generator().manual_seed(mix_seed(seed, rank, epoch, 1))
            batch_sampler = getattr(loader, "batch_sampler", None)
            sampler = _unwrapped(getattr(batch_sampler, "sampler", None))
            if sampler is None:
                continue
            if isinstance(sampler, RandomSampler) and not sampler.replacement:
                sampler.generator = torch.Generator().manual_seed(seed + epoch)
            elif callable(getattr(sampler, "set_epoch", None)):
                sampler.set_epoch(epoch)  # Lightning sets it too, but after a restart's first fetch
            order = sampler
            if getattr(getattr(loader, "dataset", None), "accepts_sample_seeds", False):
                order = _WithSampleSeeds(order, mix_seed(seed, rank, epoch, 2))
            if skip_batches:
                order = _SkipFirst(order, skip_batches * batch_sampler.batch_size)
            batch_sampler.sampler = order

    def _restart_worker_loaders(self) -> None:
        """Make the first epoch of this process fetch in the order just prepared.

        The Trainer starts the training loader's iterator before ``on_train_start``; a loader
        without worker processes has fetched nothing yet, but one with workers has already
        asked them for its first batches, in the order of the samplers as they were. Starting
        the iterator again (persistent workers are kept) discards those batches.
        """
        if training_seed() is None:
            return
        if not any(
            getattr(dl, "num_workers", 0) > 0 for dl in _loaders(self.trainer.train_dataloader)
        ):
            return
        fetcher = getattr(self.trainer.fit_loop, "_data_fetcher", None)  # Lightning 2.x
        if fetcher is None:
            rank_zero_warn(
                "Cannot restart the training loader's worker processes (this Lightning version "
                "has no fit_loop._data_fetcher): the first epoch's order of images may differ "
                "from a run resumed at the same point."
            )
            return
        iter(fetcher)

    # ------------------------------------------------- epoch means across a resumption
    def _train_metrics(self) -> dict[str, Metric]:
        names = ["train_loss", "train_error"] + (["train_error_top5"] if self.top5 else [])
        return {name: getattr(self, name) for name in names}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save the running sums of this epoch's training metrics, summed over the DDP ranks,
        so that a run resumed in the middle of the epoch logs the epoch means of all its
        batches, as the uninterrupted run does. Under DDP this is a collective: as Lightning
        requires, every rank must call ``trainer.save_checkpoint``."""
        sums: dict[str, dict[str, Tensor]] = {}
        for name, metric in self._train_metrics().items():
            with metric.sync_context():  # each state reduced over the ranks, then restored
                sums[name] = {k: v.detach().cpu().clone() for k, v in metric.metric_state.items()}
        checkpoint[TRAIN_SUMS_KEY] = sums

    def _restore_train_sums(self, mid_epoch: bool) -> None:
        """Resumed in the middle of an epoch: continue its training metrics from the sums of
        the checkpoint (on rank 0, which then holds those of every rank)."""
        sums, self._resumed_train_sums = self._resumed_train_sums, None
        if mid_epoch and sums is None:
            rank_zero_info(
                "The checkpoint holds no running sums of the training metrics (it predates "
                "them): this epoch's train/loss and train/error cover its remaining batches."
            )
        if not sums or not mid_epoch or self.trainer.global_rank != 0:
            return
        for name, metric in self._train_metrics().items():
            for key, value in sums.get(name, {}).items():
                current = getattr(metric, key)
                setattr(metric, key, value.to(device=current.device, dtype=current.dtype))

    # --------------------------------------------------------------------------- optimiser
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep fractional milestones in step with ``trainer.max_epochs`` on resumption, and
        keep the saved sums of the training metrics for :meth:`on_train_start`.

        The step scheduler's saved state holds the milestones resolved for the first run's
        ``max_epochs``; restoring it as is would silently keep them when a resumed run trains
        for a different number of epochs. They are re-resolved, and a warning says so.
        """
        self._resumed_train_sums = checkpoint.get(TRAIN_SUMS_KEY)
        trainer = self._trainer
        if self.hparams.schedule != "step" or trainer is None or trainer.state.fn != "fit":
            # validate/test/predict of a checkpoint never step the schedule
            return
        expected = resolve_milestones(self.milestones, self._trainer.max_epochs)
        for state in checkpoint.get("lr_schedulers", []):
            if "milestones" not in state:
                continue
            stored = sorted(Counter(state["milestones"]).elements())
            if stored != expected:
                rank_zero_warn(
                    f"The checkpoint's step schedule drops the learning rate at epochs {stored}; "
                    f"with model.milestones={self.milestones} and trainer.max_epochs="
                    f"{self._trainer.max_epochs} this run drops it at epochs {expected} instead. "
                    "Resume with the original max_epochs, or give milestones as epoch numbers "
                    "(>= 1), to keep the first run's schedule."
                )
                state["milestones"] = Counter(expected)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.SGD(
            self.parameters(),  # every parameter decays, BN and biases included (paper)
            lr=hp.lr,
            momentum=hp.momentum,
            dampening=hp.dampening,
            weight_decay=hp.weight_decay,
            nesterov=hp.nesterov,
        )
        if hp.schedule == "cosine":
            total = int(self.trainer.estimated_stepping_batches)
            if total < 1 or total == math.inf:
                raise ValueError(
                    "schedule='cosine' needs a finite training length: set trainer.max_epochs "
                    "or trainer.max_steps."
                )
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: cosine_factor(step, total)
            )
            interval = "step"
        else:
            epochs = resolve_milestones(self.milestones, self.trainer.max_epochs)
            scheduler = torch.optim.lr_scheduler.MultiStepLR(
                optimizer, milestones=epochs, gamma=hp.gamma
            )
            interval = "epoch"
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": interval, "frequency": 1},
        }
