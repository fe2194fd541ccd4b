"""The search's storage path (#19): a worker's batched writes and incremental reads equal Optuna's own, on
SQLite and PostgreSQL; the faster search internals give the same numbers as those they replace; NSGA-II's
duplicate children are redrawn without changing what is evaluated."""

from __future__ import annotations

import contextlib
import datetime
import sqlite3
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.samplers import RandomSampler
from optuna.trial import TrialState

from nas.search import batched_storage, worker
from nas.search.algorithms import Nsga2
from nas.search.batched_storage import BatchedStorage
from nas.search.objectives import parse_objectives
from nas.search.optuna_compat import tell
from nas.search.outputs import reference_values
from nas.search.pareto import (
    front_hypervolume,
    front_numbers,
    hypervolume,
    leading_front_numbers,
    losses,
    merge_into_front,
    pareto_mask,
)
from nas.search.predictors import fit_predictor, make_predictor
from nas.search.sqlite_wal import filesystem_type
from nas.search.study import REFERENCE_ATTR, open_storage
from nas.search.trials import (
    DUPLICATE_ATTR,
    EVALUATED_ATTR,
    FEASIBLE_ATTR,
    NON_FINITE_ATTR,
    SUBNET_ATTR,
    EvaluatedIndex,
    evaluated_by_key_in,
    is_feasible_trial,
)
from nas.stages.search import run_search

sys.path.insert(0, str(Path(__file__).parent))
from test_search_job import base_overrides, compose_search, load, real  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


def storage_url(kind: str, tmp: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'study.db'}"
    server = request.getfixturevalue("postgres")
    return server.url(server.create_database(), with_password=True)


def one_of_each(study: optuna.Study) -> None:
    """A worker's trial life cycles through the study: evaluated, duplicate, failed, and an enqueued one."""
    storage = study._storage
    for n in range(3):
        trial = study.ask()
        trial.set_user_attr("worker", "host:1:2.00")
        params = {f"p{i}": trial.suggest_int(f"p{i}", 0, 3) for i in range(5)}
        trial.set_user_attr("subnet_key", str(params))
        trial.storage.set_trial_system_attr(trial._trial_id, "generation", n)
        storage.record_heartbeat(trial._trial_id)
        trial.set_user_attr("details", {"nested": [1, 2.5, None]})
        if n == 0:
            study.tell(trial, [1.25, float("inf")])
        elif n == 1:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, state=TrialState.FAIL)
    study.enqueue_trial({f"p{i}": 3 - i % 4 for i in range(5)}, user_attrs={"round": 2, "predicted": {"a": 1.0}})
    trial = study.ask()  # takes the enqueued one
    for i in range(5):
        trial.suggest_int(f"p{i}", 0, 3)
    study.tell(trial, [0.5, 3.0])


def fields(trial: optuna.trial.FrozenTrial) -> tuple:
    return (
        trial.number,
        trial.state,
        trial.params,
        trial.distributions,
        trial.user_attrs,
        trial.system_attrs,
        trial.values,
        trial.intermediate_values,
        trial.datetime_start is not None,
        trial.datetime_complete is not None,
    )


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_batched_writes_read_back_as_optunas_own(tmp_path, request, kind):
    url = storage_url(kind, tmp_path, request)
    rdb = open_storage(url, heartbeat_interval=60, grace_period=120)
    seeded = {"directions": ["minimize", "minimize"]}
    plain = optuna.create_study(storage=rdb, study_name="plain", sampler=RandomSampler(seed=0), **seeded)
    batched = optuna.create_study(
        storage=BatchedStorage(rdb), study_name="batched", sampler=RandomSampler(seed=0), **seeded
    )
    one_of_each(plain)
    one_of_each(batched)
    # A fresh reader (another process would see the same) finds the same trials, field by field.
    reader = open_storage(url, heartbeat_interval=60, grace_period=120)
    expected = [fields(t) for t in optuna.load_study(study_name="plain", storage=reader).trials]
    got = [fields(t) for t in optuna.load_study(study_name="batched", storage=reader).trials]
    assert got == expected and len(got) == 4
    # The batched study's own view equals the fresh reader's too.
    assert [fields(t) for t in batched.trials] == got
    # Heartbeats were recorded for the same trials.
    with rdb.engine.connect() as connection:
        beats = connection.exec_driver_sql(
            "SELECT s.study_name, COUNT(*) FROM trial_heartbeats h JOIN trials t ON h.trial_id = t.trial_id "
            "JOIN studies s ON s.study_id = t.study_id GROUP BY s.study_name"
        ).all()
    assert dict(beats) == {"plain": 3, "batched": 3}
    # Study system attributes (NSGA-II's parents per generation) read back as Optuna reads them, none or several.
    storage = batched._storage
    assert storage.get_study_system_attrs(batched._study_id) == rdb.get_study_system_attrs(batched._study_id) == {}
    for key, value in [("nsga2:parent:1", [3, 1, 2]), ("note", {"a": [1.5, None], "b": "x"}), ("nsga2:parent:1", [4])]:
        storage.set_study_system_attr(batched._study_id, key, value)
    assert storage.get_study_system_attrs(batched._study_id) == rdb.get_study_system_attrs(batched._study_id)
    assert storage.get_study_system_attrs(batched._study_id) == {
        "nsga2:parent:1": [4],
        "note": {"a": [1.5, None], "b": "x"},
    }
    with pytest.raises(KeyError):
        storage.get_study_system_attrs(batched._study_id + 100)


