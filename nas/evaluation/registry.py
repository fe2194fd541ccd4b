"""Tasks by name: `load_task("arc_easy")` instantiates `conf/task/arc_easy.yaml` (the same file Hydra composes)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from nas.data.sources import UnknownTaskError
from nas.evaluation.task import MultipleChoiceTask
from nas.instantiate import instantiate
from nas.io.locations import config_dir


def _task_configs() -> Path:
    return config_dir() / "task"


def available_tasks() -> list[str]:
    """Names of the task configs in `conf/task/`."""
    return sorted(p.stem for p in _task_configs().glob("*.yaml"))


def _unknown(name: str) -> UnknownTaskError:
    return UnknownTaskError(f"Unknown task {name!r}; available tasks: {', '.join(available_tasks())}.")


def task_config(name: str) -> DictConfig:
    """The config node of one task (each file holds one top-level key, its name)."""
    path = _task_configs() / f"{name}.yaml"
    if not path.is_file():
        raise _unknown(name)
    cfg = OmegaConf.load(path)
    assert isinstance(cfg, DictConfig)
    return cfg[name]


def _instantiate(cfg: Any) -> MultipleChoiceTask:
    return cast(MultipleChoiceTask, instantiate(cfg, _convert_="all"))


def load_task(name: str, **overrides: Any) -> MultipleChoiceTask:
    """Instantiate a task by name, e.g. `load_task("mmlu", source="local")`."""
    return _instantiate(OmegaConf.merge(task_config(name), overrides))


def build_tasks(cfg: Mapping[str, Any] | DictConfig) -> list[MultipleChoiceTask]:
    """Instantiate the composed `task` node of a Hydra config (one entry per selected task)."""
    tasks = []
    for name, node in cfg.items():
        if not isinstance(node, Mapping | DictConfig) or "_target_" not in node:
            raise _unknown(str(name))
        tasks.append(_instantiate(node))
    return tasks
