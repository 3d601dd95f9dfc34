"""The paper's number beside every W&B run: the network's exact parameters and FLOPs, the
paper's error for the run's network, benchmark and evaluation with its source, and the gap;
``analysis.compare`` reads the same fields."""

from __future__ import annotations

import csv
import math

import pytest
import wandb
from cli_args import cli_args
from test_wandb import offline_parts

from densenet_lit.analysis import compare
from densenet_lit.analysis import paper_match as pm
from densenet_lit.analysis.record import Run
from densenet_lit.cli import run
from densenet_lit.models import densenet_cifar
from densenet_lit.models.summary import count_macs, count_parameters


def wandb_fields(run_dir) -> tuple[dict, dict]:
    """The W&B config and the final summary of the (one) offline run of ``run_dir``."""
    wandb.teardown()  # this process's W&B service writes the run's file when it shuts down
    (part,) = offline_parts(run_dir)
    return part["config"], dict(part["summary"])


@pytest.mark.slow
def test_a_c10plus_densenet_bc_run_carries_the_paper_number_and_the_gap(
    tmp_path, fake_data, no_wandb_account
):
    """DenseNet-BC (L=100, k=12) on C10+ (fake CIFAR-10 files, augmented), tested on 1 image
    (a forward pass of this network is what costs: no training): Table 2's 4.51 %, its
    source, and test/error - 4.51 as the gap."""
    data_dir, _ = fake_data("cifar10", n_train=10, n_test=1)
    args = cli_args(
        "test",
        tmp_path / "runs",
        data="densenet_lit.data.CIFAR10DataModule",
        batch_size=1,
        data_init={"data_dir": data_dir, "val_size": 0},
        model={"depth": 100, "growth_rate": 12},
        wandb=None,
        name="c10p",
    )
    c = run(args)
    config, summary = wandb_fields(c.run_dir)

    network = densenet_cifar(100, 12, bottleneck=True, compression=0.5, num_classes=10)
    params, macs = count_parameters(network), count_macs(network, (3, 32, 32))
    assert (params, macs) == (769162, 287929692)  # exact: counted, not rounded
    for fields in (config, summary):
        assert fields[pm.PARAMS] == params and fields[pm.FLOPS] == macs
        assert fields[pm.NETWORK] == "densenet_bc_100_12"
        assert fields[pm.PAPER_ERROR] == 4.51
        assert fields[pm.PAPER_MODEL] == "densenet_bc_100_12" and fields[pm.PAPER_COLUMN] == "c10+"
        assert fields[pm.PAPER_SOURCE].startswith("DenseNet-BC (L=100, k=12), CIFAR-10+")
        assert "Table 2" in fields[pm.PAPER_SOURCE]
    with open(c.run_dir / "metrics.csv", newline="") as f:
        (test_error,) = [float(r["test/error"]) for r in csv.DictReader(f) if r["test/error"]]
    assert summary[pm.OURS] == test_error and summary[pm.OURS_METRIC] == "test/error"
    assert math.isclose(summary[pm.GAP], test_error - 4.51)

    # analysis.compare reads the same fields from a W&B run's config
    record = Run("c10p", "w1", rows=[{"epoch": 0.0, "test/error": test_error}], config=config)
    (row,) = compare.final_errors([record])
    assert row.paper == 4.51 and row.paper_source == config[pm.PAPER_SOURCE]
    assert math.isclose(row.gap, test_error - 4.51)


def test_a_run_without_a_paper_number_says_so(run_args, no_wandb_account):
    """The tiny DenseNet-BC-10 (k=4) on the digits: no paper number (None) and why; its exact
    parameter and FLOP counts at the evaluation size; no gap."""
    c = run(run_args(wandb=None, data_init={"image_size": 16}))
    config, summary = wandb_fields(c.run_dir)
    network = c.model.model
    params, macs = count_parameters(network), count_macs(network, (1, 16, 16))
    assert config[pm.PARAMS] == params and config[pm.FLOPS] == macs and params > 0
    assert config[pm.PAPER_ERROR] is None and summary[pm.PAPER_ERROR] is None
    assert config[pm.PAPER_SOURCE] == (
        "none: densenet_bc_10_4 is not a network of the paper's tables"
    )
    assert summary[pm.OURS_METRIC] == "val/error" and summary[pm.GAP] is None
    (row,) = compare.final_errors([Run("d", "w2", config=config)])
    assert row.paper is None and row.paper_source.startswith("none: ")


@pytest.mark.parametrize(
    ("key", "benchmark", "crops", "cosine", "error"),
    [
        ("densenet121", "imagenet", 1, False, 25.02),  # Table 3, single crop
        ("densenet121", "imagenet", 10, False, 23.61),  # Table 3, 10 crops
        ("densenet264", "imagenet", 1, True, 21.6),  # the README's cosine model
        ("densenet_40_12", "svhn", 1, False, 1.79),
        ("densenet_bc_100_12", "cifar100", 1, False, 24.15),
    ],
)
def test_the_paper_column_follows_the_evaluation(key, benchmark, crops, cosine, error):
    assert pm.paper_number(key, benchmark, crops, cosine).error == error


def test_missing_columns_and_rows_say_why():
    ten = pm.paper_number("densenet161", "imagenet", 10)
    assert ten.error is None and ten.column == "imagenet_10crop"
    assert ten.source.startswith("none: the paper gives DenseNet-161 (k=48) no 'imagenet_10crop'")
    assert pm.paper_number("densenet_bc_190_40", "cifar10").error is None  # C10+ only
    assert pm.paper_number("densenet_40_12", None).source == (
        "none: the run's data module declares no benchmark"
    )
