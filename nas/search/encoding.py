"""The one mapping between Optuna parameters, `SubNetwork`s and predictor features.

Optuna sees each searchable parameter of the `SearchSpace` as the *index* of its choice
(`IntDistribution(0, n - 1)`): the choices are ordered sizes, so NSGA-II's SBX crossover and polynomial
mutation move between neighbouring sizes, as they do in LLaMA-NAS's integer encoding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from optuna.distributions import BaseDistribution, IntDistribution

from nas.errors import SearchSpaceError
from nas.supernet.search_space import SearchSpace
from nas.supernet.subnetwork import SubNetwork


class SearchEncoding:
    """Optuna parameters <-> sub-networks <-> feature vectors, for one `SearchSpace`."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.choices = space.parameters()
        if not self.choices:
            raise SearchSpaceError(
                f"Search space {space.name!r} has nothing to search on this model: every dimension resolves to one "
                f"size ({space.summary()}). Give a dimension choices that differ on this model."
            )

    @property
    def names(self) -> list[str]:
        return list(self.choices)

    def distributions(self) -> dict[str, BaseDistribution]:
        return {name: IntDistribution(0, len(c) - 1) for name, c in self.choices.items()}

    def decode(self, params: Mapping[str, int]) -> SubNetwork:
        """Optuna parameters (choice indices) to the sub-network they select."""
        return self.space.decode({name: self.choices[name][int(params[name])] for name in self.choices})

    def encode(self, sub: SubNetwork) -> dict[str, int]:
        """The canonical choice indices of `sub` (dropped layers' parameters at their largest choice)."""
        values = self.space.encode(sub)
        return {name: self.choices[name].index(values[name]) for name in self.choices}

    def index_matrix(self, subs: Sequence[SubNetwork]) -> np.ndarray:
        """[n, parameters] canonical choice indices."""
        return np.array([[p[name] for name in self.choices] for p in map(self.encode, subs)], dtype=np.int64)

    def decode_rows(self, rows: np.ndarray) -> list[SubNetwork]:
        return [self.decode(dict(zip(self.choices, row))) for row in rows.tolist()]

    def features(self, subs: Sequence[SubNetwork]) -> np.ndarray:
        """[n, 2 x layers + 2] predictor inputs describing what each sub-network computes.

        Per layer its MLP width and head count as fractions of the full model's (0 when the layer is
        dropped, so choices of dropped layers never look like a difference), plus layer count and
        hidden width as fractions.
        """
        shape = self.space.shape
        out = np.zeros((len(subs), 2 * shape.num_layers + 2), dtype=np.float64)
        for row, sub in enumerate(subs):
            for layer, mlp, heads in zip(sub.layers, sub.mlp_sizes, sub.num_heads):
                out[row, layer] = mlp / shape.intermediate_size
                out[row, shape.num_layers + layer] = heads / shape.num_heads
            out[row, -2] = sub.num_layers / shape.num_layers
            out[row, -1] = sub.hidden_size / shape.hidden_size
        return out
