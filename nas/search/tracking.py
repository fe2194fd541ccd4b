"""Weights & Biases for a search: config, every trial and the Pareto front as tables, the hypervolume
curve. Offline by default (`wandb.mode=online` to sync, `disabled` to skip); the run is always
finished, also when the search crashes, so no W&B run is left open."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, cast

import optuna
from omegaconf import DictConfig, OmegaConf

from nas.search.encoding import SearchEncoding
from nas.search.objectives import Objective
from nas.search.outputs import pareto_front, trial_row

log = logging.getLogger(__name__)
MODES = ("disabled", "offline", "online")


def _table_rows(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    plain = [
        [v if isinstance(v, int | float | str | bool) or v is None else str(v) for v in (r.get(c) for c in columns)]
        for r in rows
    ]
    return columns, plain


class SearchTracker:
    """A W&B run for one search job, or nothing when disabled."""

    def __init__(self, run: Any = None) -> None:
        self.run = run

    @classmethod
    def from_config(cls, cfg: DictConfig, study_name: str) -> SearchTracker:
        settings = cfg.get("wandb")
        mode = "disabled" if settings is None else str(settings.mode)
        if mode not in MODES:
            raise ValueError(f"wandb.mode={mode!r}: use one of {list(MODES)}.")
        if mode == "disabled":
            return cls()
        import wandb

        run = wandb.init(
            project=settings.project,
            group=settings.group,
            name=study_name,
            tags=[str(t) for t in settings.tags],
            dir=str(settings.dir),
            mode=cast(Any, mode),
            config=OmegaConf.to_container(cfg, resolve=True),  # type: ignore[arg-type]
            reinit="finish_previous",
        )
        return cls(run)

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
