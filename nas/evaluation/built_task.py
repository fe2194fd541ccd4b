"""A task turned into model inputs once per process: lm-eval's requests, encoded, packed and batched; and the
scores of one evaluation computed by lm-eval's own filters, `process_results` and aggregations.

- `loglikelihood` requests (multiple choice and plain): tokenised like HFLM, one packed row per document (its
  context read once for all its choices), prefixes common to a group or to all rows, and the tails a pooled
  group's rows share after the latter, run once where that pays (`plan_prefixes`), scored by
  `loglikelihood.score_batches`.
- `loglikelihood_rolling` (WikiText): HFLM's disjoint rolling windows of the model's length, each a row of the
  same loop; a document's log-likelihood is the sum over its windows.
- `generate_until` (GSM8K): `generation.Generator`, batched greedy generation with the KV cache.

Which rows run after which shared prefix is planned per device: a prefix read once per evaluation saves the
tokens it would cost in every row, but each one costs a forward pass of its own, and a group prefix also keeps
its group's rows out of the common batches (a last, partly filled batch). On CPU a forward pass costs about as
much as 13 more tokens in a batch (SmolLM2-135M, one thread: 45 ms to stream the weights, then 3.5 ms a token),
so `CPU_FORWARD_COST` is 16 tokens.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nas.evaluation.batching import CPU_FORWARD_COST, Batch, make_batches
from nas.evaluation.generation import GenerationRequest, Generator
from nas.evaluation.lm_eval_tasks import LMEvalTree
from nas.evaluation.packing import PackedRow, pack, split_group_prefix
from nas.evaluation.requests import EncodedRequest, RequestEncoder
from nas.evaluation.results import TaskResult
from nas.evaluation.task import DocRequests, LMEvalTask, Selection, filter_names

log = logging.getLogger(__name__)

# Shortest prefix shared by the pooled rows that runs once. ARC's two-token "Question:" would save 5% of
# its tokens, but the log-likelihoods then drift from HFLM's up to 1e-3 (from 2e-4; SmolLM2-135M, four
# sub-networks); MMLU's eleven-token header opening stays within 1e-4.
MIN_POOL_PREFIX = 8


@dataclass
class RowGroup:
    """Rows (documents) that continue the same token prefix, run once per evaluation (may be empty), and then,
    some of them, one of the group's tails (each also run once)."""

    prefix: tuple[int, ...]
    rows: list[PackedRow]
    offsets: list[int]  # global number of each row's first request
    tails: tuple[tuple[int, ...], ...] = ()
    tail_of: list[int] = field(default_factory=list)  # per row, its tail (index into `tails`), -1 for none

    @property
    def num_tokens(self) -> int:
        return len(self.prefix) + sum(len(t) for t in self.tails) + sum(len(r) for r in self.rows)


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
    and is at least `MIN_POOL_PREFIX` tokens long. After it, what each pooled group's rows still share
    (the subject: " abstract algebra.\n\n") becomes that group's tail, run once (`_with_tails`); without it,
    no tails.
    """
    planned: list[RowGroup] = []
    pool = RowGroup((), [], [])
    members: list[range] = []  # each pooled group's rows, as indices into the pool's
    for group in groups:
        prefix, stripped = split_group_prefix(group.rows, min_group_prefix)
        if prefix and _pays(len(group.rows), len(prefix), 2, forward_cost):
            planned.append(RowGroup(prefix, stripped, group.offsets))
        else:
            members.append(range(len(pool.rows), len(pool.rows) + len(group.rows)))
            pool.rows.extend(group.rows)
            pool.offsets.extend(group.offsets)
    if pool.rows:
        prefix, stripped = split_group_prefix(pool.rows, MIN_POOL_PREFIX)
        if prefix and _pays(len(pool.rows), len(prefix), 1, forward_cost):
            pool = RowGroup(prefix, stripped, pool.offsets)
        # Tails only after a prefix: a pool without one (ARC's, PIQA's two-token "Question:") would make its whole
        # shared opening a tail, which MIN_POOL_PREFIX keeps in the rows (see there).
        planned.append(_with_tails(pool, members, forward_cost) if pool.prefix else pool)
    return planned


def _with_tails(pool: RowGroup, members: Sequence[range], forward_cost: int) -> RowGroup:
    """The pool with each group's tail (the tokens all its rows share after the pool's prefix) cut off its rows and
    run once, where the row tokens this saves pay for the tails' own forward passes: more than the tails' tokens
    again (short rows of their own cost about twice a row token each) and two passes.

    MMLU 0-shot, SmolLM2-135M on one CPU thread: the subject tails are 4-17 tokens. With two questions per subject
    they cut an evaluation's tokens 3.2% and it ran 0.98x (median of 8 interleaved rounds), so they are not used
    there; with five per subject 4.7% and 1.04x (5 rounds, 0.96-1.08), with ten 5.2% and 1.06x (4 rounds,
    0.98-1.13)."""
    rows, tail_of = list(pool.rows), [-1] * len(pool.rows)
    tails: list[tuple[int, ...]] = []
    saved = 0
    for indices in members:
        tail, stripped = split_group_prefix([pool.rows[i] for i in indices], min_length=1)
        if not tail:
            continue
        for i, row in zip(indices, stripped):
            rows[i], tail_of[i] = row, len(tails)
        tails.append(tail)
        saved += (len(indices) - 1) * len(tail)
    if saved <= sum(len(t) for t in tails) + 2 * forward_cost:
        return pool
    return RowGroup(pool.prefix, rows, pool.offsets, tuple(tails), tail_of)


def rolling_windows(tokens: Sequence[int], prefix_token: int, max_len: int) -> list[EncodedRequest]:
    """HFLM's `loglikelihood_rolling` windows of a token sequence: disjoint windows of `max_len` predicted tokens,
    each read after as much of the text before it as fits (the first after the prefix token)."""
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    windows = map(make_disjoint_window, get_rolling_token_windows(list(tokens), prefix_token, max_len, 1))
    return [EncodedRequest(tuple((ctx + cont)[-(max_len + 1) :][:-1]), tuple(cont)) for ctx, cont in windows]


@dataclass
class BuiltTask:
    """A task's selected documents as packed rows and generation requests; prefixes planned and batches cut per
    device on first use.

    Attributes:
        docs: the selected documents and lm-eval's requests for them.
        groups: per group, the packed rows of its log-likelihood requests (prefixes not yet split off).
        num_requests: log-likelihood requests (rolling windows counted one by one).
        owners: per log-likelihood request, the (document, instance) it belongs to.
        generation: per `generate_until` instance, (document, instance, request).
        share_prefix: False keeps every row whole (no prefix run once).
        min_group_prefix: shortest group prefix considered (`plan_prefixes`).
    """

    task: LMEvalTask
    tree: LMEvalTree
    docs: list[DocRequests]
    groups: list[RowGroup]
    num_requests: int
    owners: list[tuple[int, int]]
    generation: list[tuple[int, int, GenerationRequest]]
    metric: tuple[str, str]
    share_prefix: bool = True
    min_group_prefix: int = 32
    _plans: dict[int, list[RowGroup]] = field(default_factory=dict)
    _batches: dict[tuple[int, int, int], list[Batch]] = field(default_factory=dict)

    @property
    def doc_indices(self) -> list[int]:
        return [doc.index for doc in self.docs]

    @property
    def num_items(self) -> int:
        return len(self.docs)

    def plan(self, forward_cost: int = CPU_FORWARD_COST) -> list[RowGroup]:
        """The groups as batched: each with the prefix it runs once per evaluation (see `plan_prefixes`)."""
        if forward_cost not in self._plans:
            if self.share_prefix:
                self._plans[forward_cost] = plan_prefixes(self.groups, self.min_group_prefix, forward_cost)
            else:
                pooled = RowGroup(
                    (), [r for g in self.groups for r in g.rows], [o for g in self.groups for o in g.offsets]
                )
                self._plans[forward_cost] = [pooled] if pooled.rows else []
        return self._plans[forward_cost]

    def num_tokens(self, forward_cost: int = CPU_FORWARD_COST) -> int:
        """Tokens one evaluation's log-likelihood requests read: each planned prefix once, plus every row."""
        return sum(g.num_tokens for g in self.plan(forward_cost))

    def batches(self, batch_tokens: int, max_batch_size: int, forward_cost: int = CPU_FORWARD_COST) -> list[Batch]:
        """Length-sorted batches of each planned group, each group's prefix lent to its batches."""
        key = (batch_tokens, max_batch_size, forward_cost)
        if key not in self._batches:
            self._batches[key] = [
                batch
                for g in self.plan(forward_cost)
                for batch in make_batches(
                    g.rows, g.offsets, batch_tokens, max_batch_size, g.prefix, forward_cost, g.tails, g.tail_of
                )
            ]
        return self._batches[key]

    def responses(self, lls: np.ndarray, greedy: np.ndarray, texts: Sequence[str]) -> list[list[Any]]:
        """lm-eval's response of every instance, per document: (log-likelihood, is_greedy), a rolling sum, a text."""
        out: list[list[Any]] = [[None] * len(doc.instances) for doc in self.docs]
        for request, (d, i) in enumerate(self.owners):
            doc = self.docs[d]
            if doc.request_type == "loglikelihood_rolling":
                out[d][i] = (out[d][i] or 0.0) + float(lls[request])
            else:
                out[d][i] = (float(lls[request]), bool(greedy[request]))
        for (d, i, _), text in zip(self.generation, texts):
            out[d][i] = text
        return out

    def score(self, responses: list[list[Any]], with_items: bool, bootstrap_iters: int = 0) -> TaskResult:
        """lm-eval's filters, per-document `process_results` and aggregations on one evaluation's responses;
        a group's metrics are aggregated by lm-eval's own `Group.aggregate`."""
        leaves = self.tree.leaves
        per_leaf: dict[int, list[int]] = {}
        for d, doc in enumerate(self.docs):
            per_leaf.setdefault(doc.leaf, []).append(d)
        leaf_metrics: dict[str, dict[str, Any]] = {}
        item_values: list[dict[str, Any]] = [{} for _ in self.docs]
        for number, doc_numbers in per_leaf.items():
            leaf = leaves[number]
            instances = [inst for d in doc_numbers for inst in self.docs[d].instances]
            for d in doc_numbers:
                for inst, resp in zip(self.docs[d].instances, responses[d]):
                    inst.resps = [resp]
                    inst.filtered_resps = {}
            for ensemble in getattr(leaf, "_filters", []):
                ensemble.apply(instances)
            values: dict[tuple[str, str], list[Any]] = {}
            for filter_name in filter_names(leaf):
                for d in doc_numbers:
                    doc = self.docs[d]
                    scores = leaf.process_results(
                        doc.instances[0].doc, [inst.filtered_resps[filter_name] for inst in doc.instances]
                    )
                    for metric, value in scores.items():
                        values.setdefault((metric, filter_name), []).append(value)
                        item_values[d][flat_key(metric, filter_name)] = value
            leaf_metrics[str(leaf.config.task)] = _aggregate(leaf, values, len(doc_numbers), bootstrap_iters)
        metrics = self._combine(leaf_metrics)
        metric, filter_name = self.metric
        key = flat_key(metric, filter_name)
        if key not in metrics or metrics[key] is None:
            available = sorted(k for k in metrics if "_stderr" not in k and k not in ("alias", "name"))
            raise KeyError(f"task {self.task.name}: no metric {key!r} in lm-eval's results; it has {available}.")
        primary = [v.get(key) for v in item_values]
        proportion = all(isinstance(v, int | float) and v in (0, 1) for v in primary)
        groups = {
            name: float(m[f"{metric},{filter_name}"])
            for name, m in leaf_metrics.items()
            if len(leaf_metrics) > 1 and isinstance(m.get(f"{metric},{filter_name}"), int | float)
        }
        details = []
        if with_items:
            for d, doc in enumerate(self.docs):
                details.append(
                    {"doc_index": doc.index, "group": doc.group}
                    | _shown_responses(doc, responses[d])
                    | {k: _plain(v) for k, v in item_values[d].items()}
                )
        score = metrics[key]
        assert score is not None
        return TaskResult(
            self.task.name,
            key,
            float(score),
            metrics,
            len(self.docs),
            groups=groups,
            items=details,
            subtasks=leaf_metrics if len(leaf_metrics) > 1 else {},
            proportion=proportion,
        )

    def _combine(self, leaf_metrics: dict[str, dict[str, Any]]) -> dict[str, float | None]:
        """Our flat metrics (`acc`, `acc_stderr`, `exact_match,strict-match`, ...) of the task or its group."""
        tree = self.tree
        if len(leaf_metrics) == 1 and tree.group is None:
            combined = next(iter(leaf_metrics.values()))
        elif tree.group is not None and tree.group.has_aggregation:
            combined = tree.group.aggregate(leaf_metrics)
        else:  # a tag, or a group lm-eval reports no score for: the size-weighted mean of each metric
            combined = _weighted_mean(leaf_metrics)
        out: dict[str, float | None] = {}
        for key, value in combined.items():
            if "," not in key:
                continue
            name, _, filter_name = key.partition(",")
            out[flat_key(name, filter_name)] = None if value in ("N/A", None) else float(value)
        return out


