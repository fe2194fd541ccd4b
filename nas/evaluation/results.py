"""Task results and the results cache keyed by (sub-network, task, limit, checkpoint)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


@dataclass
class TaskResult:
    """One task's scores for one sub-network.

    Attributes:
        task: the task's name.
        metric: the metric the search optimises; `score` is its value.
        metrics: every metric with its standard error as lm-eval reports them, named `acc`, `acc_stderr` under
            lm-eval's default filter ("none") and `exact_match,strict-match` under another.
        num_items: documents scored.
        seconds: wall-clock time of the evaluation that produced it.
        forward_share: share of that time spent inside the model's forward passes.
        groups: per sub-task (MMLU subject) value of the optimised metric.
        items: per-item details (`doc_index`, responses, each metric's value), when asked for.
        subtasks: per sub-task of a group, its metrics in lm-eval's layout ("acc,none", "sample_len", ...).
        proportion: every item's optimised metric is 0 or 1 (a right/wrong score: Wilson intervals apply).
        cached: True when this call took the result from the cache.
    """

    task: str
    metric: str
    score: float
    metrics: dict[str, float | None]
    num_items: int
    seconds: float = 0.0
    forward_share: float = 0.0
    groups: dict[str, float] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)
    subtasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    proportion: bool = True
    cached: bool = False

    def to_dict(self, with_items: bool = False) -> dict[str, Any]:
        d = asdict(self)
        d.pop("cached")
        if not with_items:
            d.pop("items")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskResult:
        return cls(**d)


def sub_network_key(model: Any) -> str:
    """The active sub-network as canonical JSON ("full" for the whole super-network)."""
    sub = getattr(model, "active_sub_network", None)
    return "full" if sub is None else sub.to_json()


# model -> (cheap key, full hash): the full hash is recomputed only when the cheap key changes.
_FULL_HASHES: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple[Any, ...], str]] = weakref.WeakKeyDictionary()


def _cheap_key(model: torch.nn.Module) -> tuple[Any, ...]:
    """What changes when any weight changes in place or is replaced: each parameter's storage, shape,
    dtype and version counter (bumped by every in-place write: optimiser steps, `copy_`, loading)."""
    return tuple((name, p.data_ptr(), tuple(p.shape), str(p.dtype), p._version) for name, p in model.named_parameters())


@torch.no_grad()
def weights_fingerprint(model: torch.nn.Module) -> str:
    """A hash of every byte of every parameter, naming the weights that results belong to.

    A full hash, so a single changed value (a NaN written into a weight, weights rewritten in place on disk
    and reloaded) changes it. It costs a pass over the weights (about 0.3 s for SmolLM2-135M on a CPU);
    it is computed once per model and reused until a parameter is written or replaced.
    """
    key = _cheap_key(model)
    cached = _FULL_HASHES.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    digest = hashlib.blake2b(digest_size=16)  # of the weights alone: a moved folder keeps its fingerprint
    for name, param in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(str((tuple(param.shape), param.dtype)).encode())
        flat = param.detach().reshape(-1)
        for start in range(0, flat.numel(), 1 << 24):  # 16M values at a time: bounded host memory
            chunk = flat[start : start + (1 << 24)].cpu().contiguous()
            digest.update(chunk.view(torch.uint8).numpy().tobytes())
    fingerprint = digest.hexdigest()
    _FULL_HASHES[model] = (key, fingerprint)
    return fingerprint


class ResultsCache:
    """In-memory cache of `TaskResult`s, optionally mirrored to a JSON-lines file so a restarted search reuses it.

    Args:
        path: JSON-lines file (one `{"key": ..., "result": ...}` per line); None keeps the cache in memory.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._entries: dict[str, TaskResult] = {}
        self.hits = 0
        self.misses = 0
        if self.path is not None and self.path.is_file():
            self._load(self.path)

    def _load(self, path: Path) -> None:
        """Read every complete line; a last line cut short by a kill is dropped from the file, so the
        next result starts on a line of its own instead of being glued to (and lost with) it."""
        data = path.read_bytes()
        complete, _, torn = data.rpartition(b"\n")
        if torn:
            log.warning("The last line of the results cache %s was cut short (a kill while writing?); dropped.", path)
            with path.open("r+b") as f:
                f.truncate(len(complete) + 1 if complete else 0)
        bad = []
        for number, line in enumerate(complete.decode("utf-8", errors="replace").split("\n"), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                self._entries[entry["key"]] = TaskResult.from_dict(entry["result"])
            except (json.JSONDecodeError, KeyError, TypeError):
                bad.append(number)
        if bad:
            log.warning("Skipped %d unreadable line(s) of the results cache %s: %s.", len(bad), path, bad[:10])

    @staticmethod
    def key(sub: str, task: str, selection: str, checkpoint: str) -> str:
        return json.dumps([sub, task, selection, checkpoint])

    def get(self, key: str) -> TaskResult | None:
        result = self._entries.get(key)
        if result is None:
            self.misses += 1
        else:
            self.hits += 1
        return result

    def put(self, key: str, result: TaskResult) -> None:
        self._entries[key] = result
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                # Per-item details too when the result has them (a confirmation resumed after a kill needs them).
                f.write(json.dumps({"key": key, "result": result.to_dict(with_items=bool(result.items))}) + "\n")
                f.flush()
                os.fsync(f.fileno())

    def __len__(self) -> int:
        return len(self._entries)
