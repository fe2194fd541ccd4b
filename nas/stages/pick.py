"""From a finished search to a deployable model: the best sub-network within a budget, exported with its card.

    python -m nas.pick run_dir=multirun_outputs/quickstart/run 'budget={size_gb: 0.2, latency_ms: 30}' metric=mean
    python -m nas.pick run_dir=... budget.size_gb=0.15 format=gguf gguf.type=q8_0

Candidates are the search's real evaluations that met its constraints. A budget on `size_gb` (in the format
exported, see `size_format`) or `params` is checked analytically; `latency_ms` (one decode step of the speed
config, batch 1 by default) is measured here, on this machine, best candidate first, until one fits. The score
is the confirmed (held-out) one when the run has a confirmation covering a candidate within budget (then only
confirmed candidates compete), else the search's own score (said so on the card). The choice is exported
(Hugging Face folder, quantized folder, or GGUF file) with `README.md` (the model card) and `pick.json`
(every candidate considered and why it was or was not chosen).
"""

from __future__ import annotations

import logging
import shutil
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import gguf
from omegaconf import DictConfig, OmegaConf

from nas.analysis.run import Evaluation, RunData, load_run
from nas.analysis.search_intervals import search_interval
from nas.errors import NASError
from nas.evaluation.intervals import wilson
from nas.evaluation.speed import ThroughputMeter
from nas.export.gguf import architecture, export_gguf
from nas.export.model_card import (
    CardFacts,
    ScoreLine,
    folder_license,
    hardware_description,
    package_license,
    write_card,
)
from nas.export.standalone import export_record, export_sub_network
from nas.instantiate import instantiate
from nas.io.atomic import read_json, write_json
from nas.io.folders import check_output_folder, publish_folder
from nas.models import model_config
from nas.models.gguf_cache import package_folder
from nas.models.placement import torch_dtype
from nas.quantization.config import QuantizationConfig
from nas.quantization.quantize import quantize_sub_network, save_quantized
from nas.search.objectives import Objective
from nas.supernet.metrics import sub_network_cost
from nas.supernet.subnetwork import EXPORT_RECORD, ModelShape, SubNetwork

log = logging.getLogger(__name__)

BUDGET_KEYS = ("size_gb", "params", "latency_ms")
FORMATS = ("hf", "gguf")
_DTYPE_NAMES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


class PickError(NASError):
    """No sub-network can be picked as asked (the message says what to change)."""


# --- sizes --------------------------------------------------------------------------------------


def format_size_gb(shape: ModelShape, sub: SubNetwork, fmt: str) -> float:
    """Analytic size of `sub` stored in `fmt`: fp32 | fp16 | bf16 | int8 (LLM.int8, 16-bit rest) | nf4 (4-bit
    linears with an fp32 absmax per 64 weights, 16-bit rest) | q8_0 | f16 (GGUF: every matrix in the type,
    norms in fp32)."""
    cost = sub_network_cost(shape, sub)
    if fmt in cost.size_bytes:
        return cost.size_gb(fmt)
    norms = cost.non_embedding_params - cost.linear_params
    matrices = cost.params - norms
    if fmt == "nf4":
        return (cost.linear_params * (0.5 + 4 / 64) + (cost.params - cost.linear_params) * 2) / 1e9
    if fmt == "q8_0":
        return (matrices * 34 / 32 + norms * 4) / 1e9
    if fmt == "f16":
        return (matrices * 2 + norms * 4) / 1e9
    raise PickError(f"size format {fmt!r} is unknown; use one of fp32, fp16, bf16, int8, nf4, q8_0, f16.")


def size_format(cfg: DictConfig) -> str:
    """The format `budget.size_gb` is measured in: `size_dtype` when set, else the one exported."""
    if cfg.get("size_dtype"):
        return str(cfg.size_dtype)
    if cfg.format == "gguf":
        return str(cfg.gguf.type)
    method = (cfg.get("quantization") or {}).get("method", "none")
    if method != "none":
        return str(method)
    return _DTYPE_NAMES[str(cfg.dtype)]


def parse_budget(node: Any) -> dict[str, float]:
    budget = cast(dict[str, Any], OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node)
    budget = {k: v for k, v in (budget or {}).items() if v is not None}
    unknown = sorted(set(budget) - set(BUDGET_KEYS))
    if unknown:
        raise PickError(f"budget keys {unknown} are unknown; a budget bounds {list(BUDGET_KEYS)}.")
    try:
        return {k: float(v) for k, v in budget.items()}
    except (TypeError, ValueError):
        raise PickError(f"budget values must be numbers, got {budget}.") from None


