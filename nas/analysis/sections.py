"""The report's sections, each drawing its figures and returning its blocks and the data behind them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas.analysis.architecture import (
    TITLES,
    ChoiceDistribution,
    PerLayerProbability,
    choice_distribution,
    dimensions,
    per_layer_probability,
)
from nas.analysis.architecture_plots import choice_rows, per_layer_rows, plot_choice_distribution, plot_per_layer
from nas.analysis.baselines import comparison_rows
from nas.analysis.document import Block, Figure, Heading, Table, Text
from nas.analysis.options import AnalysisOptions
from nas.analysis.pareto_plots import pairs, pareto_file_name, plot_pareto, speed_view
from nas.analysis.progress import PREDICTOR_COLUMNS, plot_hypervolume, plot_predictors, predictor_rows
from nas.analysis.run import RunData
from nas.analysis.selection import pareto_table, select, selection_table
from nas.analysis.units import quality_objectives, short_label, shown, slug, value_format

Section = tuple[list[Block], dict[str, Any]]


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _reference_values(run: RunData) -> str:
    """The unmodified model's objective values in the units of the tables (accuracies in percent)."""
    by_name = {o.name: o for o in run.objectives}
    parts = []
    for name, value in run.reference.items():
        objective = by_name.get(name)
        if objective is None or not isinstance(value, int | float):
            parts.append(f"{name} = {_fmt(value)}")
        else:
            parts.append(f"{short_label(objective)} = {shown(objective, value):{value_format(objective)}}")
    return ", ".join(parts)


def overview(run: RunData, hv: list[dict[str, Any]]) -> Section:
    """What was searched and how much: objectives, reference, counts."""
    choices = "; ".join(
        f"{d.name} {list(d.choices)}" + (f" per layer ({d.num_layers} layers)" if d.per_layer else "")
        for d in dimensions(run.space_choices, run.evaluations).values()
    )
    items = [
        f"Study: {run.study_name} ({run.algorithm or 'unknown algorithm'}), in {run.search_dir}",
        f"Search space: {run.space_name or 'unknown'}" + (f": {choices}" if choices else ""),
        "Objectives: " + ", ".join(f"{o.name} ({o.kind}, {o.direction})" for o in run.objectives),
        f"Search reference ({run.reference_label}): " + (_reference_values(run) or "not recorded"),
        f"Real evaluations: {len(run.evaluations)}; duplicate proposals answered from the database: {run.duplicates}",
        "Trials by state: " + ", ".join(f"{k} {v}" for k, v in run.trial_states.items()),
        f"Pareto set (all objectives): {len(run.pareto_set())} sub-networks",
        f"Final hypervolume: {hv[-1]['hypervolume']:.4f}" if hv else "Final hypervolume: n/a (no reference values)",
        (
            f"Quantized results: {', '.join(m.upper() for m in run.quantized.methods)} from {run.quantized.path}"
            if run.quantized.results
            else "Quantized results: none (no quantized.json from the pipeline)"
        ),
    ]
    return [Heading("Run"), Text(items=tuple(items))], {}


def pareto_section(run: RunData, figures_dir: Path, options: AnalysisOptions) -> Section:
    """One plot per (accuracy, cost) pair and the Pareto set."""
    blocks: list[Block] = [Heading("Pareto fronts")]
    paths = []
    for quality, cost in pairs(run.objectives):
        path = plot_pareto(run, quality, cost, figures_dir / pareto_file_name(quality, cost), options.dpi)
        paths.append(path)
        caption = f"{quality.name} vs {cost.name}: every evaluated sub-network (grey), the front of these two objectives, the {run.reference_label} (red)"
        if run.baselines:
            caption += "; pruning baselines with a marker per method"
        if run.quantized.results:
            caption += "; quantized sub-networks with their own markers"
        blocks.append(Figure(path, caption))
    qualities = quality_objectives(run.objectives)
    timed = speed_view(run)
    if timed is not None:
        view, speed = timed
        for quality in qualities:
            path = plot_pareto(
                view, quality, speed, figures_dir / pareto_file_name(quality, speed), options.dpi, "timed sub-networks"
            )
            paths.append(path)
            caption = (
                f"{quality.name} vs measured {speed.mode} throughput of the Pareto set (timed after the search), "
                f"the {run.reference_label} (red)"
            )
            if view.quantized.results:
                caption += " and their quantized versions"
            blocks.append(Figure(path, caption))
    rows, columns = pareto_table(run, qualities[0] if qualities else None)
    blocks.append(Table(rows, columns, "The Pareto set on all objectives"))
    return blocks, {"pareto_set": rows, "figures": [str(p) for p in paths]}


def baselines_section(run: RunData) -> Section:
    """Tables 3/4 (LLaMA-NAS) and Table 1 (Klein et al.): each pruning baseline beside the best searched
    sub-network of the same or smaller cost."""
    if not run.baselines:
        return [], {}
    blocks: list[Block] = [Heading("Pruning baselines")]
    blocks.append(
        Text(
            "Each baseline (pruned from the pre-trained model, scored by the same evaluator on the same items) beside "
            "the most accurate evaluated sub-network of the same or smaller cost; difference = sub-network minus "
            "baseline, in points. N:M-sparse models are costed dense (as stored and run here); their compressed "
            "N:M size is drawn on the size plots too."
        )
    )
    tasks = list(dict.fromkeys(t for o in run.objectives for t in o.tasks))
    data: dict[str, Any] = {}
    for quality, cost in pairs(run.objectives):
        rows, columns = comparison_rows(run.baselines, run.evaluations, quality, cost, tasks)
        blocks.append(Table(rows, columns, f"{quality.name} vs {cost.name}"))
        data[f"{quality.name} vs {cost.name}"] = rows
    return blocks, data


