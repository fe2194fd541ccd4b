"""Sub-networks picked relative to the unmodified model, in the shape of LLaMA-NAS Tables 2 and 5.

- "same accuracy, smallest": the lowest cost among sub-networks whose accuracy is at least the
  reference's minus `accuracy_tolerance` points (perplexity: at most `perplexity_tolerance` above it,
  relatively). For throughput, "smallest" means fastest.
- "size <= f x reference, most accurate": the best accuracy among sub-networks costing at most the
  fraction f of the reference (throughput: at least reference / f).

Ties go to the better other objective, then to the lower trial number. Rows carry the measured
throughput when there is one and the quantized (INT8, NF4) footprint and accuracy when the pipeline
quantized the sub-network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nas.analysis.run import Evaluation, RunData
from nas.analysis.search_intervals import shown_interval
from nas.analysis.tables import Column
from nas.analysis.units import scale, short_label, shown, value_format
from nas.search.objectives import Objective
from nas.supernet.subnetwork import SubNetwork

RATIO_HEADERS = {"latency": "x lower latency", "throughput": "x faster"}  # others: "x smaller"
THROUGHPUT_DETAILS = (("prefill_tokens_per_s", "prefill tok/s"), ("decode_tokens_per_s", "decode tok/s"))


@dataclass(frozen=True)
class Selection:
    """One rule and the sub-network it picked (None when nothing qualifies)."""

    label: str
    rule: str
    evaluation: Evaluation | None


def quality_threshold_ok(
    quality: Objective, value: float, reference: float, accuracy_tolerance: float, perplexity_tolerance: float
) -> bool:
    """Whether `value` counts as "the same accuracy" as `reference`."""
    if quality.maximize:
        return value >= reference - accuracy_tolerance / scale(quality)
    return value <= reference * (1.0 + perplexity_tolerance)


def within_budget(cost: Objective, value: float, reference: float, fraction: float) -> bool:
    """Whether `value` costs at most `fraction` of `reference` (throughput: is at least reference / fraction)."""
    return value >= reference / fraction if cost.maximize else value <= fraction * reference


def _key(first: Objective, second: Objective) -> Any:
    def key(e: Evaluation) -> tuple[float, float, int]:
        a, b = e.values[first.name], e.values[second.name]
        return (-a if first.maximize else a, -b if second.maximize else b, e.number)

    return key


def same_quality_smallest(
    run: RunData,
    quality: Objective,
    cost: Objective,
    accuracy_tolerance: float = 1.0,
    perplexity_tolerance: float = 0.05,
) -> Selection:
    ref = run.reference[quality.name]
    if quality.maximize:
        rule = f"{quality.name} >= reference - {accuracy_tolerance:g} pt"
    else:
        rule = f"{quality.name} <= reference x {1 + perplexity_tolerance:g}"
    ok = [
        e
        for e in run.evaluations
        if quality_threshold_ok(quality, e.values[quality.name], ref, accuracy_tolerance, perplexity_tolerance)
    ]
    word = "fastest" if cost.maximize else "smallest"
    label = f"same {'accuracy' if quality.kind == 'accuracy' else quality.kind}, {word}"
    return Selection(label, rule, min(ok, key=_key(cost, quality)) if ok else None)


def best_quality_within(run: RunData, quality: Objective, cost: Objective, fraction: float) -> Selection:
    ref = run.reference[cost.name]
    ok = [e for e in run.evaluations if within_budget(cost, e.values[cost.name], ref, fraction)]
    if cost.maximize:
        label, rule = f"{1 / fraction:.3g}x faster, most accurate", f"{cost.name} >= reference / {fraction:g}"
    else:
        label, rule = f"{fraction:g}x the size, most accurate", f"{cost.name} <= {fraction:g} x reference"
    return Selection(label, rule, min(ok, key=_key(quality, cost)) if ok else None)


def select(
    run: RunData,
    quality: Objective,
    cost: Objective,
    accuracy_tolerance: float = 1.0,
    perplexity_tolerance: float = 0.05,
    fractions: Sequence[float] = (0.8, 0.6),
) -> list[Selection]:
    """Every rule's pick for one (accuracy, cost) pair; empty when the reference values are unknown."""
    if quality.name not in run.reference or cost.name not in run.reference:
        return []
    picks = [same_quality_smallest(run, quality, cost, accuracy_tolerance, perplexity_tolerance)]
    return picks + [best_quality_within(run, quality, cost, f) for f in fractions]


def describe(sub: SubNetwork | None, mlp_choices: Sequence[int] = ()) -> str:
    """`SubNetwork.describe()`, plus how many kept layers have the smallest MLP when that is per layer."""
    if sub is None:
        return "-"
    text = sub.describe()
    if len(mlp_choices) > 1 and len(set(sub.mlp_sizes)) > 1:
        small = min(mlp_choices)
        text += f" ({sum(m == small for m in sub.mlp_sizes)}/{sub.num_layers} MLPs at {small})"
    return text


def _mlp_choices(run: RunData) -> list[int]:
    return sorted({int(c) for k, v in run.space_choices.items() if k.startswith("mlp") for c in v})


