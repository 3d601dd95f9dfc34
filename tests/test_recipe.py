"""The modern recipe's components against their definitions, with numbers: label smoothing,
MixUp and CutMix, weight decay without normalisation layers and biases, the warm-up, and the
checks of bad values."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from densenet_lit.mixing import BatchMixing, cutmix, cutmix_box, draw_lambda, mixup
from densenet_lit.module import DenseNetModule
from densenet_lit.optim import parameter_groups
from densenet_lit.recipe import MODERN, PAPER, recipe_name

TINY = {"depth": 10, "growth_rate": 4}


# ------------------------------------------------------------------------ label smoothing
def test_smoothed_loss_is_cross_entropy_with_the_smoothed_targets():
    """``-sum_c q_c log p_c`` with ``q = (1 - eps) onehot(y) + eps / C``."""
    module = DenseNetModule(**TINY, num_classes=5, label_smoothing=0.1)
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 3, 4, 1])
    loss, logits = module._training_loss(x, y)
    q = 0.9 * F.one_hot(y, 5) + 0.1 / 5
    expected = -(q * logits.log_softmax(dim=1)).sum(dim=1).mean()
    loss, logits = loss.detach(), logits.detach()
    assert float(loss) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert float(loss) != pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-4)


# ---------------------------------------------------------------------------------- mixing
def images(n: int = 6, size: int = 16) -> torch.Tensor:
    """Every pixel different, so that a copied region can be told apart."""
    return torch.arange(n * 3 * size * size, dtype=torch.float32).reshape(n, 3, size, size)


def test_mixup_is_lambda_times_the_batch_plus_the_rest_times_its_permutation():
    x = images()
    torch.manual_seed(3)
    mixed, lam, perm = mixup(x, alpha=0.2)
    torch.manual_seed(3)  # the same draws, by hand: lam ~ Beta(0.2, 0.2), then the permutation
    beta = torch.distributions.Beta(torch.tensor(0.2), torch.tensor(0.2))
    assert lam == float(beta.sample())
    assert torch.equal(perm, torch.randperm(6))
    assert sorted(perm.tolist()) == list(range(6))
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm])


def test_mixed_targets_weigh_the_two_labels_by_lambda():
    x, y = images(), torch.tensor([0, 1, 2, 3, 4, 0])
    mixing = BatchMixing(mixup_alpha=1.0)
    assert mixing.probabilities() == (1.0, 0.0)
    torch.manual_seed(5)
    mixed, target = mixing(x, y, num_classes=5)
    torch.manual_seed(5)
    assert float(torch.rand(())) < 1.0  # the choice of MixUp, then MixUp's draws
    _, lam, perm = mixup(x, 1.0)
    onehot = F.one_hot(y, 5).float()
    assert torch.allclose(target, lam * onehot + (1 - lam) * onehot[perm])
    assert torch.allclose(target.sum(dim=1), torch.ones(6))
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm])


def test_cutmix_box_sides_are_sqrt_of_one_minus_lambda_clipped_at_the_border():
    # lam 0.75: half sides 0.5 * sqrt(0.25) * 16 = 4 -> [c - 4, c + 4) around a uniform pixel c
    areas = set()
    for seed in range(60):
        torch.manual_seed(seed)
        y0, y1, x0, x1 = cutmix_box(0.75, 16, 16)
        torch.manual_seed(seed)
        cy, cx = int(torch.randint(16, ())), int(torch.randint(16, ()))
        assert (y0, y1, x0, x1) == (
            max(cy - 4, 0),
            min(cy + 4, 16),
            max(cx - 4, 0),
            min(cx + 4, 16),
        )
        areas.add((y1 - y0) * (x1 - x0))
    assert max(areas) == 64 and min(areas) < 64  # whole inside, clipped at the border


def test_cutmix_pastes_the_box_of_the_permuted_batch_and_corrects_lambda_to_its_area():
    x = images(n=5, size=16)
    torch.manual_seed(11)
    mixed, lam, perm = cutmix(x, alpha=1.0)
    torch.manual_seed(11)  # by hand: lam, the permutation, then the box's centre
    beta = torch.distributions.Beta(torch.tensor(1.0), torch.tensor(1.0))
    drawn = float(beta.sample())
    assert torch.equal(perm, torch.randperm(5))
    y0, y1, x0, x1 = cutmix_box(drawn, 16, 16)
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[y0:y1, x0:x1] = True
    assert lam == 1 - inside.sum().item() / 256  # the share of the image left
    assert torch.equal(mixed[..., inside], x[perm][..., inside])
    assert torch.equal(mixed[..., ~inside], x[..., ~inside])
    moved = perm != torch.arange(5)  # images whose partner is another image: the box differs
    assert ((mixed != x).any(dim=1).sum(dim=(1, 2))[moved] == inside.sum()).all()


def test_each_batch_gets_mixup_cutmix_or_nothing_with_their_probabilities():
    """u ~ U(0, 1) picks MixUp below 0.3, CutMix below 0.3 + 0.5, else nothing; then that
    mixing's own draws follow."""
    mixing = BatchMixing(mixup_alpha=0.2, cutmix_alpha=1.0, mixup_prob=0.3, cutmix_prob=0.5)
    x, y = images(n=4, size=8), torch.tensor([0, 1, 2, 3])
    onehot = F.one_hot(y, 4).float()
    kinds = []
    for seed in range(300):
        torch.manual_seed(seed)
        mixed, target = mixing(x, y, num_classes=4)
        torch.manual_seed(seed)
        u = float(torch.rand(()))
        kind = "mixup" if u < 0.3 else "cutmix" if u < 0.8 else "none"
        kinds.append(kind)
        if kind == "none":
            assert torch.equal(mixed, x) and torch.equal(target, onehot)
            continue
        expected, lam, perm = (mixup if kind == "mixup" else cutmix)(
            x, 0.2 if kind == "mixup" else 1.0
        )
        assert torch.equal(mixed, expected)
        assert torch.allclose(target, lam * onehot + (1 - lam) * onehot[perm])
    counts = [kinds.count(k) for k in ("mixup", "cutmix", "none")]
    assert abs(counts[0] - 90) < 25 and abs(counts[1] - 150) < 30 and abs(counts[2] - 60) < 22
    assert BatchMixing(mixup_alpha=0.2, cutmix_alpha=1.0).probabilities() == (0.5, 0.5)
    assert BatchMixing(cutmix_alpha=1.0).probabilities() == (0.0, 1.0)
    assert not BatchMixing().active


