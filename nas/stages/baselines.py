"""The baselines job (`python -m nas.baselines`, and the pipeline's `baselines` stage): prune the pre-trained
model with each configured method at each ratio, score the result with the same `ObjectiveScorer`, objectives
and items as the search, save it as a standalone folder, and write `baselines.json`.

    <out>/baselines.json              one entry per (method, ratio), and the unmodified model's values
    <out>/<method>_r<ratio>/model/    the pruned model (loads with from_pretrained; SliceGPT with trust_remote_code)
    <out>/<method>_r<ratio>/result.json   its values, costs and details, keyed by what it depends on

An entry is reused when its key (method, ratio, calibration, the model's weights, the objectives and items)
is unchanged, so an interrupted job continues where it stopped and a finished one does no work again.
Every setting is checked (unknown methods, ratios a method cannot reach on this model) before any
calibration runs.
"""

from __future__ import annotations

import copy
import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from nas.baselines.base import Baseline, BaselineError, Pruned
from nas.baselines.saving import save_pruned
from nas.data.calibration import CalibrationSet
from nas.evaluation.results import weights_fingerprint
from nas.evaluation.task import Selection
from nas.instantiate import instantiate
from nas.io.atomic import read_json, write_json
from nas.io.fingerprints import fingerprint, plain
from nas.search.context import build_scorer
from nas.search.objective_scorer import ObjectiveScorer
from nas.search.objectives import Objective, parse_objectives, task_names
from nas.supernet.elastic_model import shape_of
from nas.supernet.subnetwork import SubNetwork
from nas.training.recovery import recover

log = logging.getLogger(__name__)

RESULTS_FILE = "baselines.json"


@dataclass(frozen=True)
class Job:
    """One (method, ratio) to run."""

    name: str
    method: Baseline
    ratio: float
    settings: dict[str, Any]

    @property
    def folder_name(self) -> str:
        return f"{self.name}_r{self.ratio:g}"


def planned_jobs(cfg: DictConfig) -> list[Job]:
    """Every (method, ratio) the config asks for, each checked as far as it can be without a model."""
    selected = cfg.get("baseline") or {}
    if not selected:
        raise BaselineError("No baseline selected: pass e.g. 'baseline=[llm_pruner,slicegpt]' (conf/baseline/).")
    override = cfg.get("ratio")
    jobs = []
    for name, node in selected.items():
        method = cast(Baseline, instantiate(node.method))
        ratios = list(override) if override is not None else list(node.get("ratios") or [])
        if not ratios:
            raise BaselineError(f"baseline {name}: no ratio; set baseline.{name}.ratios or ratio=[...].")
        for ratio in ratios:
            if isinstance(ratio, bool) or not isinstance(ratio, int | float):
                raise BaselineError(f"baseline {name}: ratio {ratio!r} is not a number in [0, 1).")
            method.check(float(ratio))
            settings = plain({"method": OmegaConf.to_container(node.method, resolve=True), "ratio": float(ratio)})
            jobs.append(Job(str(name), method, float(ratio), settings))
    return jobs


def _objective_specs(cfg: DictConfig) -> list[Any]:
    """`objectives` as configured, or, with `task=<name or list>`, one accuracy objective per task beside the
    configured cost objectives."""
    specs = cast(list[Any], OmegaConf.to_container(cfg.objectives, resolve=True))
    task = cfg.get("task")
    if not task:
        return specs
    tasks = [task] if isinstance(task, str) else list(task)
    costs = [s for s in specs if (s.get("kind") if isinstance(s, dict) else s) != "accuracy"]
    return [{"kind": "accuracy", "task": str(t)} for t in tasks] + costs


def check_baselines_config(cfg: DictConfig) -> tuple[list[Job], list[Objective]]:
    """Everything that can be wrong with the input, before any model loads or calibration runs."""
    jobs = planned_jobs(cfg)
    objectives = parse_objectives(_objective_specs(cfg))
    if task_names(objectives):
        Selection.from_config(cfg.get("evaluator"))
    if any(job.method.needs_calibration for job in jobs):
        instantiate(cfg.calibration)  # a missing calibration text fails now
    _check_recovery_method(cfg)
    return jobs, objectives


def _check_recovery_method(cfg: DictConfig) -> str | None:
    method = (cfg.get("recovery") or {}).get("method")
    if method and method != "lora":
        raise BaselineError(f"recovery.method={method!r}: use lora (or null for no recovery fine-tune).")
    return str(method) if method else None


def measure(scorer: ObjectiveScorer, pruned: Pruned) -> tuple[dict[str, float], dict[str, Any]]:
    """The pruned model's values on the scorer's objectives (measured ones on the model as it runs)."""
    if pruned.sub is None:
        analytic = scorer.cost_values(pruned)
        return scorer.measure_with(pruned.model, analytic)
    with pruned.model.sub_network(pruned.sub):  # a sub-network of a (permuted) copy: costed like searched ones
        return scorer.measure(pruned.model, pruned.sub)


def _entry_key(job: Job, context: dict[str, Any]) -> str:
    return fingerprint({**job.settings, **context})


