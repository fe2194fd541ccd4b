"""`python -m nas.evaluate`: score one sub-network of the super-network on lm-eval tasks, in place.

    python -m nas.evaluate model=smollm2_135m subnet=smallest task=arc_easy limit=200
    python -m nas.evaluate subnet=random:3 'task=[arc_easy,mmlu,truthfulqa_mc2]' limit=50 speed=null
    python -m nas.evaluate 'task=[gsm8k,wikitext,lambada_openai]' limit=20   # any lm-eval task by name

Loads the model, activates the sub-network (`full|largest|smallest|random:<seed>|<path.json>`, the
search space resolving the named ones), scores it on every selected task exactly as lm-eval 0.4.13
would, adds its analytic cost (parameters, size, FLOPs) and its measured prefill/decode speed, prints a
table and writes `results.json` under the run directory (`multirun_outputs/<name>/<time>/`): our per-task
results (`tasks`) and, beside them, lm-eval's layout (`results`, `groups`, `configs`, `versions`, `n-shot`,
`higher_is_better`, `n-samples`, `config`) that lm-eval's tooling and W&B's lm-eval views read.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from nas.analysis.tables import Column, format_table
from nas.evaluation.registry import build_tasks
from nas.evaluation.requests import max_length
from nas.evaluation.task import Selection
from nas.export.speed import measure_exported
from nas.instantiate import instantiate
from nas.io.atomic import write_json
from nas.supernet.metrics import sub_network_cost
from nas.supernet.named import check_spec, select_sub_network
from nas.supernet.search_space import SearchSpace

log = logging.getLogger(__name__)

TABLE = (
    Column("task", "task"),
    Column("metric", "metric"),
    Column("score", "score", ".4f"),
    Column("stderr", "stderr", ".4f"),
    Column("num_items", "items"),
    Column("seconds", "seconds", ".1f"),
    Column("forward_share", "in forward", ".1%"),
)


def run_evaluation(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """The whole job; returns what it writes to `output_dir/results.json`."""
    # Cheap checks first, so a typo fails before the model loads.
    spec = check_spec(cfg.subnet)
    selection = Selection.from_config(cfg.get("evaluator"))
    tasks = build_tasks(cfg.task)
    for task in tasks:  # missing or malformed data fails here, before the model loads
        task.prefetch(cfg.evaluator.data_dir, selection.items)
    meter = instantiate(cfg.speed) if cfg.get("speed") is not None else None

    model, tokenizer = instantiate(cfg.model)
    space_cfg = cast(dict[str, Any], OmegaConf.to_container(cfg.search_space, resolve=True))
    sub = select_sub_network(spec, SearchSpace.from_config(space_cfg, model.config))
    log.info("Sub-network %s: %s", spec, sub.describe())

    start = time.perf_counter()
    evaluator = instantiate(
        cfg.evaluator, tasks=tasks, tokenizer=tokenizer, max_length=max_length(model.config, tokenizer)
    )
    build_seconds = time.perf_counter() - start
    results = evaluator.evaluate(model, sub)
    speed = exported_speed = None
    if meter is not None:
        with model.sub_network(sub):
            speed = meter.measure(model).to_dict()
        if cfg.get("speed_exported"):
            exported_speed = measure_exported(meter, model, sub).to_dict()
    seq_len = meter.prompt_len if meter is not None else 128
    rows = [
        {**r.to_dict(), "stderr": r.metrics.get(f"{r.metric}_stderr")} | {"groups": r.groups} for r in results.values()
    ]
    log.info("\n%s", format_table(rows, TABLE))
    for label, measured in (("live", speed), ("exported", exported_speed)):
        if measured is not None:
            tokens_per_s = (measured["prefill_tokens_per_s"], measured["decode_tokens_per_s"])
            log.info("%s sub-network: prefill %.0f tokens/s, decode %.1f tokens/s", label, *tokens_per_s)
    output = {
        "model": str(getattr(model.config, "_name_or_path", "")),
        "subnet": spec,
        "subnetwork": sub.to_dict(),
        "description": sub.describe(),
        "cost": sub_network_cost(model.shape, sub, seq_len).to_dict() | {"seq_len": seq_len},
        "selection": {
            "limit": evaluator.selection.limit,
            "mode": evaluator.selection.mode,
            "seed": evaluator.selection.seed,
        },
        "tasks": {name: r.to_dict() for name, r in results.items()},
        "speed": speed,
        "speed_exported": exported_speed,
        "build_seconds": build_seconds,
    }
    model_name = output["model"] or str(cfg.model.get("name", ""))
    output |= evaluator.lm_eval_results(results, {"model": model_name, "subnet": spec})
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = write_json(output, output_dir / "results.json")
    log.info("Results in %s", path)
    return output
