"""`lm_eval.simple_evaluate` with HFLM on the same documents: the reference our scorer is proven against.

`reference_run` takes what an `Evaluator` built for a task (which documents of which sub-task) and runs
lm-eval's own pipeline on exactly those documents (`simple_evaluate(samples=...)`), on lm-eval task objects
built afresh from the same definitions and data (so its few-shot sampler starts from the same seed), on the
same live model. `reference_items` returns lm-eval's per-item responses and metrics in our item order, for
item-for-item comparison. Used by the parity tests and by `benchmarks/bench_evaluation.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from nas.evaluation.built_task import BuiltTask, flat_key
from nas.evaluation.task import LMEvalTask, filter_names, scored_split


@dataclass
class Reference:
    """lm-eval's task objects for one of our built tasks, and which of their documents to evaluate."""

    name: str
    tasks: list[Any]  # lm-eval's leaf tasks (ConfigurableTask)
    group: Any | None  # lm-eval's Group, evaluated as a whole when the task is one
    samples: dict[str, list[int]]  # leaf task name -> positions in its scored split


def reference_for(built: BuiltTask, data_dir: Any = None) -> Reference:
    """lm-eval's own tasks for `built`'s documents (scored split only: lm-eval has no notion of our search items)."""
    task: LMEvalTask = built.task
    tree = task.tree(data_dir, fresh=True)
    samples: dict[str, list[int]] = {}
    offsets, offset = [], 0
    for leaf in built.tree.leaves:
        offsets.append(offset)
        offset += len(task.leaf_docs(leaf, scored_split(leaf)))
    for doc in built.docs:
        leaf = tree.leaves[doc.leaf]
        samples.setdefault(str(leaf.config.task), []).append(doc.index - offsets[doc.leaf])
    chosen = [leaf for leaf in tree.leaves if str(leaf.config.task) in samples]
    return Reference(task.name, chosen, tree.group, samples)


def make_hflm(model: Any, tokenizer: Any, batch_size: int = 16) -> Any:
    """lm-eval's HFLM wrapping the live model (its active sub-network), nothing copied. (Its cap on generated
    tokens is 256 whatever it is given; a task's own `max_gen_toks` still applies.)"""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


@cache
def _empty_task_manager() -> Any:
    from lm_eval.tasks import TaskManager

    # The tasks are prebuilt objects; an index of lm-eval's 13k YAML files (about 20 s) is not needed.
    return TaskManager(include_defaults=False)


def run_reference(lm: Any, references: Sequence[Reference], bootstrap_iters: int = 0) -> dict[str, dict[str, Any]]:
    """`lm_eval.simple_evaluate` on the references' tasks and documents: per reference (by our task name), the
    output of the call that ran it (with per-item `samples`). References run together where lm-eval allows: it
    refuses one sub-task in two groups of a call (MMLU 0-shot and 5-shot), so those go to separate calls."""
    import lm_eval

    calls: list[list[Reference]] = []
    seen: set[str] = set()
    for reference in references:
        names = {str(t.config.task) for t in reference.tasks}
        if not calls or names & seen:
            calls.append([])
            seen = set()
        calls[-1].append(reference)
        seen |= names
    outputs: dict[str, dict[str, Any]] = {}
    for call in calls:
        tasks: list[Any] = []
        samples: dict[str, list[int]] = {}
        for reference in call:
            whole_group = reference.group is not None and len(reference.tasks) == len(reference.group.get_all_tasks())
            tasks.extend([reference.group] if whole_group else reference.tasks)
            samples.update(reference.samples)
        output = lm_eval.simple_evaluate(
            model=lm,
            tasks=tasks,
            samples=samples,
            log_samples=True,
            bootstrap_iters=bootstrap_iters,
            task_manager=_empty_task_manager(),
        )
        outputs.update({reference.name: output for reference in call})
    return outputs


def reference_items(output: dict[str, Any], reference: Reference) -> list[dict[str, Any]]:
    """lm-eval's per-item results in our item order: its requests, responses and metric values (our names)."""
    items = []
    for task in reference.tasks:
        name = str(task.config.task)
        filters = filter_names(task)
        for sample in sorted(output["samples"][name], key=lambda s: (s["doc_id"], s["filter"])):
            if sample["filter"] != filters[0]:
                continue
            resps = [r[0] for r in sample["resps"]]
            same_doc = [s for s in output["samples"][name] if s["doc_id"] == sample["doc_id"]]
            metrics = {flat_key(m, s["filter"]): s[m] for s in same_doc for m in s.get("metrics", []) if m in s}
            items.append({"requests": [tuple(a) for a in sample["arguments"]], "resps": resps, **metrics})
    return items
