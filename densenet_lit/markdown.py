"""Markdown tables: the one writer that every report of densenet_lit (analysis, bench, memory
levels, cost tables) uses."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def table_lines(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """A Markdown table as lines: the header, the ``|---|`` rule and one line per row.

    Cells are written with ``str``; a row must have as many cells as the header.
    """
    header = [str(h) for h in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, row in enumerate(rows):
        cells = [str(c) for c in row]
        if len(cells) != len(header):
            raise ValueError(f"row {i} has {len(cells)} cells, the header {len(header)}: {cells!r}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table as one string (see :func:`table_lines`)."""
    return "\n".join(table_lines(header, rows))