def flat_key(metric: str, filter_name: str) -> str:
    """Our name of lm-eval's "metric,filter": the metric alone under lm-eval's default filter "none"."""
    return metric if filter_name == "none" else f"{metric},{filter_name}"


def lm_eval_key(flat: str) -> str:
    """lm-eval's "metric,filter" of our flat metric name."""
    return flat if "," in flat else f"{flat},none"


def _aggregate(leaf: Any, values: dict[tuple[str, str], list[Any]], n: int, bootstrap_iters: int) -> dict[str, Any]:
    """One sub-task's metrics in lm-eval's layout ("acc,none", "acc_stderr,none", "sample_len")."""
    from lm_eval.api.metrics import acc_all, acc_all_stderr, mean, mean_stderr, stderr_for_metric

    aggregations = leaf.aggregation()
    out: dict[str, Any] = {"alias": str(leaf.config.task), "sample_len": n}
    for (metric, filter_name), items in values.items():
        aggregate = aggregations[metric]
        out[f"{metric},{filter_name}"] = aggregate(items)
        closed_form = {mean: mean_stderr, acc_all: acc_all_stderr}.get(aggregate)
        stderr = closed_form if bootstrap_iters <= 0 else stderr_for_metric(aggregate, bootstrap_iters)
        out[f"{metric}_stderr,{filter_name}"] = stderr(items) if stderr is not None and len(items) > 1 else "N/A"
    return out


