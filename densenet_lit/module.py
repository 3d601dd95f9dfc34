"""The LightningModule: a DenseNet, its loss and metrics, and the paper's optimisation recipe.

Every argument of :class:`DenseNetModule` is a plain value, so the whole network and recipe
can be set from YAML (``model.init_args`` is not needed: ``model: {depth: 40, ...}``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import Metric

from densenet_lit.benchmarks import IMAGENET_CLASSES
from densenet_lit.collectives import is_distributed, mean_over_ranks
from densenet_lit.data.ten_crop import crop_averaged_logits
from densenet_lit.metric_names import (
    ERROR,
    ERROR_TOP5,
    LOSS,
    LR,
    TRAIN_LOSS_STEP,
    metric_name,
)
from densenet_lit.metrics import ClassificationError, WeightedMean
from densenet_lit.mixing import BatchMixing
from densenet_lit.models import load_torchvision_weights
from densenet_lit.models.spec import network_spec
from densenet_lit.models.zoo import CIFAR_ARCH
from densenet_lit.optim import build_schedule, build_sgd
from densenet_lit.recipe import check_label_smoothing
from densenet_lit.schedule import (  # cosine_factor: re-exported
    check_milestones,
    check_warmup,
    cosine_factor,  # noqa: F401
    resolve_milestones,
)

# Checkpoint key of the running sums of the training metrics (DenseNetModule.on_save_checkpoint)
TRAIN_SUMS_KEY = "densenet_lit_train_sums"


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

    Modern recipe (each off by default; see :mod:`densenet_lit.recipe` and the README):
        label_smoothing: of the training loss, in [0, 1) (torch's cross-entropy argument).
        mixup_alpha, cutmix_alpha: Beta(alpha, alpha) of MixUp and CutMix on the training
            batch (0 = off); mixup_prob, cutmix_prob: the probability of each per batch
            (None: an equal share among those on). See :mod:`densenet_lit.mixing`.
        warmup_epochs or warmup_steps: a linear warm-up of the learning rate from
            ``warmup_start_factor`` x lr, per step, before the step or cosine schedule.
        norm_weight_decay: weight decay of the normalisation layers' parameters and of all
            biases (a parameter group of their own); None = ``weight_decay`` like the rest.
        An EMA of the weights is Lightning's ``EMAWeightAveraging`` callback (the configs).

    Metrics:
        top5: also report top-5 error; default: when there are at least 1000 classes.

    Speed (no effect on the result):
        channels_last: run the network in the channels-last memory format.
        compile: ``torch.compile`` the network (not the LightningModule); checkpoints keep the
            plain parameter names, so they load into uncompiled models.

    Randomness: the order of the training images, their augmentation and dropout depend
    only on the seed and the step, so a resumed run draws what the uninterrupted run draws;
    the data modules own this (see :mod:`densenet_lit.data.resume`).
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
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mixup_prob: float | None = None,
        cutmix_prob: float | None = None,
        warmup_epochs: float = 0.0,
        warmup_steps: int = 0,
        warmup_start_factor: float = 0.01,
        norm_weight_decay: float | None = None,
        top5: bool | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.spec = network_spec(self.hparams)
        self.model = self.spec.build(memory_efficient=memory_efficient)
        self._pretrained_loaded = False
        self.compiled = False
        if schedule not in ("step", "cosine"):
            raise ValueError(f"schedule={schedule!r}: expected 'step' or 'cosine'.")
        check_milestones(milestones)
        self.milestones = [float(m) for m in milestones]
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma={gamma!r}: expected 0 < gamma <= 1 (the paper: 0.1).")
        check_label_smoothing(label_smoothing)
        self.mixing = BatchMixing(mixup_alpha, cutmix_alpha, mixup_prob, cutmix_prob)
        check_warmup(warmup_epochs, warmup_steps, warmup_start_factor)
        for name, decay in (
            ("weight_decay", weight_decay),
            ("norm_weight_decay", norm_weight_decay),
        ):
            if decay is not None and not decay >= 0:
                raise ValueError(f"model.{name}={decay!r}: expected a weight decay >= 0.")
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

        self.top5 = num_classes >= IMAGENET_CLASSES if top5 is None else top5
        if self.top5 and num_classes < 5:
            raise ValueError(f"top5=True needs at least 5 classes, got num_classes={num_classes}.")
        # sums over the images, reduced over the DDP ranks once per epoch: exact on any number
        # of devices (see densenet_lit.data.shards)
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_loss", WeightedMean())
            setattr(self, f"{stage}_error", ClassificationError(num_classes))
            if self.top5:
                setattr(self, f"{stage}_error_top5", ClassificationError(num_classes, top_k=5))
        self.train_batches_done = 0  # training batches of the current epoch so far
        self.resumed_train_sums: dict[str, Any] | None = None
        self.eval_batch_size = 0  # the largest batch the compiled network has evaluated

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
                self.model,
                pretrained,
                exclude_classifier=self.hparams.num_classes != IMAGENET_CLASSES,
            )
            self._pretrained_loaded = True

    def configure_model(self) -> None:
        if self.hparams.compile and not self.compiled:
            # nn.Module.compile compiles in place: state_dict and checkpoints keep the plain
            # `model.*` names. Static shapes: training batches all have one size (drop_last);
            # a smaller last evaluation batch is padded to the evaluation graph's size
            self.model.compile(dynamic=False)
            self.compiled = True

    def forward(self, x: Tensor) -> Tensor:
        if self.compiled and not self.training:
            return self.evaluate_compiled(x)
        return self.model(self.in_layout(x))

    def in_layout(self, x: Tensor) -> Tensor:
        if self.hparams.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def evaluate_compiled(self, x: Tensor) -> Tensor:
        """The compiled network in evaluation, in one graph for the whole run.

        Each batch size and each kind of input tensor gets a graph of its own (``dynamic``
        is off). So a batch smaller than the largest evaluated so far (the last of the
        validation or test set) is padded with zeros to its size, and the padding's outputs
        are dropped: in eval mode each image's output depends on that image alone. And test
        and predict, which Lightning runs in inference mode, evaluate a normal copy of the
        batch outside it (under ``no_grad``), as the validation inside fit does.
        """
        n = x.shape[0]
        self.eval_batch_size = size = max(n, self.eval_batch_size)
        if n < size:
            x = torch.cat([x, x.new_zeros((size - n, *x.shape[1:]))])
        if not torch.is_inference_mode_enabled():
            return self.model(self.in_layout(x))[:n]
        with torch.inference_mode(False), torch.no_grad():
            return self.model(self.in_layout(x.clone()))[:n]

    def _shared_step(self, batch: Any, stage: str) -> Tensor:
        x, y = batch[0], batch[1]
        on_step = stage == "train"
        if on_step:
            loss, logits = self._training_loss(x, y)
        else:
            logits = crop_averaged_logits(self, x)  # [N, crops, C, H, W]: ten-crop evaluation
            loss = F.cross_entropy(logits, y)
        n = x.shape[0]
        # a metric: weighted by the images, with no collective per step (a rank may run one
        # evaluation batch less), and its running sums can go into a checkpoint
        mean_loss = getattr(self, f"{stage}_loss")
        mean_loss(loss, n)
        self.log(metric_name(stage, LOSS), mean_loss, on_step=False, on_epoch=True)
        error = getattr(self, f"{stage}_error")
        error(logits, y)
        self.log(metric_name(stage, ERROR), error, on_step=False, on_epoch=True, batch_size=n)
        if self.top5:
            error5 = getattr(self, f"{stage}_error_top5")
            error5(logits, y)
            self.log(
                metric_name(stage, ERROR_TOP5), error5, on_step=False, on_epoch=True, batch_size=n
            )
        if on_step:
            step_loss = self._step_loss(loss)
            self.log(TRAIN_LOSS_STEP, step_loss, on_step=True, on_epoch=False, batch_size=n)
        return loss

    def _training_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The loss trained on and the logits: with MixUp/CutMix the loss of the mixed batch
        against the mixed soft targets, with label smoothing the smoothed loss. The error
        metrics compare these logits with the true labels ``y``."""
        smoothing = self.hparams.get("label_smoothing", 0.0)
        if self.mixing.active:
            x, target = self.mixing(x, y, self.hparams.num_classes)
            logits = self(x)
            target = target.to(logits.dtype)
        else:
            logits, target = self(x), y
        return F.cross_entropy(logits, target, label_smoothing=smoothing), logits

    def _step_loss(self, loss: Tensor) -> Tensor:
        """``train/loss_step``: under DDP the mean over the ranks on the steps whose metrics
        reach the loggers and at each epoch's last step (whose value stays in
        ``callback_metrics``), the rank's own loss on the others. Lightning's ``sync_dist``
        would reduce at every step, with a barrier first, which makes the host wait."""
        trainer = self.trainer
        if not is_distributed(trainer):
            return loss
        step, every = trainer.global_step + 1, trainer.log_every_n_steps  # as Lightning counts
        logged = every > 0 and step % every == 0
        last = self.train_batches_done >= trainer.num_training_batches or step == trainer.max_steps
        return mean_over_ranks(loss) if logged or last else loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self.train_batches_done = batch_idx + 1  # read when a checkpoint is saved after it
        loss = self._shared_step(batch, "train")
        # Filled on the device: a Python float given to self.log becomes torch.tensor(value,
        # device=...), a blocking copy that makes the host wait for the GPU at every step.
        # float32, not the default dtype, which bf16-true makes bfloat16 (0.1 -> 0.10009765625).
        lr = self.optimizers().param_groups[0]["lr"]
        lr = torch.full((), lr, dtype=torch.float32, device=self.device)
        self.log(LR, lr, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return crop_averaged_logits(self, x).softmax(dim=-1)

    # ------------------------------------------------- epoch means across a resumption
    def train_metrics(self) -> dict[str, Metric]:
        names = ["train_loss", "train_error"] + (["train_error_top5"] if self.top5 else [])
        return {name: getattr(self, name) for name in names}

    def on_train_epoch_start(self) -> None:
        self.train_batches_done = 0

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save the running sums of this epoch's training metrics, summed over the DDP ranks,
        so that a run resumed in the middle of the epoch logs the epoch means of all its
        batches, as the uninterrupted run does. Under DDP this is a collective: as Lightning
        requires, every rank must call ``trainer.save_checkpoint``."""
        sums: dict[str, dict[str, Tensor]] = {}
        for name, metric in self.train_metrics().items():
            with metric.sync_context():  # each state reduced over the ranks, then restored
                sums[name] = {k: v.detach().cpu().clone() for k, v in metric.metric_state.items()}
        trainer = attached_trainer(self)
        per_epoch = trainer.num_training_batches if trainer is not None else 0
        mid_epoch = 0 < self.train_batches_done < per_epoch
        checkpoint[TRAIN_SUMS_KEY] = {"mid_epoch": mid_epoch, "sums": sums}

    def on_train_start(self) -> None:
        """Resumed in the middle of an epoch: continue its training metrics from the sums of
        the checkpoint (on rank 0, which then holds those of every rank)."""
        saved, self.resumed_train_sums = self.resumed_train_sums, None
        if not saved or not saved.get("mid_epoch") or self.trainer.global_rank != 0:
            return
        for name, metric in self.train_metrics().items():
            for key, value in saved["sums"].get(name, {}).items():
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
        saved = checkpoint.get(TRAIN_SUMS_KEY)
        trainer = attached_trainer(self)
        fitting = trainer is not None and trainer.state.fn == "fit"
        # kept for a resumed fit only: a test or load_from_checkpoint leaves no sums behind
        usable = fitting and isinstance(saved, dict) and "sums" in saved
        self.resumed_train_sums = saved if usable else None
        if self.hparams.schedule != "step" or not fitting:
            # validate/test/predict of a checkpoint never step the schedule
            return
        expected = resolve_milestones(self.milestones, trainer.max_epochs)
        for state in checkpoint.get("lr_schedulers", []):
            if "milestones" not in state:
                continue
            stored = sorted(Counter(state["milestones"]).elements())
            if stored != expected:
                rank_zero_warn(
                    f"The checkpoint's step schedule drops the learning rate at epochs {stored}; "
                    f"with model.milestones={self.milestones} and trainer.max_epochs="
                    f"{trainer.max_epochs} this run drops it at epochs {expected} instead. "
                    "Resume with the original max_epochs, or give milestones as epoch numbers "
                    "(>= 1), to keep the first run's schedule."
                )
                state["milestones"] = Counter(expected)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_sgd(
            self, self.hparams
        )  # every parameter decays, unless norm_weight_decay
        scheduler, interval = build_schedule(optimizer, self.hparams, self.milestones, self.trainer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": interval, "frequency": 1},
        }


def attached_trainer(module: LightningModule) -> Any:
    """The module's Trainer, or None when it is not attached to one (``load_from_checkpoint``)."""
    try:
        return module.trainer
    except RuntimeError:
        return None
