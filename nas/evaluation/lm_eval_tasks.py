"""lm-eval's own task definitions, by name: its `TaskManager`, its YAMLs, groups and a user's `include_path`.

Indexing lm-eval's 13,000 task YAMLs takes about 20 s on these machines, so the index of the built-in
ones is kept on disk (per lm-eval version, in `$NAS_CACHE_DIR`, else `~/.cache/nas`) and read in well under
a second afterwards; a user's `include_path` is indexed each time (it is small and may change).

    tree = load_lm_eval("mmlu", include_path=None, router=DatasetRouter("local"))
    tree.leaves          # the ConfigurableTasks (57 MMLU subjects), data loaded through the router
    tree.group           # lm-eval's Group (its aggregate_metric_list), None for a single task
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from nas.data.lm_eval_data import DatasetRouter
from nas.data.sources import UnknownTaskError
from nas.errors import NASError
from nas.io.locations import config_dir

log = logging.getLogger(__name__)

# The lm-eval release the parity tests prove (item for item against `simple_evaluate`); pinned in pyproject.
LM_EVAL_VERSION = "0.4.13"


def lm_eval_tasks_dir() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks"


def _cache_dir() -> Path:
    configured = os.environ.get("NAS_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "nas"


def _slim(index: dict[str, Any]) -> dict[str, Any]:
    # An entry read from a YAML file is re-read from it when built; its parsed config need not be kept.
    return {k: replace(e, cfg=None) if e.yaml_path is not None else e for k, e in index.items()}


@cache
def builtin_index() -> dict[str, Any]:
    """lm-eval's index of its built-in tasks, read from the disk cache (built and saved the first time)."""
    import lm_eval
    from lm_eval.tasks._index import TaskIndex

    root = lm_eval_tasks_dir()
    version = getattr(lm_eval, "__version__", "unknown")
    path = (
        _cache_dir()
        / f"lm_eval_index-{version}-{hashlib.sha1(str(root).encode()).hexdigest()[:8]}-{int(root.stat().st_mtime)}.pkl"
    )
    if path.is_file():
        try:
            with path.open("rb") as f:
                return pickle.load(f)
        except Exception as exc:  # a truncated or foreign file: rebuild it
            log.warning("Rebuilding lm-eval's task index (%s unreadable: %s).", path, exc)
    log.info("Indexing lm-eval's task definitions (about 20 s, once per lm-eval version)...")
    index = _slim(TaskIndex.build([root]))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with tmp.open("wb") as f:
            pickle.dump(index, f)
        tmp.replace(path)
    except OSError as exc:
        log.warning("Could not cache lm-eval's task index at %s (%s); it is rebuilt next time.", path, exc)
    return index


class IndexedTaskManager:
    """lm-eval's `TaskManager` over the cached built-in index plus a user's `include_path` (which takes precedence)."""

    def __init__(self, include_path: Sequence[str] = ()) -> None:
        from lm_eval.tasks import TaskManager
        from lm_eval.tasks._index import TaskIndex

        for folder in include_path:
            if not Path(folder).expanduser().is_dir():
                raise NASError(f"include_path {folder}: no such folder of lm-eval task YAMLs.")
        manager = TaskManager(include_defaults=False)
        index = dict(builtin_index())
        if include_path:
            index.update(TaskIndex.build([Path(p).expanduser() for p in include_path]))
        # TaskManager keeps its index in `_index`; the rest of its API (load, groups, tags) reads it from there.
        manager._index = index
        manager._all_tasks = sorted(index)
        self.manager = manager
        self.index = index

    def entry(self, name: str) -> Any:
        entry = self.index.get(name)
        if entry is None:
            configured = sorted(p.stem for p in (config_dir() / "task").glob("*.yaml"))
            close = difflib.get_close_matches(name, [*configured, *self.index], n=5, cutoff=0.75)
            hint = f" Close names: {', '.join(close)}." if close else ""
            raise UnknownTaskError(
                f"Unknown task {name!r}: neither a config in conf/task/ ({', '.join(configured)}) nor a task, group "
                f"or tag of lm-eval {LM_EVAL_VERSION} ({len(self.index)} names; `lm-eval ls tasks` lists them).{hint} "
                "A task of your own: task.<name>.include_path=<folder of lm-eval YAMLs>."
            )
        return entry

    def load(self, name: str) -> Any:
        """lm-eval's Task, Group or list of Tasks (a tag) named `name`."""
        entry = self.entry(name)
        return self.manager._factory.build(entry, overrides=None, registry=self.index)


@cache
def task_manager(include_path: tuple[str, ...] = ()) -> IndexedTaskManager:
    """One task manager per include path, per process."""
    return IndexedTaskManager(include_path)


@dataclass
class LMEvalTree:
    """One named lm-eval task, group or tag, built: its leaf tasks and, for a group, lm-eval's Group."""

    name: str
    leaves: list[Any]  # ConfigurableTask
    group: Any | None  # lm_eval.api.group.Group
    served: dict[str, str]  # dataset -> where its documents came from

    @property
    def output_types(self) -> set[str]:
        return {leaf.OUTPUT_TYPE for leaf in self.leaves}


def load_lm_eval(name: str, include_path: Sequence[str], router: DatasetRouter) -> LMEvalTree:
    """Build lm-eval's task(s) named `name` with their documents served by `router`."""
    from lm_eval.api.group import Group

    manager = task_manager(tuple(str(p) for p in include_path))
    manager.entry(name)  # unknown names fail here, with close matches
    with router.routing():
        built = manager.load(name)
    if isinstance(built, Group):
        leaves, group = built.get_all_tasks(), built
    elif isinstance(built, list):
        leaves, group = built, None
    else:
        leaves, group = [built], None
    if not leaves:
        raise NASError(f"lm-eval's {name!r} has no tasks.")
    return LMEvalTree(name, list(leaves), group, dict(router.served))
