"""lm-eval's own task definitions run on our documents: the reference that proves the offline tasks faithful.

`reference_tasks` builds lm-eval 0.4.13's built-in `ConfigurableTask`s (the task YAMLs shipped with
lm-eval, prompts, metrics and all) but hands them the documents we selected instead of downloading
them from the hub. `run_reference` runs them with `lm_eval.simple_evaluate` and HFLM on the same live
model and returns lm-eval's per-item predictions, for item-for-item comparison with `Evaluator`.
Used by the slow faithfulness test and by `benchmarks/bench_evaluation.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from nas.data.benchmarks import Doc
from nas.evaluation.task import MultipleChoiceTask

# Our task name -> lm-eval's YAML (relative to lm_eval/tasks/); MMLU has one lm-eval task per subject.
LM_EVAL_YAML = {
    "arc_easy": "arc/arc_easy.yaml",
    "arc_challenge": "arc/arc_challenge.yaml",
    "truthfulqa_mc1": "truthfulqa/truthfulqa_mc1.yaml",
    "truthfulqa_mc2": "truthfulqa/truthfulqa_mc2.yaml",
    "winogrande": "winogrande/default.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
    "piqa": "piqa/piqa.yaml",
    "boolq": "super_glue/boolq/default.yaml",
}
MMLU_TASKS = ("mmlu", "mmlu_5shot")


def _tasks_dir() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks"


def lm_eval_config(name: str) -> dict[str, Any]:
    """lm-eval's config of one of its tasks (includes and `!function`s resolved), e.g. "arc_easy", "mmlu_anatomy"."""
    from lm_eval.tasks._yaml_loader import load_yaml

    relative = f"mmlu/default/{name}.yaml" if name.startswith("mmlu_") else LM_EVAL_YAML[name]
    return load_yaml(_tasks_dir() / relative, resolve_func=True)


def _task_on_docs(name: str, splits: dict[str, list[Doc]], overrides: dict[str, Any]) -> Any:
    import datasets
    from lm_eval.api.task import ConfigurableTask

    config = lm_eval_config(name)
    for key in ("tag", "group", "task_list"):
        config.pop(key, None)
    dataset = datasets.DatasetDict({split: datasets.Dataset.from_list(docs) for split, docs in splits.items()})
    # `custom_dataset` replaces lm-eval's download; everything else is lm-eval's own task.
    config.update(custom_dataset=lambda **_: dataset, **overrides)
    return ConfigurableTask(config=config)


def reference_tasks(task: MultipleChoiceTask, docs: Sequence[Doc], data_dir: Any = None) -> list[Any]:
    """lm-eval's task(s) equivalent to `task`, holding exactly `docs` (already selected) as their eval split."""
    overrides: dict[str, Any] = {"num_fewshot": task.num_fewshot} if task.num_fewshot else {}
    # Only the split we evaluate exists; lm-eval must not look for train/validation documents.
    overrides["training_split"] = None
    if task.split == "test":
        overrides["validation_split"] = None
    if task.name not in MMLU_TASKS:
        if task.name not in LM_EVAL_YAML:
            raise KeyError(
                f"No lm-eval reference for task {task.name!r}; known: {sorted([*LM_EVAL_YAML, *MMLU_TASKS])}."
            )
        return [_task_on_docs(task.name, {task.split: list(docs)}, overrides)]
    dev: dict[str, list[Doc]] = {}
    for doc in task.documents.load("dev", task.source, data_dir):
        dev.setdefault(doc["subject"], []).append(doc)
    by_subject: dict[str, list[Doc]] = {}
    for doc in docs:
        by_subject.setdefault(doc["subject"], []).append(doc)
    # A distinct lm-eval task name per shot count, so 0-shot and 5-shot MMLU can run in one call.
    suffix = f"_{task.num_fewshot}shot" if task.num_fewshot else ""
    return [
        _task_on_docs(
            f"mmlu_{subject}",
            {"test": subject_docs, "dev": dev[subject]},
            {**overrides, "task": f"mmlu_{subject}{suffix}"},
        )
        for subject, subject_docs in by_subject.items()
    ]


def make_hflm(model: Any, tokenizer: Any, batch_size: int = 16) -> Any:
    """lm-eval's HFLM wrapping the live model (its active sub-network), nothing copied."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


@cache
def _empty_task_manager() -> Any:
    from lm_eval.tasks import TaskManager

    # The tasks are prebuilt objects; an index of lm-eval's 13k YAML files (about 25 s) is not needed.
    return TaskManager(include_defaults=False)


def run_reference(lm: Any, tasks: Sequence[Any], num_fewshot: int | None = None) -> dict[str, Any]:
    """`lm_eval.simple_evaluate` on prebuilt tasks; returns its output (with per-item `samples`)."""
    import lm_eval

    return lm_eval.simple_evaluate(
        model=lm, tasks=list(tasks), num_fewshot=num_fewshot, log_samples=True, task_manager=_empty_task_manager()
    )


def reference_items(output: dict[str, Any], tasks: Sequence[Any]) -> list[dict[str, Any]]:
    """lm-eval's per-item results in our item order: log-likelihoods, predictions and metric values."""
    import numpy as np

    items = []
    for task in tasks:
        samples = sorted(output["samples"][task.config.task], key=lambda s: s["doc_id"])
        for sample in samples:
            lls = [float(resp[0]) for resp in sample["filtered_resps"]]
            choices = task.doc_to_choice(sample["doc"])
            lengths = np.array([float(len(c)) for c in choices])
            items.append(
                {
                    "lls": lls,
                    "pred": int(np.argmax(lls)),
                    "pred_norm": int(np.argmax(np.asarray(lls) / lengths)),
                    "requests": [tuple(arg) for arg in sample["arguments"]],
                    **{k: sample[k] for k in ("acc", "acc_norm") if k in sample},
                }
            )
    return items
