"""The notebooks: committed without outputs, and (slow) run top to bottom on small settings with
their plots checked to exist and not be blank."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import nbformat
import pytest
from plots import assert_png_not_blank

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
EXPECTED = ("architectures", "compare_runs", "feature_reuse")
# PNG files each notebook must write into DENSENET_LIT_NOTEBOOK_OUT.
PLOTS = {
    "architectures": ("error_vs_params.png", "error_vs_flops.png"),
    "feature_reuse": (
        "feature_reuse.png",
        "feature_reuse_stretched.png",
        "feature_reuse_untrained.png",
    ),
    "compare_runs": ("validation_error.png", "runs_vs_paper.png"),
}


def test_every_notebook_is_there():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_is_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}.ipynb cell {i} has outputs"
            assert cell.execution_count is None, f"{name}.ipynb cell {i} has an execution count"
        assert "execution" not in cell.metadata, f"{name}.ipynb cell {i} has timing metadata"


def run_notebook(name: str, timeout: int = 600) -> float:
    """Execute a notebook top to bottom in its own folder (as Jupyter does) with the kernel
    ``python3`` (this interpreter, see ``notebook_env``). Returns the seconds it took."""
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


@pytest.fixture
def notebook_env(tmp_path, monkeypatch):
    """Output folder and quiet settings for the kernel (it inherits this environment)."""
    out = tmp_path / "out"
    monkeypatch.setenv("DENSENET_LIT_NOTEBOOK_OUT", str(out))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    monkeypatch.delenv("DENSENET_LIT_RUN_DIR", raising=False)
    monkeypatch.delenv("DENSENET_LIT_WANDB_PROJECT", raising=False)
    # Kernel "python3" = this interpreter, whatever other kernelspecs the machine has: a spec
    # in JUPYTER_PATH wins over the user's and the environment's.
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # the kernel must import this checkout
    path = [str(NOTEBOOKS.parent), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in path if p))
    return out


def check_plots(name: str, out: Path) -> None:
    for png in PLOTS[name]:
        assert_png_not_blank(out / png)


@pytest.mark.slow
def test_architectures_notebook_runs(notebook_env, fake_runs, monkeypatch):
    monkeypatch.setenv("DENSENET_LIT_RUNS_DIR", str(fake_runs))
    seconds = run_notebook("architectures")
    check_plots("architectures", notebook_env)
    print(f"architectures.ipynb: {seconds:.1f} s")


@pytest.mark.slow
def test_feature_reuse_notebook_runs(notebook_env, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setenv("DENSENET_LIT_RUNS_DIR", str(runs))
    monkeypatch.setenv("DENSENET_LIT_NB_EPOCHS", "1")
    monkeypatch.setenv("DENSENET_LIT_NB_LIMIT_BATCHES", "2")
    seconds = run_notebook("feature_reuse")
    check_plots("feature_reuse", notebook_env)
    # it trained a real run with the CLI, in the run-directory format the analysis reads
    ckpts = list(runs.glob("*/*/checkpoints/last.ckpt"))
    assert len(ckpts) == 1
    assert list(ckpts[0].parent.parent.glob("metrics.csv"))
    print(f"feature_reuse.ipynb: {seconds:.1f} s")


@pytest.mark.slow
def test_compare_runs_notebook_runs(notebook_env, fake_runs, monkeypatch):
    monkeypatch.setenv("DENSENET_LIT_RUNS_DIR", str(fake_runs))
    seconds = run_notebook("compare_runs")
    check_plots("compare_runs", notebook_env)
    report = (notebook_env / "report.md").read_text()
    assert "| cifar10plus_densenet_bc_100_12 | 20250101-100000-aaaaaa | c10+ |" in report
    assert "4.75 (test) | +0.24 |" in report
    print(f"compare_runs.ipynb: {seconds:.1f} s")