def _weighted_mean(leaf_metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    sizes = {name: m["sample_len"] for name, m in leaf_metrics.items()}
    keys = {k for m in leaf_metrics.values() for k in m if "," in k and "_stderr" not in k}
    out: dict[str, Any] = {}
    for key in keys:
        parts = [(m[key], sizes[n]) for n, m in leaf_metrics.items() if isinstance(m.get(key), int | float)]
        total = sum(size for _, size in parts)
        out[key] = sum(v * size for v, size in parts) / total if total else math.nan
    return out


def _plain(value: Any) -> Any:
    """A per-item metric value as JSON keeps it (perplexity items are (log-likelihood, length) pairs)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _shown_responses(doc: DocRequests, responses: list[Any]) -> dict[str, Any]:
    if doc.request_type == "loglikelihood":
        return {"lls": [r[0] for r in responses], "is_greedy": [r[1] for r in responses]}
    if doc.request_type == "loglikelihood_rolling":
        return {"lls": list(responses)}
    return {"generated": list(responses), "filtered": [str(i.filtered_resps) for i in doc.instances]}


def build_task(
    task: LMEvalTask,
    encoder: RequestEncoder,
    generator: Generator,
    selection: Selection,
    data_dir: str | os.PathLike[str] | None = None,
    share_prefix: bool = True,
    min_group_prefix: int = 32,
) -> BuiltTask:
    """Select documents, build lm-eval's requests for them, tokenise them like HFLM and pack them.

    Args:
        share_prefix: read each document's context once for all its choices, and a prefix common to a
            group or to all rows once per evaluation where it pays; False packs every request on its own
            (the unshared reference).
        min_group_prefix: shortest common prefix of a group considered for running once.
    """
    docs = task.requests(selection, data_dir)
    metric = task.metric_key(data_dir)
    pairs = [
        (d, i, inst.args)
        for d, doc in enumerate(docs)
        if doc.request_type == "loglikelihood"
        for i, inst in enumerate(doc.instances)
    ]
    encoded = encoder.encode([args for _, _, args in pairs]) if pairs else []
    by_group: dict[str, RowGroup] = {}
    owners: list[tuple[int, int]] = []
    start = 0
    while start < len(pairs):  # one row per document: its choices after its context
        d = pairs[start][0]
        end = start
        while end < len(pairs) and pairs[end][0] == d:
            end += 1
        group = by_group.setdefault(docs[d].group, RowGroup((), [], []))
        group.rows.append(pack(encoded[start:end], share=share_prefix))
        group.offsets.append(len(owners))
        owners.extend((d, i) for _, i, _ in pairs[start:end])
        start = end
    for d, doc in enumerate(docs):
        if doc.request_type != "loglikelihood_rolling":
            continue
        group = by_group.setdefault(doc.group, RowGroup((), [], []))
        for i, inst in enumerate(doc.instances):
            (text,) = inst.args
            for window in rolling_windows(encoder.encode_text(text), encoder.prefix_token_id, encoder.max_len):
                group.rows.append(pack([window], share=False))
                group.offsets.append(len(owners))
                owners.append((d, i))
    generation_items = [
        (d, i, inst.args)
        for d, doc in enumerate(docs)
        if doc.request_type == "generate_until"
        for i, inst in enumerate(doc.instances)
    ]
    prepared = (
        generator.prepare([args[0] for *_, args in generation_items], [args[1] for *_, args in generation_items])
        if generation_items
        else []
    )
    built = BuiltTask(
        task,
        task.tree(data_dir),
        docs,
        [g for g in by_group.values() if g.rows],
        len(owners),
        owners,
        [(d, i, request) for (d, i, _), request in zip(generation_items, prepared)],
        metric,
        share_prefix,
        min_group_prefix,
    )
    plan = built.plan()
    log.info(
        "%s: %d documents, %d log-likelihood requests (%d tokens per evaluation on CPU, %d prefixes and %d tails run "
        "once), %d generations",
        task.name,
        len(docs),
        len(owners),
        built.num_tokens(),
        sum(len(g.prefix) > 0 for g in plan),
        sum(len(g.tails) for g in plan),
        len(prepared),
    )
    return built
