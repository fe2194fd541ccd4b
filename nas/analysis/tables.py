"""Result rows (one mapping per sub-network) as an aligned text table, a CSV file and a JSON file."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
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


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """One CSV line per row; columns in first-seen key order; nested values written as JSON."""
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    path = Path(path)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, dict | list | tuple) else v for k, v in row.items()})
    return path


def write_json(data: Any, path: str | Path) -> Path:
    """`data` as indented JSON."""
    path = Path(path)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