def test_error_metrics_use_the_true_labels_while_mixing(monkeypatch):
    torch.manual_seed(0)  # an initial network whose predictions are not all one class
    module = DenseNetModule(**TINY, num_classes=4, mixup_alpha=0.4)
    x, y = torch.randn(8, 3, 16, 16), torch.tensor([0, 1, 2, 3] * 2)
    torch.manual_seed(2)
    loss, logits = module._training_loss(x, y)
    torch.manual_seed(2)
    mixed, target = module.mixing(x, y, 4)
    assert torch.allclose(logits, module(mixed))
    expected = F.cross_entropy(logits, target).detach()
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-6)
    # the training step's error metric: these logits against the true labels y
    module.trainer = SimpleNamespace(world_size=1)  # one process: the step loss is the rank's
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)
    torch.manual_seed(2)
    module._shared_step((x, y), "train")
    predicted = logits.argmax(1)
    true_error = 100 * (predicted != y).float().mean()
    assert torch.allclose(module.train_error.compute(), true_error)
    # the mixed partners' labels y[perm] (the draws of BatchMixing: choice, lambda, perm)
    torch.manual_seed(2)
    torch.rand(())
    draw_lambda(0.4)
    partners = y[torch.randperm(8)]
    assert not torch.equal(partners, y)
    assert not torch.allclose(100 * (predicted != partners).float().mean(), true_error)


