"""The EMA of the weights (Lightning's EMAWeightAveraging) in real runs: the average against
one computed by hand, the weights each checkpoint holds, validation and the test after fit on
the average, exact resumption of a modern-recipe run, and with memory_efficient, compile and
bf16."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from cli_args import QUICK, cli_args
from test_fault_tolerance import BATCHES, EPOCHS, metric_rows, tiny_args
from weights import assert_same_weights, final_weights

from densenet_lit.callbacks import Preempted
from densenet_lit.checkpoints import load_checkpoint
from densenet_lit.cli import run


def ema(decay: float, every: int = 1, start: int | None = None) -> list[str]:
    args = ["--trainer.callbacks+=EMAWeightAveraging", "--trainer.callbacks.decay", str(decay)]
    args += ["--trainer.callbacks.update_every_n_steps", str(every)]
    if start is not None:
        args += ["--trainer.callbacks.update_starting_at_step", str(start)]
    return args


PROBE = ["--trainer.callbacks+=run_probes.WeightsPerStep"]


def hand_average(states: dict, decay: float, every: int, start: int) -> dict[str, torch.Tensor]:
    """``EMA = w`` at the first update, then ``decay * EMA + (1 - decay) * w`` at the steps
    ``s >= start`` with ``s % every == 0`` (weights and floating buffers)."""
    average = None
    for step in sorted(states):
        if step < start or step % every:
            continue
        w = states[step]
        if average is None:
            average = {k: v.clone() for k, v in w.items()}
        else:
            for k, v in w.items():
                if v.is_floating_point():
                    average[k] = decay * average[k] + (1 - decay) * v
    return average


def probe_of(c) -> dict[int, dict[str, torch.Tensor]]:
    (probe,) = [cb for cb in c.trainer.callbacks if type(cb).__name__ == "WeightsPerStep"]
    return probe.states


def floating(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if v.is_floating_point()}


def test_ema_is_the_hand_computed_average_and_validation_uses_it(tmp_path):
    """Decay 0.6, every 2nd step from step 2, over 7 steps: updates after steps 2, 4 and 6.
    The module ends with the average, ``last.ckpt`` holds it in ``state_dict`` and the trained
    weights in ``current_model_state``, and the logged val/loss is that of the average."""
    args = cli_args(
        "fit",
        tmp_path / "runs",
        *ema(0.6, every=2, start=2),
        *PROBE,
        data_init={"image_size": 16},
        seed=3,
        trainer={**QUICK, "limit_train_batches": 7},
        name="ema",
    )
    c = run(args)
    states = probe_of(c)
    assert sorted(states) == list(range(7))
    expected = hand_average(states, 0.6, every=2, start=2)
    got = final_weights(c)
    for k, v in floating(expected).items():
        assert torch.allclose(got[k], v, atol=1e-6), k
    raw = states[6]
    assert not torch.allclose(got["model.classifier.weight"], raw["model.classifier.weight"])
    ckpt = load_checkpoint(c.run_dir / "checkpoints" / "last.ckpt")
    assert int(ckpt["averaging_state"]["n_averaged"]) == 3
    assert_same_weights(floating(ckpt["state_dict"]), floating(got))
    assert_same_weights(floating(ckpt["current_model_state"]), floating(raw))
    # validating the checkpoint (its state_dict) gives the val/loss the run logged
    logged = float(c.trainer.callback_metrics["val/loss"])
    again = run(
        cli_args("validate", tmp_path / "runs", data_init={"image_size": 16}, name="ema")
        + ["--trainer.limit_val_batches", "2", "--ckpt_path", str(c.run_dir)]
    )
    assert float(again.trainer.callback_metrics["val/loss"]) == pytest.approx(logged, rel=1e-6)


@pytest.mark.slow
def test_test_after_fit_of_the_best_checkpoint_tests_the_average(tmp_path):
    """The best checkpoint tested at the end of fit gives what a later ``test`` of that file
    gives: its averaged weights (the stock callback would restore the trained ones)."""
    base = dict(data_init={"image_size": 16}, seed=4, trainer={**QUICK, "max_epochs": 2})
    run_opts = {"test_after_fit": True, "test_ckpt": "best"}
    c = run(cli_args("fit", tmp_path / "runs", *ema(0.5), name="best", run=run_opts, **base))
    after_fit = float(c.trainer.callback_metrics["test/loss"])
    (best,) = (c.run_dir / "checkpoints").glob("best-*.ckpt")
    later = run(
        cli_args("test", tmp_path / "runs", name="best", **base) + ["--ckpt_path", str(best)]
    )
    assert float(later.trainer.callback_metrics["test/loss"]) == pytest.approx(after_fit, rel=1e-6)
    saved = load_checkpoint(best)
    assert not torch.equal(
        saved["state_dict"]["model.classifier.weight"],
        saved["current_model_state"]["model.classifier.weight"],
    )


def test_resuming_an_averaged_checkpoint_without_the_callback_is_an_error(tmp_path):
    base = dict(data_init={"image_size": 16}, trainer=QUICK, name="avg")
    c = run(cli_args("fit", tmp_path / "runs", *ema(0.9), **base))
    ckpt = c.run_dir / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match="written by a run with an EMA of the weights"):
        run(cli_args("fit", tmp_path / "runs", **base) + ["--ckpt_path", str(ckpt)])


@pytest.mark.parametrize(
    "args, message",
    [
        (ema(1.0), r"decay=1.0: expected 0 < decay < 1"),
        (ema(0.0), r"decay=0.0: expected 0 < decay < 1"),
        (ema(0.9, every=0), r"update_every_n_steps=0: expected a whole number"),
        (ema(0.9, start=-1), r"update_starting_at_step=-1: expected None"),
    ],
)
def test_bad_ema_values_are_clear_errors(tmp_path, args, message):
    with pytest.raises(ValueError, match=message):
        run(cli_args("fit", tmp_path / "runs", *args, trainer=QUICK))


# ---------------------------------------------------------------- exact resumption
# The modern recipe on the tiny run of test_fault_tolerance: EMA (decay 0.7 per 2 steps, from
# step 1), MixUp and CutMix, label smoothing, a warm-up and no decay on norm layers and biases.
MODERN = [
    *ema(0.7, every=2, start=1),
    *["--model.mixup_alpha", "0.4", "--model.cutmix_alpha", "1.0"],
    *["--model.label_smoothing", "0.1", "--model.warmup_steps", "3"],
    *["--model.norm_weight_decay", "0.0"],
]
STOP = BATCHES + 2  # SIGTERM in the middle of epoch 1


@pytest.fixture(scope="module")
def modern_reference(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor], dict]:
    root = tmp_path_factory.mktemp("modern")
    c = run(tiny_args(root, "reference", *MODERN))
    assert c.trainer.global_step == EPOCHS * BATCHES
    return c.run_dir, final_weights(c), load_checkpoint(c.run_dir / "checkpoints" / "last.ckpt")


@pytest.mark.slow
def test_modern_run_with_ema_resumes_exactly(modern_reference, tmp_path):
    """Interrupted by SIGTERM in the middle of epoch 1 and resumed, the run ends with the same
    average and trained weights, and logs the same metrics (val/error of the average
    included), as the run never interrupted."""
    run_dir, state, last = modern_reference
    stop = ["--trainer.callbacks+=run_probes.SignalAt"]
    stop += ["--trainer.callbacks.signals", f"{{{STOP}: SIGTERM}}"]
    with pytest.raises(Preempted) as stopped:
        run(tiny_args(tmp_path, "exp", *MODERN, *stop))
    assert stopped.value.code == 128 + signal.SIGTERM
    saved = load_checkpoint(stopped.value.ckpt_path)
    assert saved["global_step"] == STOP and "current_model_state" in saved

    resumed = run(tiny_args(tmp_path, "exp", *MODERN, "--ckpt_path", "last"))
    assert resumed.trainer.global_step == EPOCHS * BATCHES
    assert_same_weights(final_weights(resumed), state)  # the average, at the end of fit
    again = load_checkpoint(resumed.run_dir / "checkpoints" / "last.ckpt")
    assert_same_weights(again["current_model_state"], last["current_model_state"])
    assert_same_weights(again["state_dict"], last["state_dict"])
    assert metric_rows(resumed.run_dir) == metric_rows(run_dir)
    assert {r["epoch"] for r in metric_rows(run_dir) if r["val/error"]} == {"0", "1", "2", "3"}


def test_a_preemption_at_an_epochs_end_keeps_the_trained_weights(tmp_path, monkeypatch):
    """SIGTERM at the last step of epoch 0: the checkpoint is written at the epoch's end, before
    the callback puts the average into the module at the end of training, so it holds the
    trained weights in current_model_state and the average in state_dict."""
    monkeypatch.setenv("PROBE_DIR", str(tmp_path / "probe"))
    stop = [
        "--trainer.callbacks+=run_probes.SignalAt",
        "--trainer.callbacks.signals",
        "{2: SIGTERM}",
    ]
    args = cli_args(
        "fit",
        tmp_path / "runs",
        *ema(0.5),
        *PROBE,
        *stop,
        data_init={"image_size": 16},
        trainer={**QUICK, "max_epochs": 2},
        name="stop",
    )
    with pytest.raises(Preempted) as stopped:
        run(args)
    saved = load_checkpoint(stopped.value.ckpt_path)
    assert saved["global_step"] == 2 and saved["epoch"] == 0
    raw = torch.load(tmp_path / "probe" / "raw_rank0.pt")  # after step 2
    assert_same_weights(floating(saved["current_model_state"]), floating(raw))
    key = "model.classifier.weight"
    assert not torch.equal(saved["state_dict"][key], raw[key])
    assert int(saved["averaging_state"]["n_averaged"]) == 2


# ------------------------------------------------- memory_efficient, compile, bf16
def test_ema_with_memory_efficient_compile_and_bf16(tmp_path, monkeypatch):
    """The average of a memory-efficient, compiled (aot_eager on the CPU) network trained in
    bf16-mixed is the hand-computed one, under the plain parameter names."""
    compile_ = torch.compile
    monkeypatch.setattr(
        torch, "compile", lambda model, **kw: compile_(model, **{**kw, "backend": "aot_eager"})
    )
    torch.compiler.reset()
    args = cli_args(
        "fit",
        tmp_path / "runs",
        *ema(0.5),
        *PROBE,
        data_init={"image_size": 16},
        model={"memory_efficient": True, "compile": True},
        seed=2,
        trainer={
            **QUICK,
            "limit_train_batches": 3,
            "limit_val_batches": 0,
            "precision": "bf16-mixed",
        },
        name="fast",
    )
    c = run(args)
    expected = hand_average(probe_of(c), 0.5, every=1, start=0)
    got = final_weights(c)
    assert got.keys() == expected.keys() and not any("_orig_mod" in k for k in got)
    for k, v in floating(expected).items():
        assert torch.allclose(got[k], v, atol=1e-6), k
    ckpt = load_checkpoint(c.run_dir / "checkpoints" / "last.ckpt")
    assert int(ckpt["averaging_state"]["n_averaged"]) == 3
    assert ckpt["state_dict"]["model.classifier.weight"].dtype == torch.float32