# --- scores -------------------------------------------------------------------------------------


def accuracy_tasks(objectives: Sequence[Objective]) -> list[str]:
    return list(dict.fromkeys(t for o in objectives if o.kind == "accuracy" for t in o.tasks))


def check_metric(metric: str | None, objectives: Sequence[Objective]) -> str:
    """`metric` resolved: an objective's name, a task of an accuracy objective, or `mean` (of those tasks)."""
    names = [o.name for o in objectives]
    tasks = accuracy_tasks(objectives)
    if metric is None:
        first = next((o for o in objectives if o.kind == "accuracy"), None)
        if first is None:
            raise PickError(f"The study has no accuracy objective; name the metric to pick by (metric=one of {names}).")
        return first.name
    if metric in names or metric in tasks or (metric == "mean" and tasks):
        return metric
    raise PickError(f"metric={metric!r} is not in the study; choose one of {[*names, *tasks, 'mean']}.")


def _confirmed_task(record: Mapping[str, Any], task: str) -> dict[str, Any] | None:
    entry = (record.get("tasks") or {}).get(task)
    return None if entry is None else entry["metrics"].get(entry["metric"])


def _search_task(e: Evaluation, task: str) -> ScoreLine | None:
    value, n = e.details.get(f"{task}.score"), e.details.get(f"{task}.n")
    if value is None:
        return None
    low = high = None
    if n and e.details.get(f"{task}.proportion") is not False:
        interval = wilson(float(value) * int(n), int(n))
        low, high = interval.low, interval.high
    return ScoreLine(task, float(value), low, high, int(n) if n else None, "search items")


def task_scores(e: Evaluation, record: Mapping[str, Any] | None, tasks: Sequence[str]) -> list[ScoreLine]:
    """Each task's score of an evaluation: confirmed on held-out items when `record` is its confirmation."""
    lines = []
    for task in tasks:
        confirmed = _confirmed_task(record, task) if record is not None else None
        if confirmed is not None:
            lines.append(
                ScoreLine(
                    task, confirmed["value"], confirmed["low"], confirmed["high"], confirmed["n"], "held-out items"
                )
            )
        elif (line := _search_task(e, task)) is not None:
            lines.append(line)
    return lines


def metric_score(
    metric: str, e: Evaluation, record: Mapping[str, Any] | None, run: RunData
) -> tuple[float, float | None, float | None, int | None]:
    """(value, low, high, items) of `metric` for an evaluation, confirmed when `record` is given; higher is better
    for objectives to maximise, else the value is negated by the caller's sign."""
    tasks = accuracy_tasks(run.objectives)
    objective = next((o for o in run.objectives if o.name == metric), None)
    if objective is not None and objective.kind == "accuracy" and record is not None:
        c = record["confirmed"][metric]
        return c["value"], c["low"], c["high"], c["n"]
    if objective is not None:
        interval = search_interval(objective, e.details)
        n = sum(int(e.details.get(f"{t}.n") or 0) for t in objective.tasks) or None
        return e.values[metric], *(interval or (None, None)), n
    lines = task_scores(e, record, tasks if metric == "mean" else [metric])
    if metric != "mean":
        line = lines[0]
        return line.value, line.low, line.high, line.n
    return statistics.fmean(line.value for line in lines), None, None, sum(line.n or 0 for line in lines) or None


# --- candidates ---------------------------------------------------------------------------------


@dataclass
class Candidate:
    """A searched sub-network with what the pick knows of it."""

    trial: int
    sub: SubNetwork
    score: float
    low: float | None
    high: float | None
    n: int | None
    source: str
    size_gb: float
    params: int
    latency_ms: float | None = None
    speed: dict[str, Any] | None = None
    verdict: str = "not considered"
    scores: list[ScoreLine] = field(default_factory=list)
    tiebreak: tuple[float, ...] = ()  # the study's other objectives, better first, for equal scores and sizes

    def row(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "description": self.sub.describe(),
            "score": self.score,
            "interval": [self.low, self.high],
            "items": self.n,
            "scored_on": self.source,
            "size_gb": self.size_gb,
            "params": self.params,
            "latency_ms": self.latency_ms,
            "verdict": self.verdict,
        }


