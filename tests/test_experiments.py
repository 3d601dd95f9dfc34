"""Every experiment config parses, matches the paper's recipe, and runs fit on tiny real-format data."""

from __future__ import annotations

import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from cli_args import TINY_MODEL, flags, trainer_args
from fake_data import write_cifar10, write_cifar100, write_imagenet, write_svhn

from densenet_lit.cli import EXTENDS_KEY, config_chain, main, run
from densenet_lit.module import DenseNetModule
from densenet_lit.paper import CIFAR_MODELS, IMAGENET_MODELS

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
RUNS = sorted(EXPERIMENTS.glob("*.yaml"))
OVERLAYS = sorted((EXPERIMENTS / "overlays").glob("*.yaml"))
SHRINK = flags("model.", TINY_MODEL)

# SPEC.md section 2: (global batch, epochs, {epoch: lr}) per recipe; step schedules are
# checked on both sides of every milestone.
RECIPES = {
    "cifar": (64, 300, {0: 0.1, 149: 0.1, 150: 0.01, 224: 0.01, 225: 0.001, 299: 0.001}),
    "svhn": (64, 40, {0: 0.1, 19: 0.1, 20: 0.01, 29: 0.01, 30: 0.001, 39: 0.001}),
    "imagenet": (256, 90, {0: 0.1, 29: 0.1, 30: 0.01, 59: 0.01, 60: 0.001, 89: 0.001}),
    "imagenet161": (
        128,
        100,
        {0: 0.1, 29: 0.1, 30: 0.01, 59: 0.01, 60: 0.001, 89: 0.001, 90: 1e-4, 99: 1e-4},
    ),
    "cosine": (256, 90, None),
}


def recipe_of(path: Path) -> str | None:
    name = path.stem
    if name.startswith("cifar"):
        return "cifar"
    if name.startswith("svhn"):
        return "svhn"
    if name == "imagenet161":
        return "imagenet161"
    if name.startswith("imagenet"):
        return "cosine" if "cosine" in name else "imagenet"
    return None  # the demo


def resolved(capsys, *args: str) -> dict:
    """The config that ``fit --config ... --print_config`` prints."""
    with pytest.raises(SystemExit):
        main(["fit", *[a for p in args for a in ("--config", str(p))], "--print_config"])
    return yaml.safe_load(capsys.readouterr().out)


@pytest.fixture(scope="session")
def fake_data(tmp_path_factory) -> Path:
    """Tiny data sets in the real on-disk formats."""
    root = tmp_path_factory.mktemp("data")
    write_cifar10(root / "cifar10", n_train=40, n_test=16)
    write_cifar100(root / "cifar100", n_train=40, n_test=16)
    write_svhn(root / "svhn", n_train=30, n_extra=20, n_test=16)
    write_imagenet(root / "imagenet", n_classes=3, n_per_class=4, n_val_per_class=2, size=(40, 48))
    return root


def data_args(path: Path, data_root: Path) -> list[str]:
    """Point a config at the tiny data, with batches that fit it."""
    name = path.stem
    for prefix in ("cifar100", "cifar10", "svhn"):
        if name.startswith(prefix):
            args = ["--data.init_args.data_dir", str(data_root / prefix)]
            args += ["--data.init_args.batch_size", "8"]
            return args + (["--data.init_args.val_size", "10"] if prefix == "svhn" else [])
    if name.startswith("imagenet"):
        return [
            "--data.init_args.data_dir",
            str(data_root / "imagenet"),
            "--data.init_args.batch_size",
            "4",
            "--data.init_args.num_workers",
            "0",
            "--data.init_args.train_crop",
            "32",
            "--data.init_args.eval_resize",
            "36",
            "--data.init_args.eval_crop",
            "32",
        ]
    return ["--data.init_args.batch_size", "16"]


def quick(tmp_path: Path) -> list[str]:
    """A single batch of each stage (``fast_dev_run``) on a quiet CPU trainer."""
    return trainer_args(tmp_path / "runs", fast_dev_run=True)


# ---------------------------------------------------------------------- the set of runs
def test_one_config_per_paper_run():
    names = {p.stem for p in RUNS}
    expected = {"demo_digits"}
    benchmarks = {"c10": "cifar10", "c10+": "cifar10plus", "c100": "cifar100"}
    benchmarks |= {"c100+": "cifar100plus", "svhn": "svhn"}
    for m in CIFAR_MODELS:
        expected |= {f"{benchmarks[b]}_{m.key}" for b in m.errors}
    expected |= {"imagenet" + m.key.removeprefix("densenet") for m in IMAGENET_MODELS}
    assert "imagenet121" in names
    assert names == expected


