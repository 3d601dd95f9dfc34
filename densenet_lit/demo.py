"""``python -m densenet_lit.demo`` (``make demo``): the whole flow in a few minutes on a CPU.

Trains a small DenseNet-BC on scikit-learn's bundled handwritten digits (no download) with
``experiments/demo_digits.yaml``, tests the checkpoint with the lowest validation error, and
prints the test error and where everything went. It is an ordinary run of the CLI, i.e.

    python -m densenet_lit fit --config experiments/demo_digits.yaml

so it logs like any experiment: a run directory with config, checkpoints and metrics.csv, and a
W&B run (offline unless you are logged in). Extra arguments are passed on to the CLI, e.g.
``python -m densenet_lit.demo --trainer.max_epochs 3``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

CONFIG = Path("experiments") / "demo_digits.yaml"


def find_config() -> Path:
    """``experiments/demo_digits.yaml`` of the current directory or of the source checkout."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (base / CONFIG).is_file():
            return base / CONFIG
    raise SystemExit(
        f"Cannot find {CONFIG}: run the demo from the root of the densenet_lit checkout."
    )


def main(argv: list[str] | None = None) -> float:
    """Run the demo; returns the test error in percent."""
    from densenet_lit.cli import run
    from densenet_lit.metric_names import TEST_ERROR

    argv = sys.argv[1:] if argv is None else argv
    config = find_config()
    print(f"densenet_lit demo: fit + test of a small DenseNet-BC on the digits ({config})")
    start = time.perf_counter()
    cli = run(["fit", "--config", str(config), *argv])
    minutes = (time.perf_counter() - start) / 60
    metrics = cli.trainer.callback_metrics
    if TEST_ERROR not in metrics:
        raise SystemExit("The demo run ended without a test error (was it interrupted?).")
    error = float(metrics[TEST_ERROR])
    n_test = len(cli.datamodule.test_set) if cli.datamodule.test_set is not None else "the"
    run_dir = cli.run_dir
    print()
    print(f"Test error: {error:.2f}% (accuracy {100 - error:.2f}%) on {n_test} held-out digits")
    print(f"Wall time:  {minutes:.1f} min")
    print(f"Run:        {run_dir}/ (config.yaml, checkpoints/, metrics.csv, wandb/)")
    print(
        "Next:       python -m densenet_lit fit --config experiments/<run>.yaml  (see experiments/README.md)"
    )
    return error


if __name__ == "__main__":
    main()
