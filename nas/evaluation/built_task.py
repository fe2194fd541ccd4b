"""A task turned into model inputs once per process: items, encoded requests, packed rows, batches."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np

from nas.evaluation.batching import Batch, make_batches
from nas.evaluation.encoding import RequestEncoder
from nas.evaluation.mc_metrics import ITEM_METRICS, aggregate, predictions
from nas.evaluation.packing import PackedRow, pack, split_group_prefix
from nas.evaluation.prompts import Item
from nas.evaluation.results import TaskResult
from nas.evaluation.task import MultipleChoiceTask, Selection

log = logging.getLogger(__name__)


@dataclass
class RowGroup:
    """Rows (documents) that continue the same token prefix, run once per evaluation (may be empty)."""

    prefix: tuple[int, ...]
    rows: list[PackedRow]
    offsets: list[int]  # global number of each row's first request


@dataclass
class BuiltTask:
    """A task's selected items as packed rows; batches are cut per token budget on first use."""

    task: MultipleChoiceTask
    doc_indices: list[int]
    items: list[Item]
    offsets: list[int]  # first request number of each item
    groups: list[RowGroup]
    num_requests: int
    _batches: dict[tuple[int, int], list[Batch]] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        """Tokens one evaluation reads: each group's prefix once, plus every row."""
        return sum(len(g.prefix) + sum(len(r) for r in g.rows) for g in self.groups)

    def batches(self, batch_tokens: int, max_batch_size: int) -> list[Batch]:
        """Length-sorted batches; rows of groups without a shared prefix are pooled into common batches."""
        key = (batch_tokens, max_batch_size)
        if key not in self._batches:
            pooled = RowGroup((), [], [])
            batches = []
            for g in self.groups:
                if g.prefix:
                    batches += make_batches(g.rows, g.offsets, batch_tokens, max_batch_size, g.prefix)
                else:
                    pooled.rows.extend(g.rows)
                    pooled.offsets.extend(g.offsets)
            if pooled.rows:
                batches += make_batches(pooled.rows, pooled.offsets, batch_tokens, max_batch_size)
            self._batches[key] = batches
        return self._batches[key]

    def score(self, lls: np.ndarray, greedy: np.ndarray, with_items: bool) -> TaskResult:
        """Per-item metrics from every request's log-likelihood, then lm-eval's aggregation."""
        per_item: dict[str, list[float]] = {name: [] for name in self.task.metrics}
        details = []
        for doc_index, item, start in zip(self.doc_indices, self.items, self.offsets):
            item_lls = lls[start : start + len(item.requests)].tolist()
            for name in self.task.metrics:
                per_item[name].append(ITEM_METRICS[name](item_lls, item))
            if with_items:
                details.append(
                    {"doc_index": doc_index, "group": item.group, "gold": item.gold, "lls": item_lls}
                    | predictions(item_lls, item)
                    | {"is_greedy": greedy[start : start + len(item.requests)].tolist()}
                    | {name: per_item[name][-1] for name in self.task.metrics}
                )
        groups = [item.group for item in self.items]
        metrics = aggregate(per_item, groups)
        by_group: dict[str, list[float]] = {}
        for value, group in zip(per_item[self.task.metric], groups):
            by_group.setdefault(group, []).append(value)
        group_means = {g: float(np.mean(v)) for g, v in by_group.items()} if len(by_group) > 1 else {}
        score = metrics[self.task.metric]
        assert score is not None
        return TaskResult(
            self.task.name, self.task.metric, score, metrics, len(self.items), groups=group_means, items=details
        )


def build_task(
    task: MultipleChoiceTask,
    encoder: RequestEncoder,
    selection: Selection,
    data_dir: str | os.PathLike[str] | None = None,
    share_prefix: bool = True,
    min_group_prefix: int = 32,
) -> BuiltTask:
    """Select items, render lm-eval's requests, tokenise them like HFLM and pack them.

    Args:
        share_prefix: read each document's context once for all its choices, and a prefix common to a
            whole group (MMLU subject, TruthfulQA's primer) once per evaluation; False packs every
            request on its own (the unshared reference).
        min_group_prefix: shortest common prefix worth running once for a group.
    """
    doc_indices, items = task.items(selection, data_dir)
    encoded = encoder.encode([request for item in items for request in item.requests])
    by_group: dict[str, tuple[list[PackedRow], list[int]]] = {}
    offsets, position = [], 0
    for item in items:
        offsets.append(position)
        rows, starts = by_group.setdefault(item.group, ([], []))
        rows.append(pack(encoded[position : position + len(item.requests)], share=share_prefix))
        starts.append(position)
        position += len(item.requests)
    groups = []
    for rows, starts in by_group.values():
        prefix, stripped = split_group_prefix(rows, min_group_prefix) if share_prefix else ((), rows)
        groups.append(RowGroup(prefix, stripped, starts))
    built = BuiltTask(task, doc_indices, items, offsets, groups, position)
    shared = sum(len(g.prefix) > 0 for g in groups)
    log.info(
        "%s: %d items, %d requests, %d tokens per evaluation (%d of %d groups share a prefix)",
        task.name,
        len(items),
        position,
        built.num_tokens,
        shared,
        len(groups),
    )
    return built
