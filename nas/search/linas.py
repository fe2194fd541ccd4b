"""LINAS (Cummings et al. 2022; LLaMA-NAS sec. 3.2) as an Optuna sampler.

Rounds: the first `population_size` trials are uniform random; then, whenever no candidate is
waiting, a round is planned: one predictor per measured objective is fitted on every real evaluation
so far (analytic objectives such as size are computed exactly), NSGA-II runs on the predictions for
`generations` x `inner_population` candidates, and the `round_size` most promising candidates
not yet evaluated are enqueued in the study. Trials (in this or other worker processes) then take them
one by one for real evaluation. Enqueued trials carry their round and predicted values, so the next
round measures the predictors prospectively on them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import sklearn
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial

from nas.search.constraints import CONSTRAINT_VALUES_ATTR, Constraint
from nas.search.encoded_rows import EncodedRows
from nas.search.encoding import SearchEncoding
from nas.search.evolution import Operators, evolve, mixed_radix, row_codes, row_keys, select_survivors
from nas.search.objectives import Objective
from nas.search.optuna_compat import set_frozen_trial_user_attr
from nas.search.pareto import loss_bounds, losses
from nas.search.predictors import PredictorQuality, fit_predictor
from nas.search.random_draws import QuickRandomSampler
from nas.search.study import REFERENCE_ATTR
from nas.search.trials import evaluations
from nas.supernet.subnetwork import SubNetwork

log = logging.getLogger(__name__)

ROUND_ATTR = "linas_round"
# Added to every loss of a candidate that breaks a constraint: more than any feasible loss can be (those beyond an
# objective's hypervolume bound get 1e6), so feasible candidates dominate infeasible ones in every objective.
PREDICTED_ATTR = "linas_predicted"
_INFEASIBLE = 1e8


def _to_fit(objective: Objective, values: np.ndarray) -> np.ndarray:
    """The scale predictors learn on: log for perplexity, which spans orders of magnitude across a
    space (an untrained sub-network's can be 1e9 where the model's is 30), else the values."""
    return np.log(np.maximum(values, 1e-12)) if objective.kind == "perplexity" else values


def _from_fit(objective: Objective, fitted: np.ndarray) -> np.ndarray:
    return np.exp(np.minimum(fitted, 700.0)) if objective.kind == "perplexity" else fitted


def _params_key(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))


@dataclass(frozen=True)
class _Scale:
    """How candidates are ranked: losses relative to the reference model when its values are known, and
    candidates predicted beyond an objective's hypervolume bound (e.g. 10x its perplexity) behind all
    others, so the round is spent where the Pareto front can still grow."""

    reference: dict[str, float]
    bounds: np.ndarray | None

    @classmethod
    def of(cls, study: optuna.Study, objectives: list[Objective]) -> _Scale:
        stored = study.user_attrs.get(REFERENCE_ATTR, {}).get("values", {})
        known = all(stored.get(o.name) for o in objectives)
        reference = {o.name: float(stored[o.name]) if known else 1.0 for o in objectives}
        return cls(reference, loss_bounds(objectives) if known else None)

    def penalised(self, loss: np.ndarray) -> np.ndarray:
        if self.bounds is None:
            return loss
        outside = (loss >= self.bounds).any(axis=1, keepdims=True)
        return np.where(outside, loss + 1e6, loss)


class LinasSampler(BaseSampler):
    """NSGA-II on performance predictors, sending one population per round to real evaluation.

    Args:
        encoding: the search space's encoding.
        objectives: the study's objectives.
        analytic: exact values of the analytic objectives of a sub-network.
        population_size: sub-networks of the first, random round.
        round_size: sub-networks each predictor round sends to real evaluation (None: population_size);
            smaller rounds refit the predictors more often within a budget.
        inner_population, generations: the predictor-driven NSGA-II's size and length.
        operators: its variation settings.
        predictor: `svr` or `ridge`.
        seed: seeds the random round, the inner NSGA-II and the predictors' folds.
        on_round: called with each round's record (round, sizes, predictor quality), e.g. to log it.
        constraints: budgets; candidates predicted to break one (analytic ones computed exactly, measured ones
            by a predictor of their own unless they are objectives) rank behind every feasible candidate.
        analytic_rows: `analytic` of many index rows at once (`ObjectiveScorer.analytic_rows`); without it each
            candidate is decoded and costed on its own (the same values, slower).
    """

    def __init__(
        self,
        encoding: SearchEncoding,
        objectives: Sequence[Objective],
        analytic: Callable[[SubNetwork], dict[str, float]],
        population_size: int = 50,
        round_size: int | None = None,
        inner_population: int = 200,
        generations: int = 50,
        operators: Operators | None = None,
        predictor: str = "svr",
        seed: int | None = None,
        on_round: Callable[[dict[str, Any]], None] | None = None,
        constraints: Sequence[Constraint] = (),
        analytic_rows: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None,
    ) -> None:
        self.encoding = encoding
        self.objectives = list(objectives)
        self.analytic = analytic
        self.population_size = population_size
        self.round_size = round_size or population_size
        self.inner_population = inner_population
        self.generations = generations
        self.operators = operators or Operators()
        self.predictor = predictor
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.on_round = on_round
        self.constraints = list(constraints)
        self.analytic_rows = analytic_rows
        self.rows = EncodedRows(encoding)
        self._radix = mixed_radix(self.rows.largest)  # index rows as one int64 each, where the space allows it
        self._random = QuickRandomSampler(seed=seed)

    def reseed_rng(self) -> None:
        self._random.reseed_rng()
        self.rng = np.random.default_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.encoding.distributions()

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if "fixed_params" in trial.system_attrs:  # an enqueued candidate of a planned round
            return {}
        real = sorted(evaluations(study), key=lambda t: t.number)  # predictors fit in trial order
        if len(real) < self.population_size:
            return {}  # the initial population: uniform random
        planned = self.plan_round(study, real)
        if not planned:
            return {}
        first, *rest = planned
        # Optuna's `enqueue_trial(skip_if_exists=True)` compares every trial's parameters one by one with numpy
        # (40 ms per candidate at 40 trials, growing with the study); a set of the trials' parameters is the same
        # test (integer parameters: equal values).
        queued = {_params_key(t.system_attrs.get("fixed_params", t.params)) for t in study.get_trials(deepcopy=False)}
        for params, predicted, round_number in rest:
            if _params_key(params) in queued:
                continue
            queued.add(_params_key(params))
            study.enqueue_trial(params, user_attrs={ROUND_ATTR: round_number, PREDICTED_ATTR: predicted})
        params, predicted, round_number = first
        set_frozen_trial_user_attr(study, trial, ROUND_ATTR, round_number)
        set_frozen_trial_user_attr(study, trial, PREDICTED_ATTR, predicted)
        return params

    # --- one round ---------------------------------------------------------------------------

    def plan_round(
        self, study: optuna.Study, real: list[FrozenTrial]
    ) -> list[tuple[dict[str, int], dict[str, float], int]]:
        """Fit, search the predictors, and return this round's candidates (params, predictions, round)."""
        # scikit-learn checks its inputs and parameters at every call, a few milliseconds each: most of a round's
        # predictions (200 candidates, 50 times). Ours are finite numeric matrices; the numbers are the same.
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            return self._plan_round(study, real)

    def _plan_round(
        self, study: optuna.Study, real: list[FrozenTrial]
    ) -> list[tuple[dict[str, int], dict[str, float], int]]:
        all_trials = study.get_trials(deepcopy=False)
        round_number = 1 + max((int(t.user_attrs.get(ROUND_ATTR, 0)) for t in all_trials), default=0)
        # The evaluated sub-networks as index rows: decoding each into a checked SubNetwork cost 0.6 ms per trial.
        names = self.encoding.names
        raw = np.array([[int(t.params[name]) for name in names] for t in real], dtype=np.int64)
        values = np.array([t.values for t in real], dtype=np.float64)
        features = self.rows.features(raw)
        predictors, quality = self._fit_predictors(real, features, values, round_number)
        predictors |= self._fit_constraint_predictors(real, features, round_number)
        record: dict[str, Any] = {"round": round_number, "n_train": len(real), "objectives": quality}
        start_rows = self.rows.canonical(raw)  # canonical indices of what was evaluated
        scale = _Scale.of(study, self.objectives)

        def predict(rows: np.ndarray) -> np.ndarray:
            return self._predict(predictors, rows)

        def loss_of(rows: np.ndarray) -> np.ndarray:
            predicted = predict(rows)
            loss = scale.penalised(losses(predicted[:, : len(self.objectives)], self.objectives, scale.reference))
            return self._infeasible_last(loss, predicted)

        upper = self.rows.largest
        # Start from the best real evaluations, topped up with random individuals.
        measured = self._infeasible_last(
            scale.penalised(losses(values, self.objectives, scale.reference)), self._measured_rows(real, values)
        )
        best = start_rows[select_survivors(measured, self.inner_population)]
        extra = self.rng.integers(0, upper + 1, size=(max(0, self.inner_population - len(best)), len(upper)))
        initial = np.vstack([best, extra]) if len(extra) else best
        archive, archive_loss = evolve(initial, loss_of, upper, self.generations, self.operators, self.rng)
        record["candidates_scored"] = len(archive)
        canonical, pool = self._unevaluated(archive, start_rows)
        if len(pool) == 0:
            log.warning("LINAS round %d: the predictors' search found no sub-network not evaluated yet.", round_number)
            return []
        # The most promising: the best fronts of the predicted losses, spread by crowding distance.
        chosen = pool[select_survivors(archive_loss[pool], min(self.round_size, len(pool)))]
        predictions = predict(archive[chosen])[:, : len(self.objectives)]
        record["selected"] = len(chosen)
        if self.constraints:
            record["predicted_infeasible_sent"] = int((archive_loss[chosen] >= _INFEASIBLE).any(axis=1).sum())
        if self.on_round is not None:
            self.on_round(record)
        self._log(record)
        return [
            (
                dict(zip(self.encoding.names, (int(v) for v in canonical[i]))),
                {o.name: float(p) for o, p in zip(self.objectives, pred)},
                round_number,
            )
            for i, pred in zip(chosen, predictions)
        ]

    def _fit_predictors(
        self, real: list[FrozenTrial], features: np.ndarray, values: np.ndarray, round_number: int
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """One predictor per measured objective, and its quality: cross-validated, and on the sub-networks
        the previous round predicted and that were evaluated since (prospective)."""
        previous = [
            t for t in real if t.user_attrs.get(ROUND_ATTR) == round_number - 1 and PREDICTED_ATTR in t.user_attrs
        ]
        predictors: dict[str, Any] = {}
        quality: dict[str, Any] = {}
        for j, objective in enumerate(self.objectives):
            if objective.analytic:
                continue
            target = _to_fit(objective, values[:, j])
            model, cv = fit_predictor(self.predictor, features, target, seed=round_number)
            predictors[objective.name] = model
            entry = {"cv": cv.to_dict()}
            if previous:
                true = _to_fit(objective, np.array([t.values[j] for t in previous]))
                guess = _to_fit(objective, np.array([t.user_attrs[PREDICTED_ATTR][objective.name] for t in previous]))
                entry["prospective"] = PredictorQuality.of(true, guess).to_dict()
            quality[objective.name] = entry
        return predictors, quality

    def _quantities(self) -> list[Objective]:
        """The objectives, then the constraints' quantities that are not objectives."""
        names = {o.name for o in self.objectives}
        extra = {c.quantity.name: c.quantity for c in self.constraints if c.quantity.name not in names}
        return [*self.objectives, *extra.values()]

    def _predict(self, predictors: dict[str, Any], rows: np.ndarray) -> np.ndarray:
        """[n, quantities] values of index rows (objectives first): analytic ones exact, measured ones by their
        predictor."""
        feats = self.rows.features(rows)
        quantities = self._quantities()
        analytic: dict[str, np.ndarray] = {}
        if any(q.analytic for q in quantities):
            if self.analytic_rows is not None:
                analytic = self.analytic_rows(rows)
            else:
                per_sub = [self.analytic(s) for s in self.encoding.decode_rows(rows)]
                analytic = {q.name: np.array([v[q.name] for v in per_sub]) for q in quantities if q.analytic}
        columns = []
        for q in quantities:
            if q.analytic:
                columns.append(np.asarray(analytic[q.name], dtype=np.float64))
            else:
                columns.append(_from_fit(q, np.asarray(predictors[q.name].predict(feats), dtype=np.float64)))
        return np.stack(columns, axis=1)

    def _measured_rows(self, real: list[FrozenTrial], values: np.ndarray) -> np.ndarray:
        """[n, quantities] of the real evaluations: objectives as told, constraint-only quantities as recorded."""
        extra = self._quantities()[len(self.objectives) :]
        if not extra:
            return values
        recorded = [t.user_attrs.get(CONSTRAINT_VALUES_ATTR, {}) for t in real]
        by_quantity = {c.quantity.name: c.name for c in self.constraints}
        columns = [[float(r.get(by_quantity[q.name], np.inf)) for r in recorded] for q in extra]
        return np.hstack([values, np.array(columns, dtype=np.float64).T])

    def _infeasible_last(self, loss: np.ndarray, quantities: np.ndarray) -> np.ndarray:
        """Losses with every row that breaks a constraint moved behind all feasible rows (feasibility first),
        infeasible rows ordered by their total violation."""
        if not self.constraints:
            return loss
        column = {q.name: j for j, q in enumerate(self._quantities())}
        total = np.zeros(len(loss))
        for c in self.constraints:
            values = quantities[:, column[c.quantity.name]]
            scale = abs(c.limit) or 1.0
            violation = (values - c.limit) / scale if c.upper else (c.limit - values) / scale
            total += np.maximum(0.0, np.nan_to_num(violation, nan=1e6, posinf=1e6))
        return np.where((total > 0)[:, None], loss + _INFEASIBLE + total[:, None], loss)

    def _fit_constraint_predictors(
        self, real: list[FrozenTrial], features: np.ndarray, round_number: int
    ) -> dict[str, Any]:
        """A predictor per measured constraint quantity that is not an objective, on the recorded values."""
        out: dict[str, Any] = {}
        measured = self._measured_rows(real, np.zeros((len(real), 0)))
        for j, q in enumerate(self._quantities()[len(self.objectives) :]):
            if q.analytic:
                continue
            target = _to_fit(q, measured[:, j])
            ok = np.isfinite(target)
            out[q.name], _ = fit_predictor(self.predictor, features[ok], target[ok], seed=round_number)
        return out

    def _unevaluated(self, archive: np.ndarray, evaluated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The archive's rows in canonical form, and the indices of the first row of each distinct sub-network
        that was not evaluated yet (`evaluated`: canonical index rows)."""
        canonical = self.rows.canonical(archive).astype(np.int64, copy=False)
        evaluated = evaluated.astype(np.int64, copy=False)
        if self._radix is not None:  # rows compared by their codes, in whole-array operations
            codes = row_codes(canonical, self._radix)
            _, first = np.unique(codes, return_index=True)
            first = np.sort(first)
            return canonical, first[~np.isin(codes[first], row_codes(evaluated, self._radix))]
        # Rows compared by their bytes: a list of 10,000 rows of Python ints cost more than the rest of this.
        done = set(row_keys(evaluated))
        firsts: dict[bytes, int] = {}
        for i, key in enumerate(row_keys(canonical)):
            if key not in done:
                firsts.setdefault(key, i)
        return canonical, np.fromiter(firsts.values(), dtype=np.int64, count=len(firsts))

    @staticmethod
    def _log(record: dict[str, Any]) -> None:
        parts = []
        for name, entry in record["objectives"].items():
            cv = entry["cv"]
            text = f"{name}: cv tau {cv['kendall_tau']:.3f} mae {cv['mae']:.4g}"
            if "prospective" in entry:
                p = entry["prospective"]
                text += f", last round tau {p['kendall_tau']:.3f} mae {p['mae']:.4g}"
            parts.append(text)
        log.info(
            "LINAS round %d: %d real evaluations, %d candidates scored by predictors, %d sent; %s",
            record["round"],
            record["n_train"],
            record["candidates_scored"],
            record.get("selected", 0),
            "; ".join(parts),
        )