def candidates(run: RunData, metric: str, shape: ModelShape, fmt: str) -> tuple[list[Candidate], str]:
    """Every feasible evaluation as a candidate, best first, and how they were scored."""
    confirmed = {
        r["trial"]: r for r in (run.confirmation.records if run.confirmation else []) if isinstance(r.get("trial"), int)
    }
    objective = next((o for o in run.objectives if o.name == metric), None)
    sign = -1.0 if objective is not None and not objective.maximize else 1.0
    out = []
    for e in run.evaluations:
        if e.subnetwork is None:
            continue
        record = confirmed.get(e.number)
        value, low, high, n = metric_score(metric, e, record, run)
        cost = sub_network_cost(shape, e.subnetwork)
        out.append(
            Candidate(
                e.number,
                e.subnetwork,
                value,
                low,
                high,
                n,
                "held-out items" if record is not None else "search items",
                format_size_gb(shape, e.subnetwork, fmt),
                cost.params,
                scores=task_scores(e, record, accuracy_tasks(run.objectives)),
                tiebreak=tuple(
                    -e.values[o.name] if o.maximize else e.values[o.name] for o in run.objectives if o.name != metric
                ),
            )
        )
    out.sort(key=lambda c: (-sign * c.score, c.size_gb, c.tiebreak, c.trial))
    how = "confirmed scores on held-out items" if confirmed else "search scores (no confirmation in this run)"
    return out, how


def choose(
    pool: list[Candidate],
    budget: Mapping[str, float],
    measure: Any,
    max_timed: int,
) -> Candidate:
    """The first candidate (best first) within the budget; latency is measured only for those within the
    analytic bounds, in order, at most `max_timed` of them."""
    timed = 0
    for c in pool:
        if c.size_gb > budget.get("size_gb", float("inf")):
            c.verdict = f"over budget: size {c.size_gb * 1000:.1f} MB"
            continue
        if c.params > budget.get("params", float("inf")):
            c.verdict = f"over budget: {c.params:,} parameters"
            continue
        if "latency_ms" in budget:
            if timed >= max_timed:
                c.verdict = "not timed (max_timed reached)"
                continue
            c.speed = measure(c.sub)
            c.latency_ms = c.speed["latency_ms"]
            timed += 1
            if c.latency_ms > budget["latency_ms"]:
                c.verdict = f"over budget: {c.latency_ms:.2f} ms per decode step"
                continue
        c.verdict = "chosen"
        return c
    smallest = min(pool, key=lambda c: c.size_gb, default=None)
    fastest = min((c for c in pool if c.latency_ms is not None), key=lambda c: c.latency_ms or 0.0, default=None)
    facts = []
    if smallest is not None:
        facts.append(f"the smallest evaluated is {smallest.size_gb * 1000:.1f} MB with {smallest.params:,} parameters")
    if fastest is not None:
        facts.append(f"the fastest timed takes {fastest.latency_ms:.2f} ms per decode step")
    raise PickError(
        f"No evaluated sub-network meets the budget {dict(budget)} ({'; '.join(facts) or 'no candidates'}). Loosen the "
        "budget, or search under it (constraints=[...], see the README's deploy section). Nothing was exported."
    )


# --- the job ------------------------------------------------------------------------------------


def run_config(run_dir: Path, search_dir: Path) -> tuple[DictConfig, DictConfig]:
    """The run's own Hydra config with the model the search searched (a pipeline's trained super-network), and
    the base model's config as the run named it."""
    for base in (run_dir, search_dir, search_dir.parent):
        path = base / ".hydra" / "config.yaml"
        if path.is_file():
            cfg = cast(DictConfig, OmegaConf.load(path))
            break
    else:
        raise PickError(f"{run_dir} holds no .hydra/config.yaml: pick needs the run's settings to load its model.")
    base_model = cfg.model
    for stage, key in (("train", "supernet"), ("reorder", "folder")):
        record = base / stage / "stage.json"
        if record.is_file():
            folder = (read_json(record, f"{stage} stage record", f"delete {record.parent}").get("result") or {}).get(
                key
            )
            if folder:
                placement = {k: cfg.model[k] for k in ("device", "dtype") if k in cfg.model}
                cfg.model = model_config(str(folder), **placement)
                break
    return cfg, base_model


