"""The CLI's argument parser: Lightning's, with a one-line usage before an error (not every
option) and a suggestion for a misspelt option."""

from __future__ import annotations

import difflib
import inspect
import re
import sys
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser

from densenet_lit.class_path import named_class

UNKNOWN_OPTION = re.compile(r"does not accept option '([\w.]+)'|unrecognized arguments: --([\w.]+)")
UNKNOWN_INIT_ARG = re.compile(r"class_path '([\w.]+)':\s*Option '(\w+)' is not accepted")


class DenseNetArgumentParser(LightningArgumentParser):
    """Lightning's parser, with a short usage line and "Did you mean ...?" on errors.

    ``family`` lists the parsers of one CLI (the root and one per subcommand, see
    ``DenseNetCLI.init_parser``): an option misspelt in a config file is reported by the root
    parser, whose own help lists only the subcommands.
    """

    family: list[LightningArgumentParser] | None = None

    def known_options(self) -> list[str]:
        parsers = self.family or [self]
        return list(dict.fromkeys(n for p in parsers for n in option_names(p.format_help())))

    def print_usage(self, file: Any = None) -> None:
        prog = self.prog.replace(" [options]", "")
        print(f"usage: {prog} [-h] [--config CONFIG] [options]", file=file or sys.stderr)

    def error(self, message: str, ex: Exception | None = None) -> Any:
        return super().error(message + did_you_mean(message, self.known_options), ex)


def option_names(help_text: str) -> list[str]:
    """The long options a parser's help lists, without their dashes (``model.growth_rate``)."""
    return list(dict.fromkeys(re.findall(r"--([\w.]+)", help_text)))


def init_arg_names(class_path: str) -> list[str]:
    """The ``__init__`` arguments of the class named by ``class_path`` ([] if it can't load)."""
    cls = named_class(class_path)
    return list(inspect.signature(cls.__init__).parameters) if cls is not None else []


def data_modules_taking(option: str, class_path: str) -> list[str]:
    """The data modules of :mod:`densenet_lit.data` other than ``class_path``'s that take
    ``option`` (e.g. ``auto_augment``: only the class-folder one, not CIFAR's or SVHN's)."""
    from densenet_lit import data

    name = class_path.rpartition(".")[2]
    modules = [n for n in data.__all__ if n.endswith("DataModule") and n != name]
    return [n for n in modules if option in init_arg_names(f"densenet_lit.data.{n}")]


def did_you_mean(message: str, known_options: Any) -> str:
    """`` Did you mean 'model.growth_rate'?`` for an option the message says is unknown, if a
    known one is close to it; else ''. ``known_options`` is called only when needed."""
    option = UNKNOWN_OPTION.search(message)
    in_class = UNKNOWN_INIT_ARG.search(message)
    if option:
        given, known = option.group(1) or option.group(2), known_options()
    elif in_class:
        given, known = in_class.group(2), init_arg_names(in_class.group(1))
        owners = data_modules_taking(given, in_class.group(1))
        if owners:
            return (
                f"\n'{given}' is an option of {' and '.join(owners)}, not of "
                f"{in_class.group(1).rpartition('.')[2]}: leave it out, or use that "
                f"data module (data.class_path densenet_lit.data.{owners[0]})."
            )
    else:
        return ""
    close = difflib.get_close_matches(given, known, n=1, cutoff=0.6)
    return f"\nDid you mean '{close[0]}'?" if close else ""