def run_job(
    job: Job,
    model: Any,
    tokenizer: Any,
    scorer: ObjectiveScorer,
    batches: list[Any] | None,
    folder: Path,
    key: str,
    recovery: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Prune a copy of `model`, measure, save; with `recovery` (a method that supports it), also fine-tune the
    pruned model with LoRA, measure and save it as `<method>+lora`. Returns the entries for baselines.json."""
    work = copy.deepcopy(model)
    entries = []
    try:
        pruned = job.method.prune(work, tokenizer, batches if job.method.needs_calibration else None, job.ratio)
        pruned.method = job.name
        entries.append(_score_and_save(pruned, tokenizer, scorer, folder, key, {}))
        if recovery is not None:
            facts = recover(pruned.model, tokenizer, recovery["data"], pruned.sub, **recovery["settings"])
            pruned.method = f"{job.name}+lora"
            entries.append(_score_and_save(pruned, tokenizer, scorer, folder / "recovered", key, {"recovery": facts}))
    finally:
        del work
        gc.collect()
    return entries


def _score_and_save(
    pruned: Pruned, tokenizer: Any, scorer: ObjectiveScorer, folder: Path, key: str, extra: dict[str, Any]
) -> dict[str, Any]:
    start = time.perf_counter()
    values, details = measure(scorer, pruned)
    measure_seconds = time.perf_counter() - start
    saved = save_pruned(pruned, tokenizer, folder / "model")
    entry = {
        "key": key,
        "values": values,
        "details": details,
        "folder": str(saved),
        "measure_seconds": measure_seconds,
        **pruned.summary(),
        **extra,
    }
    write_json(entry, folder / "result.json")
    return entry


def run_baselines(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """The whole job; returns what it writes to `<output_dir>/baselines.json`."""
    out = Path(output_dir)
    jobs, objectives = check_baselines_config(cfg)
    model, tokenizer = instantiate(cfg.model)
    shape = shape_of(model)
    for job in jobs:
        job.method.check(job.ratio, shape)  # a ratio this model cannot reach fails before calibration
    scorer = build_scorer(cfg, model, tokenizer, objectives)
    calibration = cast(CalibrationSet, instantiate(cfg.calibration))
    context = {
        "calibration": plain(cast(dict[str, Any], OmegaConf.to_container(cfg.calibration, resolve=True))),
        "weights": weights_fingerprint(model),
        "objectives": [o.to_dict() for o in objectives],
        "selection": plain(
            {k: cfg.evaluator.get(k) for k in ("limit", "limit_mode", "seed", "items")} if cfg.get("evaluator") else {}
        ),
    }
    reference_values, reference_details = scorer.measure(model, SubNetwork.full(shape))
    recovery = _recovery(cfg)
    batches: list[Any] | None = None
    entries = []
    for job in tqdm(jobs, desc="baselines", unit="model", disable=not cfg.get("progress", True)):
        folder = out / job.folder_name
        recovers = recovery is not None and job.method.supports_recovery
        key = _entry_key(job, context | ({"recovery": recovery["key"]} if recovers and recovery else {}))
        stored = _stored(folder, key, recovers)
        if stored is not None:
            log.info("Baseline %s at ratio %g: done in %s, reusing it.", job.name, job.ratio, folder)
            entries += stored
            continue
        if batches is None and job.method.needs_calibration:
            batches = calibration.batches(tokenizer)
        log.info("Baseline %s at ratio %g (%s) ...", job.name, job.ratio, job.method.ratio_meaning)
        done = run_job(job, model, tokenizer, scorer, batches, folder, key, recovery if recovers else None)
        for entry in done:
            log.info(
                "Baseline %s at ratio %g: %s (pruned in %.1f s)",
                entry["method"],
                job.ratio,
                ", ".join(f"{k}={v:.4g}" for k, v in entry["values"].items()),
                entry["seconds"],
            )
        entries += done
    summary = {
        "objectives": [o.to_dict() for o in objectives],
        "reference": {"values": reference_values, "details": reference_details, "model": _model_name(model)},
        "baselines": entries,
    }
    write_json(summary, out / RESULTS_FILE)
    return summary


def _recovery(cfg: DictConfig) -> dict[str, Any] | None:
    """The recovery fine-tune settings when `recovery.method=lora`, with its data module and cache key."""
    method = _check_recovery_method(cfg)
    if method is None:
        return None
    node = cfg.recovery
    settings = {k: node[k] for k in ("steps", "lr", "r", "alpha", "warmup_steps") if k in node}
    data_settings = OmegaConf.to_container(cfg.data, resolve=True)
    return {
        "settings": settings,
        "data": instantiate(cfg.data),
        "key": plain({"method": method, **settings, "data": data_settings}),
    }


def _stored(folder: Path, key: str, recovered: bool) -> list[dict[str, Any]] | None:
    """The entries of an earlier run of this job with the same key (pruned, and recovered when asked)."""
    files = [folder / "result.json"] + ([folder / "recovered" / "result.json"] if recovered else [])
    if not all(f.is_file() for f in files):
        return None
    stored = [read_json(f, "baseline result", f"delete {folder} to redo it") for f in files]
    return stored if all(e.get("key") == key for e in stored) else None


def _model_name(model: Any) -> str:
    return str(getattr(model.config, "_name_or_path", "") or type(model).__name__)
