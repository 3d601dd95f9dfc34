"""The command line of every analysis and model tool: options from a function's (or dataclass's)
signature and docstring, parsed by jsonargparse as the training CLI is.

``run_tool(target, args)`` parses ``args`` into ``target``'s parameters and returns
``target(**parameters)``. So every tool takes ``--help``, ``--config FILE`` (YAML with the
parameters as keys), ``--print_config`` and options spelled after the parameters
(``--wandb_project``, ``--trust_checkpoint true``). jsonargparse does not express three things
the tools' earlier command lines used, so :func:`old_spellings` rewrites them before parsing:

* ``--wandb-project``: a dash where the parameter has an underscore (jsonargparse derives one
  name per parameter and has no aliases for derived options);
* ``--quiet``: a ``bool`` option without a value, meaning ``true`` (jsonargparse's bool
  options take a value);
* ``--select a b``: several values after a ``list`` option (jsonargparse takes one list,
  ``--select '[a, b]'``).

``positional=`` names a parameter that takes any number of values without an option name
(``report runs/a runs/b``): jsonargparse's positionals take one value each.
"""

from __future__ import annotations

import argparse
import inspect
import json
import typing
from collections.abc import Callable, Sequence
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser

BOOL_VALUES = {"true", "false", "yes", "no"}


class UsageError(ValueError):
    """A bad option value found by a tool itself: reported like jsonargparse's own errors
    (usage, then ``error: <message>``, exit status 2)."""


def _kinds(target: Callable[..., Any]) -> tuple[set[str], set[str]]:
    """Names of ``target``'s bool parameters and of its list parameters."""
    hints = typing.get_type_hints(target)
    bools, lists = set(), set()
    for name, hint in hints.items():
        options = typing.get_args(hint) if typing.get_origin(hint) else (hint,)
        options = [typing.get_origin(o) or o for o in options] + [typing.get_origin(hint)]
        if bool in options:
            bools.add(name)
        if list in options:
            lists.add(name)
    return bools, lists


def old_spellings(args: Sequence[str], target: Callable[..., Any]) -> list[str]:
    """``args`` with the earlier spellings (see the module docstring) rewritten to
    jsonargparse's."""
    names = set(inspect.signature(target).parameters)
    bools, lists = _kinds(target)
    out: list[str] = []
    args = list(args)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("--"):
            out.append(arg)
            continue
        option, eq, value = arg[2:].partition("=")
        if option.replace("-", "_") in names:
            option = option.replace("-", "_")
        if not eq and option in bools and (i == len(args) or args[i].lower() not in BOOL_VALUES):
            eq, value = "=", "true"
        if not eq and option in lists:
            values = []
            while i < len(args) and not args[i].startswith("-"):
                values.append(args[i])
                i += 1
            if len(values) > 1:
                eq, value = "=", json.dumps(values)
            else:
                out.append(f"--{option}")
                out += values
                continue
        out.append(f"--{option}{eq}{value}")
    return out


def tool_parser(target: Callable[..., Any], positional: str | None = None) -> ArgumentParser:
    """The parser of ``target``: its docstring's first paragraph as the description, one option
    per parameter (help from the docstring's ``Args:``), ``--config`` and ``--print_config``."""
    module = inspect.getmodule(target)
    spec = getattr(module, "__spec__", None)
    doc = inspect.getdoc(target) or ""
    parser = ArgumentParser(
        prog=f"python -m {spec.name if spec else target.__module__}",
        description=doc.split("\n\n")[0],
    )
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of options")
    skip = {positional} if positional else set()
    if positional:
        from docstring_parser import parse  # installed with jsonargparse[signatures]

        helps = {p.arg_name: p.description for p in parse(doc).params}
        # SUPPRESS: no values on the command line leaves a --config file's list in place
        parser.add_argument(positional, nargs="*", default=argparse.SUPPRESS,
                            help=helps.get(positional))  # fmt: skip
    if inspect.isclass(target):
        parser.add_class_arguments(target, as_group=False, skip=skip)
    else:
        parser.add_function_arguments(target, as_group=False, as_positional=True, skip=skip)
    return parser


def run_tool(
    target: Callable[..., Any], args: Sequence[str] | None = None, positional: str | None = None
) -> Any:
    """Parse ``args`` (default: ``sys.argv[1:]``) for ``target`` and return
    ``target(**parameters)``. A :class:`UsageError` raised by ``target`` exits like a parse
    error; ``--help`` and ``--print_config`` exit with status 0."""
    import sys

    parser = tool_parser(target, positional)
    cfg = parser.parse_args(old_spellings(sys.argv[1:] if args is None else args, target))
    kwargs = {k: v for k, v in cfg.as_dict().items() if k != "config"}
    try:
        return target(**kwargs)
    except UsageError as err:
        parser.error(str(err))


__all__ = ["UsageError", "old_spellings", "run_tool", "tool_parser"]
