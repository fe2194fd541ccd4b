"""A task turned into model inputs once per process: items, encoded requests, packed rows, batches.

Which rows run after which shared prefix is planned per device (`plan_prefixes`): a prefix read once
per evaluation saves the tokens it would cost in every row, but each one costs a forward pass of its
own, and a group prefix also keeps its group's rows out of the common batches (a last, partly filled
batch). On CPU a forward pass costs about as much as 13 more tokens in a batch (SmolLM2-135M, one
thread: 45 ms to stream the weights, then 3.5 ms a token), so `CPU_FORWARD_COST` is 16 tokens.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from nas.evaluation.batching import Batch, make_batches
from nas.evaluation.mc_metrics import ITEM_METRICS, aggregate, predictions
from nas.evaluation.packing import PackedRow, pack, split_group_prefix
from nas.evaluation.prompts import Item
from nas.evaluation.requests import RequestEncoder
from nas.evaluation.results import TaskResult
from nas.evaluation.task import MultipleChoiceTask, Selection

log = logging.getLogger(__name__)

# What one more forward pass costs, in tokens of a batch (see the module docstring). CUDA's is a guess
# (a small forward pass there is mostly kernel launches), not measured.
CPU_FORWARD_COST = 16
CUDA_FORWARD_COST = 1024
# Shortest prefix shared by the pooled rows that runs once. ARC's two-token "Question:" would save 5% of
# its tokens, but the log-likelihoods then drift from HFLM's up to 1e-3 (from 2e-4; SmolLM2-135M, four
# sub-networks); MMLU's eleven-token header opening stays within 1e-4.
MIN_POOL_PREFIX = 8


@dataclass
class RowGroup:
    """Rows (documents) that continue the same token prefix, run once per evaluation (may be empty)."""

    prefix: tuple[int, ...]
    rows: list[PackedRow]
    offsets: list[int]  # global number of each row's first request

    @property
    def num_tokens(self) -> int:
        return len(self.prefix) + sum(len(r) for r in self.rows)


def _pays(rows: int, prefix: int, forward_passes: int, forward_cost: int) -> bool:
    """Whether reading `prefix` tokens once instead of once per row saves more than `forward_passes` cost."""
    return (rows - 1) * prefix > forward_passes * forward_cost


def plan_prefixes(
    groups: Sequence[RowGroup], min_group_prefix: int = 32, forward_cost: int = CPU_FORWARD_COST
) -> list[RowGroup]:
    """The row groups to batch: groups whose own prefix pays, then one pool of all other rows.

    Args:
        groups: per group (MMLU subject), its full rows and an empty prefix.
        min_group_prefix: shortest group prefix considered.
        forward_cost: what one more forward pass costs, in tokens.

    A group's common prefix (an MMLU subject's five solved examples, TruthfulQA's primer) runs once
    when it saves more than two forward passes: its own, and the group's last, partly filled batch.
    The other groups' rows are pooled into common batches, so small groups (MMLU with a few questions
    per subject) still fill batches; the prefix the whole pool shares (MMLU's "The following are
    multiple choice questions (with answers) about") runs once when it saves more than its own pass
    and is at least `MIN_POOL_PREFIX` tokens long.
    """
    planned: list[RowGroup] = []
    pool = RowGroup((), [], [])
    for group in groups:
        prefix, stripped = split_group_prefix(group.rows, min_group_prefix)
        if prefix and _pays(len(group.rows), len(prefix), 2, forward_cost):
            planned.append(RowGroup(prefix, stripped, group.offsets))
        else:
            pool.rows.extend(group.rows)
            pool.offsets.extend(group.offsets)
    if pool.rows:
        prefix, stripped = split_group_prefix(pool.rows, MIN_POOL_PREFIX)
        if prefix and _pays(len(pool.rows), len(prefix), 1, forward_cost):
            pool = RowGroup(prefix, stripped, pool.offsets)
        planned.append(pool)
    return planned


@dataclass
class BuiltTask:
    """A task's selected items as packed rows; prefixes planned and batches cut per device on first use.

    Attributes:
        groups: per group, its packed rows (prefixes not yet split off).
        share_prefix: False keeps every row whole (no prefix run once).
        min_group_prefix: shortest group prefix considered (`plan_prefixes`).
    """

    task: MultipleChoiceTask
    doc_indices: list[int]
    items: list[Item]
    offsets: list[int]  # first request number of each item
    groups: list[RowGroup]
    num_requests: int
    share_prefix: bool = True
    min_group_prefix: int = 32
    _plans: dict[int, list[RowGroup]] = field(default_factory=dict)
    _batches: dict[tuple[int, int, int], list[Batch]] = field(default_factory=dict)

    def plan(self, forward_cost: int = CPU_FORWARD_COST) -> list[RowGroup]:
        """The groups as batched: each with the prefix it runs once per evaluation (see `plan_prefixes`)."""
        if forward_cost not in self._plans:
            if self.share_prefix:
                self._plans[forward_cost] = plan_prefixes(self.groups, self.min_group_prefix, forward_cost)
            else:
                pooled = RowGroup(
                    (), [r for g in self.groups for r in g.rows], [o for g in self.groups for o in g.offsets]
                )
                self._plans[forward_cost] = [pooled]
        return self._plans[forward_cost]

    def num_tokens(self, forward_cost: int = CPU_FORWARD_COST) -> int:
        """Tokens one evaluation reads: each planned prefix once, plus every row."""
        return sum(g.num_tokens for g in self.plan(forward_cost))

    def batches(self, batch_tokens: int, max_batch_size: int, forward_cost: int = CPU_FORWARD_COST) -> list[Batch]:
        """Length-sorted batches of each planned group, each group's prefix lent to its batches."""
        key = (batch_tokens, max_batch_size, forward_cost)
        if key not in self._batches:
            self._batches[key] = [
                batch
                for g in self.plan(forward_cost)
                for batch in make_batches(g.rows, g.offsets, batch_tokens, max_batch_size, g.prefix)
            ]
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
            group or to all rows once per evaluation where it pays; False packs every request on its own
            (the unshared reference).
        min_group_prefix: shortest common prefix of a group considered for running once.
    """
    doc_indices, items = task.items(selection, data_dir)
    encoded = encoder.encode([request for item in items for request in item.requests])
    by_group: dict[str, RowGroup] = {}
    offsets, position = [], 0
    for item in items:
        offsets.append(position)
        group = by_group.setdefault(item.group, RowGroup((), [], []))
        group.rows.append(pack(encoded[position : position + len(item.requests)], share=share_prefix))
        group.offsets.append(position)
        position += len(item.requests)
    built = BuiltTask(
        task, doc_indices, items, offsets, list(by_group.values()), position, share_prefix, min_group_prefix
    )
    plan = built.plan()
    log.info(
        "%s: %d items, %d requests, %d tokens per evaluation on CPU (%d prefixes run once, %d groups)",
        task.name,
        len(items),
        position,
        built.num_tokens(),
        sum(len(g.prefix) > 0 for g in plan),
        len(by_group),
    )
    return built
