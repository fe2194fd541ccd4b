"""The pipeline's confirm stage: the search's front judged on items that did not choose it.

Re-scores the Pareto sub-networks, both references (the pre-trained model as configured, before reordering
and fine-tuning; the fine-tuned super-network's full network) and the baselines stage's models on held-out
items (`confirm.items=confirm`: each task's scored split minus the search's share; by default all of them, or
`confirm.limit` per task) with the search's evaluator settings, and writes:

    <out>/items.json            per task: the search's items and the confirmation's (split, doc indices), overlap
    <out>/results.jsonl         every model's per-item results (an interrupted stage resumes from it)
    <out>/confirmation.json     per model: confirmed accuracy with its 95% interval, search score, optimism,
                                paired difference and p-value against each reference (`nas.search.confirmation`)
    <out>/confirmation.csv      the same, one row per model

Confirmation items that the search also scored are refused unless `confirm.allow_search_items=true`.
"""

from __future__ import annotations

import gc
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM

from nas.errors import NASError
from nas.evaluation.evaluator import Evaluator
from nas.evaluation.intervals import RESAMPLES
from nas.evaluation.registry import load_task
from nas.evaluation.requests import max_length
from nas.evaluation.results import TaskResult
from nas.evaluation.task import Selection
from nas.instantiate import instantiate
from nas.io.atomic import read_json, write_csv, write_json
from nas.search.confirmation import FINETUNED, PRETRAINED, REFERENCES, Candidate, confirm, search_values
from nas.search.objectives import Objective, parse_objectives, task_names
from nas.search.outputs import ITEMS_FILE
from nas.supernet.subnetwork import SubNetwork

log = logging.getLogger(__name__)

RESULT_FILE = "confirmation.json"
CONFIRM_KEYS = frozenset({"items", "limit", "limit_mode", "seed", "allow_search_items", "baselines", "resamples"})


def confirm_selection(cfg: DictConfig) -> Selection:
    """The confirmation's items (`confirm.*`), checked: unknown keys and bad values name the override."""
    node = cfg.get("confirm") or {}
    unknown = sorted(set(node) - CONFIRM_KEYS)
    if unknown:
        raise NASError(
            f"Unknown setting(s) {', '.join(f'confirm.{k}' for k in unknown)}; known: {sorted(CONFIRM_KEYS)}."
        )
    if node.get("items", "confirm") == "search":
        raise NASError("confirm.items=search would judge the front on the items that chose it; use confirm or scored.")
    return Selection(
        node.get("limit"), node.get("limit_mode", "random"), node.get("seed", 0), node.get("items", "confirm")
    )


def check_overlap(search_items: dict[str, Any], confirm_items: dict[str, Any], allowed: bool) -> dict[str, int]:
    """Per task, how many confirmation items the search also scored; any at all fails unless `allowed`."""
    overlap = {}
    for task, confirming in confirm_items.items():
        searched = search_items.get(task)
        if searched is None or searched["split"] != confirming["split"]:
            overlap[task] = 0
        else:
            overlap[task] = len(set(searched["doc_indices"]) & set(confirming["doc_indices"]))
    shared = {t: n for t, n in overlap.items() if n}
    if shared and not allowed:
        raise NASError(
            f"The confirmation items include items the search scored ({shared}): its scores would be optimistic. "
            "Use confirm.items=confirm (held-out items), or confirm.allow_search_items=true to accept it."
        )
    return overlap


class ConfirmRun:
    """One confirmation: the evaluators (search and held-out items) and the candidates scored so far."""

    def __init__(self, cfg: DictConfig, tokenizer: Any, model_config: Any, out_dir: Path) -> None:
        self.cfg = cfg
        self.out = out_dir
        self.objectives: list[Objective] = parse_objectives(cfg.objectives)
        tasks = [load_task(name) for name in task_names(self.objectives)]
        length = max_length(model_config, tokenizer)
        selection = confirm_selection(cfg)
        self.held_out: Evaluator = instantiate(
            cfg.evaluator,
            tasks=tasks,
            tokenizer=tokenizer,
            max_length=length,
            limit=selection.limit,
            limit_mode=selection.mode,
            seed=selection.seed,
            items=selection.items,
            cache_file=str(out_dir / "results.jsonl"),
            progress=True,
        )
        # The search's own items, for the pre-trained model's search score (the study has the others').
        self.search: Evaluator = instantiate(
            cfg.evaluator,
            tasks=tasks,
            tokenizer=tokenizer,
            max_length=length,
            cache_file=str(out_dir / "search_results.jsonl"),
        )
        self.candidates: list[Candidate] = []

    def score(self, model: Any, sub: SubNetwork | None = None) -> dict[str, TaskResult]:
        return self.held_out.evaluate(model, sub, with_items=True)

    def add(self, candidate: Candidate) -> None:
        self.candidates.append(candidate)
        shown = ", ".join(f"{t}={r.score:.4f}" for t, r in candidate.results.items())
        log.info("Confirmed %s on held-out items: %s", candidate.label, shown)


def _pareto(search_dir: Path) -> tuple[list[dict[str, Any]], dict[str, float]]:
    rows = read_json(search_dir / "pareto.json", "Pareto set", f"re-run the search stage ({search_dir})")
    summary = read_json(search_dir / "summary.json", "search summary", f"re-run the search stage ({search_dir})")
    return rows, dict(summary.get("reference") or {})