# ------------------------------------------------------------------- weight decay groups
def test_no_decay_group_holds_exactly_the_norm_parameters_and_biases():
    module = DenseNetModule(**TINY)  # DenseNet-BC-10: one layer per block
    decay, no_decay = parameter_groups(module.model, 2e-5, 0.0)
    norms = [m for m in module.model.modules() if isinstance(m, nn.BatchNorm2d)]
    # 9 batch norms: 2 per dense layer (3 layers), 1 per transition (2), the final one
    assert len(norms) == 9
    assert len(no_decay["params"]) == 2 * 9 + 1  # their weights and biases, classifier's bias
    assert len(decay["params"]) == 1 + 2 * 3 + 2 + 1  # convolutions and the classifier weight
    names = {id(p): n for n, p in module.model.named_parameters()}
    assert all("norm" in names[id(p)] or names[id(p)].endswith("bias") for p in no_decay["params"])
    assert not any("norm" in names[id(p)] for p in decay["params"])
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (2e-5, 0.0)
    # the paper's (norm_weight_decay None): one group, every parameter
    (single,) = parameter_groups(module.model, 1e-4, None)
    assert len(single["params"]) == 29 and single["weight_decay"] == 1e-4


def test_configured_optimizer_has_the_two_groups_and_torchvisions_values():
    module = DenseNetModule(**TINY, lr=0.5, weight_decay=2e-5, norm_weight_decay=0.0)
    module.trainer = SimpleNamespace(max_epochs=3, estimated_stepping_batches=30)
    opt = module.configure_optimizers()["optimizer"]
    assert [g["weight_decay"] for g in opt.param_groups] == [2e-5, 0.0]
    assert [len(g["params"]) for g in opt.param_groups] == [10, 19]
    assert all(g["lr"] == 0.5 for g in opt.param_groups)


# --------------------------------------------------------------------------------- warm-up
def lrs(module: DenseNetModule, steps: int, **trainer: object) -> list[float]:
    module.trainer = SimpleNamespace(**trainer)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]
    assert sched["interval"] == "step"
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched["scheduler"].step()
    return out


def test_warmup_steps_then_cosine_over_the_remaining_steps():
    module = DenseNetModule(**TINY, lr=0.5, schedule="cosine", warmup_steps=4)
    got = lrs(module, 21, max_epochs=2, estimated_stepping_batches=20)
    # 0.5 * (0.01 + 0.99 * t / 4) for t < 4, then 0.25 * (1 + cos(pi * (t - 4) / 16))
    assert got[0] == pytest.approx(0.005)
    assert got[2] == pytest.approx(0.2525)
    assert got[4] == pytest.approx(0.5)
    assert got[12] == pytest.approx(0.25)
    assert got[8] == pytest.approx(0.25 * (1 + math.cos(math.pi / 4)))
    assert got[20] == pytest.approx(0.0, abs=1e-12)


def test_warmup_epochs_then_the_step_schedule():
    module = DenseNetModule(
        **TINY, lr=0.5, milestones=[2, 3], warmup_epochs=1, warmup_start_factor=0.1
    )
    trainer = {"num_training_batches": 5, "accumulate_grad_batches": 1}
    got = lrs(module, 20, max_epochs=4, estimated_stepping_batches=20, **trainer)
    # epoch 0 (steps 0-4): 0.5 * (0.1 + 0.9 * t / 5); then 0.5, / 10 at epochs 2 and 3
    assert got[:5] == pytest.approx([0.05, 0.14, 0.23, 0.32, 0.41])
    assert got[5:10] == pytest.approx([0.5] * 5)
    assert got[10:15] == pytest.approx([0.05] * 5)
    assert got[15:] == pytest.approx([0.005] * 5)