def test_tell_without_the_returned_copy_leaves_the_trials_study_tell_leaves():
    """`optuna_compat.tell` skips only `Study.tell`'s deep copy of its return value: the same states, values and
    sampler callback, the same refusal of a finished trial, the same skip when asked to."""

    def told(teller: Any) -> tuple[list[tuple], list[int]]:
        calls: list[int] = []
        sampler = RandomSampler(seed=0)
        sampler.after_trial = lambda study, trial, state, values: calls.append(trial.number)  # type: ignore[method-assign]
        study = optuna.create_study(directions=["minimize", "maximize"], sampler=sampler)
        states = [([1.0, 2.0], None), (None, TrialState.PRUNED), (None, TrialState.FAIL), ([float("nan"), 1.0], None)]
        for values, state in states:
            trial = study.ask()
            trial.suggest_int("p", 0, 3)
            with pytest.warns(UserWarning) if values and values[0] != values[0] else contextlib.nullcontext():
                teller(study, trial, values, state)
            teller(study, trial.number, None, TrialState.FAIL, skip_if_finished=True)  # skipped: finished
            with pytest.raises(ValueError, match="Cannot tell a"):
                teller(study, trial, [0.0, 0.0], None)
        return [fields(t) for t in study.trials], calls

    def optunas(study: optuna.Study, trial: Any, values: Any, state: Any, skip_if_finished: bool = False) -> None:
        study.tell(trial, values, state=state, skip_if_finished=skip_if_finished)

    def ours(study: optuna.Study, trial: Any, values: Any, state: Any, skip_if_finished: bool = False) -> None:
        tell(study, trial, values, state=state, skip_if_finished=skip_if_finished)

    expected = told(optunas)
    assert told(ours) == expected
    assert [t[1] for t in expected[0]] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL]
    assert expected[1] == [0, 1, 2, 3]


def test_a_trials_writes_land_together_before_anything_else_is_read(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    rdb = open_storage(url)
    study = optuna.create_study(storage=BatchedStorage(rdb), study_name="s")
    trial = study.ask()
    for i in range(4):
        trial.suggest_int(f"p{i}", 0, 3)
    trial.set_user_attr("subnet_key", "k")
    other = optuna.load_study(study_name="s", storage=open_storage(url))
    assert other.trials[0].params == {} and "subnet_key" not in other.trials[0].user_attrs  # buffered
    study.get_trials()  # the worker reads: its writes go first, in one transaction
    seen = optuna.load_study(study_name="s", storage=open_storage(url)).trials[0]
    assert len(seen.params) == 4 and seen.user_attrs["subnet_key"] == "k"


def test_a_trial_failed_by_another_worker_is_read_whole_and_not_overwritten(tmp_path, monkeypatch):
    monkeypatch.setattr(batched_storage, "CONFIRMED_SECONDS", 0.0)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=BatchedStorage(open_storage(url)), study_name="s")
    trial = study.ask()
    trial.suggest_int("p", 0, 3)
    study.get_trials()
    other = optuna.load_study(study_name="s", storage=open_storage(url))
    other.tell(trial.number, state=TrialState.FAIL)  # taken for dead elsewhere
    trial.set_user_attr("seconds", 1.0)
    told = study.tell(trial, 1.0, skip_if_finished=True)  # skipped, as Optuna skips it
    assert told.state == TrialState.FAIL
    stored = optuna.load_study(study_name="s", storage=open_storage(url)).trials[0]
    assert stored.state == TrialState.FAIL and stored.values is None


