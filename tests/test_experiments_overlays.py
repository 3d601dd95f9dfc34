"""The overlays (``experiments/overlays/``) compose on a run, changing exactly the keys they
set; the debug overlay runs on the CPU; the Slurm example uses the multinode overlay."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from experiment_configs import EXPERIMENTS, FAKE_DATA, SHRINK, resolved

from densenet_lit.cli import run
from densenet_lit.cli.extends import EXTENDS_KEY, config_chain

OVERLAYS = sorted((EXPERIMENTS / "overlays").glob("*.yaml"))


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
    # callbacks+ appends to the run's callbacks: the checkpoint callbacks stay first
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
            str(fake_data("cifar10", **FAKE_DATA["cifar10"])[0]),
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
    assert script.rstrip().endswith("--ckpt_path auto")  # the requeued job resumes the run
