"""The report's held-out confirmation (the pipeline's confirm stage, `confirm/confirmation.json`).

A table per (accuracy, cost) pair: every confirmed model's search score, its confirmed score with the 95%
interval, the difference (the optimism of the search), and the paired difference to each reference with
its p-value; a figure of confirmed accuracy with error bars against cost, both references drawn as bands;
and the selections made on confirmed scores:

- "same accuracy as <reference>, smallest": the cheapest sub-network whose interval reaches the
  reference's confirmed accuracy (its upper bound is at least the reference's value);
- "<f>x the size, most accurate": the highest confirmed accuracy at a cost of at most f x the reference's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.analysis import figures
from nas.analysis.baselines import not_more_costly
from nas.analysis.document import Block, Figure, Heading, Table, Text
from nas.analysis.tables import Column
from nas.analysis.units import label, scale, short_label, slug, value_format
from nas.io.atomic import read_json
from nas.search.confirmation import FINETUNED, PRETRAINED, REFERENCES
from nas.search.objectives import Objective

CONFIRMATION_FILE = Path("confirm") / "confirmation.json"
# As on the search plots: the search's reference (the fine-tuned full network) red, the pre-trained model orange.
REFERENCE_STYLE = {PRETRAINED: "tab:orange", FINETUNED: figures.REFERENCE_COLOR}


@dataclass
class Confirmation:
    """What the confirm stage wrote: its items and one record per model (`nas.search.confirmation.confirm`)."""

    path: Path
    items: dict[str, Any]
    selection: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["kind"] == kind]

    def reference(self, ref_id: str) -> dict[str, Any] | None:
        return next((r for r in self.records if r["id"] == ref_id), None)

    def references(self) -> list[dict[str, Any]]:
        return [r for r in (self.reference(i) for i in REFERENCES) if r is not None]


def find_confirmation(search_dir: Path, run_dir: Path) -> Path | None:
    """The pipeline's confirmation beside the search (a pipeline run directory), when there is one."""
    for base in (run_dir, search_dir.parent):
        if (base / CONFIRMATION_FILE).is_file():
            return base / CONFIRMATION_FILE
    return None


def read_confirmation(path: Path | None) -> Confirmation | None:
    if path is None:
        return None
    data = read_json(path, "confirmation", f"delete {path.parent} to redo the confirm stage")
    return Confirmation(
        path, dict(data.get("items") or {}), dict(data.get("selection") or {}), list(data["candidates"])
    )


def _pct(quality: Objective, value: float | None) -> float | None:
    return None if value is None else value * scale(quality)


def confirmed_row(record: dict[str, Any], quality: Objective, cost: Objective) -> dict[str, Any]:
    """One table row: cost, search and confirmed score (interval), optimism, paired differences."""
    c = record["confirmed"][quality.name]
    row: dict[str, Any] = {
        "model": record["label"],
        "trial": record.get("trial"),
        cost.name: record["values"].get(cost.name),
        "search": _pct(quality, record["search_values"].get(quality.name)),
        "confirmed": _pct(quality, c["value"]),
        "interval": f"[{c['low'] * scale(quality):.1f}, {c['high'] * scale(quality):.1f}]",
        "n": c["n"],
        "optimism": _pct(quality, record["optimism"].get(quality.name)),
    }
    for ref_id, versus in record["versus"].items():
        v = versus[quality.name]
        row[f"vs_{ref_id}"] = _pct(quality, v["difference"])
        row[f"vs_{ref_id}_interval"] = f"[{v['low'] * scale(quality):+.1f}, {v['high'] * scale(quality):+.1f}]"
        row[f"p_{ref_id}"] = v["p_value"]
    return row


