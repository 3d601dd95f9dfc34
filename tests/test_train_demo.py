"""The demo's flow end to end: fit, best-checkpoint test, printed summary; the network learns."""

from __future__ import annotations

import pytest

from densenet_lit import demo


@pytest.mark.slow
def test_demo_learns_the_digits(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    # The full demo (make demo) trains longer and reaches >= 98% test accuracy; three
    # epochs already leave chance level (90% error) far behind.
    error = demo.main(
        [
            "--trainer.max_epochs",
            "3",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(tmp_path / "runs"),
        ]
    )
    out = capsys.readouterr().out
    assert error < 30.0
    assert "Test error:" in out and str(tmp_path / "runs" / "demo_digits") in out
    (run_dir,) = (tmp_path / "runs" / "demo_digits").iterdir()
    assert list((run_dir / "checkpoints").glob("best-*.ckpt"))
    assert "test/error" in (run_dir / "metrics.csv").read_text()
