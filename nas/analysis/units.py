"""How objectives are shown in figures and tables: which are accuracy-like and which are costs, their
axis labels, and their display scale (accuracy as a percentage, as in the papers' figures and tables)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nas.search.objectives import KINDS, Objective

QUALITY_KINDS = ("accuracy", "perplexity")
COST_KINDS = ("size_gb", "params", "flops", "latency", "throughput")


def objective_from_dict(data: Mapping[str, Any]) -> Objective:
    """An `Objective` from its `to_dict()` form (summary.json or the study's signature)."""
    kind = str(data["kind"])
    if kind not in KINDS:
        raise ValueError(f"unknown objective kind {kind!r}")
    natural, bound = KINDS[kind]
    return Objective(
        kind=kind,
        direction=str(data.get("direction") or natural),
        tasks=tuple(str(t) for t in data.get("tasks") or ()),
        metric=data.get("metric"),
        dtype=str(data.get("dtype") or "fp16"),
        mode=str(data.get("mode") or "decode"),
        hv_bound=float(data["hv_bound"]) if data.get("hv_bound") is not None else bound,
    )


def quality_objectives(objectives: Sequence[Objective]) -> list[Objective]:
    """Accuracy-like objectives (task accuracy, perplexity)."""
    return [o for o in objectives if o.kind in QUALITY_KINDS]


def cost_objectives(objectives: Sequence[Objective]) -> list[Objective]:
    """What a sub-network costs: size, parameters, FLOPs, latency, throughput."""
    return [o for o in objectives if o.kind in COST_KINDS]


def scale(objective: Objective) -> float:
    """Factor from stored value to displayed value: accuracies (fractions) are shown in percent."""
    return 100.0 if objective.kind == "accuracy" else 1.0


def shown(objective: Objective, value: float | None) -> float | None:
    return None if value is None else float(value) * scale(objective)


def label(objective: Objective) -> str:
    """Axis label / column header, with units and the better direction where it is not obvious."""
    if objective.kind == "accuracy":
        return f"{objective.name} accuracy (%)"
    if objective.kind == "perplexity":
        return "perplexity (lower is better)"
    if objective.kind == "size_gb":
        return f"model size (GB, {objective.dtype})"
    if objective.kind == "params":
        return "parameters"
    if objective.kind == "flops":
        return "FLOPs per token"
    if objective.kind == "latency":
        return f"latency (ms, {objective.mode})"
    if objective.kind == "throughput":
        return f"throughput (tokens/s, {objective.mode})"
    return objective.name


def short_label(objective: Objective) -> str:
    """A compact column header."""
    return {
        "accuracy": f"{objective.name} (%)",
        "perplexity": "perplexity",
        "size_gb": f"GB {objective.dtype}",
        "params": "params",
        "flops": "FLOPs/token",
        "latency": f"ms ({objective.mode})",
        "throughput": f"tok/s ({objective.mode})",
    }.get(objective.kind, objective.name)


def value_format(objective: Objective) -> str:
    """Format spec of the displayed value."""
    return {
        "accuracy": ".2f",
        "perplexity": ".4g",
        "size_gb": ".4g",
        "params": ",.0f",
        "flops": ".4g",
        "latency": ".4g",
        "throughput": ".4g",
    }.get(objective.kind, ".4g")


def better(objective: Objective, a: float, b: float) -> bool:
    """Whether value `a` is strictly better than `b` for this objective."""
    return a > b if objective.maximize else a < b


def slug(text: str) -> str:
    """A file-name-safe version of an objective name (`mean(arc_easy,piqa).acc` -> `mean_arc_easy_piqa_acc`)."""
    out = "".join(c if c.isalnum() else "_" for c in text)
    return "_".join(part for part in out.split("_") if part)
