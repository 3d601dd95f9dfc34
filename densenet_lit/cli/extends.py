"""The ``extends:`` key of config files: a file names the files it builds on, which the CLI
applies first, as earlier ``--config`` options (jsonargparse's own nested ``config:`` drops
whole groups, so the composition is done here, on the command line)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from lightning.pytorch.cli import LightningCLI

EXTENDS_KEY = "extends"


def config_chain(path: str | os.PathLike, seen: tuple[Path, ...] = ()) -> list[Path]:
    """``path`` preceded (recursively) by the files its ``extends:`` key names.

    ``extends`` holds one path or a list, relative to the file that names it. The result is the
    order in which the files are applied: bases first, ``path`` last.
    """
    path = Path(path)
    resolved = path.resolve()
    if resolved in seen:
        cycle = " -> ".join(str(p) for p in (*seen, resolved))
        raise ValueError(f"extends: files include each other in a cycle: {cycle}")
    try:
        with open(path) as f:
            content = yaml.safe_load(f)
    except OSError:
        return [path]  # jsonargparse reports the missing file
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"{path}: not valid YAML{at}: {problem}.") from err
    bases = content.get(EXTENDS_KEY) if isinstance(content, dict) else None
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    chain: list[Path] = []
    for base in bases:
        base_path = Path(base) if os.path.isabs(base) else resolved.parent / base
        if not base_path.is_file():
            raise FileNotFoundError(f"{path}: extends: {base} -> no such file {base_path}")
        chain.extend(config_chain(base_path, (*seen, resolved)))
    return [*chain, path]


def expand_config_args(args: list[str]) -> list[str]:
    """Put the files each ``--config FILE`` extends in front of it, as extra ``--config`` flags.

    Several ``--config`` files compose (later values win, lists are replaced); ``extends:``
    makes one file compose on top of shared defaults without copying them. Only the options
    after the subcommand are expanded; ``--extends null`` is appended so that the resolved
    config (``--print_config``, the run's config.yaml) is complete on its own.
    """
    subcommands = set(LightningCLI.subcommands())
    start = next((i + 1 for i, a in enumerate(args) if a in subcommands), None)
    if start is None:
        return list(args)
    out, expanded = list(args[:start]), False
    i = start
    while i < len(args):
        arg = args[i]
        if arg in ("--config", "-c") and i + 1 < len(args):
            value, i = args[i + 1], i + 2
        elif arg.startswith("--config="):
            value, i = arg.split("=", 1)[1], i + 1
        else:
            out.append(arg)
            i += 1
            continue
        if not os.path.isfile(value):
            out += ["--config", value]  # a YAML string, or a missing file jsonargparse reports
            continue
        for base in config_chain(value)[:-1]:
            out += ["--config", str(base)]
            expanded = True
        out += ["--config", value]
    if expanded:
        out += [f"--{EXTENDS_KEY}", "null"]
    return out
