"""A search's working set, built before any evaluation: the checked config, the live super-network,
its search space and encoding, the objective scorer, and the study (created or resumed).

`prepare` is what every worker, the quantize stage and the export stage start from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import optuna
from omegaconf import DictConfig, OmegaConf

from nas.errors import SearchConfigError
from nas.evaluation.registry import load_task
from nas.evaluation.requests import max_length
from nas.evaluation.results import weights_fingerprint
from nas.evaluation.task import Selection
from nas.instantiate import instantiate
from nas.io.atomic import write_json
from nas.io.locations import config_dir
from nas.models.placement import worker_device
from nas.search.batched_storage import BatchedStorage
from nas.search.constraints import Constraint, analytic_feasible, parse_constraints, quantities
from nas.search.distinct import DistinctSampler
from nas.search.encoded_rows import EncodedRows
from nas.search.encoding import SearchEncoding
from nas.search.feasible import FeasibleSampler
from nas.search.objective_scorer import ObjectiveScorer
from nas.search.objectives import SPEED, Objective, parse_objectives, task_names
from nas.search.optuna_compat import experimental_features
from nas.search.outputs import ITEMS_ATTR, ITEMS_FILE, ROUNDS_ATTR
from nas.search.reachable import check_reachable
from nas.search.study import create_or_resume, open_storage, storage_url
from nas.supernet.search_space import SearchSpace


@dataclass
class SearchContext:
    """Everything one worker needs: the live model, the scorer and the study."""

    cfg: DictConfig
    output_dir: Path
    model: Any
    tokenizer: Any
    space: SearchSpace
    encoding: SearchEncoding
    objectives: list[Objective]
    scorer: ObjectiveScorer
    study: optuna.Study
    resumed: bool
    constraints: list[Constraint]

    @cached_property
    def budget(self) -> int:
        """`search.n_trials`, read once: a config lookup costs 0.1 ms and the worker loop asks several times per
        trial."""
        return int(self.cfg.search.n_trials)


def _count(value: Any, key: str, minimum: int, why: str) -> int:
    """A config value that must be a whole number >= `minimum`; anything else names the override to fix."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SearchConfigError(f"{key}={value!r}: {why} (a whole number >= {minimum}).")
    return value


# The settings a search reads (conf/search/*.yaml); anything else under `search` is a typo or an idea the
# search does not have, and is refused rather than silently ignored.
SEARCH_KEYS = frozenset(
    {
        "algorithm",
        "sampler",
        "n_trials",
        "population_size",
        "seed",
        "n_workers",
        "storage",
        "study_name",
        "crossover_prob",
        "crossover_eta",
        "mutation_prob",
        "mutation_eta",
        "heartbeat_interval",
        "grace_period",
        "duplicate_patience",
        "storage_patience",
        "progress",
        "linas",
    }
)
LINAS_KEYS = frozenset({"predictor", "inner_population", "generations", "round_size"})


def _check_known_keys(search: DictConfig) -> None:
    for where, node, known in (("search", search, SEARCH_KEYS), ("search.linas", search.get("linas"), LINAS_KEYS)):
        unknown = sorted(set(node or {}) - known)
        if unknown:
            raise SearchConfigError(
                f"Unknown setting(s) {', '.join(f'{where}.{k}' for k in unknown)}: the search does not read them. "
                f"The known {where} settings are {sorted(known)}."
            )


def search_constraints(cfg: DictConfig) -> list[Constraint]:
    """The study's constraints (`constraints`, top level beside `objectives`); [] when unset."""
    return parse_constraints(cfg.get("constraints"))


