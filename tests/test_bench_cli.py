"""The bench's command line and settings: jsonargparse's errors for bad modes and models, the
argparse version's spellings, a step variant as one entry of MODES, the documented commands,
the loader row's images per worker, and the bench and the GPU tests without jsonargparse."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from densenet_lit.bench import main
from densenet_lit.bench.config import MODES, Mode, Settings, model_specs
from densenet_lit.bench.loaders import imagenet_loader_images
from densenet_lit.bench.steps import LIGHTNING, PLAIN, make_module, step_row
from densenet_lit.bench.suite import parse

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def test_rejects_unknown_modes_and_models(capsys):
    """jsonargparse names the option, the value and the choices."""
    with pytest.raises(SystemExit) as stopped:
        main(["--quick", "--modes", "[fp32,fp8]"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert 'Parser key "modes"' in err and "Got value: fp8" in err
    assert "Literal['fp32', 'channels_last', 'bf16-mixed', 'compile', 'fast'," in err
    with pytest.raises(SystemExit) as stopped:
        main(["--quick", "--models", "[resnet]"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert 'Parser key "models"' in err and "Got value: resnet" in err
    assert "Literal['cifar', 'imagenet', 'all']" in err
    with pytest.raises(SystemExit) as stopped:
        main(["--quick", "--warmup", "0"])
    assert stopped.value.code == 2
    assert "warmup=0, steps=2, windows=2, rounds=1: each must be at least 1." in (
        capsys.readouterr().err
    )


def test_old_option_spellings_still_parse():
    """The argparse version's spellings (dashes, a bare --quick), jsonargparse's lists, 'all'."""
    from densenet_lit.toolcli import old_spellings  # here: the rest runs without jsonargparse

    argv = ["--quick", "--batch-cifar", "8", "--modes", "[fp32,fast]", "--epoch-modes=[all]"]
    assert old_spellings(argv, Settings) == [
        *("--quick=true", "--batch_cifar", "8", "--modes", "[fp32,fast]"),
        "--epoch_modes=[all]",
    ]
    s = parse([*argv, "--device", "cpu", "--sections", "[steps]", "--quick"])
    assert (s.quick, s.batch("cifar"), s.modes, s.sections) == (
        True,
        8,
        ["fp32", "fast"],
        ["steps"],
    )
    assert s.epoch_modes == list(MODES) and s.batch("imagenet") == 2  # --quick's default
    assert parse(["--device", "cpu"]).modes == [m for m in MODES if not MODES[m].compile]


def test_a_step_variant_is_one_entry_of_modes(monkeypatch):
    """A new row (e.g. a recipe's module options) is one Mode: its module arguments reach
    DenseNetModule on the Lightning side, and the row is measured like any other."""
    variant = Mode("dropout", module={"drop_rate": 0.2})
    monkeypatch.setitem(MODES, variant.name, variant)
    spec = model_specs(quick=True)["cifar"]
    assert make_module(spec, variant).hparams.drop_rate == 0.2
    assert variant.label == "fp32, NCHW, eager, drop_rate=0.2"
    s = Settings(device="cpu", quick=True, warmup=1, steps=1, windows=1)
    row = step_row(spec, variant.name, s, runners=[PLAIN, LIGHTNING])
    assert row["mode"] == "dropout"
    assert len(row["runs"][LIGHTNING]["window_ips"]) == len(row["runs"][PLAIN]["window_ips"]) == 1


def test_the_bench_never_imports_the_cli():
    """A bare GPU machine may lack jsonargparse (and wandb): the suite imports neither the CLI
    nor jsonargparse, in a fresh interpreter where jsonargparse cannot be imported."""
    code = (
        "import sys; sys.modules['jsonargparse'] = None\n"
        "import densenet_lit.bench.suite, densenet_lit.bench.__main__\n"
        "assert 'densenet_lit.cli' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_documented_commands_use_real_options(monkeypatch):
    """Every ``python -m densenet_lit.bench`` line of docs/benchmarks.md parses."""
    commands = re.findall(r"^python -m densenet_lit\.bench( .*)?$", DOCS.read_text(), re.M)
    assert len(commands) >= 8
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the GPU commands too
    for command in commands:
        if "--help" in command or "--config" in command:  # jsonargparse's own options
            continue
        parse(shlex.split(command.split("#")[0].replace("$OUT", "/tmp/out")))  # else SystemExit


def test_the_gpu_tests_need_neither_jsonargparse_nor_wandb():
    """The files holding the GPU-only tests are collected where jsonargparse and wandb are
    missing, as on a bare GPU machine (docs/benchmarks.md)."""
    files = ["tests/test_module.py", "tests/test_module_speed.py", "tests/test_bench.py"]
    files.append("tests/test_data_modules.py")
    files.append("tests/test_data_device_decode.py")
    code = (
        "import sys; sys.modules['jsonargparse'] = None; sys.modules['wandb'] = None\n"
        "import pytest\n"
        f"sys.exit(pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', *{files}]))"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, done.stdout[-2000:]


@pytest.mark.parametrize(("cores", "workers"), [(2, 2), (32, 16)])
def test_the_imagenet_loader_row_gives_every_default_worker_batches(monkeypatch, cores, workers):
    """An epoch of the synthetic JPEGs holds four batches per default worker: with fewer, the
    queue drains at every epoch end and the row measures fewer workers than it names."""
    monkeypatch.setattr("densenet_lit.data.imagenet.cpu_count", lambda: cores)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    settings = Settings(device="cpu")
    images = imagenet_loader_images(settings)
    assert images // settings.loader_batch == max(5, 4 * workers)  # 320 images: 5 batches