def test_readme_lists_every_run_with_the_papers_error():
    readme = (EXPERIMENTS / "README.md").read_text()
    for path in RUNS:
        if path.stem == "demo_digits":
            continue
        first_line = path.read_text().splitlines()[0]
        error = re.search(r"(\d+\.\d+)% ", first_line).group(1)
        rows = [line for line in readme.splitlines() if f"{path.stem}.yaml" in line]
        assert rows, f"{path.name} missing from experiments/README.md"
        assert any(error in row for row in rows), f"{path.name}: {error}% not in its README row"


@pytest.mark.parametrize("path", RUNS, ids=lambda p: p.stem)
def test_config_matches_the_paper(path, capsys):
    cfg = resolved(capsys, path)
    model, data, trainer = cfg["model"], cfg["data"], cfg["trainer"]
    recipe = recipe_of(path)
    assert cfg["trainer"]["callbacks"][0]["class_path"] == "densenet_lit.callbacks.RunCheckpoint"
    assert model["lr"] == 0.1 and model["momentum"] == 0.9 and model["nesterov"]
    assert model["weight_decay"] == 1e-4 and model["dampening"] == 0
    if recipe is None:
        return
    batch, epochs, _ = RECIPES[recipe]
    assert data["init_args"]["batch_size"] == batch
    assert trainer["max_epochs"] == epochs
    if recipe in ("cifar", "svhn"):
        key = path.stem.split("_", 1)[1]
        (row,) = [m for m in CIFAR_MODELS if m.key == key]
        defaults = {"bottleneck": True, "compression": 0.5}  # DenseNetModule's for densenet_cifar
        for arg, value in row.model_kwargs.items():
            given = model[arg] if model[arg] is not None else defaults[arg]
            assert given == value, arg
        augmented = path.stem.split("_")[0].endswith("plus")
        assert data["init_args"].get("augment", False) == augmented
        assert model["drop_rate"] == (0.0 if augmented else 0.2)  # dropout only without "+"
        dataset = path.stem.split("_")[0].removesuffix("plus")
        assert data["class_path"].lower().endswith(f"{dataset}datamodule")
        if recipe == "svhn":
            assert data["init_args"]["val_size"] == 6000 and cfg["run"]["test_ckpt"] == "best"
        else:
            assert data["init_args"]["val_size"] == 0 and cfg["run"]["test_after_fit"]
    else:
        assert data["class_path"] == "densenet_lit.data.ImageNetDataModule"
        (row,) = [
            m for m in IMAGENET_MODELS if "imagenet" + m.key.removeprefix("densenet") == path.stem
        ]
        assert model["arch"] == row.arch and model["depth"] is None
        for arg, value in row.model_kwargs.items():  # densenet_imagenet: blocks and k
            given = tuple(model[arg]) if arg == "block_config" else model[arg]
            assert given == value, arg
        assert (model["schedule"] == "cosine") == ("cosine" in path.stem)


