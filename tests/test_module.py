"""DenseNetModule: network from arguments, loss/metrics, the paper's optimiser and schedules."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from module_fixtures import TINY
from module_fixtures import RandomData as _Random
from module_fixtures import quiet_trainer as _trainer

from densenet_lit.module import (
    ClassificationError,
    DenseNetModule,
    cosine_factor,
    resolve_milestones,
)


def lr_by_epoch(module: DenseNetModule, max_epochs: int, steps_per_epoch: int = 1) -> list[float]:
    """The lr the built optimizer+scheduler use in each epoch, stepped as Lightning steps them."""
    total = max_epochs * steps_per_epoch
    module.trainer = SimpleNamespace(max_epochs=max_epochs, estimated_stepping_batches=total)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]
    lrs = []
    for _ in range(max_epochs):
        lrs.append(opt.param_groups[0]["lr"])
        for _ in range(steps_per_epoch):
            opt.step()
            if sched["interval"] == "step":
                sched["scheduler"].step()
        if sched["interval"] == "epoch":
            sched["scheduler"].step()
    return lrs


# ------------------------------------------------------------------------------- network
def test_default_network_is_densenet_bc_100_12():
    module = DenseNetModule()
    blocks = [m for n, m in module.model.features.named_children() if n.startswith("denseblock")]
    assert [len(b) for b in blocks] == [16, 16, 16]  # (100 - 4) / 6
    assert module.model.classifier.out_features == 10
    assert module.spec.key == "densenet_bc_100_12"


def test_cifar_arguments_build_the_network():
    module = DenseNetModule(
        depth=40, growth_rate=12, bottleneck=False, compression=1.0, drop_rate=0.2, num_classes=100
    )
    n_params = sum(p.numel() for p in module.model.parameters())
    assert abs(n_params / 1e6 - 1.0) < 0.1  # DenseNet (L=40, k=12) on C100: about 1.0M
    assert module.model.classifier.out_features == 100
    assert any(isinstance(m, torch.nn.Dropout) for m in module.model.modules())
    assert module.spec.key == "densenet_40_12"


def test_in_channels_and_forward_shape():
    module = DenseNetModule(**TINY, in_channels=1, num_classes=7)
    assert module(torch.randn(2, 1, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("arg", [{"depth": 121}, {"growth_rate": 32}, {"bottleneck": True}])
def test_imagenet_arch_rejects_cifar_arguments(arg):
    with pytest.raises(ValueError, match="densenet121.*contradicts"):
        DenseNetModule(arch="densenet121", num_classes=1000, **arg)


def test_unknown_arch_and_bad_depth():
    with pytest.raises(ValueError, match="densenet121"):
        DenseNetModule(arch="densenet999")
    with pytest.raises(ValueError, match="depth"):
        DenseNetModule(depth=41, growth_rate=12)


def test_memory_efficient_flag_reaches_the_network():
    assert DenseNetModule(**TINY, memory_efficient=True).model.memory_efficient
    assert not DenseNetModule(**TINY).model.memory_efficient


def test_pretrained_weights_load_at_setup_and_checkpoints_do_not_need_them(tmp_path):
    source = DenseNetModule(arch="densenet121", num_classes=1000)
    path = tmp_path / "densenet121.pth"
    torch.save(source.model.state_dict(), path)
    key = "features.conv0.weight"
    module = DenseNetModule(arch="densenet121", num_classes=1000, pretrained=str(path))
    assert not torch.equal(module.model.state_dict()[key], source.model.state_dict()[key])
    module.setup("fit")
    for name, value in source.model.state_dict().items():
        assert torch.equal(module.model.state_dict()[name], value), name
    # transfer learning: 10 classes keep a fresh classifier, every other weight is loaded
    transfer = DenseNetModule(arch="densenet121", num_classes=10, pretrained=str(path))
    transfer.setup("fit")
    assert torch.equal(transfer.model.state_dict()[key], source.model.state_dict()[key])
    assert transfer.model.classifier.out_features == 10
    # a checkpoint restores its own weights without the (deleted) weight file
    trainer = Trainer(accelerator="cpu", logger=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    path.unlink()
    restored = DenseNetModule.load_from_checkpoint(tmp_path / "m.ckpt")
    assert torch.equal(restored.model.state_dict()[key], source.model.state_dict()[key])


# ------------------------------------------------------------------------------- metrics
def test_error_is_micro_top1_in_percent():
    error = ClassificationError(num_classes=3)
    logits = torch.tensor([[5.0, 0, 0], [5.0, 0, 0], [5.0, 0, 0], [0, 5.0, 0]])
    error(logits, torch.tensor([0, 0, 0, 2]))  # 3 of 4 right; macro accuracy would differ
    assert error.compute().item() == pytest.approx(25.0)


def test_top5_only_with_many_classes():
    assert not DenseNetModule(**TINY, num_classes=100).top5
    module = DenseNetModule(**TINY, num_classes=1000)
    assert module.top5 and hasattr(module, "val_error_top5")
    with pytest.raises(ValueError, match="top5"):
        DenseNetModule(**TINY, num_classes=3, top5=True)


class _RecordLR(Callback):
    def __init__(self):
        self.epoch_lr, self.step_lr = [], []

    def on_train_epoch_start(self, trainer, pl_module):
        self.epoch_lr.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.step_lr.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_logged_metric_names(tmp_path):
    module = DenseNetModule(**TINY, num_classes=4)
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(module, datamodule=_Random())
    logged = set(trainer.callback_metrics)
    assert {"train/loss", "train/error", "val/loss", "val/error", "lr"} <= logged
    # the error of the weights after fit (validated last) on the one validation batch
    x, y = next(iter(_Random().val_dataloader()))
    with torch.no_grad():
        wrong = (module.eval()(x).argmax(dim=1) != y).sum().item()
    assert float(trainer.callback_metrics["val/error"]) == pytest.approx(100.0 * wrong / len(y))
    (result,) = trainer.test(module, datamodule=_Random(), verbose=False)
    assert {"test/loss", "test/error"} <= set(result)


def test_learning_rate_is_logged_in_float32_under_bf16_true(tmp_path):
    """bf16-true makes bfloat16 the default dtype, in which 0.1 is 0.10009765625."""
    module = DenseNetModule(**TINY, num_classes=4)
    trainer = _trainer(
        tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0, precision="bf16-true"
    )
    trainer.fit(module, datamodule=_Random())
    lr = trainer.callback_metrics["lr"]
    assert lr.dtype == torch.float32 and float(lr) == float(torch.tensor(0.1))  # 0.1000000015


# ----------------------------------------------------------------------------- optimiser
def test_optimizer_is_the_papers_sgd():
    module = DenseNetModule(**TINY)
    module.trainer = SimpleNamespace(max_epochs=300, estimated_stepping_batches=300)
    opt = module.configure_optimizers()["optimizer"]
    assert isinstance(opt, torch.optim.SGD)
    group = opt.param_groups[0]
    assert group["lr"] == 0.1 and group["momentum"] == 0.9 and group["nesterov"]
    assert group["dampening"] == 0 and group["weight_decay"] == 1e-4
    # weight decay on every parameter, batch norm and biases included
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(module.parameters()))
    assert all(g["weight_decay"] == 1e-4 for g in opt.param_groups)


@pytest.mark.parametrize(
    ("milestones", "max_epochs", "expected"),
    [
        ([0.5, 0.75], 300, [150, 225]),
        ([0.5, 0.75], 40, [20, 30]),
        ([30, 60], 90, [30, 60]),
        ([30, 60, 90], 100, [30, 60, 90]),
        ([0.5], 45, [23]),  # "once the epoch reaches 50%": 22.5 -> 23
    ],
)
def test_resolve_milestones(milestones, max_epochs, expected):
    assert resolve_milestones(milestones, max_epochs) == expected


def test_bad_milestones():
    with pytest.raises(ValueError, match="whole"):
        DenseNetModule(**TINY, milestones=[30.5])
    with pytest.raises(ValueError, match="> 0"):
        DenseNetModule(**TINY, milestones=[0.0])
    with pytest.raises(ValueError, match="max_epochs"):
        resolve_milestones([0.5], -1)


def test_step_schedule_cifar_300_epochs():
    lrs = lr_by_epoch(DenseNetModule(**TINY, milestones=[0.5, 0.75]), 300)
    assert lrs[0] == lrs[149] == pytest.approx(0.1)
    assert lrs[150] == lrs[224] == pytest.approx(0.01)
    assert lrs[225] == lrs[299] == pytest.approx(0.001)


def test_cosine_schedule_per_iteration():
    module = DenseNetModule(**TINY, schedule="cosine")
    steps = 10
    total = 4 * steps
    module.trainer = SimpleNamespace(max_epochs=4, estimated_stepping_batches=total)
    conf = module.configure_optimizers()
    assert conf["lr_scheduler"]["interval"] == "step"
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(total + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[total // 2] == pytest.approx(0.05)
    assert lrs[total] == pytest.approx(0.0, abs=1e-12)
    for t in (1, 7, 33):
        assert lrs[t] == pytest.approx(0.05 * (1 + math.cos(math.pi * t / total)))
    assert cosine_factor(total + 5, total) == 0.0


def test_schedules_in_a_real_trainer(tmp_path):
    """Lightning steps the step schedule per epoch and the cosine one per batch."""
    record = _RecordLR()
    trainer = _trainer(tmp_path, max_epochs=4, limit_train_batches=2, limit_val_batches=0)
    trainer.callbacks.append(record)
    trainer.fit(DenseNetModule(**TINY, num_classes=4), datamodule=_Random())
    assert record.epoch_lr == pytest.approx([0.1, 0.1, 0.01, 0.001])

    record = _RecordLR()
    trainer = _trainer(tmp_path, max_epochs=2, limit_train_batches=2, limit_val_batches=0)
    trainer.callbacks.append(record)
    trainer.fit(DenseNetModule(**TINY, num_classes=4, schedule="cosine"), datamodule=_Random())
    expected = [0.05 * (1 + math.cos(math.pi * t / 4)) for t in range(4)]
    assert record.step_lr == pytest.approx(expected)


def test_finite_loss_guard_rejects_an_unknown_check():
    from densenet_lit.callbacks import FiniteLossGuard

    with pytest.raises(ValueError, match="check='sometimes'.*'auto', 'every_step' or 'deferred'"):
        FiniteLossGuard(check="sometimes")


def test_nonfinite_loss_stops_training(tmp_path):
    from densenet_lit.callbacks import FiniteLossGuard

    module = DenseNetModule(**TINY, num_classes=4, lr=1e30)
    trainer = _trainer(tmp_path, max_epochs=3, limit_train_batches=2, limit_val_batches=0)
    trainer.callbacks.append(FiniteLossGuard())
    with pytest.raises(FloatingPointError, match="global step .*Last good checkpoint"):
        trainer.fit(module, datamodule=_Random())