def _throughput(details: dict[str, Any]) -> dict[str, float]:
    return {key: float(details[key]) for key, _ in THROUGHPUT_DETAILS if details.get(key) is not None}


def _measured_cells(
    run: RunData, number: int | None, details: dict[str, Any], quality: Objective | None
) -> dict[str, Any]:
    """Measured throughput and, per quantization method, footprint, `quality` and decode throughput."""
    out: dict[str, Any] = _throughput(details)
    for method in run.quantized.methods:
        result = run.quantized.lookup(number, method)
        if result is not None:
            out[f"{method}_gb"] = result.footprint_gb
            if quality is not None:
                out[f"{method}_quality"] = shown(quality, result.values.get(quality.name))
            out[f"{method}_decode"] = result.speed.get("decode_tokens_per_s")
    return out


def _measured_columns(run: RunData, quality: Objective | None) -> list[Column]:
    """The columns of `_measured_cells`; throughput only where it is not an objective's column already."""
    objectives = {o.name for o in run.objectives}
    cols = [
        Column(key, header, ".4g")
        for key, header in THROUGHPUT_DETAILS
        if f"throughput_{key.split('_')[0]}" not in objectives
    ]
    for method in run.quantized.methods:
        cols.append(Column(f"{method}_gb", f"{method.upper()} GB", ".4g"))
        if quality is not None:
            cols.append(Column(f"{method}_quality", f"{method.upper()} {short_label(quality)}", value_format(quality)))
        cols.append(Column(f"{method}_decode", f"{method.upper()} decode tok/s", ".4g"))
    return cols


def row(
    run: RunData,
    label: str,
    number: int | None,
    values: dict[str, float],
    details: dict[str, Any],
    sub: SubNetwork | None,
    quality: Objective,
    cost: Objective,
) -> dict[str, Any]:
    """One table row: values shown in display units, relative cost and accuracy change, quantized results."""
    out: dict[str, Any] = {"selection": label, "trial": number if number is not None else "-"}
    out["description"] = describe(sub, _mlp_choices(run)) if number is not None else run.reference_label
    out |= {o.name: shown(o, values.get(o.name)) for o in run.objectives}
    ref_c, ref_q = run.reference.get(cost.name), run.reference.get(quality.name)
    c, q = values.get(cost.name), values.get(quality.name)
    if ref_c and c:
        out["ratio"] = c / ref_c if cost.maximize else ref_c / c
    if ref_q is not None and q is not None:
        out["delta"] = (q - ref_q) * scale(quality)
    out["interval"] = shown_interval(quality, details)
    return out | _measured_cells(run, number, details, quality)


def selection_table(
    run: RunData, quality: Objective, cost: Objective, selections: Sequence[Selection]
) -> tuple[list[dict[str, Any]], list[Column]]:
    """Rows (the reference first, then each selection) and their columns."""
    rows = [row(run, run.reference_label, None, run.reference, run.reference_details, None, quality, cost)]
    for s in selections:
        e = s.evaluation
        if e is None:
            rows.append({"selection": s.label, "trial": "-", "description": f"none found ({s.rule})"})
        else:
            rows.append(row(run, s.label, e.number, e.values, e.details, e.subnetwork, quality, cost))
    return rows, columns(run, quality, cost, rows)


def columns(run: RunData, quality: Objective, cost: Objective, rows: Sequence[dict[str, Any]]) -> list[Column]:
    """The columns that have a value in some row, in a fixed order."""
    cols = [Column("selection", "sub-network"), Column("trial", "trial")]
    cols += [Column(o.name, short_label(o), value_format(o)) for o in run.objectives]
    cols.append(Column("interval", "95% interval (search items)"))
    cols.append(Column("ratio", RATIO_HEADERS.get(cost.kind, "x smaller"), ".2f"))
    cols.append(Column("delta", "Δ pt" if quality.kind == "accuracy" else f"Δ {quality.name}", "+.2f"))
    cols += _measured_columns(run, quality)
    cols.append(Column("description", "architecture"))
    return [c for c in cols if any(r.get(c.key) is not None for r in rows)]


def pareto_table(run: RunData, quality: Objective | None = None) -> tuple[list[dict[str, Any]], list[Column]]:
    """The study's Pareto set (all objectives), ordered by the first objective, with quantized results."""
    front = run.pareto_set()
    first = run.objectives[0]
    front = sorted(front, key=lambda e: (-e.values[first.name] if first.maximize else e.values[first.name], e.number))
    mlp = _mlp_choices(run)
    rows: list[dict[str, Any]] = []
    for e in front:
        r: dict[str, Any] = {"trial": e.number} | {o.name: shown(o, e.values[o.name]) for o in run.objectives}
        if quality is not None:
            r["interval"] = shown_interval(quality, e.details)
        r |= _measured_cells(run, e.number, e.details, quality)
        r["description"] = describe(e.subnetwork, mlp)
        rows.append(r)
    cols = [Column("trial", "trial")] + [Column(o.name, short_label(o), value_format(o)) for o in run.objectives]
    cols.append(Column("interval", "95% interval (search items)"))
    cols += _measured_columns(run, quality)
    cols.append(Column("description", "architecture"))
    return rows, [c for c in cols if any(r.get(c.key) is not None for r in rows)]
