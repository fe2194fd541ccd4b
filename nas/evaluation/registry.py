"""Tasks by name: `load_task("arc_easy")` instantiates `conf/task/arc_easy.yaml` (the same file Hydra composes)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from nas.cli import nas_error_behind
from nas.evaluation.sources import UnknownTaskError
from nas.evaluation.task import MultipleChoiceTask

TASK_CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf" / "task"


def available_tasks() -> list[str]:
    """Names of the task configs in `conf/task/`."""
    return sorted(p.stem for p in TASK_CONFIG_DIR.glob("*.yaml"))


def _unknown(name: str) -> UnknownTaskError:
    return UnknownTaskError(f"Unknown task {name!r}; available tasks: {', '.join(available_tasks())}.")


def task_config(name: str) -> DictConfig:
    """The config node of one task (each file holds one top-level key, its name)."""
    path = TASK_CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise _unknown(name)
    cfg = OmegaConf.load(path)
    assert isinstance(cfg, DictConfig)
    return cfg[name]


def _instantiate(cfg: Any) -> MultipleChoiceTask:
    try:
        return instantiate(cfg, _convert_="all")
    except InstantiationException as exc:
        # Hydra wraps the constructor's error; surface ours, whose message names the key to fix.
        cause = nas_error_behind(exc)
        if cause is None:
            raise
        raise cause from None


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
