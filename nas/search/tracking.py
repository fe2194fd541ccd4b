"""Weights & Biases for a search: config, every trial and the Pareto front as tables, the hypervolume
curve. Offline by default (`wandb.mode=online` to sync, `disabled` to skip); the run is always
finished, also when the search crashes, so no W&B run is left open."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import optuna
from omegaconf import DictConfig, OmegaConf

from nas.io.secrets import redact
from nas.io.wandb_env import prepare_wandb
from nas.search.encoding import SearchEncoding
from nas.search.objectives import Objective
from nas.search.outputs import pareto_front, trial_row

log = logging.getLogger(__name__)


def _table_rows(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows for a `wandb.Table`, which insists on one type per column.

    Values that are not plain scalars become strings, and so does every value of a column that mixes
    strings with numbers (e.g. `trial` holding both "reference" and trial numbers).
    """
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    plain = [
        [v if isinstance(v, int | float | str | bool) or v is None else str(v) for v in (r.get(c) for c in columns)]
        for r in rows
    ]
    for index in range(len(columns)):
        kinds = {isinstance(values[index], str) for values in plain if values[index] is not None}
        if len(kinds) > 1:
            for values in plain:
                if values[index] is not None:
                    values[index] = str(values[index])
    return columns, plain


def run_tags(cfg: DictConfig) -> list[str]:
    """Tags that let W&B filter runs: model, search space, sampler, strategy, algorithm, tasks."""

    def short(node: Any, *keys: str) -> str | None:
        if node is None:
            return None
        for key in keys:
            value = node.get(key) if hasattr(node, "get") else None
            if value:
                return str(value).rstrip("/").split("/")[-1].split(".")[-1]
        return None

    tags = [str(t) for t in (cfg.wandb.get("tags") or [])]
    candidates = [
        short(cfg.get("model"), "name_or_path", "package", "_target_"),
        short(cfg.get("search_space"), "name"),
        short(cfg.get("sampler"), "_target_") if cfg.get("stages", {}).get("train") else None,
        short(cfg.get("strategy"), "_target_") if cfg.get("stages", {}).get("train") else None,
        short(cfg.get("search"), "algorithm"),
    ]
    objectives = OmegaConf.to_container(cfg.objectives, resolve=True) if cfg.get("objectives") else []
    for spec in objectives or []:  # type: ignore[union-attr]
        task = spec.get("task") if isinstance(spec, dict) else None
        candidates.extend([task] if isinstance(task, str) else list(task or []))
    for tag in candidates:
        if tag and tag not in tags:
            tags.append(tag)
    return tags[:64]  # W&B's limit


def open_run(cfg: DictConfig, name: str, job_type: str) -> Any:
    """A W&B run for this job (None when `wandb.mode=disabled`), grouped by experiment name."""
    settings = cfg.get("wandb")
    mode = prepare_wandb("disabled" if settings is None else str(settings.mode))
    if mode == "disabled":
        return None
    import wandb

    return wandb.init(
        project=settings.project,
        group=settings.group,
        name=name,
        job_type=job_type,
        tags=run_tags(cfg),
        dir=str(settings.dir),
        mode=cast(Any, mode),
        config=redact(OmegaConf.to_container(cfg, resolve=True)),
        reinit="finish_previous",
    )


def log_report(cfg: DictConfig, name: str, figures: Sequence[str], tables: dict[str, list[dict[str, Any]]]) -> None:
    """The report's figures as images and its tables, in a W&B run of their own; always finished."""
    run = open_run(cfg, f"{name}-report", "analysis")
    if run is None:
        return
    import wandb

    try:
        run.log({f"figures/{Path(f).stem}": wandb.Image(f) for f in figures})
        for key, rows in tables.items():
            columns, data = _table_rows(rows)
            if columns:
                run.log({key: wandb.Table(columns=cast(Any, columns), data=data)})
    finally:
        run.finish()


class SearchTracker:
    """A W&B run for one search job, or nothing when disabled."""

    def __init__(self, run: Any = None) -> None:
        self.run = run

    @classmethod
    def from_config(cls, cfg: DictConfig, study_name: str) -> SearchTracker:
        return cls(open_run(cfg, study_name, "search"))

    def log_study(
        self,
        study: optuna.Study,
        objectives: Sequence[Objective],
        encoding: SearchEncoding,
        hypervolume: list[dict[str, Any]],
        summary: dict[str, Any],
    ) -> None:
        if self.run is None:
            return
        import wandb

        done = {row["trial"]: row for row in hypervolume}
        for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
            if t.number in done and t.values:
                values = {o.name: t.values[i] for i, o in enumerate(objectives)}
                self.run.log({**values, **done[t.number]})
        for name, rows in (
            ("trials", [trial_row(t, objectives, encoding) for t in study.get_trials(deepcopy=False)]),
            ("pareto", pareto_front(study, objectives, encoding)),
        ):
            columns, data = _table_rows(rows)
            if columns:
                self.run.log({name: wandb.Table(columns=cast(Any, columns), data=data)})
        self.run.summary.update({k: v for k, v in summary.items() if isinstance(v, int | float | str)})

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