def check_search_config(cfg: DictConfig) -> list[Objective]:
    """Everything that can be checked before loading a model; returns the objectives."""
    search = cfg.search
    _check_known_keys(search)
    algorithm = instantiate(search.sampler)  # a _target_ that does not exist fails here
    if search.algorithm != algorithm.name:
        available = sorted(p.stem for p in (config_dir() / "search").glob("*.yaml"))
        raise SearchConfigError(
            f"search.algorithm={search.algorithm!r} does not name the algorithm in use ({algorithm.name}); choose an "
            f"algorithm with search=<name>; available: {available}."
        )
    objectives = parse_objectives(cfg.objectives)
    measured = quantities(objectives, search_constraints(cfg))
    for name in task_names(measured):
        load_task(name).check_name()  # unknown task names fail here, with lm-eval's close names
    SearchSpace.check_config(cfg.search_space)
    if task_names(measured):
        Selection.from_config(cfg.get("evaluator"))
    n_trials = _count(search.n_trials, "search.n_trials", 1, "the budget of real evaluations")
    _count(search.n_workers, "search.n_workers", 1, "worker processes")
    if algorithm.uses_population:
        population = _count(search.population_size, "search.population_size", 2, f"{search.algorithm}'s population")
        if n_trials < population:
            raise SearchConfigError(
                f"search.n_trials={n_trials} is below search.population_size={population}: "
                f"{search.algorithm} would not finish one generation. Raise n_trials or lower population_size."
            )
    if any(o.kind == "perplexity" for o in measured):
        if cfg.get("perplexity") is None:
            raise SearchConfigError("A perplexity objective needs a perplexity config (perplexity=wikitext2).")
        instantiate(cfg.perplexity)  # a missing text file fails now, before any model loads
    if any(o.is_speed for o in measured) and cfg.get("speed") is None:
        raise SearchConfigError("latency/throughput objectives need the speed config (speed.batch_size=...).")
    return objectives


def load_supernet(cfg: DictConfig, worker_index: int = 0) -> tuple[Any, Any]:
    """The super-network to search: `model` as configured (`model=pretrained model.name_or_path=<folder>` for
    a trained one), built the one way every job builds a model; worker `worker_index` of several on a multi-GPU
    machine gets its own GPU (`worker_device`)."""
    model_cfg = cfg.model
    if "device" in model_cfg:
        model_cfg = OmegaConf.merge(model_cfg, {"device": worker_device(str(model_cfg.device), worker_index)})
    return cast(tuple[Any, Any], instantiate(model_cfg))


def _values_that_matter(node: DictConfig) -> dict[str, Any]:
    """A settings node without the keys that only change what is shown (`progress`)."""
    values = cast(dict[str, Any], OmegaConf.to_container(node, resolve=True))
    return {k: v for k, v in values.items() if k != "progress"}


def signature(
    cfg: DictConfig, model: Any, space: SearchSpace, objectives: list[Objective], constraints: Sequence[Constraint] = ()
) -> dict[str, Any]:
    """What the study's values depend on; a resumed study must match it exactly."""
    evaluator = cast(dict[str, Any], OmegaConf.to_container(cfg.evaluator, resolve=True))
    ppl = cfg.get("perplexity")
    speed = cfg.get("speed")
    measured = quantities(objectives, constraints)
    kinds = {o.kind for o in measured}
    return {
        "search_space": {"name": space.name, "choices": {k: list(v) for k, v in space.parameters().items()}},
        "layer_order": list(space.layer_order),
        "objectives": [{k: v for k, v in o.to_dict().items() if k != "hv_bound"} for o in objectives],
        "selection": (
            {k: evaluator.get(k, "scored" if k == "items" else None) for k in ("limit", "limit_mode", "seed", "items")}
            if task_names(measured)
            else None
        ),
        "perplexity": (
            {k: ppl.get(k) for k in ("data_file", "text_file", "seq_len", "max_tokens")}
            if "perplexity" in kinds and ppl is not None
            else None
        ),
        "speed": _values_that_matter(speed) if kinds & SPEED and speed is not None else None,
        "weights": weights_fingerprint(model),
        "algorithm": cfg.search.algorithm,
        # Absent (None) without constraints, so studies from before constraints existed resume unchanged.
        "constraints": [c.to_dict() for c in constraints] or None,
    }


def check_directions(objectives: list[Objective], tasks: dict[str, Any], data_dir: Any) -> None:
    """An accuracy objective is maximised: refuse one whose task's metric lm-eval counts lower-is-better."""
    for objective in objectives:
        if objective.kind != "accuracy" or objective.metric:
            continue
        for name in objective.tasks:
            task = tasks[name]
            if not task.higher_is_better(data_dir):
                metric_name, filter_name = task.metric_key(data_dir)
                metric = metric_name if filter_name == "none" else f"{metric_name},{filter_name}"
                raise SearchConfigError(
                    f"objective {objective.name}: task {name}'s metric {metric} is better lower (lm-eval says so); an "
                    f"accuracy objective is maximised. Choose a metric better higher (task.{name}.metric=...; "
                    f"e.g. lambada_openai's acc), or kind: perplexity for language-model loss."
                )


