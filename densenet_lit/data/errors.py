"""Errors for missing, malformed or undownloadable data.

Every bad-data case ends in one :class:`DataError` whose message names the path, the
layout that was expected and how to get the data, instead of a traceback from deep
inside pickle, scipy or PIL.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class DataError(Exception):
    """A data set is missing, laid out wrongly, corrupt, or could not be downloaded."""


class DatasetNotFoundError(DataError):
    """The data directory or some of its files do not exist."""


class CorruptDataError(DataError):
    """A file exists but cannot be read (truncated download, wrong format)."""


class DownloadError(DataError):
    """Downloading failed (typically: no internet on this machine)."""


def not_found(
    name: str, path: Path, missing: Iterable[Path], layout: str, how_to_get: str
) -> DatasetNotFoundError:
    """Build the error for absent files: what is missing, what should be there, how to get it."""
    missing_list = "\n".join(f"  - {p}" for p in missing)
    return DatasetNotFoundError(
        f"{name} not found under '{path}'. Missing:\n{missing_list}\n"
        f"Expected layout:\n{layout}\n"
        f"How to get it: {how_to_get}"
    )


def corrupt(path: Path, problem: object, how_to_get: str) -> CorruptDataError:
    """Build the error for a file that exists but does not parse."""
    return CorruptDataError(
        f"Cannot read '{path}': {problem}. The file is truncated or corrupt (an interrupted "
        f"download, or not the original file). Delete it and get it again: {how_to_get}"
    )