def selection_section(run: RunData, options: AnalysisOptions) -> Section:
    """Tables 2 and 5: sub-networks picked relative to the unmodified model."""
    blocks: list[Block] = [Heading("Selected sub-networks")]
    blocks.append(
        Text(
            f"Relative to the {run.reference_label} (the search's reference), on search scores, in the shape of LLaMA-NAS Tables 2 and 5. Same accuracy: at most "
            f"{options.accuracy_tolerance:g} percentage point{'' if options.accuracy_tolerance == 1 else 's'} below the reference (perplexity: at most "
            f"{options.perplexity_tolerance:.0%} above it). Most accurate: the best accuracy at a cost of at most "
            f"{', '.join(f'{f:g}' for f in options.size_fractions)} of the reference's."
        )
    )
    data: dict[str, Any] = {}
    for quality, cost in pairs(run.objectives):
        picks = select(
            run, quality, cost, options.accuracy_tolerance, options.perplexity_tolerance, options.size_fractions
        )
        if not picks:
            blocks.append(Text(f"{quality.name} vs {cost.name}: no reference values, nothing to select against."))
            continue
        rows, columns = selection_table(run, quality, cost, picks)
        blocks.append(Table(rows, columns, f"{quality.name} vs {cost.name}"))
        data[f"{quality.name} vs {cost.name}"] = rows
    return blocks, data


def _distribution_blocks(dist: ChoiceDistribution, path: Path, dpi: int) -> list[Block]:
    title = TITLES.get(dist.dimension, dist.dimension)
    rows, columns = choice_rows(dist)
    return [
        Figure(
            plot_choice_distribution(dist, path, dpi),
            f"Probability of each {title} among the best sub-networks by {dist.objective}",
        ),
        Table(rows, columns, f"P({title}) among the top sub-networks by {dist.objective}"),
    ]


def _per_layer_blocks(prob: PerLayerProbability, path: Path, dpi: int) -> list[Block]:
    title = TITLES.get(prob.dimension, prob.dimension)
    rows, columns = per_layer_rows(prob)
    caption = f"Per layer, probability that the {title} is the smaller one ({prob.value}) among the best sub-networks by {prob.objective} that keep the layer"
    table = f"P({title} = {prob.value}) per layer; kept: how many of the top sub-networks keep the layer"
    return [Figure(plot_per_layer(prob, path, dpi), caption), Table(rows, columns, table)]


def architecture_section(run: RunData, figures_dir: Path, options: AnalysisOptions) -> Section:
    """Layer counts of the best sub-networks (Fig. 6) and per-layer smaller MLP (Figs. 7-9)."""
    blocks: list[Block] = [Heading("Architecture of the best sub-networks")]
    notes: list[str] = []
    data: dict[str, Any] = {}
    dims = dimensions(run.space_choices, run.evaluations)
    qualities = quality_objectives(run.objectives)
    if not qualities or not run.evaluations:
        return blocks + [Text("No accuracy-like objective or no evaluations: nothing to rank by.")], {}
    blocks.append(
        Text(
            f"Ranked by each accuracy-like objective; top p% = the best ceil(p/100 x {len(run.evaluations)}) real evaluations."
        )
    )
    if "num_layers" not in dims:
        notes.append("The layer count is not searched (a single choice): no layer-count analysis.")
    if "mlp" not in dims:
        notes.append("The MLP width is not searched: no MLP analysis.")
    elif not dims["mlp"].per_layer:
        notes.append(
            "The MLP width is one choice for all layers: its distribution is shown instead of a per-layer one."
        )
    for quality in qualities:
        key = slug(quality.name)
        for dim in dims.values():
            if dim.per_layer:
                prob = per_layer_probability(run.evaluations, quality, dim, options.mlp_percentiles)
                blocks += _per_layer_blocks(prob, figures_dir / f"per_layer_{dim.name}_{key}.png", options.dpi)
                data[f"{quality.name}: per-layer {dim.name}"] = per_layer_rows(prob)[0]
            else:
                percentiles = options.layer_percentiles if dim.name == "num_layers" else options.mlp_percentiles
                dist = choice_distribution(run.evaluations, quality, dim, percentiles)
                blocks += _distribution_blocks(dist, figures_dir / f"choices_{dim.name}_{key}.png", options.dpi)
                data[f"{quality.name}: {dim.name}"] = choice_rows(dist)[0]
    if notes:
        blocks.append(Text(items=tuple(notes)))
    return blocks, {"tables": data, "notes": notes}


def progress_section(run: RunData, hv: list[dict[str, Any]], figures_dir: Path, options: AnalysisOptions) -> Section:
    """Hypervolume against evaluations; LINAS predictor quality per round."""
    blocks: list[Block] = [Heading("Search progress")]
    if hv:
        path = plot_hypervolume(run, hv, figures_dir / "hypervolume.png", options.dpi)
        blocks.append(Figure(path, "Hypervolume (normalised by the unmodified model) after each real evaluation"))
    else:
        blocks.append(Text("No hypervolume: no real evaluations yet, or no reference (unmodified model) values."))
    rows = predictor_rows(run)
    if rows:
        path = plot_predictors(rows, figures_dir / "predictors.png", options.dpi)
        blocks.append(Figure(path, "LINAS predictor quality per round"))
        blocks.append(Table(rows, PREDICTOR_COLUMNS, "LINAS predictors: cross-validated (CV) and prospective quality"))
    else:
        blocks.append(Text(f"No LINAS predictor rounds (algorithm: {run.algorithm or 'unknown'})."))
    return blocks, {"hypervolume": hv, "predictors": rows}
