"""Search building blocks: objectives, encoding, Pareto fronts and hypervolume, the NumPy NSGA-II."""

from __future__ import annotations

import numpy as np
import pytest

from nas.errors import SearchConfigError
from nas.search.encoding import SearchEncoding
from nas.search.evolution import (
    Operators,
    _polynomial_mutation,
    _sbx,
    crowding_distance,
    evolve,
    mixed_radix,
    non_dominated_ranks,
    offspring,
    ranked_survivors,
    row_codes,
)
from nas.search.objectives import parse_objectives
from nas.search.pareto import hypervolume, hypervolume_history, loss_bounds, losses, pareto_mask
from nas.search.predictors import fit_predictor
from nas.supernet.search_space import SearchSpace
from nas.supernet.subnetwork import ModelShape

SHAPE = ModelShape(
    num_layers=6,
    hidden_size=64,
    intermediate_size=128,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    vocab_size=256,
    tie_word_embeddings=True,
)


def llama_nas_space() -> SearchSpace:
    return SearchSpace(
        SHAPE,
        "llama_nas",
        num_layers={"choices": [0.5, 0.75, 1.0], "relative": True},
        mlp={"choices": [0.5, 1.0], "relative": True, "per_layer": True},
    )


# --- objectives ------------------------------------------------------------------------------


def test_objectives_parse_with_natural_directions_and_names():
    objectives = parse_objectives(
        [{"kind": "accuracy", "task": "arc_easy"}, "params", {"kind": "size_gb", "dtype": "int8"}]
    )
    assert [o.name for o in objectives] == ["arc_easy", "params", "size_gb_int8"]
    assert [o.direction for o in objectives] == ["maximize", "minimize", "minimize"]
    mean = parse_objectives([{"kind": "accuracy", "task": ["arc_easy", "piqa"], "metric": "acc"}, "flops"])[0]
    assert mean.name == "mean(arc_easy,piqa).acc" and mean.tasks == ("arc_easy", "piqa")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([{"kind": "accuracy", "task": "arc_easy"}], "at least two objectives"),
        ([{"kind": "speedup"}, "params"], "unknown objective kind 'speedup'; available: .*accuracy"),
        ([{"kind": "accuracy", "task": "arc_easy", "direction": "minimize"}, "params"], "accuracy is to maximize"),
        ([{"kind": "params", "direction": "down"}, "flops"], "direction 'down' is not one of"),
        ([{"kind": "accuracy"}, "params"], "needs a task"),
        (["params", "params"], "must differ"),
        ([{"kind": "size_gb", "dtype": "fp8"}, "params"], "dtype 'fp8'"),
        ([{"kind": "params", "colour": 1}, "flops"], "unknown keys"),
    ],
)
def test_bad_objectives_get_one_clear_error(spec, message):
    with pytest.raises(SearchConfigError, match=message):
        parse_objectives(spec)


# --- encoding --------------------------------------------------------------------------------


def test_encoding_round_trips_and_features_ignore_dropped_layers():
    space = llama_nas_space()
    encoding = SearchEncoding(space)
    assert set(encoding.distributions()) == set(space.parameters())
    for seed in range(20):
        sub = space.sample(seed)
        assert encoding.decode(encoding.encode(sub)) == sub
    short = space.smallest()
    params = encoding.encode(short)
    dropped = [n for n in encoding.names if n.startswith("mlp_") and int(n[4:]) not in short.layers]
    assert dropped
    other = dict(params) | {n: 0 for n in dropped}  # a different encoding of the same sub-network
    assert encoding.decode(other) == short
    assert np.array_equal(encoding.features([encoding.decode(other)]), encoding.features([short]))
    f = encoding.features([space.largest()])[0]
    assert f[: SHAPE.num_layers].tolist() == [1.0] * 6 and f[-2:].tolist() == [1.0, 1.0]


# --- Pareto and hypervolume ------------------------------------------------------------------


