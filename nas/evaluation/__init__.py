"""Evaluation of sub-networks: any lm-eval task scored in place (item for item as lm-eval 0.4.13), perplexity, speed.

Loaded on first use, like `nas`: Hydra's config source for the `task` group imports `task_defaults` from here on
every command, which must not pull in torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Name -> the module that defines it.
_API = {
    "Evaluator": "nas.evaluation.evaluator",
    "LMEvalTask": "nas.evaluation.task",
    "SpeedResult": "nas.evaluation.speed",
    "TaskResult": "nas.evaluation.results",
    "ThroughputMeter": "nas.evaluation.speed",
    "available_tasks": "nas.evaluation.registry",
    "load_task": "nas.evaluation.registry",
}

if TYPE_CHECKING:
    from nas.evaluation.evaluator import Evaluator
    from nas.evaluation.registry import available_tasks, load_task
    from nas.evaluation.results import TaskResult
    from nas.evaluation.speed import SpeedResult, ThroughputMeter
    from nas.evaluation.task import LMEvalTask


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'nas.evaluation' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


__all__ = [
    "Evaluator",
    "LMEvalTask",
    "SpeedResult",
    "TaskResult",
    "ThroughputMeter",
    "available_tasks",
    "load_task",
]
