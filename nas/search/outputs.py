"""What a study leaves in its run directory, computed from the study database alone.

trials.csv        every trial: state, objective values, task metrics, sub-network, worker, timing
                  (a non-finite evaluation: state FAIL, non_finite true, its values as text; with constraints,
                  `feasible` and each constraint's value as `constraint:<name>`)
pareto.csv/json   the non-dominated real evaluations with finite values that meet the constraints
hypervolume.csv   hypervolume (normalised by the reference model) after each real evaluation
reference.json    the unmodified model's values
summary.json      objectives, counts, final hypervolume, LINAS predictor quality per round
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from nas.io.atomic import write_csv, write_json
from nas.search.constraints import CONSTRAINT_VALUES_ATTR
from nas.search.encoding import SearchEncoding
from nas.search.objectives import Objective
from nas.search.pareto import hypervolume_history, loss_bounds, losses, pareto_mask
from nas.search.study import REFERENCE_ATTR, SIGNATURE_ATTR, WORKER_ATTR
from nas.search.trials import (
    DUPLICATE_ATTR,
    EVALUATED_ATTR,
    NON_FINITE_ATTR,
    decode_trial,
    evaluated_by_key,
    evaluations,
    feasible_evaluations,
    is_feasible_trial,
    non_finite_evaluations,
    trial_values,
)

ROUNDS_ATTR = "linas_rounds"
# The documents (split, indices) each task's accuracy was measured on: a study attribute and a file beside it.
ITEMS_ATTR = "items"
ITEMS_FILE = "items.json"


def reference_values(study: optuna.Study) -> dict[str, float]:
    return dict(study.user_attrs.get(REFERENCE_ATTR, {}).get("values", {}))


def trial_row(t: FrozenTrial, objectives: Sequence[Objective], encoding: SearchEncoding) -> dict[str, Any]:
    """One line of trials.csv; a trial with incomplete parameters (its worker died) has no sub-network."""
    sub = decode_trial(encoding, t)
    row: dict[str, Any] = {
        "number": t.number,
        "state": t.state.name,
        "evaluated": bool(t.user_attrs.get(EVALUATED_ATTR)),
        "duplicate_of": t.user_attrs.get(DUPLICATE_ATTR),
        "non_finite": bool(t.user_attrs.get(NON_FINITE_ATTR)),
        "feasible": is_feasible_trial(t),
    }
    row |= trial_values(t, (o.name for o in objectives))
    row |= {f"constraint:{name}": v for name, v in t.user_attrs.get(CONSTRAINT_VALUES_ATTR, {}).items()}
    row |= {k: v for k, v in t.user_attrs.get("details", {}).items()}
    row |= {
        "num_layers": sub.num_layers if sub else None,
        "description": sub.describe() if sub else None,
        "seconds": t.user_attrs.get("seconds"),
        "worker": t.user_attrs.get(WORKER_ATTR),
        "linas_round": t.user_attrs.get("linas_round"),
        "predicted": t.user_attrs.get("linas_predicted"),
        "started": t.datetime_start.isoformat() if t.datetime_start else None,
        "completed": t.datetime_complete.isoformat() if t.datetime_complete else None,
        "subnetwork": sub.to_dict() if sub else None,
    }
    return row


def pareto_front(
    study: optuna.Study, objectives: Sequence[Objective], encoding: SearchEncoding
) -> list[dict[str, Any]]:
    """The non-dominated real evaluations among those meeting the study's constraints, sorted by the first
    objective."""
    done = feasible_evaluations(study)
    if not done:
        return []
    values = np.array([t.values for t in done])
    mask = pareto_mask(losses(values, objectives, {o.name: 1.0 for o in objectives}))
    front = [trial_row(t, objectives, encoding) for t, keep in zip(done, mask) if keep]
    first = objectives[0]
    return sorted(front, key=lambda r: r[first.name], reverse=first.maximize)


def hypervolume_rows(study: optuna.Study, objectives: Sequence[Objective]) -> list[dict[str, Any]]:
    """Hypervolume after each real evaluation (needs the reference values); evaluations that break a constraint
    add nothing to it."""
    reference = reference_values(study)
    done = evaluations(study)
    if not done or not reference:
        return []
    bounds = loss_bounds(objectives)
    loss = losses(np.array([t.values for t in done]), objectives, reference)
    loss[[not is_feasible_trial(t) for t in done]] = bounds
    history = hypervolume_history(loss, bounds)
    return [
        {"evaluations": i + 1, "trial": t.number, "hypervolume": hv} for i, (t, hv) in enumerate(zip(done, history))
    ]


def write_outputs(
    study: optuna.Study,
    objectives: Sequence[Objective],
    encoding: SearchEncoding,
    out_dir: str | Path,
    extra: dict[str, Any] | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Write every output file (with `write`); returns the summary (with `extra` merged in)."""
    out = Path(out_dir)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    front = pareto_front(study, objectives, encoding)
    hv = hypervolume_rows(study, objectives)
    reference = study.user_attrs.get(REFERENCE_ATTR, {})
    if write:
        out.mkdir(parents=True, exist_ok=True)
        write_csv([trial_row(t, objectives, encoding) for t in trials], out / "trials.csv")
        write_csv(front, out / "pareto.csv")
        write_json(front, out / "pareto.json")
        write_csv(hv, out / "hypervolume.csv")
        write_json(reference, out / "reference.json")
    states = [t.state.name for t in trials]
    summary = {
        "study_name": study.study_name,
        "objectives": [o.to_dict() for o in objectives],
        "evaluations": len(evaluated_by_key(study)),
        "non_finite": [t.number for t in non_finite_evaluations(study)],
        "infeasible": [t.number for t in evaluations(study) if not is_feasible_trial(t)],
        "constraints": study.user_attrs.get(SIGNATURE_ATTR, {}).get("constraints"),
        "duplicates_skipped": sum(1 for t in trials if t.user_attrs.get(DUPLICATE_ATTR) is not None),
        "trials": {s: states.count(s) for s in sorted(set(states))},
        "pareto_size": len(front),
        "hypervolume": hv[-1]["hypervolume"] if hv else None,
        "reference": reference.get("values"),
        "linas_rounds": study.user_attrs.get(ROUNDS_ATTR, []),
        **(extra or {}),
    }
    if write:
        write_json(summary, out / "summary.json")
    return summary
