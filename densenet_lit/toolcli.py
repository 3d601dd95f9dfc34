"""The command line of every analysis and model tool, as jsonargparse builds the training CLI's:
one option per parameter of a function (or dataclass), its help from the docstring's ``Args:``,
plus ``--help``, ``--config FILE`` (YAML, parameters as keys) and ``--print_config``.

jsonargparse derives one spelling per parameter and has no aliases for derived options, so
:func:`old_spellings` keeps the tools' earlier spellings working: ``--wandb-project`` (a dash
for ``_``), ``--quiet`` (a bool option without ``true``), ``--select a b`` (several values
after a list option; jsonargparse takes one list, ``--select '[a, b]'``) and ``--modes fp32,fast``
(a comma-separated list). ``positional=`` gives
a parameter any number of values without an option name (``report runs/a runs/b``), which
jsonargparse's positionals (one value each) do not take.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
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
    bools, lists = set(), set()
    for name, hint in typing.get_type_hints(target).items():
        kinds = {typing.get_origin(h) or h for h in (hint, *typing.get_args(hint))}
        if bool in kinds:
            bools.add(name)
        if list in kinds:
            lists.add(name)
    return bools, lists


def is_comma_list(value: str) -> bool:
    """``fp32,fast``: the earlier comma-separated spelling of a list (not jsonargparse's
    ``[fp32,fast]``)."""
    return "," in value and not value.lstrip().startswith(("[", "{"))


def old_spellings(args: Sequence[str], target: Callable[..., Any]) -> list[str]:
    """``args`` with the earlier spellings (see the module docstring) rewritten to
    jsonargparse's."""
    names = set(inspect.signature(target).parameters)
    bools, lists = _kinds(target)
    args, out, i = list(args), [], 0
    while i < len(args):
        arg, i = args[i], i + 1
        if not arg.startswith("--"):
            out.append(arg)
            continue
        option, eq, value = arg[2:].partition("=")
        if option.replace("-", "_") in names:
            option = option.replace("-", "_")
        if not eq and option in bools and (i == len(args) or args[i].lower() not in BOOL_VALUES):
            eq, value = "=", "true"
        if not eq and option in lists:
            end = next((j for j in range(i, len(args)) if args[j].startswith("-")), len(args))
            if end - i > 1 or (end - i == 1 and is_comma_list(args[i])):
                # as argparse's nargs="+" (or a comma-separated value) read them
                items = [v for a in args[i:end] for v in a.split(",") if v]
                eq, value, i = "=", json.dumps(items), end
        elif eq and option in lists and is_comma_list(value):
            value = json.dumps([v for v in value.split(",") if v])
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
    target: Callable[..., Any],
    args: Sequence[str] | None = None,
    positional: str | None = None,
    input_errors: tuple[type[Exception], ...] = (FileNotFoundError,),
) -> Any:
    """Parse ``args`` (default: ``sys.argv[1:]``) for ``target`` and return
    ``target(**parameters)``. A :class:`UsageError` raised by ``target`` exits like a parse
    error (usage, message, status 2); one of ``input_errors`` (a missing or unreadable input)
    prints ``error: <message>`` and returns 2. ``--help`` and ``--print_config`` exit with 0."""
    parser = tool_parser(target, positional)
    cfg = parser.parse_args(old_spellings(sys.argv[1:] if args is None else args, target))
    try:
        return target(**{k: v for k, v in cfg.as_dict().items() if k != "config"})
    except UsageError as err:
        parser.error(str(err))
    except input_errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


__all__ = ["UsageError", "old_spellings", "run_tool", "tool_parser"]