def test_pareto_mask_and_hypervolume_by_hand():
    loss = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [2.5, 2.5], [2.0, 2.0]])
    assert pareto_mask(loss).tolist() == [True, True, True, False, True]
    # Staircase under reference point (4, 4): 3x1 + 2x1 + 1x1 = 6.
    assert hypervolume(loss, np.array([4.0, 4.0])) == pytest.approx(6.0)
    assert hypervolume(np.array([[5.0, 0.0]]), np.array([4.0, 4.0])) == 0.0  # beyond a bound: nothing
    history = hypervolume_history(loss, np.array([4.0, 4.0]))
    assert history == pytest.approx([3.0, 5.0, 6.0, 6.0, 6.0])


def test_hypervolume_is_normalised_by_the_reference_model():
    objectives = parse_objectives([{"kind": "accuracy", "task": "arc_easy"}, {"kind": "size_gb"}])
    reference = {"arc_easy": 0.5, "size_gb_fp16": 2.0}
    # The reference model itself covers nothing (it is the size bound); a half-size model with the
    # same accuracy covers half of the unit box.
    values = np.array([[0.5, 2.0], [0.5, 1.0]])
    loss = losses(values, objectives, reference)
    assert loss.tolist() == [[-1.0, 1.0], [-1.0, 0.5]]
    assert hypervolume(loss[:1], loss_bounds(objectives)) == 0.0
    assert hypervolume(loss, loss_bounds(objectives)) == pytest.approx(0.5)


# --- NumPy NSGA-II ---------------------------------------------------------------------------


def test_ranks_and_crowding():
    loss = np.array([[0.0, 2.0], [1.0, 1.0], [2.0, 0.0], [2.0, 2.0], [3.0, 3.0]])
    assert non_dominated_ranks(loss).tolist() == [0, 0, 0, 1, 2]
    crowd = crowding_distance(loss[:3])
    assert np.isinf(crowd[[0, 2]]).all() and crowd[1] == pytest.approx(2.0)


def test_offspring_stay_in_bounds_and_evolve_finds_the_front():
    rng = np.random.default_rng(0)
    upper = np.array([1, 2, 1, 1, 2, 1])
    pop = rng.integers(0, upper + 1, size=(20, 6))
    children = offspring(pop, rng.random((20, 2)), upper, Operators(mutation_prob=0.3), rng)
    assert children.shape == pop.shape and (children >= 0).all() and (children <= upper).all()

    # Two conflicting objectives: sum of indices (min) vs sum of indices (max) of the first half only.
    def loss_of(rows: np.ndarray) -> np.ndarray:
        return np.stack([rows.sum(1), -(rows[:, :3].sum(1)) * 1.0], axis=1).astype(float)

    archive, archive_loss = evolve(pop, loss_of, upper, 30, Operators(mutation_prob=0.2), rng)
    best = archive[pareto_mask(archive_loss)]
    # On the true front the last three indices are all zero.
    assert (best[:, 3:] == 0).all()
    assert len(np.unique(archive, axis=0)) == len(archive)


def _textbook_variation(a, b, upper, ops, rng):
    """SBX then polynomial mutation as Deb's reference code states them: every formula on the whole matrix."""
    u = rng.random(a.shape)
    low, high = np.minimum(a, b), np.maximum(a, b)
    diff = np.maximum(high - low, 1e-12)
    beta = 1.0 + 2.0 * np.minimum(low, upper - high) / diff
    alpha = 2.0 - beta ** -(ops.crossover_eta + 1.0)
    with np.errstate(all="ignore"):
        betaq = np.where(
            u <= 1.0 / alpha,
            (u * alpha) ** (1.0 / (ops.crossover_eta + 1.0)),
            (1.0 / np.maximum(2.0 - u * alpha, 1e-12)) ** (1.0 / (ops.crossover_eta + 1.0)),
        )
    side = rng.random(a.shape) < 0.5
    child = 0.5 * ((low + high) + np.where(side, -1.0, 1.0) * betaq * (high - low))
    swap = (rng.random(a.shape) < 0.5) & (high - low > 1e-12)
    child = np.where(swap, child, np.where(rng.random(a.shape) < 0.5, a, b))
    x = np.where((rng.random(len(a)) < ops.crossover_prob)[:, None], child, a)
    span = np.maximum(upper, 1e-12)
    delta1, delta2 = x / span, (upper - x) / span
    u = rng.random(x.shape)
    power = 1.0 / (ops.mutation_eta + 1.0)
    low_side = u < 0.5
    xy = np.where(low_side, 1.0 - delta1, 1.0 - delta2)
    val = np.where(
        low_side,
        2.0 * u + (1.0 - 2.0 * u) * xy ** (ops.mutation_eta + 1.0),
        2.0 * (1.0 - u) + 2.0 * (u - 0.5) * xy ** (ops.mutation_eta + 1.0),
    )
    deltaq = np.where(low_side, val**power - 1.0, 1.0 - val**power)
    mutate = (rng.random(x.shape) < ops.mutation_prob) & (upper > 0)
    return np.where(mutate, x + deltaq * span, x)


