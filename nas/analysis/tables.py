"""Result rows (one mapping per sub-network) as an aligned text table (files: `nas.io.atomic`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Column:
    """One table column: the row key, its header, and a format spec for its values (e.g. ".2f")."""

    key: str
    header: str
    fmt: str = ""


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    return format(value, fmt) if fmt else str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """An aligned plain-text table: text columns left-aligned, numeric ones right-aligned."""
    cells = [[_cell(row.get(c.key), c.fmt) for c in columns] for row in rows]
    widths = [max([len(c.header), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row.get(c.key), int | float) for row in rows) for c in columns]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    header = line([c.header for c in columns])
    return "\n".join([header, "-" * len(header), *(line(r) for r in cells)])