def _load_folder(folder: str, device: Any, dtype: Any) -> Any:
    remote = "auto_map" in json.loads((Path(folder) / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=remote, dtype=dtype)
    return model.to(device).eval()


def run_confirm(
    cfg: DictConfig,
    supernet_config: DictConfig,
    search_dir: Path,
    out_dir: Path,
    trained: bool,
    baselines: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The stage (see the module's docstring); returns its record."""
    out_dir.mkdir(parents=True, exist_ok=True)
    objectives = parse_objectives(cfg.objectives)
    if not task_names(objectives):
        log.info("Confirm: no accuracy objective, nothing to confirm on held-out items.")
        return {"confirmed": 0, "why": "no accuracy objective"}
    node = cfg.get("confirm") or {}
    pareto, finetuned_values = _pareto(search_dir)
    pretrained_model, tokenizer = instantiate(cfg.model)
    run = ConfirmRun(cfg, tokenizer, pretrained_model.config, out_dir)
    searched = read_json(search_dir / ITEMS_FILE, "search items", f"re-run the search stage ({search_dir})")
    confirming = run.held_out.item_sets()
    overlap = check_overlap(
        searched, {t: s.to_dict() for t, s in confirming.items()}, bool(node.get("allow_search_items", False))
    )
    write_json(
        {t: {"search": searched.get(t), "confirm": confirming[t].to_dict(), "overlap": overlap[t]} for t in confirming},
        out_dir / "items.json",
    )

    pre_search = search_values(run.search.evaluate(pretrained_model), objectives)
    cost_names = [o.name for o in objectives if o.kind != "accuracy"]
    full_costs = {k: finetuned_values[k] for k in cost_names if k in finetuned_values}
    run.add(
        Candidate(PRETRAINED, "reference", REFERENCES[PRETRAINED], full_costs | pre_search, run.score(pretrained_model))
    )
    param = next(pretrained_model.parameters())
    device, dtype = param.device, param.dtype
    del pretrained_model
    gc.collect()

    model, _ = instantiate(supernet_config)
    if trained:  # without fine-tuning the full network computes what the pre-trained model does
        run.add(Candidate(FINETUNED, "reference", REFERENCES[FINETUNED], dict(finetuned_values), run.score(model)))
    for row in tqdm(pareto, desc="confirm Pareto set", unit="sub-network"):
        sub = SubNetwork.from_dict(row["subnetwork"])
        values = {o.name: float(row[o.name]) for o in objectives}
        run.add(
            Candidate(
                f"trial_{row['number']}",
                "subnetwork",
                f"trial {row['number']}",
                values,
                run.score(model, sub),
                trial=int(row["number"]),
                subnetwork=row["subnetwork"],
            )
        )
    del model
    gc.collect()
    for entry in (baselines or []) if node.get("baselines", True) else []:
        pruned = _load_folder(entry["folder"], device, dtype)
        name = f"{entry['method']} {entry['ratio']:g}"
        run.add(
            Candidate(
                f"{entry['method']}_r{entry['ratio']:g}",
                "baseline",
                name,
                dict(entry["values"]),
                run.score(pruned),
                extra={"method": entry["method"], "ratio": entry["ratio"]},
            )
        )
        del pruned
        gc.collect()

    records = confirm(run.candidates, objectives, int(node.get("resamples", RESAMPLES)), int(node.get("seed", 0)))
    result = {
        "objectives": [o.to_dict() for o in objectives],
        "selection": {
            "items": run.held_out.selection.items,
            "limit": run.held_out.selection.limit,
            "limit_mode": run.held_out.selection.mode,
            "seed": run.held_out.selection.seed,
        },
        "items": {
            t: {"split": c.split, "count": len(c.doc_indices), "overlap_with_search": overlap[t]}
            for t, c in confirming.items()
        },
        "candidates": records,
    }
    write_json(result, out_dir / RESULT_FILE)
    write_csv([flat_row(r, objectives) for r in records], out_dir / "confirmation.csv")
    return {"confirmed": len(records), "file": str(out_dir / RESULT_FILE), "items": result["items"]}


def flat_row(record: dict[str, Any], objectives: list[Objective]) -> dict[str, Any]:
    """One CSV row of a confirmation record."""
    row: dict[str, Any] = {k: record[k] for k in ("id", "kind", "label", "trial")}
    for o in objectives:
        if o.kind != "accuracy":
            row[o.name] = record["values"].get(o.name)
            continue
        c = record["confirmed"][o.name]
        row |= {
            f"{o.name}.search": record["search_values"].get(o.name),
            f"{o.name}.confirmed": c["value"],
            f"{o.name}.low": c["low"],
            f"{o.name}.high": c["high"],
            f"{o.name}.n": c["n"],
            f"{o.name}.optimism": record["optimism"].get(o.name),
        }
        for ref, versus in record["versus"].items():
            row |= {
                f"{o.name}.vs_{ref}": versus[o.name]["difference"],
                f"{o.name}.vs_{ref}.p": versus[o.name]["p_value"],
            }
    return row