def search_command(run_dir: Path, search_dir: Path) -> str | None:
    """The command that ran the search (or pipeline), from the run's `.hydra/overrides.yaml`."""
    for base in (run_dir, search_dir, search_dir.parent):
        overrides = base / ".hydra" / "overrides.yaml"
        if overrides.is_file():
            entry = "nas.pipeline" if (base / "pipeline.json").is_file() else "nas.search"
            args = [str(a) for a in (OmegaConf.load(overrides) or [])]
            return " ".join(["python -m", entry, *(f"'{a}'" if " " in a else a for a in args)])
    return None


def base_model_and_license(model_cfg: DictConfig) -> tuple[str, str]:
    """The base model's name and license, from the model config (a package's metadata, a folder's card)."""
    if model_cfg.get("package"):
        name = f"{model_cfg.package} ({model_cfg.get('gguf_file')})"
        return name, package_license(str(model_cfg.package)) or "unknown (see the package)"
    path = str(model_cfg.get("name_or_path") or model_cfg.get("_target_"))
    return path, folder_license(path) or f"see {path}"


def gguf_pre_tokenizer(cfg: DictConfig, model_cfg: DictConfig) -> tuple[str, str | None]:
    """llama.cpp's pre-tokenizer name: configured, else the source GGUF's (the embedded model), else `default`."""
    if cfg.gguf.get("pre_tokenizer"):
        return str(cfg.gguf.pre_tokenizer), None
    if model_cfg.get("package") and model_cfg.get("gguf_file"):
        reader = gguf.GGUFReader(str(package_folder(str(model_cfg.package)) / str(model_cfg.gguf_file)))
        field_ = reader.get_field("tokenizer.ggml.pre")
        if field_ is not None:
            return str(field_.contents()), None
    return "default", (
        "The GGUF's pre-tokenizer is llama.cpp's generic `default`: set gguf.pre_tokenizer=<llama.cpp name, e.g. "
        "llama-bpe> for the base model's exact tokenization."
    )


def _speed_meter(cfg: DictConfig) -> ThroughputMeter | None:
    return None if cfg.get("speed") is None else cast(ThroughputMeter, instantiate(cfg.speed))


