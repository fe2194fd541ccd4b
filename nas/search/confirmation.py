"""Confirmation of a front on held-out items: each model's confirmed accuracy with its 95% interval, the
optimism of its search score, and a paired comparison with each reference on the same items.

The models are the two references (the pre-trained model, and the fine-tuned super-network's full network),
the Pareto sub-networks and any pruning baselines; `confirm` turns their per-item results into the records
the report and the selections read (`confirmation.json`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nas.evaluation.intervals import RESAMPLES, compare, score_interval
from nas.evaluation.results import TaskResult
from nas.search.objective_scorer import accuracy_value
from nas.search.objectives import Objective

PRETRAINED = "pretrained"
FINETUNED = "finetuned"
REFERENCES = {PRETRAINED: "pre-trained model", FINETUNED: "fine-tuned full network"}


@dataclass
class Candidate:
    """One model scored on the confirmation items.

    Attributes:
        id: unique: `pretrained`, `finetuned`, `trial_<n>`, `<method>_r<ratio>`.
        kind: reference, subnetwork or baseline.
        label: how the report names it.
        search_values: its objective values as the search (or the baselines stage) measured them; the
            cost objectives (size, parameters, FLOPs, speed) are carried over as they are.
        results: its confirmation results per task, with per-item details.
        trial: the study's trial number of a sub-network.
        subnetwork: the sub-network (`SubNetwork.to_dict()`), for sub-networks.
    """

    id: str
    kind: str
    label: str
    search_values: dict[str, float]
    results: dict[str, TaskResult]
    trial: int | None = None
    subnetwork: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def item_scores(result: TaskResult, metric: str | None = None) -> np.ndarray:
    """The per-item values of `metric` (default: the task's search metric), in the evaluator's item order."""
    if not result.items:
        raise ValueError(f"{result.task}: the result has no per-item details (evaluate with with_items=True).")
    name = metric or result.metric
    return np.array([float(item[name]) for item in result.items])


def objective_items(results: Mapping[str, TaskResult], objective: Objective) -> list[np.ndarray]:
    """Per task of an accuracy objective, the per-item scores its value averages."""
    return [item_scores(results[t], objective.metric) for t in objective.tasks]


def _task_intervals(results: Mapping[str, TaskResult]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, result in results.items():
        per_metric = {}
        for metric in sorted({result.metric, *(k for k in result.metrics if not k.endswith("_stderr"))}):
            per_metric[metric] = score_interval([item_scores(result, metric)]).to_dict()
        out[name] = {"metric": result.metric, "metrics": per_metric}
    return out


def confirm(
    candidates: Sequence[Candidate], objectives: Sequence[Objective], resamples: int = RESAMPLES, seed: int = 0
) -> list[dict[str, Any]]:
    """The confirmation record of every candidate (see the module's docstring)."""
    accuracy = [o for o in objectives if o.kind == "accuracy"]
    references = {c.id: c for c in candidates if c.id in REFERENCES}
    records = []
    for c in candidates:
        confirmed, optimism, versus = {}, {}, {}
        for o in accuracy:
            items = objective_items(c.results, o)
            interval = score_interval(items, resamples, seed)
            confirmed[o.name] = interval.to_dict()
            if o.name in c.search_values:
                optimism[o.name] = c.search_values[o.name] - interval.value
        for ref_id, ref in references.items():
            if ref_id == c.id:
                continue
            versus[ref_id] = {
                o.name: compare(
                    objective_items(c.results, o), objective_items(ref.results, o), resamples, seed
                ).to_dict()
                for o in accuracy
            }
        values = dict(c.search_values) | {name: iv["value"] for name, iv in confirmed.items()}
        records.append(
            {
                "id": c.id,
                "kind": c.kind,
                "label": c.label,
                "trial": c.trial,
                "subnetwork": c.subnetwork,
                "values": values,  # costs as measured, accuracies as confirmed
                "search_values": dict(c.search_values),
                "confirmed": confirmed,
                "optimism": optimism,
                "versus": versus,
                "tasks": _task_intervals(c.results),
                **c.extra,
            }
        )
    return records


def search_values(results: Mapping[str, TaskResult], objectives: Sequence[Objective]) -> dict[str, float]:
    """The accuracy objectives' values from task results, as a search computes them."""
    return {o.name: accuracy_value(o, results) for o in objectives if o.kind == "accuracy"}
