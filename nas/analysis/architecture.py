"""Which architectures the best sub-networks share (LLaMA-NAS Figs. 6-9).

Sub-networks are ranked by an accuracy-like objective (best first, ties by trial number) and the top
p% of the real evaluations (ceil(p/100 x n), at least one) are kept. Among them:

- `choice_distribution`: the probability of each choice of a shared dimension, e.g. each layer count
  in the top 60/40/20% (Fig. 6); also used for shared MLP width, heads and hidden size.
- `per_layer_probability`: per layer of the full model, the probability that a per-layer dimension
  takes its smallest choice, e.g. the smaller MLP size in the top 20/15/10% (Figs. 7-9), among the
  top sub-networks that keep that layer (a dropped layer has no MLP).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from nas.analysis.run import Evaluation
from nas.search.objectives import Objective
from nas.supernet.subnetwork import SubNetwork

SHARED_VALUE: dict[str, Callable[[SubNetwork], int]] = {
    "num_layers": lambda s: s.num_layers,
    "mlp": lambda s: s.mlp_sizes[0],
    "heads": lambda s: s.num_heads[0],
    "hidden": lambda s: s.hidden_size,
}
PER_LAYER_VALUES: dict[str, Callable[[SubNetwork], tuple[int, ...]]] = {
    "mlp": lambda s: s.mlp_sizes,
    "heads": lambda s: s.num_heads,
}
TITLES = {"num_layers": "layer count", "mlp": "MLP size", "heads": "attention heads", "hidden": "hidden size"}


@dataclass(frozen=True)
class Dimension:
    """A searchable dimension as the analysis sees it: its choices, and whether it is chosen per layer."""

    name: str
    choices: tuple[int, ...]
    per_layer: bool = False
    num_layers: int = 0  # layers of the full model (per-layer dimensions)


@dataclass(frozen=True)
class ChoiceDistribution:
    """P(choice) of one shared dimension among the top percentiles; `counts[p]` is the top set's size."""

    dimension: str
    objective: str
    choices: tuple[int, ...]
    probabilities: dict[float, dict[int, float]]
    counts: dict[float, int]


@dataclass(frozen=True)
class PerLayerProbability:
    """Per layer, P(dimension == its smallest choice) among the top sub-networks keeping that layer."""

    dimension: str
    objective: str
    value: int  # the smallest choice
    probabilities: dict[float, list[float]]  # NaN where no top sub-network keeps the layer
    kept: dict[float, list[int]]  # how many top sub-networks keep each layer
    counts: dict[float, int]


def dimensions(
    space_choices: Mapping[str, Sequence[int]], evaluations: Sequence[Evaluation] = ()
) -> dict[str, Dimension]:
    """The searchable dimensions, from the study's parameter choices (`num_layers`, `mlp`, `mlp_0`,
    ...); without them, from the values the evaluated sub-networks take."""
    out: dict[str, Dimension] = {}
    for dim in SHARED_VALUE:
        per_layer = sorted(
            (int(k.rsplit("_", 1)[1]), v)
            for k, v in space_choices.items()
            if k.startswith(f"{dim}_") and k.rsplit("_", 1)[1].isdigit()
        )
        if dim in space_choices:
            out[dim] = Dimension(dim, tuple(sorted(int(c) for c in space_choices[dim])))
        elif per_layer:
            choices = tuple(sorted({int(c) for _, v in per_layer for c in v}))
            out[dim] = Dimension(dim, choices, per_layer=True, num_layers=per_layer[-1][0] + 1)
    if space_choices:
        return out
    subs = [e.subnetwork for e in evaluations if e.subnetwork is not None]
    for dim, value in SHARED_VALUE.items():
        varies = dim in PER_LAYER_VALUES and any(len(set(PER_LAYER_VALUES[dim](s))) > 1 for s in subs)
        seen = sorted({v for s in subs for v in PER_LAYER_VALUES[dim](s)} if varies else {value(s) for s in subs})
        if len(seen) > 1:
            layers = max((max(s.layers) + 1 for s in subs if s.layers), default=0)
            out[dim] = Dimension(dim, tuple(seen), per_layer=varies, num_layers=layers)
    return out


def ranked(evaluations: Sequence[Evaluation], objective: Objective) -> list[Evaluation]:
    """Best first on `objective`; ties by trial number."""
    sign = -1.0 if objective.maximize else 1.0
    return sorted(evaluations, key=lambda e: (sign * e.values[objective.name], e.number))


def top_count(n: int, percent: float) -> int:
    """How many of `n` sub-networks form the top `percent`%: ceil(percent/100 x n), at least 1 (if n > 0)."""
    if n == 0:
        return 0
    # Rounded first so 0.2 x 50 (= 10.000000000000002 in floats) is 10, not 11.
    return max(1, math.ceil(round(percent / 100.0 * n, 9)))


def top(evaluations: Sequence[Evaluation], objective: Objective, percent: float) -> list[Evaluation]:
    """The top `percent`% of `evaluations` by `objective` (only those with a known sub-network)."""
    known = [e for e in evaluations if e.subnetwork is not None]
    return ranked(known, objective)[: top_count(len(known), percent)]


def choice_distribution(
    evaluations: Sequence[Evaluation], objective: Objective, dimension: Dimension, percentiles: Sequence[float]
) -> ChoiceDistribution:
    """P(each choice of a shared `dimension`) among the top `percentiles` by `objective`."""
    value = SHARED_VALUE[dimension.name]
    probabilities, counts = {}, {}
    for p in percentiles:
        best = top(evaluations, objective, p)
        subs = [e.subnetwork for e in best if e.subnetwork is not None]
        counts[p] = len(subs)
        probabilities[p] = {
            c: (sum(value(s) == c for s in subs) / len(subs) if subs else math.nan) for c in dimension.choices
        }
    return ChoiceDistribution(dimension.name, objective.name, dimension.choices, probabilities, counts)


def per_layer_probability(
    evaluations: Sequence[Evaluation], objective: Objective, dimension: Dimension, percentiles: Sequence[float]
) -> PerLayerProbability:
    """Per layer, P(the layer's `dimension` is its smallest choice) among the top `percentiles`."""
    values = PER_LAYER_VALUES[dimension.name]
    small = dimension.choices[0]
    probabilities, kept, counts = {}, {}, {}
    for p in percentiles:
        subs = [e.subnetwork for e in top(evaluations, objective, p) if e.subnetwork is not None]
        counts[p] = len(subs)
        hits = [0] * dimension.num_layers
        present = [0] * dimension.num_layers
        for s in subs:
            for layer, v in zip(s.layers, values(s)):
                if layer < dimension.num_layers:
                    present[layer] += 1
                    hits[layer] += v == small
        kept[p] = present
        probabilities[p] = [h / n if n else math.nan for h, n in zip(hits, present)]
    return PerLayerProbability(dimension.name, objective.name, small, probabilities, kept, counts)


def percent_label(p: float) -> str:
    return f"top {p:g}%"
