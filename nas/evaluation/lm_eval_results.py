"""Results in lm-eval's own layout (`simple_evaluate`'s output without per-item samples), so its tooling and W&B's
lm-eval views read them: `results[task]["acc,none"]`, `"acc_stderr,none"`, `groups`, `group_subtasks`,
`configs`, `versions`, `n-shot`, `higher_is_better`, `n-samples`, `config`.

Tasks are keyed by our name (`mmlu_5shot` beside `mmlu` in one run); a group's sub-tasks by lm-eval's name, or
`<our name>/<sub-task>` when our name is not lm-eval's (the two MMLUs would otherwise collide).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from nas.evaluation.built_task import BuiltTask, lm_eval_key
from nas.evaluation.lm_eval_tasks import LM_EVAL_VERSION
from nas.evaluation.results import TaskResult


def _jsonable(value: Any) -> Any:
    """lm-eval's configs hold functions and other objects; keep what JSON can say, name the rest."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "item"):
        return value.item()
    return getattr(value, "__name__", None) or str(value)


def _metric_entry(metrics: Mapping[str, Any], alias: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"alias": alias}
    for key, value in metrics.items():
        if key in ("alias", "name", "sample_len", "sample_count"):
            continue
        entry[lm_eval_key(key) if "," not in key else key] = "N/A" if value is None else _jsonable(value)
    return entry


def lm_eval_layout(
    built: Mapping[str, BuiltTask],
    results: Mapping[str, TaskResult],
    config: Mapping[str, Any] | None = None,
    items: str = "scored",
) -> dict[str, Any]:
    """`simple_evaluate`'s summary for our results: per task (and group) its metrics, and every sub-task's config."""
    out: dict[str, Any] = {
        "results": {},
        "groups": {},
        "group_subtasks": {},
        "configs": {},
        "versions": {},
        "n-shot": {},
        "higher_is_better": {},
        "n-samples": {},
        "config": _jsonable(dict(config or {})),
        "lm_eval_version": LM_EVAL_VERSION,
    }
    for name, result in results.items():
        task = built[name]
        leaves = task.tree.leaves
        counted = {doc.leaf for doc in task.docs}
        renamed = name != task.task.lm_eval_name
        leaf_key = {n: (f"{name}/{leaves[n].config.task}" if renamed else str(leaves[n].config.task)) for n in counted}
        # A group of several sub-tasks reports the group's metrics and then each sub-task's own, as lm-eval does.
        entry = _metric_entry(result.metrics, task.task.lm_eval_name)
        if len(leaves) > 1 or task.tree.group is not None:
            out["results"][name] = entry
            out["groups"][name] = entry
            out["group_subtasks"][name] = [leaf_key[n] for n in sorted(counted)]
            for n in sorted(counted):
                metrics = result.subtasks.get(str(leaves[n].config.task), {})
                out["results"][leaf_key[n]] = _metric_entry(metrics, f" - {leaves[n].config.task}")
        else:
            out["results"][name] = entry
        for n in sorted(counted):
            leaf = leaves[n]
            key = leaf_key[n] if len(leaves) > 1 or task.tree.group is not None else name
            chosen = sum(doc.leaf == n for doc in task.docs)
            out["configs"][key] = _jsonable(leaf.dump_config())
            out["versions"][key] = _jsonable(leaf.VERSION)
            out["n-shot"][key] = int(leaf.get_config("num_fewshot") or 0)
            out["higher_is_better"][key] = _jsonable(leaf.higher_is_better())
            split = task.task.leaf_split(leaf, items)
            out["n-samples"][key] = {"original": len(leaf.dataset[split]), "effective": chosen}
    json.dumps(out)  # fail here, not halfway through writing a file
    return out
