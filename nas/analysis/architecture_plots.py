"""Plots and table rows of the architecture analysis (LLaMA-NAS Figs. 6-9)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from nas.analysis import figures
from nas.analysis.architecture import TITLES, ChoiceDistribution, PerLayerProbability, percent_label
from nas.analysis.tables import Column


def plot_choice_distribution(dist: ChoiceDistribution, path: str | Path, dpi: int = 110) -> Path:
    """Grouped bars: for each choice, its probability in each top percentile (Fig. 6)."""
    fig, ax = figures.figure(width=max(5.0, 1.2 * len(dist.choices) + 3))
    percents = list(dist.probabilities)
    width = 0.8 / max(1, len(percents))
    positions = np.arange(len(dist.choices))
    for i, p in enumerate(percents):
        heights = [dist.probabilities[p][c] for c in dist.choices]
        bars = ax.bar(
            positions + (i - (len(percents) - 1) / 2) * width,
            np.nan_to_num(heights),
            width,
            label=f"{percent_label(p)} (n={dist.counts[p]})",
        )
        ax.bar_label(bars, labels=[f"{h:.2f}" if not math.isnan(h) else "" for h in heights], fontsize=7)
    ax.set_xticks(positions, [str(c) for c in dist.choices])
    ax.set_xlabel(TITLES.get(dist.dimension, dist.dimension))
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1.1)
    ax.set_title(
        f"{TITLES.get(dist.dimension, dist.dimension)} among the best sub-networks by {dist.objective}", fontsize=10
    )
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return figures.save(fig, path, dpi)


def plot_per_layer(prob: PerLayerProbability, path: str | Path, dpi: int = 110) -> Path:
    """Per layer, the probability of the smallest choice in each top percentile (Figs. 7-9)."""
    layers = len(next(iter(prob.probabilities.values()), []))
    fig, ax = figures.figure(width=max(6.4, 0.25 * layers + 3))
    for p, values in prob.probabilities.items():
        ax.plot(range(layers), values, "-o", ms=4, label=f"{percent_label(p)} (n={prob.counts[p]})")
    ax.axhline(0.5, color="0.5", lw=0.8, ls="--")
    ax.set_xlabel("layer")
    ax.set_ylabel(f"P({TITLES.get(prob.dimension, prob.dimension)} = {prob.value})")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xticks(range(0, layers, max(1, layers // 16)))
    ax.set_title(
        f"Probability of the smaller {TITLES.get(prob.dimension, prob.dimension)} ({prob.value}) per layer, "
        f"best sub-networks by {prob.objective}",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figures.save(fig, path, dpi)


def choice_rows(dist: ChoiceDistribution) -> tuple[list[dict[str, Any]], list[Column]]:
    """One row per top percentile, one column per choice."""
    rows = [
        {"top": percent_label(p), "n": dist.counts[p]} | {str(c): dist.probabilities[p][c] for c in dist.choices}
        for p in dist.probabilities
    ]
    name = TITLES.get(dist.dimension, dist.dimension)
    columns = [Column("top", "sub-networks"), Column("n", "n")] + [
        Column(str(c), f"{name} {c}", ".2f") for c in dist.choices
    ]
    return rows, columns


def per_layer_rows(prob: PerLayerProbability) -> tuple[list[dict[str, Any]], list[Column]]:
    """One row per layer, one column per top percentile (probability, and how many keep the layer)."""
    layers = len(next(iter(prob.probabilities.values()), []))
    rows = []
    for layer in range(layers):
        r: dict[str, Any] = {"layer": layer}
        for p in prob.probabilities:
            value = prob.probabilities[p][layer]
            r[f"p{p:g}"] = None if math.isnan(value) else value
            r[f"n{p:g}"] = prob.kept[p][layer]
        rows.append(r)
    columns = [Column("layer", "layer")]
    for p in prob.probabilities:
        columns += [Column(f"p{p:g}", f"P {percent_label(p)}", ".2f"), Column(f"n{p:g}", f"kept (of {prob.counts[p]})")]
    return rows, columns
