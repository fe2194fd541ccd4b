"""The search job: load the super-network, open or resume the study, evaluate the reference model, run
worker loops until the budget of real evaluations is met, write the outputs.

Every worker (process) runs the same loop against the shared study: ask the sampler for a
sub-network; if it was evaluated already, answer from the database (a duplicate costs no
evaluation and does not count towards `search.n_trials`); otherwise evaluate it live and tell the
values. A trial whose worker dies stays RUNNING until the next run (or the heartbeat) fails it, so a
killed run loses at most its trials in flight.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import optuna
import torch
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState
from tqdm.auto import tqdm

from nas.errors import NASError, SearchConfigError
from nas.evaluation.encoding import max_length
from nas.evaluation.evaluator import Evaluator
from nas.evaluation.registry import load_task
from nas.evaluation.results import weights_fingerprint
from nas.instantiate import instantiate
from nas.search.algorithms import ALGORITHMS, make_sampler
from nas.search.encoding import SearchEncoding
from nas.search.objectives import SPEED, Objective, parse_objectives, task_names
from nas.search.outputs import ROUNDS_ATTR, evaluations, hypervolume_rows, reference_values, write_outputs
from nas.search.pareto import hypervolume, loss_bounds, losses
from nas.search.scoring import ObjectiveScorer
from nas.search.study import (
    REFERENCE_ATTR,
    WORKER_ATTR,
    alive_running,
    create_or_resume,
    fail_dead_trials,
    heartbeat,
    open_storage,
    storage_url,
    worker_id,
)
from nas.search.tracking import SearchTracker
from nas.supernet.search_space import SearchSpace

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)
# Optuna flags SBX, polynomial mutation and heartbeats as experimental, and warns that heartbeats are
# meant for Study.optimize; this loop records heartbeats itself (see `study.heartbeat`).
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


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

    @property
    def budget(self) -> int:
        return int(self.cfg.search.n_trials)


def check_search_config(cfg: DictConfig) -> list[Objective]:
    """Everything that can be checked before loading a model; returns the objectives."""
    search = cfg.search
    if search.algorithm not in ALGORITHMS:
        raise SearchConfigError(f"Unknown search.algorithm {search.algorithm!r}; available: {list(ALGORITHMS)}.")
    objectives = parse_objectives(cfg.objectives)
    for name in task_names(objectives):
        load_task(name)  # unknown task names fail here, listing the available ones
    if int(search.n_trials) < 1:
        raise SearchConfigError(f"search.n_trials={search.n_trials}: the budget must be at least 1 real evaluation.")
    if search.algorithm != "random" and int(search.n_trials) < int(search.population_size):
        raise SearchConfigError(
            f"search.n_trials={search.n_trials} is below search.population_size={search.population_size}: "
            f"{search.algorithm} would not finish one generation. Raise n_trials or lower population_size."
        )
    if int(search.n_workers) < 1:
        raise SearchConfigError(f"search.n_workers={search.n_workers}: use 1 or more.")
    if any(o.kind == "perplexity" for o in objectives) and cfg.get("perplexity") is None:
        raise SearchConfigError("A perplexity objective needs a perplexity config (perplexity=wikitext2).")
    if any(o.is_speed for o in objectives) and cfg.get("speed") is None:
        raise SearchConfigError("latency/throughput objectives need the speed config (speed.batch_size=...).")
    return objectives


def load_supernet(cfg: DictConfig) -> tuple[Any, Any]:
    """The super-network to search: `supernet` (a saved folder) when set, else `model` as configured."""
    if cfg.get("supernet"):
        from nas.models.pretrained import from_pretrained

        return from_pretrained(
            str(cfg.supernet), device=cfg.model.get("device", "cpu"), dtype=cfg.model.get("dtype", "float32")
        )
    return instantiate(cfg.model)


def signature(cfg: DictConfig, model: Any, space: SearchSpace, objectives: list[Objective]) -> dict[str, Any]:
    """What the study's values depend on; a resumed study must match it exactly."""
    evaluator = cast(dict[str, Any], OmegaConf.to_container(cfg.evaluator, resolve=True))
    ppl = cfg.get("perplexity")
    speed = cfg.get("speed")
    kinds = {o.kind for o in objectives}
    return {
        "search_space": {"name": space.name, "choices": {k: list(v) for k, v in space.parameters().items()}},
        "layer_order": list(space.layer_order),
        "objectives": [{k: v for k, v in o.to_dict().items() if k != "hv_bound"} for o in objectives],
        "selection": {k: evaluator.get(k) for k in ("limit", "limit_mode", "seed")} if task_names(objectives) else None,
        "perplexity": (
            {k: ppl.get(k) for k in ("data_file", "text_file", "seq_len", "max_tokens")}
            if "perplexity" in kinds and ppl is not None
            else None
        ),
        "speed": OmegaConf.to_container(speed) if kinds & SPEED and speed is not None else None,
        "weights": weights_fingerprint(model),
        "algorithm": cfg.search.algorithm,
    }