# ------------------------------------------------------------------------------ bad values
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"label_smoothing": 1.0}, r"model.label_smoothing=1.0: expected a value in \[0, 1\)"),
        ({"label_smoothing": -0.1}, r"label_smoothing=-0.1"),
        ({"mixup_alpha": -0.2}, r"model.mixup_alpha=-0.2: expected alpha >= 0"),
        ({"cutmix_alpha": -1.0}, r"model.cutmix_alpha=-1.0: expected alpha >= 0"),
        ({"mixup_alpha": 0.2, "mixup_prob": 1.5}, r"model.mixup_prob=1.5: expected a prob"),
        ({"cutmix_prob": -0.5}, r"model.cutmix_prob=-0.5: expected a probability in \[0, 1\]"),
        (
            {"mixup_alpha": 0.2, "cutmix_alpha": 1.0, "mixup_prob": 0.8, "cutmix_prob": 0.5},
            r"mixup_prob=0.8 and model.cutmix_prob=0.5 add up to more than 1",
        ),
        (
            {"mixup_prob": 0.5},
            r"model.mixup_prob=0.5 is given while model.mixup_alpha is 0 \(mixup off\).*"
            r"set model.mixup_alpha > 0 .*or leave model.mixup_prob out",
        ),
        (
            {"mixup_alpha": 0.2, "cutmix_prob": 0.0},
            r"model.cutmix_prob=0.0 is given while model.cutmix_alpha is 0 \(cutmix off\).*"
            r"set model.cutmix_alpha > 0 .*or leave model.cutmix_prob out",
        ),
        ({"warmup_epochs": 1, "warmup_steps": 10}, r"in epochs or in steps, not both"),
        ({"warmup_steps": -1}, r"warmup_steps=-1.*expected 0"),
        ({"warmup_epochs": 1, "warmup_start_factor": 0.0}, r"warmup_start_factor=0.0"),
        ({"norm_weight_decay": -1e-5}, r"model.norm_weight_decay=-1e-05: expected a weight"),
    ],
)
def test_bad_recipe_values_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DenseNetModule(**TINY, **kwargs)


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_a_warmup_longer_than_training_is_an_error(schedule):
    module = DenseNetModule(**TINY, schedule=schedule, milestones=[2], warmup_steps=30)
    module.trainer = SimpleNamespace(
        max_epochs=3,
        estimated_stepping_batches=30,
        num_training_batches=10,
        accumulate_grad_batches=1,
    )
    with pytest.raises(
        ValueError, match="warm-up of 30 steps .* not shorter than the training, 30"
    ):
        module.configure_optimizers()


def test_recipe_name_comes_from_the_values():
    paper = DenseNetModule(**TINY).hparams
    assert recipe_name(paper, {"auto_augment": None}, averaged=False) == PAPER
    assert recipe_name(paper, {}, averaged=True) == MODERN
    assert recipe_name(paper, {"random_erase": 0.1}, averaged=False) == MODERN
    assert recipe_name(DenseNetModule(**TINY, label_smoothing=0.1).hparams, {}, False) == MODERN
    assert recipe_name(DenseNetModule(**TINY, lr=0.5).hparams, {}, False) == PAPER


@pytest.mark.parametrize(
    "extra, group, tag",
    [
        ([], "digits-densenet_bc_10_4", PAPER),
        (["--trainer.callbacks+=EMAWeightAveraging"], "digits-densenet_bc_10_4-modern", MODERN),
    ],
)
def test_wandb_group_and_tags_name_the_recipe(run_args, monkeypatch, extra, group, tag):
    """From the run's values: here an EMA callback alone makes it modern (the module's values
    are covered by test_recipe_name_comes_from_the_values)."""
    from densenet_lit.cli import app, run

    started = {}
    monkeypatch.setattr(app, "start_wandb", lambda run_dir, **kw: started.update(kw))
    run(run_args(*extra, trainer={"limit_train_batches": 1, "limit_val_batches": 1}, wandb=True))
    assert started["group"] == group
    assert tag in started["tags"] and ({PAPER, MODERN} - {tag}).isdisjoint(started["tags"])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model.label_smoothing", "1.0"], "error: model.label_smoothing=1.0: expected a value"),
        (["--model.mixup_alpha", "-1"], "error: model.mixup_alpha=-1.0: expected alpha >= 0"),
        (
            ["--model.cutmix_prob", "0.5"],
            "error: model.cutmix_prob=0.5 is given while model.cutmix_alpha is 0 (cutmix off)",
        ),
        (
            ["--trainer.callbacks+=EMAWeightAveraging", "--trainer.callbacks.decay", "1.5"],
            "error: EMAWeightAveraging decay=1.5: expected 0 < decay < 1",
        ),
        (
            ["--model.warmup_epochs", "2"],
            "error: The warm-up of 4 steps (model.warmup_epochs / model.warmup_steps) is not "
            "shorter than the training, 2 steps",
        ),
    ],
)
def test_bad_values_are_one_line_errors_of_the_cli(run_args, capsys, extra, message):
    from densenet_lit.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(run_args(*extra))
    err = capsys.readouterr().err
    assert stopped.value.code == 1 and message in err and "Traceback" not in err
