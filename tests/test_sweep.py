"""experiments/sweep_c10plus/sweep.yaml: a W&B sweep file whose keys are those of W&B's
documented sweep configuration, whose grid is the folder's 12 configs, and whose command lines,
built as a W&B agent builds them, parse with our CLI and train (offline, in the sweep's run)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import wandb
import yaml
from cli_args import trainer_args
from test_wandb import offline_parts
from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

from densenet_lit.cli import main, run
from densenet_lit.rundir import WANDB_ID_FILE

REPO = Path(__file__).resolve().parents[1]
SWEEP_FILE = REPO / "experiments" / "sweep_c10plus" / "sweep.yaml"
CONFIGS = sorted(p for p in SWEEP_FILE.parent.glob("*.yaml") if p != SWEEP_FILE)
# W&B's documented sweep configuration (docs.wandb.ai, "Sweep configuration options"): its
# top-level keys, search methods, metric goals and the keys of a grid's parameters.
TOP_LEVEL = {"program", "entity", "project", "description", "name", "method", "metric"}
TOP_LEVEL |= {"parameters", "early_terminate", "command", "run_cap"}
METHODS, GOALS, GRID_KEYS = (
    {"grid", "random", "bayes"},
    {"minimize", "maximize"},
    {"values", "value"},
)


def sweep() -> dict:
    return yaml.safe_load(SWEEP_FILE.read_text())


def agent_commands(config: dict) -> list[list[str]]:
    """The command line of each run of a grid sweep, as ``wandb agent`` builds it
    (wandb/wandb_agent.py: ``create_sweep_command`` fills in ``${envvar:...}``, then each
    ``${macro}`` becomes its list of ``create_sweep_command_args``, ``${args}`` the
    ``--name=value`` flags)."""
    names = list(config["parameters"])
    grids = [config["parameters"][n].get("values", [config["parameters"][n].get("value")])
             for n in names]  # fmt: skip
    commands = []
    for values in itertools.product(*grids):
        args = {name: {"value": value} for name, value in zip(names, values, strict=True)}
        sweep_vars = create_sweep_command_args({"args": args})
        sweep_vars |= {"env": ["/usr/bin/env"], "interpreter": ["python"]}
        sweep_vars["program"] = [config["program"]]
        command = []
        for chunk in map(str, create_sweep_command(list(config["command"]))):
            macro = chunk[2:-1] if chunk.startswith("${") and chunk.endswith("}") else None
            command += (sweep_vars.get(macro) or []) if macro else [chunk]
        commands.append(command)
    return commands


def test_the_sweep_file_has_wandbs_documented_keys():
    config = sweep()
    assert set(config) <= TOP_LEVEL, set(config) - TOP_LEVEL
    assert config["method"] in METHODS and config["metric"]["goal"] in GOALS
    assert config["metric"]["name"] == "test/error"  # what the CLI logs at the end of the runs
    for name, parameter in config["parameters"].items():
        assert set(parameter) <= GRID_KEYS and set(parameter) & GRID_KEYS, name
    assert all(isinstance(c, str) for c in config["command"]) and "${args}" in config["command"]
    assert (REPO / config["program"]).is_file()


def test_the_grid_is_the_folders_twelve_configs():
    values = sweep()["parameters"]["config"]["values"]
    assert sorted(REPO / v for v in values) == CONFIGS and len(values) == 12


def test_every_agent_command_parses_with_our_cli(capsys, monkeypatch):
    """Run from the repository root, as the agent is, each command line gives the network of
    its config file (``..._bc_70_12.yaml``: L=70, k=12)."""
    monkeypatch.chdir(REPO)
    commands = agent_commands(sweep())
    assert len(commands) == 12
    for command in commands:
        assert command[:5] == ["/usr/bin/env", "python", "-m", "densenet_lit", "fit"]
        (flag,) = command[5:]
        assert flag.startswith("--config=") and Path(flag.removeprefix("--config=")).is_file()
        with pytest.raises(SystemExit) as printed:
            main([*command[4:], "--print_config"])
        assert printed.value.code in (0, None), capsys.readouterr().err
        model = yaml.safe_load(capsys.readouterr().out)["model"]
        assert flag.endswith(f"_{model['depth']}_{model['growth_rate']}.yaml")


def test_an_agent_command_trains_offline_in_the_sweeps_run(
    tmp_path, fake_data, no_wandb_account, monkeypatch
):
    """The agent's command for DenseNet-BC (L=40) with tiny sizes on top, started the way the
    agent starts it (WANDB_SWEEP_ID and WANDB_RUN_ID set): it trains and tests, and its
    offline W&B run is the sweep's run (the agent's run id)."""
    monkeypatch.chdir(REPO)  # the agent runs from the repository root
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep123")
    monkeypatch.setenv("WANDB_RUN_ID", "agentrun1")
    (command,) = [c for c in agent_commands(sweep()) if c[-1].endswith("densenet_bc_40_12.yaml")]
    data_dir, _ = fake_data("cifar10", n_train=16, n_test=8)
    tiny = ["--model.depth", "10", "--model.growth_rate", "4", "--data.init_args.batch_size", "8"]
    tiny += ["--data.init_args.data_dir", str(data_dir), "--trainer.max_epochs", "1"]
    tiny += trainer_args(tmp_path / "runs")
    c = run([*command[4:], *tiny])
    assert c.trainer.global_step == 2 and "test/error" in c.trainer.callback_metrics
    assert c.model.hparams.bottleneck and c.model.hparams.compression == 0.5
    assert c.run_dir.parent.name == "cifar10plus_densenet_bc_40_12"
    assert (c.run_dir / WANDB_ID_FILE).read_text().strip() == "agentrun1"
    wandb.teardown()
    (part,) = offline_parts(c.run_dir)
    assert part["run"].run_id == "agentrun1"
