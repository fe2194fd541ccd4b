"""Quantized re-evaluations of the Pareto set (`quantized.json`, written by the pipeline), read leniently.

The expected form is a list of entries

    {"trial": 12, "method": "int8", "values": {"arc_easy": 0.61, "size_gb_fp16": 0.09}, "footprint_bytes": 91234567}
    {"trial": "reference", "method": "int8", ...}        # the unmodified model, quantized

A mapping holding such a list (under `results`, `entries` or `quantized`), a mapping from method to
its list, `footprint_gb` instead of `footprint_bytes`, and numbers written as strings are accepted too;
malformed entries are skipped with a note instead of failing the whole report.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_NAME = "quantized.json"
SPEED_FILE_NAME = "speed.json"
SPEED_KEYS = ("prefill_tokens_per_s", "decode_tokens_per_s")
REFERENCE_NAMES = ("reference", "full", "unmodified", "base")


@dataclass(frozen=True)
class QuantizedResult:
    """One quantized model re-evaluated on the study's objectives.

    Attributes:
        trial: the trial number of the sub-network, or None for the unmodified model.
        method: the quantization (int8, nf4, ...).
        values: objective name -> value measured on the quantized model.
        footprint_bytes: its real memory footprint, when measured.
        speed: `prefill_tokens_per_s` / `decode_tokens_per_s` when the pipeline timed it.
    """

    trial: int | None
    method: str
    values: dict[str, float]
    footprint_bytes: int | None = None
    speed: dict[str, float] = field(default_factory=dict)  # prefill/decode tokens per second, when timed

    @property
    def is_reference(self) -> bool:
        return self.trial is None

    @property
    def footprint_gb(self) -> float | None:
        return None if self.footprint_bytes is None else self.footprint_bytes / 1e9


@dataclass
class QuantizedResults:
    """Everything read from one quantized.json, with what could not be read."""

    path: Path | None = None
    results: list[QuantizedResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(r.method for r in self.results))

    def of_method(self, method: str) -> list[QuantizedResult]:
        return [r for r in self.results if r.method == method]

    def lookup(self, trial: int | None, method: str) -> QuantizedResult | None:
        return next((r for r in self.results if r.trial == trial and r.method == method), None)


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _trial(value: Any) -> int | None | str:
    """The trial number; None for the unmodified model; "" when unreadable."""
    if value is None or (isinstance(value, str) and value.strip().lower() in REFERENCE_NAMES):
        return None
    if isinstance(value, bool):
        return ""
    number = _number(value)
    return int(number) if number is not None and number == int(number) else ""


def parse_entry(entry: Any, default_method: str | None = None) -> QuantizedResult | None:
    """One entry, or None if it is not usable."""
    if not isinstance(entry, Mapping):
        return None
    trial = _trial(entry.get("trial", entry.get("number")))
    if trial == "":
        return None
    method = entry.get("method", entry.get("quantization", default_method))
    if not method:
        return None
    raw_values = entry.get("values", entry.get("objectives", {}))
    values = {}
    if isinstance(raw_values, Mapping):
        values = {str(k): v for k, v in ((k, _number(v)) for k, v in raw_values.items()) if v is not None}
    footprint = _number(entry.get("footprint_bytes"))
    if footprint is None and _number(entry.get("footprint_gb")) is not None:
        footprint = float(entry["footprint_gb"]) * 1e9
    if not values and footprint is None:
        return None
    assert trial is None or isinstance(trial, int)
    raw_details = entry.get("details")
    details: Mapping[str, Any] = raw_details if isinstance(raw_details, Mapping) else {}
    speed = {k: v for k, v in ((k, _number(details.get(k))) for k in SPEED_KEYS) if v is not None}
    return QuantizedResult(trial, str(method), values, int(footprint) if footprint is not None else None, speed)


def _entries(data: Any) -> Iterable[tuple[Any, str | None]]:
    """(entry, method given by the enclosing mapping) pairs of the accepted layouts."""
    if isinstance(data, list):
        yield from ((e, None) for e in data)
    elif isinstance(data, Mapping):
        for key in ("results", "entries", "quantized"):
            if isinstance(data.get(key), list):
                yield from ((e, data.get("method")) for e in data[key])
                return
        for method, entries in data.items():
            if isinstance(entries, list):
                yield from ((e, str(method)) for e in entries)


def read_quantized(path: str | Path | None) -> QuantizedResults:
    """The results in `path`; an empty result (with a note) when it is missing or unreadable."""
    if path is None:
        return QuantizedResults()
    path = Path(path)
    out = QuantizedResults(path=path)
    if not path.is_file():
        return out
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        out.notes.append(f"{path} could not be read ({exc}); the quantized results are left out.")
        return out
    skipped = 0
    for entry, method in _entries(data):
        parsed = parse_entry(entry, method)
        if parsed is None:
            skipped += 1
        else:
            out.results.append(parsed)
    if skipped:
        out.notes.append(f"{skipped} entries of {path.name} were not understood and are left out.")
    if not out.results and not skipped:
        out.notes.append(f"{path} holds no quantized results.")
    for note in out.notes:
        log.warning("%s", note)
    return out


def find_quantized_file(*folders: Path) -> Path | None:
    """The first quantized.json in `folders` (and their `quantize`/`quantization` sub-folders)."""
    for folder in folders:
        for candidate in (folder / FILE_NAME, folder / "quantize" / FILE_NAME, folder / "quantization" / FILE_NAME):
            if candidate.is_file():
                return candidate
    return None


def read_speeds(path: str | Path | None) -> dict[int | None, dict[str, float]]:
    """Trial number (None: the unmodified model) -> measured speeds, from the pipeline's `speed.json`;
    empty when the file is missing or unreadable (the report then has no throughput figures)."""
    if path is None or not Path(path).is_file():
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("%s could not be read (%s); throughput is left out of the report.", path, exc)
        return {}
    out: dict[int | None, dict[str, float]] = {}
    for entry in data if isinstance(data, list) else []:
        trial = _trial(entry.get("trial")) if isinstance(entry, Mapping) else ""
        if trial == "":
            continue
        speed = {k: v for k, v in ((k, _number(entry.get(k))) for k in SPEED_KEYS) if v is not None}
        if speed:
            out[trial if isinstance(trial, int) else None] = speed
    return out