def prepare(cfg: DictConfig, output_dir: Path, worker_index: int = 0) -> SearchContext:
    """Load and check everything, open (or resume) the study; no evaluation yet."""
    objectives = check_search_config(cfg)
    url = storage_url(cfg.search.storage, output_dir)
    storage = open_storage(url, cfg.search.heartbeat_interval, cfg.search.grace_period)  # unreachable: fail now
    perplexity_evaluator = instantiate(cfg.perplexity) if "perplexity" in {o.kind for o in objectives} else None
    meter = instantiate(cfg.speed) if any(o.is_speed for o in objectives) else None

    model, tokenizer = load_supernet(cfg)
    space_cfg = cast(dict[str, Any], OmegaConf.to_container(cfg.search_space, resolve=True))
    space = SearchSpace.from_config(space_cfg, model.config)
    encoding = SearchEncoding(space)
    evaluator = None
    if task_names(objectives):
        tasks = [load_task(name) for name in task_names(objectives)]
        options = cast(dict[str, Any], OmegaConf.to_container(cfg.evaluator, resolve=True))
        options.pop("_target_", None)
        evaluator = Evaluator(tasks, tokenizer, max_length(model.config, tokenizer), **options)
    scorer = ObjectiveScorer(model, tokenizer, objectives, evaluator, perplexity_evaluator, meter)

    directions = [o.direction for o in objectives]
    study, resumed = create_or_resume(
        storage, str(cfg.search.study_name), directions, signature(cfg, model, space, objectives)
    )
    # Workers, and a resumed run, draw different random streams (else they would re-propose the same).
    seed = int(cfg.search.seed) + 7919 * worker_index + len(study.get_trials(deepcopy=False))

    def record_round(record: dict[str, Any]) -> None:
        rounds = list(study.user_attrs.get(ROUNDS_ATTR, []))
        study.set_user_attr(ROUNDS_ATTR, [*rounds, record])

    study.sampler = make_sampler(cfg.search, encoding, objectives, scorer.analytic, seed, record_round)
    return SearchContext(cfg, output_dir, model, tokenizer, space, encoding, objectives, scorer, study, resumed)


def evaluate_reference(ctx: SearchContext) -> dict[str, float]:
    """The unmodified model's values, evaluated once per study and stored with it."""
    stored = ctx.study.user_attrs.get(REFERENCE_ATTR)
    if stored:
        return dict(stored["values"])
    start = time.perf_counter()
    values, details = ctx.scorer(None)
    record = {"values": values, "details": details, "seconds": time.perf_counter() - start}
    ctx.study.set_user_attr(REFERENCE_ATTR, record)
    log.info("Reference (unmodified model): %s", _fmt(values))
    return values


def _fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in values.items())


def _evaluated_by_key(study: optuna.Study) -> dict[str, optuna.trial.FrozenTrial]:
    return {t.user_attrs["subnet_key"]: t for t in evaluations(study) if "subnet_key" in t.user_attrs}


