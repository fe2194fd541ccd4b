"""Tasks by name: `load_task("arc_easy")` instantiates `conf/task/arc_easy.yaml` (the same file Hydra composes);
any other name is lm-eval's task, group or tag of that name with our defaults (`load_task("lambada_openai")`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from nas.data.sources import UnknownTaskError
from nas.evaluation.task import LMEvalTask
from nas.evaluation.task_defaults import generic_task
from nas.instantiate import instantiate
from nas.io.locations import config_dir


def _task_configs() -> Path:
    return config_dir() / "task"


def available_tasks() -> list[str]:
    """Names of the task configs in `conf/task/` (lm-eval's other tasks work by name too)."""
    return sorted(p.stem for p in _task_configs().glob("*.yaml"))


def generic_config(name: str) -> DictConfig:
    """The config of an lm-eval task with no file in `conf/task/`: lm-eval's definition, our defaults."""
    return OmegaConf.create(generic_task(name))


def task_config(name: str) -> DictConfig:
    """The config node of one task: its file in `conf/task/` (one top-level key, its name), else `generic_config`."""
    path = _task_configs() / f"{name}.yaml"
    if not path.is_file():
        return generic_config(name)
    cfg = OmegaConf.load(path)
    assert isinstance(cfg, DictConfig)
    return cfg[name]


def _instantiate(cfg: Any) -> LMEvalTask:
    return cast(LMEvalTask, instantiate(cfg, _convert_="all"))


def load_task(name: str, **overrides: Any) -> LMEvalTask:
    """Instantiate a task by name, e.g. `load_task("mmlu", source="local")`; unknown names fail when built."""
    return _instantiate(OmegaConf.merge(task_config(name), overrides))


def build_tasks(cfg: Mapping[str, Any] | DictConfig) -> list[LMEvalTask]:
    """Instantiate the composed `task` node of a Hydra config (one entry per selected task)."""
    tasks = []
    for key, node in cfg.items():
        name = str(key)
        if not isinstance(node, Mapping | DictConfig) or "_target_" not in node:
            raise UnknownTaskError(
                f"task.{name} is not a task config (no _target_); name tasks with task=<name> or task=[a,b]."
            )
        tasks.append(_instantiate(node))
    return tasks
