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
import time
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import DictConfig, OmegaConf

from nas.errors import NASError, SearchConfigError
from nas.io.atomic import disk_full
from nas.io.host_memory import apply_host_settings
from nas.io.secrets import redact_url
from nas.search.context import SearchContext, prepare
from nas.search.optuna_compat import claim_study_attr
from nas.search.outputs import hypervolume_rows, write_outputs
from nas.search.study import REFERENCE_ATTR, storage_url, worker_id
from nas.search.tracking import SearchTracker
from nas.search.trials import evaluated_by_key, non_finite
from nas.search.worker import run_worker

log = logging.getLogger(__name__)


def _refuse_non_finite_reference(ctx: SearchContext, values: dict[str, float]) -> None:
    bad = non_finite(values)
    if bad:
        model = getattr(ctx.model.config, "_name_or_path", "") or type(ctx.model).__name__
        raise SearchConfigError(
            f"The unmodified model ({model}) scores {', '.join(f'{k}={v}' for k, v in bad.items())}: no sub-network "
            "can be compared with it, so the search stops before it starts. Check the model's weights (a NaN or "
            "infinite value?), its dtype (fp16 overflow?) and the evaluation data; nothing was stored."
        )


def evaluate_reference(ctx: SearchContext) -> dict[str, float]:
    """The unmodified model's values, evaluated once per study and stored with it; a NaN or infinite
    value stops the search before it starts (it would make every comparison meaningless)."""
    stored = ctx.study.user_attrs.get(REFERENCE_ATTR)
    if stored:
        _refuse_non_finite_reference(ctx, stored["values"])
        return dict(stored["values"])
    start = time.perf_counter()
    values, details = ctx.scorer(None)
    _refuse_non_finite_reference(ctx, values)
    record = {"values": values, "details": details, "seconds": time.perf_counter() - start}
    ctx.study.set_user_attr(REFERENCE_ATTR, record)
    log.info("Reference (the full network of the model searched): %s", _fmt(values))
    return values


def _fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in values.items())


def _worker_process(cfg_yaml: str, output_dir: str, worker_index: int, ready: Any) -> None:
    """Entry of an extra worker process (spawned): the same job, without the reference and outputs."""
    logging.basicConfig(level=logging.INFO, format=f"[worker {worker_index}] %(levelname)s %(name)s: %(message)s")
    cfg = cast(DictConfig, OmegaConf.create(cfg_yaml))
    apply_host_settings(cfg)  # a spawned process starts afresh
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


OUTPUTS_CLAIM = "nas_outputs_written"


def outputs_writer(ctx: SearchContext, output_dir: Path) -> dict[str, Any] | None:
    """None when this worker writes the study's outputs, else who did.

    With the default storage (a SQLite file in this run directory) the study is this run's: it writes. With
    `search.storage` set, independent workers (other machines, other run directories) may share the study:
    the first to finish once the budget is met claims the outputs (an atomic insert in the study database), so
    they are written once, by whichever worker finished last.
    """
    if not ctx.cfg.search.storage:
        return None
    count = len(evaluated_by_key(ctx.study))
    claim = {"worker": worker_id(), "run_dir": str(Path(output_dir).resolve()), "evaluations": count}
    key = f"{OUTPUTS_CLAIM}:{count}"
    if claim_study_attr(ctx.study, key, claim):
        return None
    return dict(ctx.study.user_attrs.get(key) or {"worker": "another worker", "run_dir": "its run directory"})


def run_search(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """The whole job; returns the summary it writes to `summary.json`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    _set_threads(cfg)
    ctx = prepare(cfg, output_dir)
    before = len(evaluated_by_key(ctx.study))
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
        run_facts = {
            "evaluated_this_run": len(evaluated_by_key(ctx.study)) - before,
            "storage": redact_url(storage_url(cfg.search.storage, output_dir)),
        }
        writer = outputs_writer(ctx, output_dir)
        summary = write_outputs(ctx.study, ctx.objectives, ctx.encoding, output_dir, run_facts, write=writer is None)
        if writer is not None:
            log.info(
                "Study %r is complete; its outputs are written by the worker that finished last (%s, in %s). To write "
                "a report here: python -m nas.analyze run_dir=%s analysis.storage=<the URL> analysis.study_name=%s",
                ctx.study.study_name,
                writer["worker"],
                writer["run_dir"],
                output_dir,
                ctx.study.study_name,
            )
            return summary | {"outputs_written_by": writer}
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
    except BaseException as exc:
        # Whatever completed is in the database; write what there is so it can be inspected (not on a
        # full disk: the earlier outputs stay as they are, and the error says what to free).
        if disk_full(exc) is None:
            try:
                write_outputs(ctx.study, ctx.objectives, ctx.encoding, output_dir)
            except Exception as again:  # best effort on the way out
                log.warning("Could not write the partial outputs: %s", again)
        raise
    finally:
        tracker.finish()