def confirmed_columns(quality: Objective, cost: Objective, rows: Sequence[dict[str, Any]]) -> list[Column]:
    cols = [
        Column("model", "model"),
        Column(cost.name, short_label(cost), value_format(cost)),
        Column("search", "search score (%)", ".1f"),
        Column("confirmed", "confirmed (%)", ".1f"),
        Column("interval", "95% interval"),
        Column("n", "items"),
        Column("optimism", "optimism (pt)", "+.1f"),
    ]
    for ref_id, name in REFERENCES.items():
        cols += [
            Column(f"vs_{ref_id}", f"Δ vs {name} (pt)", "+.1f"),
            Column(f"vs_{ref_id}_interval", "95% interval"),
            Column(f"p_{ref_id}", "p", ".3g"),
        ]
    return [c for c in cols if any(r.get(c.key) is not None for r in rows)]


def _cheapest(records: Sequence[dict[str, Any]], cost: Objective) -> dict[str, Any]:
    return min(records, key=lambda r: (-r["values"][cost.name] if cost.maximize else r["values"][cost.name], r["id"]))


def confirmed_selections(
    confirmation: Confirmation, quality: Objective, cost: Objective, fractions: Sequence[float]
) -> list[dict[str, Any]]:
    """The selections on confirmed scores (see the module's docstring), one row each."""
    subs = [r for r in confirmation.of_kind("subnetwork") if cost.name in r["values"]]
    rows = []
    for ref in confirmation.references():
        target = ref["confirmed"][quality.name]["value"]
        reaching = [r for r in subs if r["confirmed"][quality.name]["high"] >= target]
        pick = _cheapest(reaching, cost) if reaching else None
        rule = f"95% interval reaches the {ref['label']}'s {target * scale(quality):.1f}"
        rows.append(_selection_row(f"same accuracy as the {ref['label']}, smallest", rule, pick, ref, quality, cost))
    references = confirmation.references()
    base = confirmation.reference(PRETRAINED) or (references[0] if references else None)
    if base is not None and cost.name in base["values"]:
        for f in fractions:
            budget = base["values"][cost.name] / f if cost.maximize else f * base["values"][cost.name]
            within = [r for r in subs if not_more_costly(r["values"][cost.name], budget, cost)]
            pick = max(within, key=lambda r: (r["confirmed"][quality.name]["value"], r["id"])) if within else None
            rows.append(
                _selection_row(
                    f"{f:g}x the {base['label']}'s cost, most accurate",
                    f"{cost.name} within {f:g}x",
                    pick,
                    base,
                    quality,
                    cost,
                )
            )
    return rows


def _selection_row(
    label_: str, rule: str, pick: dict[str, Any] | None, ref: dict[str, Any], quality: Objective, cost: Objective
) -> dict[str, Any]:
    row: dict[str, Any] = {"selection": label_, "rule": rule}
    if pick is None:
        return row | {"model": "none found"}
    row |= confirmed_row(pick, quality, cost)
    ref_cost, own = ref["values"].get(cost.name), pick["values"].get(cost.name)
    if ref_cost and own:
        row["ratio"] = own / ref_cost if cost.maximize else ref_cost / own
    return row