@pytest.mark.parametrize("ops", [Operators(), Operators(crossover_prob=0.5, mutation_prob=0.5)])
def test_variation_on_the_drawn_variables_only_equals_the_textbook_formulas(ops):
    """LINAS's rounds compute SBX and mutation only where they apply; the children are the same to the last
    bit (and the generator is left in the same state), so a seeded search is unchanged."""
    for seed in range(40):
        data = np.random.default_rng(seed)
        n, d = data.integers(1, 300), data.integers(1, 70)
        upper = data.integers(0, 6, size=d)
        a = np.floor(data.random((n, d)) * (upper + 1))
        b = np.floor(data.random((n, d)) * (upper + 1))
        ours, theirs = np.random.default_rng(seed), np.random.default_rng(seed)
        children = _polynomial_mutation(_sbx(a, b, upper, ops, ours), upper, ops, ours)
        assert np.array_equal(children, _textbook_variation(a, b, upper, ops, theirs))
        assert ours.random() == theirs.random()


@pytest.mark.parametrize("kind", ["svr", "ridge"])
def test_predictor_quality_is_scikit_learns_cross_validation(kind):
    from sklearn.model_selection import KFold, cross_val_predict

    from nas.search.predictors import PredictorQuality, make_predictor

    data = np.random.default_rng(3)
    x = data.random((37, 10))
    y = x @ data.random(10) + 0.05 * data.standard_normal(37)
    _, quality = fit_predictor(kind, x, y, seed=7)
    predicted = cross_val_predict(make_predictor(kind), x, y, cv=KFold(5, shuffle=True, random_state=7))
    assert quality == PredictorQuality.of(y, predicted)


def test_predictor_fits_and_reports_quality():
    space = llama_nas_space()
    encoding = SearchEncoding(space)
    subs = [space.sample(s) for s in range(60)]
    x = encoding.features(subs)
    y = x.sum(1) + 0.01 * np.random.default_rng(0).standard_normal(len(subs))
    for kind in ("svr", "ridge"):
        model, quality = fit_predictor(kind, x, y, seed=0)
        assert quality.kendall_tau > 0.8 and quality.n == 60
        assert np.corrcoef(model.predict(x), y)[0, 1] > 0.95
    with pytest.raises(SearchConfigError, match="available"):
        fit_predictor("xgboost", x, y, seed=0)