def build_scorer(cfg: DictConfig, model: Any, tokenizer: Any, objectives: list[Objective]) -> ObjectiveScorer:
    """The scorer of `objectives` for models of `tokenizer`: the evaluator (tasks built once), the perplexity
    text and the speed meter that the objectives need, from the same settings a search uses."""
    perplexity_evaluator = instantiate(cfg.perplexity) if "perplexity" in {o.kind for o in objectives} else None
    meter = instantiate(cfg.speed) if any(o.is_speed for o in objectives) else None
    evaluator = None
    if task_names(objectives):
        tasks = [load_task(name) for name in task_names(objectives)]
        evaluator = instantiate(
            cfg.evaluator, tasks=tasks, tokenizer=tokenizer, max_length=max_length(model.config, tokenizer)
        )
        check_directions(objectives, {t.name: t for t in tasks}, cfg.evaluator.get("data_dir"))
    return ObjectiveScorer(model, tokenizer, objectives, evaluator, perplexity_evaluator, meter)


def prepare(cfg: DictConfig, output_dir: Path, worker_index: int = 0) -> SearchContext:
    """Load and check everything, open (or resume) the study; no evaluation yet."""
    objectives = check_search_config(cfg)
    constraints = search_constraints(cfg)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress bar and log say what each trial did
    url = storage_url(cfg.search.storage, output_dir)
    storage = open_storage(url, cfg.search.heartbeat_interval, cfg.search.grace_period)  # unreachable: fail now
    item_set = Selection.from_config(cfg.get("evaluator")).items
    for name in task_names(objectives):  # lm-eval's definitions and documents: missing data fails before the model
        load_task(name).prefetch((cfg.get("evaluator") or {}).get("data_dir"), item_set)
    model, tokenizer = load_supernet(cfg, worker_index)
    space_cfg = cast(dict[str, Any], OmegaConf.to_container(cfg.search_space, resolve=True))
    space = SearchSpace.from_config(space_cfg, model.config)
    encoding = SearchEncoding(space)
    scorer = build_scorer(cfg, model, tokenizer, quantities(objectives, constraints))
    check_reachable(constraints, space, scorer)

    directions = [o.direction for o in objectives]
    study, resumed = create_or_resume(
        storage, str(cfg.search.study_name), directions, signature(cfg, model, space, objectives, constraints)
    )
    # The worker's view of it: a trial's parameters and attributes written together (one transaction each).
    study = optuna.load_study(study_name=study.study_name, storage=BatchedStorage(storage))
    if study.metric_names != [o.name for o in objectives]:  # named columns in the Optuna dashboard and exports
        with experimental_features():
            study.set_metric_names([o.name for o in objectives])
    if scorer.evaluator is not None and worker_index == 0:
        # Which documents steered this study, so a confirmation can prove its own items are others.
        items = {name: s.to_dict() for name, s in scorer.evaluator.item_sets().items()}
        write_json(items, output_dir / ITEMS_FILE)
        if study.user_attrs.get(ITEMS_ATTR) != items:
            study.set_user_attr(ITEMS_ATTR, items)
    # Workers, and a resumed run, draw different random streams (else they would re-propose the same).
    seed = int(cfg.search.seed) + 7919 * worker_index + len(study.get_trials(deepcopy=False))

    def record_round(record: dict[str, Any]) -> None:
        rounds = list(study.user_attrs.get(ROUNDS_ATTR, []))
        study.set_user_attr(ROUNDS_ATTR, [*rounds, record])

    algorithm = instantiate(cfg.search.sampler)
    encoded = EncodedRows(encoding)
    sampler = algorithm(
        cfg.search,
        encoding,
        objectives,
        scorer.analytic,
        seed,
        record_round,
        constraints,
        lambda rows: scorer.analytic_rows(encoded, rows),
    )
    if algorithm.redraws_taken_children:
        sampler = DistinctSampler(sampler, encoding, max_draws=int(cfg.search.duplicate_patience))
    if any(c.analytic for c in constraints):

        def feasible(sub: Any) -> bool:
            return analytic_feasible(constraints, scorer.analytic(sub))

        # LINAS plans rounds in its proposals (side effects) and ranks predicted feasibility itself.
        sampler = FeasibleSampler(sampler, encoding, feasible, seed, redraw_relative=algorithm.name != "linas")
    study.sampler = sampler
    return SearchContext(
        cfg, output_dir, model, tokenizer, space, encoding, objectives, scorer, study, resumed, constraints
    )
