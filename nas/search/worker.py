"""One worker's loop over a shared study, in the steps a reader can follow:

    while the budget is open:            (dead workers' trials failed; others' in-flight ones waited for)
        propose a sub-network            (a new trial: its worker and heartbeat first, then its parameters)
        skip it if taken                 (the budget filled, or the same sub-network in flight elsewhere)
        answer it if a duplicate         (PRUNED, pointing at the evaluation it repeats)
        evaluate it                      (COMPLETE with its values; FAIL, counted, when one is NaN or inf)

Every worker (process or machine) runs this loop against the same study; the database is the only
thing they share, so a killed worker loses only its trial in flight.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial, Trial, TrialState
from tqdm.auto import tqdm

from nas.io.secrets import redact_url
from nas.search.batched_storage import answering_from_last_read, stamp_trials
from nas.search.constraints import (
    CONSTRAINT_VALUES_ATTR,
    analytic_feasible,
    constraint_values,
    is_feasible,
    violations,
)
from nas.search.context import SearchContext
from nas.search.distinct import distinct_sampler
from nas.search.optuna_compat import database_engine, experimental_features, storage_of, tell, trial_id_of
from nas.search.outputs import reference_values
from nas.search.pareto import front_hypervolume, loss_bounds, losses, merge_into_front
from nas.search.sqlite_wal import checkpoint
from nas.search.storage_retry import StoragePatience, is_outage
from nas.search.study import (
    WORKER_ATTR,
    Heartbeat,
    alive_running,
    decision_lock,
    fail_dead_trials,
    storage_url,
    worker_id,
)
from nas.search.trials import (
    DUPLICATE_ATTR,
    EVALUATED_ATTR,
    FEASIBLE_ATTR,
    NON_FINITE_ATTR,
    SUBNET_ATTR,
    EvaluatedIndex,
    is_feasible_trial,
    non_finite,
)
from nas.supernet.metrics import sub_network_cost
from nas.supernet.subnetwork import SubNetwork

log = logging.getLogger(__name__)

SUMMARY_ATTR = "summary"  # the sub-network in words and its sizes, for people reading the study (the dashboard)


class _Progress:
    """Trials done out of the budget, the best value of each objective and the hypervolume so far."""

    def __init__(self, ctx: SearchContext, enabled: bool, index: EvaluatedIndex) -> None:
        self.ctx, self.index = ctx, index
        self.bar = tqdm(total=ctx.budget, desc=f"search {ctx.study.study_name}", disable=not enabled, unit="eval")
        self.reference: dict[str, float] | None = None
        self.front = np.zeros((0, len(ctx.objectives)))  # values of the non-dominated evaluations so far
        self.front_loss = np.zeros((0, len(ctx.objectives)))  # and their losses
        self.merged = 0  # evaluations of `index.found` merged into `front`
        self.refresh()

    def refresh(self) -> None:
        """The trials as the worker last read them (no read of its own); the front's best values and hypervolume
        from the feasible evaluations, merged into the front as they arrive."""
        if self.bar.disable:
            return
        with answering_from_last_read(self.ctx.study):
            trials = self.ctx.study.get_trials(deepcopy=False)
        known = self.index.update(trials)
        self.bar.n = min(len(known), self.ctx.budget)
        if self.reference is None:  # set once per study, before the first evaluation
            self.reference = reference_values(self.ctx.study) or None
        if not self.reference:
            self.bar.refresh()
            return
        new = [
            t
            for t in self.index.found[self.merged :]
            if t.state == TrialState.COMPLETE and is_feasible_trial(t) and known[t.user_attrs[SUBNET_ATTR]] is t
        ]
        self.merged = len(self.index.found)
        if new:
            values = np.array([t.values for t in new], dtype=np.float64)
            loss = losses(values, self.ctx.objectives, self.reference)
            keep_front, keep_new = merge_into_front(self.front_loss, loss)
            self.front = np.vstack([self.front[keep_front], values[keep_new]])
            self.front_loss = np.vstack([self.front_loss[keep_front], loss[keep_new]])
            if keep_new.any():  # else every new one is dominated: nothing shown changes
                self.bar.set_postfix(self._postfix(), refresh=False)
        self.bar.refresh()

    def _postfix(self) -> dict[str, str]:
        """Each objective's best value (it lies on the front) and the front's hypervolume."""
        best = {
            o.name: (self.front[:, i].max() if o.maximize else self.front[:, i].min())
            for i, o in enumerate(self.ctx.objectives)
        }
        hv = front_hypervolume(self.front_loss, loss_bounds(self.ctx.objectives))
        return {**{k: f"{v:.4g}" for k, v in best.items()}, "hv": f"{hv:.4f}"}

    def close(self) -> None:
        self.bar.close()


class Worker:
    """The steps of `run_worker` for one process, with what they share (counters, random stream)."""

    def __init__(self, ctx: SearchContext) -> None:
        self.ctx = ctx
        self.study = ctx.study
        self.distinct = ctx.space.size()["distinct"]
        self.patience = int(ctx.cfg.search.duplicate_patience)
        # Read once: a config lookup costs 0.1 ms, and the loop asks for it every trial.
        self.heartbeat_check_interval = float(ctx.cfg.search.heartbeat_interval or 0) / 2
        self.distinct_sampler = distinct_sampler(ctx.study.sampler)
        self.let_through = 0
        self.rng = random.Random(int(ctx.cfg.search.seed) + len(self.study.get_trials(deepcopy=False)))
        self.me = worker_id()
        self.index = EvaluatedIndex()  # the evaluations as of the last read
        stamp_trials(self.study, {WORKER_ATTR: self.me})  # each trial names its worker from its creation on
        self.evaluated = 0
        self.duplicates_in_a_row = 0
        self.exhausted = False  # no unevaluated sub-network could be found
        self.last_heartbeat_check = -float("inf")
        self.heartbeat = Heartbeat(storage_of(self.study))  # of the trial proposed, then evaluated
        where = redact_url(storage_url(ctx.cfg.search.storage, ctx.output_dir))
        self.storage = StoragePatience(where, float(ctx.cfg.search.get("storage_patience", 300)))

    # --- the budget ------------------------------------------------------------------------------

    def read_evaluations(self) -> dict[str, FrozenTrial]:
        """The study's trials in one storage read (every question about one moment is answered from it); returns
        the evaluations by sub-network key (`index`, brought up to this read)."""
        return self.index.update(self.study.get_trials(deepcopy=False))

    def heartbeats_due(self) -> bool:
        """Whether to look for trials whose heartbeat stopped (a query of its own): at most twice per heartbeat
        interval, which is as often as a stale trial can appear."""
        now = time.monotonic()
        if now - self.last_heartbeat_check < self.heartbeat_check_interval:
            return False
        self.last_heartbeat_check = now
        return True

    def budget_open(self) -> bool:
        """True while evaluations are missing; waits while the missing ones are in flight elsewhere."""
        while not self.exhausted:
            known = self.read_evaluations()
            if fail_dead_trials(self.study, self.index.running(), self.heartbeats_due()):
                known = self.read_evaluations()
            if len(known) >= self.ctx.budget:
                return False
            if len(known) >= self.distinct:
                log.warning(
                    "Every one of the %d distinct sub-networks is evaluated; stopping before the budget.", self.distinct
                )
                return False
            if len(known) + len(alive_running(self.study, self.index.running())) < self.ctx.budget:
                return True
            time.sleep(1.0)  # the last evaluations are in flight in other workers
        return False

    # --- one trial -------------------------------------------------------------------------------

    def propose(self) -> tuple[Trial, SubNetwork]:
        """A new trial and the sub-network the sampler chose for it.

        The trial names its worker from the transaction that creates it (`BatchedStorage.stamp_trials`); its
        parameters, sub-network and first heartbeat are written together right after the sampler has chosen. A
        worker killed while the sampler works leaves a trial that the next run recognises as dead.
        """
        # The sampler reads the trials as `budget_open` just read them (Optuna's `ask` caches one read per trial
        # too).
        with answering_from_last_read(self.study):
            with experimental_features():  # heartbeats outside Study.optimize
                trial = self.study.ask()
            trial.set_user_attr(WORKER_ATTR, self.me)
            # The encoding's distributions, IntDistribution(0, choices - 1), through the public API.
            params = {name: trial.suggest_int(name, 0, len(c) - 1) for name, c in self.ctx.encoding.choices.items()}
        sub = self.ctx.encoding.decode(params)
        trial.set_user_attr(SUBNET_ATTR, sub.to_json())
        self.heartbeat.beat_once(trial_id_of(trial))
        return trial, sub

    def skipped_as_taken(self, trial: Trial, key: str) -> bool:
        """Fail the trial (not an evaluation) when the budget is taken or another worker is evaluating the same
        sub-network; returns whether it did. The read it decides from stays in `index` for the next step.

        Workers decide one at a time (`decision_lock`), each from one read of the study: a worker deciding later
        sees the earlier one's trial in flight, or failed as skipped, so two workers never both take the last
        place in the budget. (Deciding without the lock, ordering in-flight trials by number, three independent
        workers ended with 31 to 33 evaluations for a budget of 30.)
        """
        with decision_lock(self.study):
            known = self.read_evaluations()
            # Its own trial left out before asking whether each one's worker lives (a look at that process each).
            others = alive_running(self.study, [t for t in self.index.running() if t.number != trial.number])
            if len(known) + len(others) < self.ctx.budget and all(t.user_attrs.get(SUBNET_ATTR) != key for t in others):
                return False
            trial.set_user_attr("skipped", "budget taken or the same sub-network in flight in another worker")
            tell(self.study, trial, state=TrialState.FAIL)
        return True

    def answered_as_duplicate(self, trial: Trial, key: str) -> bool:
        """Prune a trial whose sub-network was evaluated already (it costs no evaluation).

        PRUNED trials are not members of the sampler's population either (NSGA-II ignores them), so a
        generation is filled with distinct sub-networks, as pymoo's duplicate elimination does; the
        values stay with the original trial. Decided from the evaluations as `skipped_as_taken` just read them.
        """
        known = self.index.by_key
        if key not in known:
            self.duplicates_in_a_row = 0
            return False
        trial.set_user_attr(DUPLICATE_ATTR, known[key].number)
        if self.ctx.constraints and CONSTRAINT_VALUES_ATTR in known[key].user_attrs:
            # The original's, so Optuna's readers never see a trial of a constrained study without them.
            self.record_constraints(trial, known[key].user_attrs[CONSTRAINT_VALUES_ATTR])
        tell(self.study, trial, state=TrialState.PRUNED)
        self.duplicates_in_a_row += self._children_repeated()
        if self.duplicates_in_a_row >= self.patience:
            self._escape_convergence(set(known))
        return True

    def _children_repeated(self) -> int:
        """Re-proposed sub-networks this duplicate trial stands for: one, or `duplicate_patience` when the sampler
        let it through after redrawing that many taken children in memory (`nas.search.distinct`)."""
        if self.distinct_sampler is None or self.distinct_sampler.let_through == self.let_through:
            return 1
        self.let_through = self.distinct_sampler.let_through
        return self.patience

    def _escape_convergence(self, seen: set[str]) -> None:
        """A converged population in a small space re-proposes what it has: make the next trial a random
        sub-network not evaluated yet (and within the analytic constraints), so the budget is still met."""
        for _ in range(10000):
            sub = self.ctx.encoding.space.sample(self.rng)
            if sub.to_json() not in seen and analytic_feasible(self.ctx.constraints, self.ctx.scorer.analytic(sub)):
                self.study.enqueue_trial(
                    self.ctx.encoding.encode(sub), user_attrs={"escape": "random after repeated duplicates"}
                )
                log.info(
                    "%d duplicates in a row: the next trial is a random unevaluated sub-network.",
                    self.duplicates_in_a_row,
                )
                self.duplicates_in_a_row = 0
                return
        log.warning(
            "No unevaluated sub-network (meeting the analytic constraints) found in 10000 random draws; stopping at %d "
            "of %d.",
            len(seen),
            self.ctx.budget,
        )
        self.exhausted = True

    def record_constraints(self, trial: Trial, values: dict[str, float]) -> None:
        """The trial's constraint values and feasibility, and its violations as Optuna constraints (read by
        NSGA-II's ranking, `Study.best_trials` and the dashboard)."""
        trial.set_user_attr(CONSTRAINT_VALUES_ATTR, values)
        trial.set_user_attr(FEASIBLE_ATTR, is_feasible(self.ctx.constraints, values))
        for constraint, violation in zip(self.ctx.constraints, violations(self.ctx.constraints, values)):
            trial.set_constraint(constraint.name, violation)

    def evaluate(self, trial: Trial, sub: SubNetwork) -> None:
        """Score the sub-network live and tell the values; a NaN or infinite value is recorded as an
        evaluation (FAIL, with the values as text) so it is counted and never proposed for scoring again.
        A storage outage after the scoring is waited out: a finished evaluation is recorded, not lost."""
        try:
            start = time.perf_counter()
            with self.heartbeat.beating(trial_id_of(trial)):
                values, details = self.ctx.scorer(sub)
            seconds = time.perf_counter() - start
            self.storage.run(
                lambda: self._record(trial, sub, values, details, seconds), f"recording trial {trial.number}"
            )
        except BaseException:
            try:
                tell(self.study, trial, state=TrialState.FAIL, skip_if_finished=True)
            except Exception as exc:  # the storage is gone: the next run fails the trial as its worker's
                log.warning("Could not mark trial %d failed (%s).", trial.number, type(exc).__name__)
            raise
        self.evaluated += 1

    def _record(
        self, trial: Trial, sub: SubNetwork, values: dict[str, float], details: dict[str, Any], seconds: float
    ) -> None:
        """Every write of a finished evaluation; safe to repeat (a retry after an outage)."""
        trial.set_user_attr(SUMMARY_ATTR, self.summary(sub))
        trial.set_user_attr("details", details)
        trial.set_user_attr("seconds", seconds)
        if self.ctx.constraints and not non_finite(values):
            self.record_constraints(trial, constraint_values(self.ctx.constraints, values))
        bad = non_finite(values)
        trial.set_user_attr(EVALUATED_ATTR, True)
        if bad:
            trial.set_user_attr(NON_FINITE_ATTR, {k: bad.get(k, v) for k, v in values.items()})
            tell(self.study, trial, state=TrialState.FAIL, skip_if_finished=True)
            log.warning(
                "Trial %d, %s: %s is not finite; recorded as evaluated, left off the front.",
                trial.number,
                sub.describe(),
                ", ".join(f"{k}={v}" for k, v in bad.items()),
            )
        else:
            tell(self.study, trial, [values[o.name] for o in self.ctx.objectives], skip_if_finished=True)

    def summary(self, sub: SubNetwork) -> dict[str, Any]:
        """What a person reading the trial in the Optuna dashboard wants first: the sub-network in words and
        its sizes (the objective values and per-task scores are beside it)."""
        cost = sub_network_cost(self.ctx.scorer.shape, sub)
        return {
            "sub_network": sub.describe(),
            "layers": list(sub.layers),
            "params": cost.params,
            **{f"size_mb_{dtype}": round(cost.size_bytes[dtype] / 1e6, 2) for dtype in ("bf16", "int8")},
        }

    def fail_own_running(self) -> None:
        """After an outage: this worker's trials left RUNNING by the interrupted step (none is in flight now)."""
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get(WORKER_ATTR) == self.me:
                tell(self.study, t.number, state=TrialState.FAIL, skip_if_finished=True)

    def step(self, bar: _Progress) -> bool:
        """One pass of the loop; False when the budget is met."""
        if not self.budget_open():
            return False
        trial, sub = self.propose()
        key = sub.to_json()
        if self.skipped_as_taken(trial, key):
            self._children_repeated()  # a child let through for another worker's trial is not a duplicate here
            return True
        if self.answered_as_duplicate(trial, key):
            return True
        self.evaluate(trial, sub)
        bar.refresh()
        return True


def run_worker(ctx: SearchContext, progress: bool = False) -> int:
    """Propose, skip or look up or evaluate, until the study holds `n_trials` real evaluations; returns
    how many this worker evaluated. A storage outage between evaluations is waited out (then this worker's
    half-created trial, if any, is failed and the loop goes on)."""
    worker = Worker(ctx)
    bar = _Progress(ctx, progress, worker.index)
    try:
        while True:
            try:
                if not worker.step(bar):
                    break
            except Exception as exc:
                if not is_outage(exc):
                    raise
                worker.storage.run(worker.fail_own_running, "waiting to continue the search")
    finally:
        worker.heartbeat.close()
        with contextlib.suppress(Exception):  # the storage is gone: the bar shows what it had
            bar.refresh()
        bar.close()
        with contextlib.suppress(Exception):
            checkpoint(database_engine(ctx.study))  # a SQLite study whole in its file (nas.search.sqlite_wal)
    return worker.evaluated