def deploy(
    cfg: DictConfig,
    run_dir: Path,
    out_dir: Path,
    model_cfg: DictConfig | None = None,
    base_model_cfg: DictConfig | None = None,
) -> dict[str, Any]:
    """Pick within `cfg.budget`, export to `out_dir` with its card; returns what `pick.json` records.

    `model_cfg` is the super-network searched and `base_model_cfg` the pre-trained model it came from (both read
    from the run's own config when not given)."""
    budget = parse_budget(cfg.get("budget"))
    if cfg.format not in FORMATS:
        raise PickError(f"format={cfg.format!r} is not one of {list(FORMATS)}.")
    quantization = QuantizationConfig.coerce(
        OmegaConf.to_container(cfg.quantization, resolve=True) if cfg.get("quantization") else "none"  # type: ignore[arg-type]
    )
    if cfg.format == "gguf" and quantization.enabled:
        raise PickError(
            "GGUF files carry their own quantization (gguf.type=q8_0); set quantization=none with format=gguf."
        )
    if "latency_ms" in budget and cfg.get("speed") is None:
        raise PickError("A latency budget is measured with the speed config; do not set speed=null.")
    overwrite = bool(cfg.get("overwrite", False))
    check_output_folder(out_dir, overwrite)  # refused before any model loads
    run = load_run(run_dir)
    metric = check_metric(cfg.get("metric"), run.objectives)
    if model_cfg is None:
        saved, base_model_cfg = run_config(run_dir, run.search_dir)
        model_cfg = saved.model
    base_model_cfg = base_model_cfg if base_model_cfg is not None else model_cfg
    model, tokenizer = instantiate(model_cfg)
    fmt = size_format(cfg)
    pool, how = candidates(run, metric, model.shape, fmt)
    notes = []
    if how.startswith("confirmed"):
        confirmed = [c for c in pool if c.source == "held-out items"]
        within = [
            c
            for c in confirmed
            if c.size_gb <= budget.get("size_gb", float("inf")) and c.params <= budget.get("params", float("inf"))
        ]
        if within:
            for c in pool:
                if c.source != "held-out items":
                    c.verdict = "not confirmed (only confirmed sub-networks compete)"
            pool = confirmed
        else:
            how = "search scores (no confirmed sub-network within the budget)"
    if how.startswith("search"):
        notes.append(
            "Scores are the search's own, on the items that chose the sub-network: optimistic. Run the pipeline's "
            "confirm stage for held-out scores."
        )
    meter = _speed_meter(cfg)

    def measure(sub: SubNetwork) -> dict[str, Any]:
        assert meter is not None
        with model.sub_network(sub):
            speed = meter.measure(model)
        latency = 1000.0 * meter.batch_size / speed.decode_tokens_per_s if speed.decode_tokens_per_s else float("inf")
        return {
            "prefill_tokens_per_s": speed.prefill_tokens_per_s,
            "decode_tokens_per_s": speed.decode_tokens_per_s,
            "latency_ms": latency,
            "batch_size": meter.batch_size,
            "prompt_len": meter.prompt_len,
            "new_tokens": meter.new_tokens,
            "repeats": meter.repeats,
        }

    chosen = choose(pool, budget, measure, int(cfg.get("max_timed", 20)))
    if metric not in {line.name for line in chosen.scores}:  # an objective, or the mean: on the card too
        objective = next((o for o in run.objectives if o.name == metric), None)
        percent = objective is None or objective.kind == "accuracy"
        line = ScoreLine(metric, chosen.score, chosen.low, chosen.high, chosen.n, chosen.source, percent)
        chosen.scores = [line, *chosen.scores]
    if chosen.speed is None and meter is not None:
        chosen.speed = measure(chosen.sub)
        chosen.latency_ms = chosen.speed["latency_ms"]
    log.info(
        "Picked trial %d (%s): %s %.4g on %s, %.1f MB as %s%s",
        chosen.trial,
        chosen.sub.describe(),
        metric,
        chosen.score,
        chosen.source,
        chosen.size_gb * 1000,
        fmt,
        f", {chosen.latency_ms:.2f} ms per decode step" if chosen.latency_ms is not None else "",
    )
    base_model, license_ = base_model_and_license(base_model_cfg)
    if base_model_cfg is not model_cfg:
        notes.append(f"Searched in the super-network fine-tuned from the base model: {model_cfg.get('name_or_path')}.")
    record = {
        "run_dir": str(run_dir),
        "study": run.study_name,
        "metric": metric,
        "scored_by": how,
        "budget": budget,
        "size_format": fmt,
        "chosen": chosen.row(),
        "candidates": [c.row() for c in pool],
    }
    pre, pre_note = gguf_pre_tokenizer(cfg, base_model_cfg) if cfg.format == "gguf" else ("", None)
    if pre_note:
        notes.append(pre_note)
    cost = sub_network_cost(model.shape, chosen.sub)
    footprints = {f: format_size_gb(model.shape, chosen.sub, f) for f in ("fp32", "bf16", "int8", "nf4", "q8_0")}
    facts = CardFacts(
        title=f"{Path(str(base_model)).name} sub-network (trial {chosen.trial})",
        base_model=base_model,
        license=license_,
        sub=chosen.sub,
        architecture="",
        params=cost.params,
        footprints={
            ("GGUF " if f == "q8_0" else "") + f + (" (estimate)" if f == "nf4" else ""): v
            for f, v in footprints.items()
        },
        files={},
        speed=chosen.speed,
        hardware=hardware_description(next(model.parameters()).device),
        scores=chosen.scores,
        metric=f"{metric} = {chosen.score:.4f} ({how})",
        budget=budget,
        decision=(
            f"the best of {len(pool)} candidates by {metric} within the budget "
            f"({sum(c.verdict.startswith('over') for c in pool)} over it)."
        ),
        command="python -m nas.pick " + " ".join(sys.argv[1:]) if sys.argv[0].endswith(("pick.py", "nas-pick")) else "",
        config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
        load_snippet="",
        trial=chosen.trial,
        study=run.study_name,
        notes=notes,
    )
    if not facts.command:
        facts.command = (
            f"python -m nas.pick run_dir={run_dir} 'budget={dict(budget)}' metric={metric} format={cfg.format}"
        )
    searched_by = search_command(run_dir, run.search_dir)
    if searched_by:
        facts.command = f"{searched_by}\n{facts.command}"

    def finish(folder: Path) -> None:
        facts.files = {
            p.name: p.stat().st_size / 1e9 for p in sorted(folder.iterdir()) if p.suffix in (".safetensors", ".gguf")
        }
        write_card(facts, folder)
        write_json(record, folder / "pick.json")

    metadata = {"trial": chosen.trial, "selected_as": [f"pick: {budget}"], "score": chosen.score, "metric": metric}
    if cfg.format == "gguf":
        name = f"model-{cfg.gguf.type}.gguf"
        facts.architecture = f"{architecture(chosen.sub)} (GGUF {cfg.gguf.type})"
        facts.load_snippet = (
            f"# llama.cpp: llama-cli -m {name} -p 'Hello'\n# Ollama: a Modelfile with `FROM ./{name}`, then ollama create"
            + (
                f"\nfrom transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained('.', gguf_file='{name}')"
                if chosen.sub.is_uniform
                else ""
            )
        )

        def write(folder: Path) -> None:
            export_gguf(model, chosen.sub, folder / name, tokenizer, str(cfg.gguf.type), pre, facts.title)
            (folder / name).chmod(0o644)  # a file to hand to other users and servers
            write_json(export_record(chosen.sub, metadata), folder / EXPORT_RECORD)
            finish(folder)

        folder = publish_folder(out_dir, write, overwrite)
    elif quantization.enabled:
        work = out_dir.parent / f".{out_dir.name}.quantize-work"
        quantized = quantize_sub_network(model, chosen.sub, tokenizer, quantization, work)
        assert quantized is not None
        facts.architecture = f"{type(quantized.model).__name__} ({quantization.method}, bitsandbytes)"
        facts.footprints[f"{quantization.method} as loaded (measured)"] = quantized.footprint_bytes / 1e9
        remote = "" if chosen.sub.is_uniform else ", trust_remote_code=True"
        facts.load_snippet = (
            f"from transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained('.'{remote})"
        )
        try:
            folder = save_quantized(quantized, out_dir, overwrite, finish)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    else:
        dtype = torch_dtype(str(cfg.dtype))
        remote = "" if chosen.sub.is_uniform else ", trust_remote_code=True"
        facts.architecture = (
            "Llama (Hugging Face)" if chosen.sub.is_uniform else "NasLlama, per-layer widths (remote code)"
        )
        facts.load_snippet = (
            f"from transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained('.'{remote})"
        )
        folder = export_sub_network(model, chosen.sub, out_dir, tokenizer, dtype, metadata, overwrite, finish)
    log.info("Deployable model and its card in %s", folder)
    return record | {"folder": str(folder)}


