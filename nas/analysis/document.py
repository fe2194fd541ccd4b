"""A report as a list of blocks (headings, text, tables, figures), rendered as Markdown (figures linked
as files beside it) and as one self-contained HTML page (figures embedded as base64 PNG, no outside
asset, script or font)."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.analysis.figures import data_uri
from nas.analysis.tables import Column


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Text:
    """A paragraph; `items` makes it a bullet list instead."""

    text: str = ""
    items: tuple[str, ...] = ()


@dataclass(frozen=True)
class Table:
    rows: Sequence[Mapping[str, Any]]
    columns: Sequence[Column]
    caption: str = ""


@dataclass(frozen=True)
class Figure:
    path: Path
    caption: str = ""


Block = Heading | Text | Table | Figure


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    @property
    def figures(self) -> list[Path]:
        return [b.path for b in self.blocks if isinstance(b, Figure)]


def cell(value: Any, fmt: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if fmt and isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, fmt)
    return str(value)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    numeric = [any(isinstance(r.get(c.key), int | float) for r in rows) for c in columns]
    lines = ["| " + " | ".join(_md_escape(c.header) for c in columns) + " |"]
    lines.append("|" + "|".join("---:" if num else ":---" for num in numeric) + "|")
    for r in rows:
        lines.append("| " + " | ".join(_md_escape(cell(r.get(c.key), c.fmt)) for c in columns) + " |")
    return "\n".join(lines)


def to_markdown(doc: Document, base: Path) -> str:
    """Markdown with figures linked relative to `base` (the folder the file is written to)."""
    out = [f"# {doc.title}", ""]
    for b in doc.blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Text):
            if b.text:
                out += [b.text, ""]
            if b.items:
                out += [f"- {item}" for item in b.items] + [""]
        elif isinstance(b, Table):
            if b.caption:
                out += [f"*{b.caption}*", ""]
            out += [markdown_table(b.rows, b.columns) if b.rows else "(no rows)", ""]
        elif isinstance(b, Figure):
            rel = Path(b.path).resolve().relative_to(base.resolve()).as_posix()
            out += [f"![{Path(b.path).stem}]({rel})", ""]
            if b.caption:
                out += [f"*{b.caption}*", ""]
    return "\n".join(out).rstrip() + "\n"


STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: 4px; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-style: italic; font-size: 0.9em; }
"""


def html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], caption: str = "") -> str:
    e = html.escape
    parts = ["<table>"]
    if caption:
        parts.append(f"<caption>{e(caption)}</caption>")
    parts.append("<tr>" + "".join(f"<th>{e(c.header)}</th>" for c in columns) + "</tr>")
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c.key)
            kind = ' class="num"' if isinstance(v, int | float) and not isinstance(v, bool) else ""
            cells.append(f"<td{kind}>{e(cell(v, c.fmt))}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    return "\n".join(parts)


def to_html(doc: Document) -> str:
    """One HTML page holding everything, figures included."""
    e = html.escape
    body = [f"<h1>{e(doc.title)}</h1>"]
    for b in doc.blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, Text):
            if b.text:
                body.append(f"<p>{e(b.text)}</p>")
            if b.items:
                body.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            body.append(html_table(b.rows, b.columns, b.caption) if b.rows else "<p>(no rows)</p>")
        elif isinstance(b, Figure):
            body.append(
                f'<figure><img alt="{e(b.caption)}" src="{data_uri(b.path)}">'
                f"<figcaption>{e(b.caption)}</figcaption></figure>"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{e(doc.title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
