"""The analysis and model tools share one command-line convention (densenet_lit.toolcli):
``--help``, ``--config`` YAML files, ``--print_config``, and the earlier spellings."""

from __future__ import annotations

import pytest

from densenet_lit.analysis import compare, costs, feature_reuse, paper_plots, report
from densenet_lit.models import authors_memory, memory
from densenet_lit.toolcli import old_spellings

TOOLS = {
    "densenet_lit.analysis.costs": costs.main,
    "densenet_lit.analysis.report": report.main,
    "densenet_lit.analysis.compare": compare.main,
    "densenet_lit.analysis.paper_plots": paper_plots.main,
    "densenet_lit.analysis.feature_reuse": feature_reuse.main,
    "densenet_lit.models.memory": memory.main,
    "densenet_lit.models.authors_memory": authors_memory.main,
}


@pytest.mark.parametrize("name", TOOLS)
def test_every_tool_answers_help(name, capsys):
    with pytest.raises(SystemExit) as stopped:
        TOOLS[name](["--help"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m {name} [--config CONFIG]")
    assert "--print_config" in out


def test_a_config_file_sets_positionals_and_options(fake_runs, tmp_path, capsys):
    out = tmp_path / "report.md"
    config = tmp_path / "report.yaml"
    config.write_text(f"runs: [{fake_runs}]\nall: true\nout: {out}\n")
    assert report.main(["--config", str(config)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| svhn_")]
    assert len(rows) == 1 and " | 2/4 | " in rows[0]  # `all: true` lists the unfinished run
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        report.main(["--config", str(config), "--all", "false", "--print_config"])
    assert stopped.value.code == 0
    printed = capsys.readouterr().out
    assert f"runs:\n- {fake_runs}\n" in printed and "all: false\n" in printed


def test_earlier_spellings_become_jsonargparse_options():
    args = ["runs/", "--wandb-project", "me/p", "--logy", "--select", "c10*", "svhn", "--out=x"]
    assert old_spellings(args, compare.compare_command) == [
        "runs/", "--wandb_project", "me/p", "--logy=true", '--select=["c10*", "svhn"]', "--out=x",
    ]  # fmt: skip
    assert old_spellings(["--select", "c10*", "runs/"], compare.compare_command) == [
        '--select=["c10*", "runs/"]'  # as argparse's nargs="+" read it
    ]
    kept = ["ckpt", "--quiet", "false", "--trust_checkpoint=true", "--which", "best"]
    assert old_spellings(kept, feature_reuse.feature_reuse_command) == kept
    assert old_spellings(["--trust-checkpoint", "ckpt"], feature_reuse.feature_reuse_command) == [
        "--trust_checkpoint=true",
        "ckpt",
    ]
    assert old_spellings(["--batch-size", "2"], memory.MemoryOptions) == ["--batch_size", "2"]
    # the earlier comma-separated lists (the bench's --modes fp32,fast), in both spellings
    for args in (["--select", "c10*,svhn"], ["--select=c10*,svhn"]):
        assert old_spellings(args, compare.compare_command) == ['--select=["c10*", "svhn"]']
    kept = ["--select=[a,b]", "--select", "[a,b]"]  # jsonargparse's own list syntax
    assert old_spellings(kept, compare.compare_command) == kept


@pytest.mark.parametrize(
    ("tool", "args", "error"),
    [
        (report.main, [], "error: give roots of runs / run directories, or --wandb_project"),
        (paper_plots.main, [], "error: --out is required"),
        (compare.main, ["runs/", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    ],
)
def test_bad_command_lines_are_one_clear_error(tool, args, error, capsys):
    with pytest.raises(SystemExit) as stopped:
        tool(args)
    assert stopped.value.code == 2
    assert error in capsys.readouterr().err
