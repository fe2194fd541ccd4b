"""A finished search, read back from its run directory: the study database (the source of truth) and
the files beside it (summary.json for the study name and objectives, quantized.json when present).

Accepts the folder of `python -m nas.search` (with study.db) and a pipeline run folder whose search
outputs are in `search/`.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas.analysis.baselines import BaselineResult, find_baselines_file, read_baselines
from nas.analysis.confirmation import Confirmation, find_confirmation, read_confirmation
from nas.analysis.quantized import (
    SPEED_FILE_NAME,
    QuantizedResults,
    find_quantized_file,
    read_quantized,
    read_speeds,
)
from nas.analysis.units import objective_from_dict
from nas.errors import NASError
from nas.search.objectives import Objective
from nas.search.outputs import ROUNDS_ATTR
from nas.search.pareto import losses, pareto_mask
from nas.search.study import REFERENCE_ATTR, SIGNATURE_ATTR
from nas.search.trials import evaluations, is_feasible_trial, non_finite_evaluations, trial_values
from nas.supernet.subnetwork import SubNetwork

log = logging.getLogger(__name__)

SEARCH_SUBDIR = "search"
EXPECTED = (
    "the output folder of a finished `python -m nas.search` run (holding study.db and summary.json) "
    f"or of a `python -m nas.pipeline` run (with them in {SEARCH_SUBDIR}/)"
)


class RunDirError(NASError, FileNotFoundError):
    """A run directory that does not hold a readable search study."""


@dataclass(frozen=True)
class Evaluation:
    """One real evaluation of a sub-network (duplicate look-ups are not evaluations)."""

    number: int
    values: dict[str, float]
    subnetwork: SubNetwork | None = None
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None

    @property
    def description(self) -> str:
        return self.subnetwork.describe() if self.subnetwork is not None else "-"


@dataclass
class RunData:
    """What the analysis needs of a finished search.

    Attributes:
        search_dir: the folder with the study database.
        objectives: the study's objectives, in order.
        reference: the unmodified model's value of each objective.
        evaluations: real evaluations in the order they completed, those that meet the study's constraints
            (every one when it has none): fronts, selections and statistics are made of them.
        infeasible: real evaluations that broke a constraint (shown greyed on the plots, never selected).
        space_choices: searchable parameter -> its choices (`num_layers`, `mlp_7`, ...), from the
            study's signature; empty when unknown.
        linas_rounds: LINAS rounds with their predictor quality (empty for other algorithms).
        speeds: trial number (None: the unmodified model) -> prefill / decode tokens per second that the
            pipeline measured for the Pareto set (`speed.json`); also merged into their details.
        baselines: pruning baselines scored on the same objectives (`baselines.json`), when present.
        confirmation: the pipeline's held-out confirmation (`confirm/confirmation.json`), when present.
        reference_label: what the search's reference is: the fine-tuned super-network's full network when the
            pipeline trained it, else the unmodified model.
    """

    search_dir: Path
    study_name: str
    objectives: list[Objective]
    reference: dict[str, float]
    evaluations: list[Evaluation]
    infeasible: list[Evaluation] = field(default_factory=list)
    constraints: list[dict[str, Any]] = field(default_factory=list)
    reference_details: dict[str, Any] = field(default_factory=dict)
    space_name: str | None = None
    space_choices: dict[str, list[int]] = field(default_factory=dict)
    algorithm: str | None = None
    trial_states: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    linas_rounds: list[dict[str, Any]] = field(default_factory=list)
    quantized: QuantizedResults = field(default_factory=QuantizedResults)
    speeds: dict[int | None, dict[str, float]] = field(default_factory=dict)
    baselines: list[BaselineResult] = field(default_factory=list)
    confirmation: Confirmation | None = None
    reference_label: str = "unmodified model"
    notes: list[str] = field(default_factory=list)

    def objective(self, name: str) -> Objective:
        return next(o for o in self.objectives if o.name == name)

    def values(self, evaluations: Sequence[Evaluation] | None = None) -> np.ndarray:
        """[n, objectives] values of `evaluations` (all by default)."""
        evals = self.evaluations if evaluations is None else evaluations
        return np.array([[e.values[o.name] for o in self.objectives] for e in evals], dtype=np.float64).reshape(
            len(evals), len(self.objectives)
        )

    def pareto_set(self, objectives: Sequence[Objective] | None = None) -> list[Evaluation]:
        """The non-dominated evaluations on `objectives` (all of the study's by default), by trial number."""
        objectives = list(objectives or self.objectives)
        if not self.evaluations:
            return []
        columns = [self.objectives.index(o) for o in objectives]
        loss = losses(self.values()[:, columns], objectives, {o.name: 1.0 for o in objectives})
        return [e for e, keep in zip(self.evaluations, pareto_mask(loss)) if keep]


def find_search_dir(run_dir: str | Path, storage: str | None = None) -> Path:
    """The folder holding the study: `run_dir` itself or its `search/`; with a `storage` URL (a study shared by
    workers in other run directories), any existing `run_dir`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run_dir={run_dir} does not exist or is not a folder; pass {EXPECTED}.")
    for candidate in (run_dir, run_dir / SEARCH_SUBDIR):
        if (candidate / "study.db").is_file() or (candidate / "summary.json").is_file():
            return candidate
    if storage is not None:
        return run_dir
    raise RunDirError(
        f"run_dir={run_dir} holds no study.db or summary.json (nor {SEARCH_SUBDIR}/ with them); pass {EXPECTED}."
    )


def _read_summary(search_dir: Path) -> dict[str, Any]:
    path = search_dir / "summary.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("%s is unreadable (%s); reading everything from the study database.", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _open_study(search_dir: Path, storage: str | None, study_name: str | None, summary: Mapping[str, Any]) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage is None:
        db = search_dir / "study.db"
        if not db.is_file():
            raise RunDirError(
                f"{search_dir} has summary.json but no study.db: the study lives in another storage "
                f"(summary.json says {summary.get('storage')!r}). Pass storage=<its SQLAlchemy URL>."
            )
        storage = f"sqlite:///{db.resolve()}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    except Exception as exc:
        raise RunDirError(
            f"Cannot read the study database in {search_dir} ({type(exc).__name__}: {exc}); expected {EXPECTED}."
        ) from exc
    name = study_name or summary.get("study_name")
    if name is None:
        if len(names) != 1:
            raise RunDirError(
                f"{search_dir} has no summary.json naming its study and the database holds {names or 'no studies'}; "
                "pass study_name=<one of them>."
            )
        name = names[0]
    if name not in names:
        raise RunDirError(f"Study {name!r} is not in the database of {search_dir}; it holds {names}.")
    return optuna.load_study(study_name=str(name), storage=storage)


def _objectives(summary: Mapping[str, Any], signature: Mapping[str, Any], search_dir: Path) -> list[Objective]:
    for source in (summary.get("objectives"), signature.get("objectives")):
        if source:
            try:
                return [objective_from_dict(o) for o in source]
            except (KeyError, TypeError, ValueError):
                continue
    raise RunDirError(
        f"Neither summary.json nor the study in {search_dir} records its objectives; "
        "was it created by `python -m nas.search`?"
    )


def _subnetwork(key: Any) -> SubNetwork | None:
    try:
        return SubNetwork.from_json(key) if isinstance(key, str) else None
    except (ValueError, TypeError):
        return None


def _describe(key: Any) -> str:
    sub = _subnetwork(key)
    return sub.describe() if sub is not None else "unknown sub-network"


def _speed_file(search_dir: Path, run_dir: Path, quantized_path: Path | None) -> Path | None:
    """The pipeline's speed.json: beside quantized.json, or in the run's quantize/ folder."""
    folders = ([quantized_path.parent] if quantized_path else []) + [run_dir / "quantize", search_dir]
    return next((f / SPEED_FILE_NAME for f in folders if (f / SPEED_FILE_NAME).is_file()), None)


def load_run(
    run_dir: str | Path,
    study_name: str | None = None,
    storage: str | None = None,
    quantized_file: str | Path | None = None,
) -> RunData:
    """Read a finished search (see the module's docstring); raises `RunDirError` saying what is expected."""
    from optuna.trial import TrialState

    run_dir = Path(run_dir)
    search_dir = find_search_dir(run_dir, storage)
    summary = _read_summary(search_dir)
    study = _open_study(search_dir, storage, study_name, summary)
    signature = study.user_attrs.get(SIGNATURE_ATTR) or {}
    objectives = _objectives(summary, signature, search_dir)
    if len(study.directions) != len(objectives):
        raise RunDirError(
            f"Study {study.study_name!r} has {len(study.directions)} objectives but its records name "
            f"{[o.name for o in objectives]}; the run directory {search_dir} is inconsistent."
        )
    reference = study.user_attrs.get(REFERENCE_ATTR) or {}
    every = [
        Evaluation(
            number=t.number,
            values={o.name: float(v) for o, v in zip(objectives, t.values)},
            subnetwork=_subnetwork(t.user_attrs.get("subnet_key")),
            details=dict(t.user_attrs.get("details") or {}),
            seconds=t.user_attrs.get("seconds"),
        )
        for t in evaluations(study)
    ]
    feasible = {t.number for t in evaluations(study) if is_feasible_trial(t)}
    evals = [e for e in every if e.number in feasible]
    infeasible = [e for e in every if e.number not in feasible]
    trials = study.get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    space = signature.get("search_space") or {}
    if quantized_file and not Path(quantized_file).is_file():
        raise RunDirError(f"quantized_file={quantized_file} does not exist; leave it null to look beside the study.")
    quantized_path = Path(quantized_file) if quantized_file else find_quantized_file(search_dir, run_dir)
    run = RunData(
        search_dir=search_dir,
        study_name=study.study_name,
        objectives=objectives,
        reference={k: float(v) for k, v in (reference.get("values") or {}).items()},
        evaluations=evals,
        infeasible=infeasible,
        constraints=list(signature.get("constraints") or []),
        reference_details=dict(reference.get("details") or {}),
        space_name=space.get("name"),
        space_choices={str(k): [int(c) for c in v] for k, v in (space.get("choices") or {}).items()},
        algorithm=signature.get("algorithm"),
        trial_states={s: states.count(s) for s in sorted(set(states))},
        duplicates=sum(1 for t in trials if t.user_attrs.get("duplicate_of") is not None),
        linas_rounds=list(study.user_attrs.get(ROUNDS_ATTR) or []),
        quantized=read_quantized(quantized_path),
        speeds=read_speeds(_speed_file(search_dir, run_dir, quantized_path)),
    )
    run.baselines, baseline_notes = read_baselines(find_baselines_file(search_dir, run_dir), objectives)
    run.notes.extend(baseline_notes)
    run.confirmation = read_confirmation(find_confirmation(search_dir, run_dir))
    if (run_dir / "train" / "stage.json").is_file():
        run.reference_label = "fine-tuned full network"
    details_of: dict[int | None, dict[str, Any]] = {e.number: e.details for e in run.evaluations}
    details_of[None] = run.reference_details
    for number, speed in run.speeds.items():
        for key, value in speed.items():
            details_of.get(number, {}).setdefault(key, value)  # a value the search measured stays
    if not run.reference:
        run.notes.append("The study has no reference (unmodified model) values; relative figures are left out.")
    broken = non_finite_evaluations(study)
    if broken:
        names = [o.name for o in objectives]
        shown = "; ".join(
            f"trial {t.number} ({_describe(t.user_attrs.get('subnet_key'))}): "
            + ", ".join(f"{k}={v}" for k, v in trial_values(t, names).items())
            for t in broken[:10]
        )
        more = f" and {len(broken) - 10} more" if len(broken) > 10 else ""
        run.notes.append(
            f"{len(broken)} evaluated sub-network(s) gave NaN or infinite values and are left off every front and "
            f"table: {shown}{more}."
        )
    if run.constraints:
        run.notes.append(
            f"Constraints {', '.join(c['name'] for c in run.constraints)}: {len(infeasible)} of {len(every)} evaluated "
            "sub-networks broke one; they are greyed on the plots and left off every front, table and selection."
        )
    if TrialState.RUNNING.name in run.trial_states:
        run.notes.append(f"{run.trial_states['RUNNING']} trials are still RUNNING: the search may be unfinished.")
    run.notes.extend(run.quantized.notes)
    return run
