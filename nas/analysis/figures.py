"""Matplotlib figures made without pyplot (so no GUI backend and no global state: they render with Agg on any
server), and saved as PNG files without external metadata."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

REFERENCE_COLOR = "tab:red"
FRONT_COLOR = "tab:blue"
QUANTIZED_STYLE = {"int8": ("v", "tab:green"), "nf4": ("s", "tab:purple")}
OTHER_QUANTIZED = [("D", "tab:orange"), ("P", "tab:brown"), ("X", "tab:pink")]


def figure(width: float = 6.4, height: float = 4.4, ncols: int = 1) -> tuple[Any, Any]:
    """A new figure and its axes (a list of axes when ncols > 1)."""
    fig = Figure(figsize=(width * ncols if ncols > 1 else width, height))
    axes = fig.subplots(1, ncols, squeeze=True)
    return fig, axes


def quantized_style(method: str, index: int) -> tuple[str, str]:
    """(marker, colour) of a quantization method."""
    return QUANTIZED_STYLE.get(method, OTHER_QUANTIZED[index % len(OTHER_QUANTIZED)])


def save(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Write `fig` as a PNG (parents created); a figure made without pyplot needs no closing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    # No "Software" text chunk: the embedded report should name no outside address at all.
    fig.savefig(path, format="png", dpi=dpi, metadata={"Software": None})
    return path


def data_uri(path: str | Path) -> str:
    """The PNG at `path` as a data: URI, for a self-contained HTML page."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