def test_reads_are_incremental_and_see_other_workers_trials_whole(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    mine = optuna.create_study(storage=BatchedStorage(open_storage(url)), study_name="s")
    theirs = optuna.load_study(study_name="s", storage=open_storage(url))
    own = mine.ask()
    own.suggest_int("p", 0, 3)
    assert len(mine.trials) == 1
    other = theirs.ask()
    other.suggest_int("p", 0, 3)
    other.set_user_attr("worker", "elsewhere")
    assert mine.trials[1].state == TrialState.RUNNING and mine.trials[1].user_attrs == {"worker": "elsewhere"}
    theirs.tell(other, 2.0)
    mine.tell(own, 1.0)
    stored = optuna.load_study(study_name="s", storage=open_storage(url)).trials
    view = [(t.state, t.values, t.params, t.datetime_start, t.datetime_complete) for t in mine.trials]
    assert view == [(t.state, t.values, t.params, t.datetime_start, t.datetime_complete) for t in stored]


def peeled_fronts(loss: np.ndarray) -> np.ndarray:
    """Front numbers by peeling non-dominated sets one by one: the definition."""
    numbers = np.full(len(loss), -1)
    remaining, front = np.arange(len(loss)), 0
    while remaining.size:
        mask = pareto_mask(loss[remaining])
        numbers[remaining[mask]] = front
        remaining, front = remaining[~mask], front + 1
    return numbers


def test_front_numbers_equal_peeling_fronts_one_by_one():
    rng = np.random.default_rng(0)
    for case in range(300):
        n, k = int(rng.integers(1, 200)), int(rng.choice([2, 2, 3]))
        loss = rng.integers(0, 5, size=(n, k)).astype(float) if case % 2 else rng.random((n, k))  # ties, or none
        if case % 5 == 0:
            loss[rng.random(n) < 0.1, 0] = np.inf
        if case % 7 == 0:
            loss[rng.random(n) < 0.1, -1] = np.nan  # never dominated, as in pareto_mask
        assert (front_numbers(loss) == peeled_fronts(loss)).all(), case


def test_leading_front_numbers_are_the_peeled_fronts_up_to_the_one_that_completes_the_selection():
    """The first fronts holding `enough` rows are numbered as peeling numbers them; every later row gets the next
    number (ties, identical rows, infinities, -0.0 beside 0.0; NaN rows and three columns take the full path)."""
    rng = np.random.default_rng(3)
    for case in range(300):
        n, k = int(rng.integers(1, 150)), 3 if case % 11 == 0 else 2
        loss = rng.integers(0, 5, size=(n, k)).astype(float) if case % 2 else rng.random((n, k))
        if case % 5 == 0:
            loss[rng.random(n) < 0.1, 0] = np.inf
        if case % 3 == 0:
            loss[rng.random(n) < 0.1, 1] = np.inf
        if case % 6 == 0:
            loss[loss == 0.0] = -0.0
            loss[rng.random(n) < 0.2, 1] = 0.0
        if case % 7 == 0:
            loss[rng.random(n) < 0.1, -1] = np.nan
        peeled = peeled_fronts(loss)
        held = np.cumsum(np.bincount(peeled))
        for enough in sorted({0, 1, 2, n // 3, n // 2, n - 1, n, n + 5} | {int(h) for h in held[:3]}):
            last = int(np.searchsorted(held, enough))  # the front whose rows complete `enough`
            expected = np.minimum(peeled, last + 1)
            assert np.array_equal(leading_front_numbers(loss, enough), expected), (case, enough)
        assert np.array_equal(leading_front_numbers(loss, n), peeled), case  # every row needed: every front


def test_a_front_merged_evaluation_by_evaluation_equals_the_mask_of_all_of_them():
    """The progress bar's front, merged as evaluations arrive (one or several at a time), keeps the rows
    `pareto_mask` keeps of everything so far, in the same order, and its hypervolume is `hypervolume`'s."""
    rng = np.random.default_rng(1)
    bounds = np.array([1.5, 1.5, 1.5])
    for case in range(100):
        k = int(rng.choice([2, 3]))
        rows = rng.integers(0, 6, size=(60, k)) / 4.0 if case % 2 else rng.random((60, k)) * 1.6  # ties, or none
        if case % 5 == 0:
            rows[rng.random(60) < 0.1, -1] = np.nan
        front = np.zeros((0, k))
        seen = 0
        while seen < len(rows):
            batch = rows[seen : seen + int(rng.choice([1, 1, 1, 3]))]
            keep_front, keep_new = merge_into_front(front, batch)
            front = np.vstack([front[keep_front], batch[keep_new]])
            seen += len(batch)
            expected = rows[:seen][pareto_mask(rows[:seen])]
            np.testing.assert_array_equal(front, expected, err_msg=str(case))
            assert front_hypervolume(front, bounds[:k]) == hypervolume(rows[:seen], bounds[:k]), case


def test_front_hypervolume_is_optunas_hypervolume_to_the_bit():
    """The quick path (two columns: one lexsort, no second look for dominated rows) gives Optuna's number exactly:
    fronts with duplicated rows, ties, rows beyond the bounds, -0.0 beside 0.0."""
    from optuna._hypervolume import compute_hypervolume as optunas

    rng = np.random.default_rng(2)
    for case in range(400):
        k = int(rng.choice([2, 2, 3]))
        bounds = np.full(k, 1.2)
        rows = rng.integers(-2, 6, size=(80, k)) / 4.0 if case % 2 else rng.random((80, k)) * 1.4  # ties, or none
        rows[rng.random(80) < 0.05] = -0.0 if case % 3 else 0.0
        front = rows[pareto_mask(rows)]
        front = np.vstack([front, front[rng.random(len(front)) < 0.3]])  # duplicated rows, as a merged front has
        rng.shuffle(front)
        inside = front[(front < bounds).all(axis=1)]
        expected = float(optunas(np.unique(inside, axis=0), bounds)) if len(inside) else 0.0
        assert front_hypervolume(front, bounds) == expected, case


def test_known_trials_stay_in_number_order_as_they_change():
    """The worker's last read keeps its trials by number through new trials, replaced ones and another worker's
    older trial read late; a list handed out is not changed by later updates."""

    def trial(number: int, trial_id: int, state: TrialState = TrialState.RUNNING) -> optuna.trial.FrozenTrial:
        made = optuna.trial.create_trial(state=state, values=[1.0] if state == TrialState.COMPLETE else None)
        made.number, made._trial_id = number, trial_id
        return made

    known = batched_storage._KnownTrials()
    for number, trial_id in [(0, 10), (1, 11), (3, 13), (2, 12), (5, 15), (4, 14)]:
        known.update(trial(number, trial_id))
    handed_out = known.in_order()
    known.update(trial(2, 12, TrialState.COMPLETE))
    known.update(trial(6, 16))
    assert [t.number for t in handed_out] == [0, 1, 2, 3, 4, 5] and handed_out[2].state == TrialState.RUNNING
    now = known.in_order()
    assert [t.number for t in now] == list(range(7)) and now[2].state == TrialState.COMPLETE
    assert now == sorted(known.trials.values(), key=lambda t: t.number)


@pytest.mark.parametrize("skewed_clocks", [False, True])
def test_the_evaluated_index_equals_the_map_rebuilt_at_every_read(skewed_clocks):
    """Through trials created, run and finished as evaluations (finite or not), duplicates, budget skips and
    queued ones, read after every step (now and then with a new trial missing, as a read racing its creation can), the
    index kept up to date equals `evaluated_by_key_in` of the whole read: the same trials by key, in the same
    order while trials complete in order (with another worker's clock behind, the same trials by key: of two
    evaluations of one sub-network, the later); its running trials are the read's."""
    rng = np.random.default_rng(7 + skewed_clocks)
    start = datetime.datetime(2026, 1, 1)
    trials: list[optuna.trial.FrozenTrial] = []

    def made(number: int, state: TrialState, attrs: dict[str, Any], second: float) -> optuna.trial.FrozenTrial:
        trial = optuna.trial.create_trial(
            state=state, values=[float(number)] if state == TrialState.COMPLETE else None, user_attrs=attrs
        )
        trial.number, trial._trial_id = number, number + 100
        trial.datetime_complete = start + datetime.timedelta(seconds=float(second)) if state.is_finished() else None
        return trial

    index = EvaluatedIndex()
    for step in range(400):
        unfinished = [t for t in trials if not t.state.is_finished()]
        if not unfinished or rng.random() < 0.45:
            state = TrialState.WAITING if rng.random() < 0.1 else TrialState.RUNNING
            trials.append(made(len(trials), state, {SUBNET_ATTR: f"sub{rng.integers(20)}"}, 0))
        else:
            old = unfinished[rng.integers(len(unfinished))]
            second = step - (rng.integers(30) if skewed_clocks else 0)  # another worker's clock may lag
            key = {SUBNET_ATTR: old.user_attrs[SUBNET_ATTR]}
            state, attrs = [
                (TrialState.COMPLETE, {**key, EVALUATED_ATTR: True}),
                (TrialState.FAIL, {**key, EVALUATED_ATTR: True, NON_FINITE_ATTR: {"ppl": "nan"}}),
                (TrialState.PRUNED, {**key, DUPLICATE_ATTR: 0}),
                (TrialState.FAIL, {**key, "skipped": "budget taken"}),
            ][rng.choice(4, p=[0.6, 0.1, 0.2, 0.1])]
            trials[old.number] = made(old.number, state, attrs, second)
        read = list(trials)
        if step % 97 == 0 and len(read) > 2 and not read[-2].state.is_finished():
            del read[-2]  # another worker's new trial, not seen yet by this read
        got, rebuilt = index.update(read), evaluated_by_key_in(read)
        same_order = list if not skewed_clocks else sorted
        assert same_order((k, t.number) for k, t in got.items()) == same_order(
            (k, t.number) for k, t in rebuilt.items()
        )
        assert sorted(t.number for t in index.running()) == [t.number for t in read if t.state == TrialState.RUNNING]
    assert len(index.found) == sum(1 for t in trials if t.user_attrs.get(EVALUATED_ATTR)) > 100


def test_the_progress_bar_front_is_the_front_of_the_feasible_evaluations_read_so_far():
    """The search's progress bar merges only what its index found new at each read: after every batch of trials
    (evaluations, infeasible ones, non-finite FAILs, duplicates, budget skips, two evaluations of one sub-network
    in one read), its count is the evaluations' and its front is `pareto_mask` of the feasible COMPLETE
    evaluations (the later of two of one sub-network), row for row as a set."""
    objectives = parse_objectives([{"kind": "accuracy", "task": "arc_easy"}, {"kind": "size_gb", "dtype": "fp16"}])
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr(REFERENCE_ATTR, {"values": {"arc_easy": 0.5, "size_gb_fp16": 0.2}})
    ctx = SimpleNamespace(study=study, budget=1000, objectives=objectives)
    bar = worker._Progress(ctx, enabled=True, index=EvaluatedIndex())  # type: ignore[arg-type]
    rng = np.random.default_rng(3)
    for batch in range(12):
        for position in range(int(rng.integers(2, 6))):
            kind = rng.choice(5, p=[0.55, 0.15, 0.1, 0.1, 0.1])
            # A new sub-network each evaluation, but the second of a read may evaluate the first's again.
            again = position == 1 and rng.random() < 0.5
            key = {SUBNET_ATTR: f"sub{batch}-{0 if again or kind > 2 else position}"}
            values = [float(rng.random()), float(rng.random() * 0.2)]
            attrs = [
                {**key, EVALUATED_ATTR: True},
                {**key, EVALUATED_ATTR: True, FEASIBLE_ATTR: False},
                {**key, EVALUATED_ATTR: True, NON_FINITE_ATTR: {"arc_easy": "nan"}},
                {**key, DUPLICATE_ATTR: 0},
                {**key, "skipped": "budget taken"},
            ][kind]
            state = [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED, TrialState.FAIL][
                kind
            ]
            study.add_trial(
                optuna.trial.create_trial(
                    state=state, values=values if state == TrialState.COMPLETE else None, user_attrs=attrs
                )
            )
        bar.refresh()
        evaluated = evaluated_by_key_in(study.get_trials(deepcopy=False))
        assert bar.bar.n == len(evaluated)
        feasible = [t for t in evaluated.values() if t.state == TrialState.COMPLETE and is_feasible_trial(t)]
        values = np.array([t.values for t in feasible]).reshape(-1, 2)
        loss = losses(values, objectives, reference_values(study))
        assert sorted(map(tuple, bar.front)) == sorted(map(tuple, values[pareto_mask(loss)]))
    bar.close()
    assert len(bar.front) >= 2 and bar.merged == len(bar.index.found) > 20


@pytest.mark.parametrize("kind", ["svr", "ridge"])
def test_fast_predictor_gives_scikit_learns_numbers_to_the_bit(kind):
    """Fitted and predicting without scikit-learn's wrappers, the same numbers as its estimator fitted the usual way."""
    rng = np.random.default_rng(2)
    features, target = rng.random((40, 30)), np.log(rng.random(40) * 100 + 1)
    predictor, _ = fit_predictor(kind, features, target, seed=0)
    candidates = rng.random((300, 30))
    reference = make_predictor(kind).fit(features, target)
    assert np.array_equal(predictor.predict(candidates), reference.predict(candidates))
    assert np.array_equal(predictor.predict(features), reference.predict(features))


def test_sqlite_studies_use_the_write_ahead_log_on_local_disks_only(tmp_path, monkeypatch):
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/vda / ext4 rw 0 0\nserver:/export /shared nfs4 rw 0 0\n")
    assert filesystem_type(Path("/shared/runs/x"), str(mounts)) == "nfs4"
    assert filesystem_type(Path("/home/x"), str(mounts)) == "ext4"
    local = tmp_path / "local.db"
    optuna.create_study(storage=open_storage(f"sqlite:///{local}"), study_name="s").optimize(lambda t: 1.0, 1)
    assert sqlite3.connect(local).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    monkeypatch.setattr("nas.search.sqlite_wal.filesystem_type", lambda path: "nfs")
    remote = tmp_path / "remote.db"
    optuna.create_study(storage=open_storage(f"sqlite:///{remote}"), study_name="s").optimize(lambda t: 1.0, 1)
    assert sqlite3.connect(remote).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_finished_search_leaves_its_study_whole_in_the_database_file(tmp_path):
    out = tmp_path / "run"
    run_search(compose_search([*base_overrides(tmp_path), "search=random", "search.n_trials=4"]), out)
    wal = out / "study.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # checkpointed: a copy of study.db alone holds it all
    copy = tmp_path / "copy.db"
    copy.write_bytes((out / "study.db").read_bytes())
    assert len(real(optuna.load_study(study_name="random-seed0", storage=f"sqlite:///{copy}"))) == 4


def test_nsga2_redraws_taken_children_and_evaluates_the_same_sub_networks(tmp_path, monkeypatch):
    # A space of 24 sub-networks, where NSGA-II's children soon repeat: duplicates and escapes both happen.
    overrides = [*base_overrides(tmp_path), "search=nsga2", "search.n_trials=16", "search.duplicate_patience=20"]

    def evaluated(folder: str) -> tuple[list[str], int]:
        out = tmp_path / folder
        run_search(compose_search([*overrides, f"paths.output_dir={out}"]), out)
        study = load(out, "nsga2-seed0")
        return [t.user_attrs["subnet_key"] for t in real(study)], len(study.trials)

    with_redraws, trials_with = evaluated("redrawn")
    monkeypatch.setattr(Nsga2, "redraws_taken_children", False)
    without, trials_without = evaluated("pruned")
    assert with_redraws == without and len(without) == 16  # the same sub-networks, in the same order
    assert trials_with < trials_without  # without the duplicate trials (PRUNED) beside them