class _Progress:
    """Trials done out of the budget, the best value of each objective and the hypervolume so far."""

    def __init__(self, ctx: SearchContext, enabled: bool) -> None:
        self.ctx = ctx
        self.bar = tqdm(total=ctx.budget, desc=f"search {ctx.study.study_name}", disable=not enabled, unit="eval")
        self.refresh()

    def refresh(self) -> None:
        done = evaluations(self.ctx.study)
        self.bar.n = min(len(done), self.ctx.budget)
        reference = reference_values(self.ctx.study)
        if done and reference:
            values = np.array([t.values for t in done])
            best = {
                o.name: (values[:, i].max() if o.maximize else values[:, i].min())
                for i, o in enumerate(self.ctx.objectives)
            }
            hv = hypervolume(losses(values, self.ctx.objectives, reference), loss_bounds(self.ctx.objectives))
            self.bar.set_postfix({**{k: f"{v:.4g}" for k, v in best.items()}, "hv": f"{hv:.4f}"}, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _enqueue_unseen(study: optuna.Study, encoding: SearchEncoding, seen: set[str], rng: random.Random) -> bool:
    """Enqueue a uniformly random sub-network whose key is not in `seen`; False if none was found."""
    for _ in range(10000):
        sub = encoding.space.sample(rng)
        if sub.to_json() not in seen:
            study.enqueue_trial(encoding.encode(sub), user_attrs={"escape": "random after repeated duplicates"})
            return True
    return False


def run_worker(ctx: SearchContext, progress: bool = False) -> int:
    """Ask, look up or evaluate, tell, until the study holds `n_trials` real evaluations; returns how
    many this worker evaluated."""
    study, encoding, budget = ctx.study, ctx.encoding, ctx.budget
    distinct = ctx.space.size()["distinct"]
    patience = int(ctx.cfg.search.duplicate_patience)
    rng = random.Random(int(ctx.cfg.search.seed) + len(study.get_trials(deepcopy=False)))
    me = worker_id()
    evaluated_here = duplicates_in_a_row = 0
    bar = _Progress(ctx, progress)
    try:
        while True:
            fail_dead_trials(study)
            known = _evaluated_by_key(study)
            if len(known) >= budget:
                break
            if len(known) >= distinct:
                log.warning(
                    "Every one of the %d distinct sub-networks is evaluated; stopping before the budget.", distinct
                )
                break
            if len(known) + len(alive_running(study)) >= budget:
                time.sleep(1.0)  # the last evaluations are in flight in other workers
                continue
            trial = study.ask(encoding.distributions())
            sub = encoding.decode(trial.params)
            key = sub.to_json()
            trial.set_user_attr(WORKER_ATTR, me)
            trial.set_user_attr("subnet_key", key)
            # Running trials first, then completed ones: a trial finishing in between is counted twice
            # (we wait), never missed (the budget would be exceeded).
            ahead = [t for t in alive_running(study) if t.number < trial.number]
            known = _evaluated_by_key(study)
            if len(known) + len(ahead) >= budget or any(t.user_attrs.get("subnet_key") == key for t in ahead):
                trial.set_user_attr("skipped", "budget taken or the same sub-network in flight in another worker")
                study.tell(trial, state=TrialState.FAIL)
                continue
            if key in known:
                # Not evaluated again, and not a member of the sampler's population either (PRUNED
                # trials are ignored by NSGA-II), so a generation is filled with distinct sub-networks,
                # as pymoo's duplicate elimination does; the values stay with the original trial.
                trial.set_user_attr("duplicate_of", known[key].number)
                study.tell(trial, state=TrialState.PRUNED)
                duplicates_in_a_row += 1
                if duplicates_in_a_row >= patience:
                    # A converged population in a small space re-proposes what it has; the budget is
                    # still met: the next trial is a random sub-network not evaluated yet.
                    if not _enqueue_unseen(study, encoding, set(known), rng):
                        log.warning(
                            "No unevaluated sub-network found in 10000 random draws; stopping at %d of %d.",
                            len(known),
                            budget,
                        )
                        break
                    log.info(
                        "%d duplicates in a row: the next trial is a random unevaluated sub-network.",
                        duplicates_in_a_row,
                    )
                    duplicates_in_a_row = 0
                continue
            duplicates_in_a_row = 0
            try:
                start = time.perf_counter()
                with heartbeat(study._storage, trial._trial_id):
                    values, details = ctx.scorer(sub)
                trial.set_user_attr("details", details)
                trial.set_user_attr("seconds", time.perf_counter() - start)
                trial.set_user_attr("evaluated", True)
                study.tell(trial, [values[o.name] for o in ctx.objectives])
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
            evaluated_here += 1
            bar.refresh()
    finally:
        bar.refresh()
        bar.close()
    return evaluated_here


def _worker_process(cfg_yaml: str, output_dir: str, worker_index: int, ready: Any) -> None:
    """Entry of an extra worker process (spawned): the same job, without the reference and outputs."""
    logging.basicConfig(level=logging.INFO, format=f"[worker {worker_index}] %(levelname)s %(name)s: %(message)s")
    cfg = cast(DictConfig, OmegaConf.create(cfg_yaml))
    _set_threads(cfg)
    ctx = prepare(cfg, Path(output_dir), worker_index)
    ready.set()
    run_worker(ctx, progress=False)


def _start_workers(cfg: DictConfig, output_dir: Path) -> list[Any]:
    """Spawn the extra workers and wait until each has loaded its model and opened the study, so the
    work is shared from the first trial on (a worker that dies while starting is an error)."""
    context = mp.get_context("spawn")
    resolved = OmegaConf.to_yaml(cfg, resolve=True)
    started = []
    for i in range(1, int(cfg.search.n_workers)):
        ready = context.Event()
        process = context.Process(target=_worker_process, args=(resolved, str(output_dir), i, ready))
        process.start()
        started.append((process, ready))
    for process, ready in started:
        while not ready.wait(0.5):
            if not process.is_alive():
                for other, _ in started:
                    other.kill()
                raise NASError(
                    f"A search worker process died while starting (exit code {process.exitcode}); see its log above."
                )
    return [p for p, _ in started]


def _set_threads(cfg: DictConfig) -> None:
    workers = int(cfg.search.n_workers)
    if workers > 1 and torch.get_num_threads() > 1:
        # Workers share the machine's cores instead of oversubscribing them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def run_search(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """The whole job; returns the summary it writes to `summary.json`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    _set_threads(cfg)
    ctx = prepare(cfg, output_dir)
    before = len(evaluations(ctx.study))
    if ctx.resumed:
        log.info("Resuming study %r: %d of %d evaluations done.", ctx.study.study_name, before, ctx.budget)
    log.info("%s\nObjectives: %s", ctx.space.summary(), ", ".join(f"{o.name} ({o.direction})" for o in ctx.objectives))
    tracker = SearchTracker.from_config(cfg, ctx.study.study_name)
    try:
        evaluate_reference(ctx)
        extra = _start_workers(cfg, output_dir)
        try:
            run_worker(ctx, progress=bool(cfg.search.progress))
        finally:
            for p in extra:
                p.join()
        bad = [p.exitcode for p in extra if p.exitcode != 0]
        if bad:
            raise NASError(
                f"{len(bad)} worker process(es) failed (exit codes {bad}); re-run the same command to resume."
            )
        summary = write_outputs(ctx.study, ctx.objectives, ctx.encoding, output_dir)
        summary["evaluated_this_run"] = summary["evaluations"] - before
        summary["storage"] = storage_url(cfg.search.storage, output_dir).split("@")[-1]
        tracker.log_study(ctx.study, ctx.objectives, ctx.encoding, hypervolume_rows(ctx.study, ctx.objectives), summary)
        log.info(
            "Study %r: %d evaluations (%d this run), Pareto front of %d, hypervolume %s. Outputs in %s",
            ctx.study.study_name,
            summary["evaluations"],
            summary["evaluated_this_run"],
            summary["pareto_size"],
            f"{summary['hypervolume']:.4f}" if summary["hypervolume"] is not None else "n/a",
            output_dir,
        )
        return summary
    except BaseException:
        # Whatever completed is in the database; write what there is so it can be inspected.
        try:
            write_outputs(ctx.study, ctx.objectives, ctx.encoding, output_dir)
        except Exception:  # pragma: no cover - best effort on the way out
            log.exception("Could not write the partial outputs.")
        raise
    finally:
        tracker.finish()
