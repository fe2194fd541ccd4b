"""Evaluation of sub-networks: any lm-eval task scored in place (item for item as lm-eval 0.4.13), perplexity, speed."""

from __future__ import annotations

from nas.evaluation.evaluator import Evaluator
from nas.evaluation.registry import available_tasks, load_task
from nas.evaluation.results import TaskResult
from nas.evaluation.speed import SpeedResult, ThroughputMeter
from nas.evaluation.task import LMEvalTask

__all__ = [
    "Evaluator",
    "LMEvalTask",
    "SpeedResult",
    "TaskResult",
    "ThroughputMeter",
    "available_tasks",
    "load_task",
]