def test_search_workers_on_a_multi_gpu_machine_take_one_gpu_each(monkeypatch):
    from omegaconf import OmegaConf

    from nas.models.placement import worker_device
    from nas.search import context

    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 3)
    assert [worker_device("auto", i) for i in range(4)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:0"]
    assert worker_device("cuda", 1) == "cuda:1"
    assert worker_device("cuda:2", 0) == "cuda:2" and worker_device("cpu", 1) == "cpu"  # as configured
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    assert worker_device("auto", 1) == "auto"  # one GPU: left as configured
    monkeypatch.setattr("torch.cuda.device_count", lambda: 3)
    loaded = []
    monkeypatch.setattr(context, "instantiate", lambda node: loaded.append(node.device) or ("model", "tokenizer"))
    cfg = OmegaConf.create({"model": {"_target_": "nas.models.tiny.tiny_llama", "device": "auto"}})
    for index in range(3):
        context.load_supernet(cfg, index)
    assert loaded == ["cuda:0", "cuda:1", "cuda:2"]


def test_survivors_from_the_first_fronts_only_equal_those_of_a_full_ranking():
    """select_survivors peels fronts only until it has enough rows: the same choice as ranking every row."""
    from nas.search.evolution import non_dominated_ranks, select_survivors
    from nas.search.pareto import pareto_mask

    rng = np.random.default_rng(0)
    for n, k, count in [(500, 2, 10), (400, 3, 200), (300, 2, 300), (2500, 2, 7)]:
        loss = np.round(rng.random((n, k)), 2)  # rounded: ties and duplicates too
        ranks = non_dominated_ranks(loss)
        crowding = np.zeros(n)
        for r in np.unique(ranks):
            members = np.flatnonzero(ranks == r)
            crowding[members] = _textbook_crowding(loss[members])
        assert np.array_equal(select_survivors(loss, count), np.lexsort((-crowding, ranks))[:count])
        assert np.array_equal(ranks == 0, pareto_mask(loss))


def _textbook_crowding(loss: np.ndarray) -> np.ndarray:
    """Deb's crowding distance as his reference code states it: one sort per column of one set."""
    n, k = loss.shape
    if n <= 2:
        return np.full(n, np.inf)
    distance = np.zeros(n)
    for j in range(k):
        order = np.argsort(loss[:, j], kind="stable")
        span = loss[order[-1], j] - loss[order[0], j]
        distance[order[[0, -1]]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (loss[order[2:], j] - loss[order[:-2], j]) / span
    return distance


def test_crowding_distance_equals_the_textbook_one():
    rng = np.random.default_rng(4)
    for case in range(200):
        n, k = int(rng.integers(0, 60)), int(rng.integers(1, 4))
        loss = np.round(rng.random((n, k)), 1) if case % 2 else rng.random((n, k))  # ties, or none
        if case % 9 == 0 and n:
            loss[rng.random(n) < 0.1, 0] = np.nan
        assert np.array_equal(crowding_distance(loss), _textbook_crowding(loss), equal_nan=True), case


def _full_ranking_survivors(loss: np.ndarray, count: int) -> np.ndarray:
    """NSGA-II's survivor selection as Deb states it: every front peeled, crowding within each front."""
    ranks = non_dominated_ranks(loss)
    crowding = np.zeros(len(loss))
    for r in np.unique(ranks):
        members = np.flatnonzero(ranks == r)
        crowding[members] = _textbook_crowding(loss[members])
    return np.lexsort((-crowding, ranks))[:count]


def test_survivors_know_their_fronts_among_themselves():
    """ranked_survivors hands the next generation its front numbers: those a full ranking of the survivors gives
    (NaN losses too: never dominated, never dominating)."""
    rng = np.random.default_rng(1)
    for n, k, count in [(400, 2, 200), (300, 3, 150), (50, 2, 50), (120, 1, 60), (90, 3, 30), (1, 2, 1)]:
        loss = np.round(rng.random((n, k)), 1)
        if k == 3:
            loss[rng.random((n, k)) < 0.02] = np.nan
        chosen, ranks = ranked_survivors(loss, count)
        assert np.array_equal(chosen, _full_ranking_survivors(loss, count))
        assert np.array_equal(ranks, non_dominated_ranks(loss[chosen]))


def _textbook_evolve(initial, losses_of, upper, generations, ops, rng):
    """The inner NSGA-II as written before its loop was made cheaper: every child scored, fronts peeled twice per
    generation, the archive and the distinct merged rows found row by row."""
    population = initial.astype(np.int64)
    loss = losses_of(population)
    seen, archive, archive_loss = set(), [], []

    def remember(rows, rows_loss):
        for row, row_loss in zip(rows, rows_loss):
            if row.tobytes() not in seen:
                seen.add(row.tobytes())
                archive.append(row)
                archive_loss.append(row_loss)

    remember(population, loss)
    for _ in range(generations):
        children = offspring(population, loss, upper, ops, rng)
        children_loss = losses_of(children)
        remember(children, children_loss)
        merged, merged_loss = np.vstack([population, children]), np.vstack([loss, children_loss])
        first = {}
        for i, row in enumerate(merged):
            first.setdefault(row.tobytes(), i)
        unique = np.array(sorted(first.values()))
        merged, merged_loss = merged[unique], merged_loss[unique]
        keep = _full_ranking_survivors(merged_loss, len(population))
        population, loss = merged[keep], merged_loss[keep]
    return np.array(archive), np.array(archive_loss)


@pytest.mark.parametrize("objectives", [1, 2, 3])
def test_evolve_equals_the_textbook_loop_scoring_each_distinct_row_once(objectives):
    """The inner NSGA-II scores a row once however often it recurs and carries the survivors' fronts to the next
    tournaments; the archive, its losses and the generator's state are those of the plain loop."""
    for seed in range(12):
        data = np.random.default_rng(seed)
        d, n = int(data.integers(2, 12)), int(data.integers(4, 40))
        upper = data.integers(0, 4, size=d)
        weights = data.normal(size=(d, objectives))
        scored: list[int] = []

        def losses_of(rows: np.ndarray, weights=weights, digits=1 + seed % 3, scored=scored) -> np.ndarray:
            """Row by row (a row's losses do not depend on the others), rounded: ties too."""
            scored.append(len(rows))
            return np.round(np.sin((rows[:, :, None] * weights).sum(axis=1)), digits)

        initial = data.integers(0, upper + 1, size=(n, d))
        ops = Operators(mutation_prob=[0.02, 0.2, 0.5][seed % 3])
        generations = int(data.integers(1, 25))
        ours, theirs = np.random.default_rng(seed), np.random.default_rng(seed)
        archive, archive_loss = evolve(initial, losses_of, upper, generations, ops, ours)
        rows_scored = sum(scored)
        expected, expected_loss = _textbook_evolve(initial, losses_of, upper, generations, ops, theirs)
        assert np.array_equal(archive, expected) and np.array_equal(archive_loss, expected_loss)
        assert ours.random() == theirs.random()
        assert rows_scored == len(archive)


def test_row_codes_number_every_row_of_the_space_once():
    upper = np.array([2, 0, 1, 3])
    grid = np.stack(np.meshgrid(*[np.arange(u + 1) for u in upper], indexing="ij"), -1).reshape(-1, len(upper))
    codes = row_codes(grid, mixed_radix(upper))
    assert sorted(codes.tolist()) == list(range(len(grid)))  # distinct rows, distinct codes, none wasted
    assert mixed_radix(np.ones(62, dtype=np.int64)) is not None  # 2**62 rows: an int64 numbers them
    assert mixed_radix(np.ones(64, dtype=np.int64)) is None  # 2**64 do not: rows are compared by their bytes


def test_linas_finds_unevaluated_candidates_by_code_as_by_bytes():
    """A round's pool, the first row of each distinct sub-network not evaluated yet, is the same whether rows are
    compared by their codes or by their bytes (dropped layers' choices count as their canonical ones)."""
    from nas.search.linas import LinasSampler

    encoding = SearchEncoding(llama_nas_space())
    objectives = parse_objectives([{"kind": "accuracy", "task": "arc_easy"}, "params"])
    by_codes = LinasSampler(encoding, objectives, lambda sub: {"params": 0.0})
    by_bytes = LinasSampler(encoding, objectives, lambda sub: {"params": 0.0})
    by_bytes._radix = None
    rng = np.random.default_rng(0)
    upper = by_codes.rows.largest
    for _ in range(10):
        archive = rng.integers(0, upper + 1, size=(300, len(upper)))
        evaluated = by_codes.rows.canonical(archive[rng.integers(0, 300, size=20)])
        canonical, pool = by_codes._unevaluated(archive, evaluated)
        expected_canonical, expected_pool = by_bytes._unevaluated(archive, evaluated)
        assert np.array_equal(canonical, expected_canonical) and np.array_equal(pool, expected_pool)
        assert 0 < len(pool) < 300 and len(np.unique(canonical[pool], axis=0)) == len(pool)