def pick_settings(pipeline_cfg: DictConfig) -> DictConfig:
    """The pick's settings for the pipeline's `export.budget`: its export settings, the run's speed meter at batch 1,
    quantized like the other exports when `export.quantized` (Hugging Face format only)."""
    export = pipeline_cfg.export
    fmt = str(export.get("format", "hf"))
    quantized = bool(export.get("quantized")) and fmt == "hf" and pipeline_cfg.get("quantization") is not None
    speed = pipeline_cfg.get("speed")
    return cast(
        DictConfig,
        OmegaConf.create(
            {
                "budget": OmegaConf.to_container(export.budget, resolve=True),
                "metric": export.get("metric"),
                "format": fmt,
                "dtype": str(export.dtype),
                "size_dtype": None,
                "gguf": OmegaConf.to_container(export.gguf, resolve=True) if export.get("gguf") else {"type": "q8_0"},
                "max_timed": 20,
                "quantization": OmegaConf.to_container(pipeline_cfg.quantization, resolve=True) if quantized else None,
                "speed": None if speed is None else {**OmegaConf.to_container(speed, resolve=True), "batch_size": 1},  # type: ignore[dict-item]
                "overwrite": True,  # the stage's own folder
            }
        ),
    )


def run_pick(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """`python -m nas.pick`: `deploy` from `cfg.run_dir` into `cfg.out_dir` (default `<run_dir>/deploy`)."""
    if not cfg.get("run_dir"):
        raise PickError("run_dir=<the folder of a finished search or pipeline run> is required.")
    run_dir = Path(str(cfg.run_dir)).expanduser()
    out_dir = Path(str(cfg.out_dir)).expanduser() if cfg.get("out_dir") else run_dir / "deploy"
    return deploy(cfg, run_dir, out_dir)