def plot_confirmed(
    confirmation: Confirmation, quality: Objective, cost: Objective, path: Path, title: str, dpi: int = 110
) -> Path:
    """Confirmed accuracy with 95% error bars against cost: sub-networks, baselines, both references."""
    sy = scale(quality)
    fig, ax = figures.figure()

    def points(records: Sequence[dict[str, Any]]) -> tuple[list[float], list[float], list[list[float]]]:
        xs: list[float] = []
        ys: list[float] = []
        err: list[list[float]] = [[], []]
        for r in records:
            c = r["confirmed"][quality.name]
            xs.append(r["values"][cost.name])
            ys.append(c["value"] * sy)
            err[0].append((c["value"] - c["low"]) * sy)
            err[1].append((c["high"] - c["value"]) * sy)
        return xs, ys, err

    subs = sorted(confirmation.of_kind("subnetwork"), key=lambda r: r["values"][cost.name])
    if subs:
        xs, ys, err = points(subs)
        ax.errorbar(
            xs,
            ys,
            yerr=err,
            fmt="o",
            color=figures.FRONT_COLOR,
            ms=5,
            capsize=3,
            label=f"Pareto sub-networks ({len(subs)})",
            zorder=3,
        )
    for index, r in enumerate(confirmation.of_kind("baseline")):
        marker, color = figures.OTHER_QUANTIZED[index % len(figures.OTHER_QUANTIZED)]
        xs, ys, err = points([r])
        ax.errorbar(xs, ys, yerr=err, fmt=marker, color=color, ms=7, capsize=3, label=r["label"], zorder=4)
    for r in confirmation.references():
        color = REFERENCE_STYLE.get(r["id"], "tab:gray")
        c = r["confirmed"][quality.name]
        ax.axhspan(c["low"] * sy, c["high"] * sy, color=color, alpha=0.12, zorder=0)
        ax.axhline(c["value"] * sy, color=color, lw=1, ls="--", zorder=1)
        if cost.name in r["values"]:
            xs, ys, err = points([r])
            hollow = r["id"] == PRETRAINED  # the fine-tuned full network can sit at the same point
            ax.errorbar(
                xs,
                ys,
                yerr=err,
                fmt="s",
                color=color,
                mfc="none" if hollow else color,
                mec=color if hollow else "black",
                mew=1.8 if hollow else 1.0,
                ms=11 if hollow else 8,
                capsize=3,
                label=f"{r['label']} (95% band)",
                zorder=5,
            )
    ax.set_xlabel(label(cost))
    ax.set_ylabel(f"{label(quality)}, held-out")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return figures.save(fig, path, dpi)


def confirmation_section(
    confirmation: Confirmation | None,
    pairs: Sequence[tuple[Objective, Objective]],
    figures_dir: Path,
    fractions: Sequence[float],
    dpi: int = 110,
) -> tuple[list[Block], dict[str, Any]]:
    """The section (empty without a confirm stage) and its tables' data."""
    if confirmation is None:
        return [], {}
    items = "; ".join(
        f"{task}: {facts['count']} items of its {facts['split']} split ({facts['overlap_with_search']} also used by the search)"
        for task, facts in confirmation.items.items()
    )
    blocks: list[Block] = [
        Heading("Held-out confirmation"),
        Text(
            "The Pareto set, both references and the baselines re-scored on items that did not steer the search "
            f"({items}). Confirmed accuracies carry 95% intervals (Wilson for one task, a bootstrap over items for a "
            "mean over tasks); optimism = search score minus confirmed score (the references' optimism is how much "
            "easier the search items are than the held-out ones; a sub-network's beyond that is the selection's own "
            "bias); Δ = model minus reference on the same "
            "items, with the paired test's p-value (exact McNemar for one task, paired bootstrap otherwise, whose p-values "
            "stop at 2 / (resamples + 1), 0.001 with the default 2000). "
            f"References: the {REFERENCES[PRETRAINED]} (as loaded, before reordering and fine-tuning) and the "
            f"{REFERENCES[FINETUNED]} (the super-network after fine-tuning)."
        ),
    ]
    data: dict[str, Any] = {}
    for quality, cost in pairs:
        if quality.kind != "accuracy":
            continue
        name = f"{quality.name} vs {cost.name}"
        rows = [confirmed_row(r, quality, cost) for r in confirmation.records if cost.name in r["values"]]
        path = plot_confirmed(
            confirmation,
            quality,
            cost,
            figures_dir / f"confirmed_{slug(quality.name)}_vs_{slug(cost.name)}.png",
            name,
            dpi,
        )
        blocks.append(Figure(path, f"{name}, confirmed on held-out items: 95% error bars; references as bands"))
        blocks.append(Table(rows, confirmed_columns(quality, cost, rows), f"{name}: search vs confirmed scores"))
        picks = confirmed_selections(confirmation, quality, cost, fractions)
        pick_cols = [Column("selection", "selection"), Column("rule", "rule"), Column("ratio", "x smaller", ".2f")]
        pick_cols += confirmed_columns(quality, cost, picks)
        blocks.append(
            Table(
                picks,
                [c for c in pick_cols if any(r.get(c.key) is not None for r in picks)],
                f"{name}: selections made on confirmed scores",
            )
        )
        data[name] = {"rows": rows, "selections": picks, "figure": str(path)}
    return blocks, data