@pytest.mark.parametrize("path", RUNS, ids=lambda p: p.stem)
def test_learning_rate_around_each_milestone(path, capsys):
    """The optimizer and scheduler built from the config give SPEC.md's learning rates."""
    recipe = recipe_of(path)
    cfg = resolved(capsys, path)
    network = ("depth", "growth_rate", "block_config")
    model_args = {k: v for k, v in cfg["model"].items() if k not in network}
    model_args.update(arch="densenet_cifar", depth=10, growth_rate=4)  # the recipe, tiny net
    model_args.update(bottleneck=None, compression=None)
    module = DenseNetModule(**model_args)
    epochs = cfg["trainer"]["max_epochs"]
    steps = 10
    module._trainer = SimpleNamespace(max_epochs=epochs, estimated_stepping_batches=epochs * steps)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]
    if recipe == "cosine":
        assert sched["interval"] == "step"
        lrs = []
        for _ in range(epochs * steps + 1):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched["scheduler"].step()
        total = epochs * steps
        assert lrs[0] == pytest.approx(0.1)
        assert lrs[total // 2] == pytest.approx(0.05)
        assert lrs[total] == pytest.approx(0.0, abs=1e-12)
        assert lrs[total // 3] == pytest.approx(0.05 * (1 + math.cos(math.pi / 3)))
        return
    assert sched["interval"] == "epoch"
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched["scheduler"].step()
    expected = RECIPES[recipe][2] if recipe else {0: 0.1}
    for epoch, lr in expected.items():
        assert lrs[epoch] == pytest.approx(lr), f"epoch {epoch}"


# ------------------------------------------------------------------------- fit them all
@pytest.mark.parametrize("path", RUNS, ids=lambda p: p.stem)
def test_config_runs_fit(path, fake_data, tmp_path):
    args = ["fit", "--config", str(path), *data_args(path, fake_data), *quick(tmp_path)]
    if "densenet_imagenet" in path.read_text():  # shrunk: 1 layer per block, k = 4
        args += ["--model.block_config", "[1, 1, 1, 1]", "--model.growth_rate", "4"]
    else:
        if path.stem.startswith("imagenet"):
            args += ["--model.arch", "densenet_cifar"]  # shrunk: a small CIFAR-style network
        args += SHRINK
    c = run(args)
    assert c.trainer.global_step == 1
    assert c.model.hparams.num_classes == c.datamodule.num_classes
    if c.config.fit.run.test_after_fit:
        assert "test/error" in c.trainer.callback_metrics


@pytest.mark.slow
@pytest.mark.parametrize("name", ["imagenet121"])
def test_imagenet_config_runs_fit_with_its_own_network(name, fake_data, tmp_path):
    path = EXPERIMENTS / f"{name}.yaml"
    c = run(["fit", "--config", str(path), *data_args(path, fake_data), *quick(tmp_path)])
    assert c.trainer.global_step == 1
    assert c.model.hparams.arch == "densenet" + name.removeprefix("imagenet").split("_")[0]
    assert c.model.model.classifier.out_features == 1000 and c.model.top5


# ------------------------------------------------------------------------------ overlays
def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are values, not descended into."""
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def overlay_settings(overlay: Path) -> dict[str, object]:
    """The dotted keys an overlay sets, with those of the files it extends (later files win)."""
    merged: dict[str, object] = {}
    for path in config_chain(overlay):
        merged.update(flatten(yaml.safe_load(path.read_text()) or {}))
    merged.pop(EXTENDS_KEY, None)
    return merged


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.stem)
def test_overlay_composes_on_a_run(overlay, capsys):
    base = flatten(resolved(capsys, EXPERIMENTS / "imagenet161.yaml"))
    cfg = flatten(resolved(capsys, EXPERIMENTS / "imagenet161.yaml", overlay))
    settings = overlay_settings(overlay)
    appended = settings.pop("trainer.callbacks+", [])
    for key, value in settings.items():
        assert cfg[key] == value, f"{key}: resolved {cfg[key]!r}, the overlay sets {value!r}"
    # Exactly the keys the overlay sets to a new value differ from the run, nothing else
    # (the run's network, its global batch and its checkpoint callback included).
    expected = {key for key, value in settings.items() if base.get(key) != value}
    if appended:
        expected.add("trainer.callbacks")
    changed = {key for key in base.keys() | cfg.keys() if base.get(key) != cfg.get(key)}
    assert changed == expected
    assert changed, "the overlay changes nothing"
    # callbacks+ appends to the run's callbacks: RunCheckpoint stays first
    callbacks = cfg["trainer.callbacks"]
    assert callbacks[: len(base["trainer.callbacks"])] == base["trainer.callbacks"]
    added = callbacks[len(base["trainer.callbacks"]) :]
    assert [c["class_path"] for c in added] == [c["class_path"] for c in appended]
    for got, wanted in zip(added, appended, strict=True):
        assert got["init_args"].items() >= wanted.get("init_args", {}).items()


def test_fast_overlay_settings(capsys):
    cfg = resolved(capsys, EXPERIMENTS / "imagenet121.yaml", EXPERIMENTS / "overlays/fast.yaml")
    assert cfg["trainer"]["precision"] == "bf16-mixed" and cfg["trainer"]["benchmark"]
    assert cfg["model"]["channels_last"] and cfg["model"]["compile"]


def test_debug_overlay_runs_on_cpu(fake_data, tmp_path):
    path = EXPERIMENTS / "cifar10plus_densenet_bc_100_12.yaml"
    c = run(
        [
            "fit",
            "--config",
            str(path),
            "--config",
            str(EXPERIMENTS / "overlays/debug.yaml"),
            "--data.init_args.data_dir",
            str(fake_data / "cifar10"),
            "--data.init_args.batch_size",
            "8",
            "--trainer.default_root_dir",
            str(tmp_path / "runs"),
            "--trainer.enable_progress_bar",
            "false",
            *SHRINK,
        ]
    )
    assert c.trainer.current_epoch == 2 and c.trainer.global_step == 2 * 4
    assert c.run_dir.parent.name == "cifar10plus_densenet_bc_100_12"
    assert (c.run_dir / "checkpoints/last.ckpt").is_file()
    assert "test/error" in (c.run_dir / "metrics.csv").read_text()


def test_slurm_example_matches_the_multinode_overlay():
    script = (EXPERIMENTS / "overlays/slurm_example.sh").read_text()
    assert "srun python -m densenet_lit fit" in script
    assert "#SBATCH --signal=SIGUSR1@90" in script and "#SBATCH --requeue" in script
    assert "--ntasks-per-node" in script and "overlays/multinode.yaml" in script
