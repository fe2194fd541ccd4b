"""Task results and the results cache keyed by (sub-network, task, limit, checkpoint)."""

from __future__ import annotations

import hashlib
import json
import logging
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
        metrics: every metric with its standard error (`acc`, `acc_stderr`, ...) as lm-eval reports them.
        num_items: documents scored.
        seconds: wall-clock time of the evaluation that produced it.
        forward_share: share of that time spent inside the model's forward passes.
        groups: per-group (MMLU subject) mean of the optimised metric.
        items: per-item details (`doc_index`, log-likelihoods, predictions), when asked for.
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


@torch.no_grad()
def weights_fingerprint(model: torch.nn.Module) -> str:
    """A cheap checkpoint id: the model's name and a strided sample of every parameter (a few ms).

    Fine-tuning changes the sampled values, so results cached for other weights are not reused.
    """
    digest = hashlib.sha1(str(getattr(getattr(model, "config", None), "_name_or_path", "")).encode())
    for name, param in sorted(model.named_parameters()):
        flat = param.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 64)][:64].float().cpu()
        digest.update(name.encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


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
            for number, line in enumerate(self.path.read_text().split("\n"), start=1):
                try:
                    entry = json.loads(line)
                    self._entries[entry["key"]] = TaskResult.from_dict(entry["result"])
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    log.warning("Skipping line %d of the results cache %s (%s).", number, self.path, exc)

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
                f.write(json.dumps({"key": key, "result": result.to_dict()}) + "\n")

    def __len__(self) -> int:
        return len(self._entries)
