"""Reading the bench's Markdown reports back in tests: a table after a heading, a cell as a
number (used by tests/test_bench.py and tests/test_gpu_check.py)."""

from __future__ import annotations


def number(text: str) -> float:
    """A table cell as a float ('1,234.5' and '0.98x' included); ValueError for 'n/a'."""
    return float(text.strip().rstrip("x *").replace(",", ""))


def table_after(report: str, heading: str) -> list[dict[str, str]]:
    """The first Markdown table after ``heading``, as one dict per row."""
    lines = report[report.index(heading) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    header, body = rows[0], rows[2:]
    return [dict(zip(header, r, strict=True)) for r in body]
