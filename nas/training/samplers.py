"""Sub-network samplers for super-network training (Klein et al. 4.1).

Each draws from the one `SearchSpace`, is seeded, and can save and restore its random state so a
resumed run samples what an uninterrupted one would. The `importance_*` configs use these same
classes on an importance-reordered model (their config sets `requires_reordering: true`, and
`python -m nas.train` reorders the model before training).
"""

from __future__ import annotations

import random
from typing import Any, cast

import torch
from torch import nn

from nas.errors import NASError
from nas.supernet.elastic_model import shape_of
from nas.supernet.metrics import count_params
from nas.supernet.search_space import SearchSpace
from nas.supernet.slicing import LINEAR_MODULES, layer_slices
from nas.supernet.subnetwork import SubNetwork


class SubNetworkSampler:
    """Uniform over the space's encodings.

    Args:
        space: the search space to draw from.
        seed: seeds the sampler's own random stream.
        model: the super-network (used by samplers that look at weights).
        requires_reordering: the `importance_*` variants: train.py reorders the model by importance
            before training when it has not been reordered yet.
    """

    def __init__(
        self, space: SearchSpace, seed: int = 0, model: nn.Module | None = None, requires_reordering: bool = False
    ) -> None:
        self.space = space
        self.rng = random.Random(seed)
        self.requires_reordering = requires_reordering

    def sample(self) -> SubNetwork:
        return self.space.sample(self.rng)

    def largest(self) -> SubNetwork:
        return self.space.largest()

    def smallest(self) -> SubNetwork:
        return self.space.smallest()

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))


class UniformSampler(SubNetworkSampler):
    """`uniform` / `importance_random`: every encoding equally likely."""


class GridParamsSampler(SubNetworkSampler):
    """`grid_params`: equal-width parameter-count bins between the smallest and the largest sub-network;
    each step draws a bin, then rejection-samples the space until a sub-network falls in it.

    Uniform sampling concentrates on mid-sized sub-networks; drawing the bin first spreads training
    evenly over sizes.
    """

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        num_bins: int = 10,
        max_tries: int = 2000,
        model: nn.Module | None = None,
        requires_reordering: bool = False,
    ) -> None:
        super().__init__(space, seed, model, requires_reordering)
        if num_bins < 1:
            raise NASError(f"sampler.num_bins={num_bins}: use 1 or more.")
        self.num_bins, self.max_tries = num_bins, max_tries
        low, high = (self._params(s) for s in (space.smallest(), space.largest()))
        self.edges = [low + (high - low) * i / num_bins for i in range(num_bins + 1)]

    def _params(self, sub: SubNetwork) -> int:
        return count_params(self.space.shape, sub)[0]

    def bin_of(self, sub: SubNetwork) -> int:
        params = self._params(sub)
        return min(
            self.num_bins - 1,
            max(0, int((params - self.edges[0]) / (self.edges[-1] - self.edges[0] + 1e-9) * self.num_bins)),
        )

    def sample_in_bin(self, target: int) -> SubNetwork:
        """A random sub-network of bin `target` (the closest one seen when the bin stays empty)."""
        best, best_gap = None, None
        for _ in range(self.max_tries):
            sub = self.space.sample(self.rng)
            gap = abs(self.bin_of(sub) - target)
            if gap == 0:
                return sub
            if best_gap is None or gap < best_gap:
                best, best_gap = sub, gap
        assert best is not None
        return best

    def sample(self) -> SubNetwork:
        return self.sample_in_bin(self.rng.randrange(self.num_bins))


class CalibrateMagSampler(GridParamsSampler):
    """`importance_calibrate_mag`: per parameter bin, keep the `keep_per_bin` sub-networks (of
    `candidates_per_bin` drawn) whose weights have the largest mean magnitude; train on those."""

    def __init__(
        self,
        space: SearchSpace,
        model: nn.Module,
        seed: int = 0,
        num_bins: int = 10,
        candidates_per_bin: int = 20,
        keep_per_bin: int = 1,
        max_tries: int = 2000,
        requires_reordering: bool = False,
    ) -> None:
        super().__init__(space, seed, num_bins, max_tries, model, requires_reordering)
        # Per bin: every distinct candidate drawn (in drawing order) and the kept ones, largest magnitude first.
        self.candidates: list[list[SubNetwork]] = []
        self.pool: list[list[SubNetwork]] = []
        for target in range(num_bins):
            candidates = list(dict.fromkeys(self.sample_in_bin(target) for _ in range(candidates_per_bin)))
            ranked = sorted(candidates, key=lambda s: weight_magnitude(model, s), reverse=True)
            self.candidates.append(candidates)
            self.pool.append(ranked[:keep_per_bin])

    def sample(self) -> SubNetwork:
        return self.rng.choice(self.rng.choice(self.pool))


@torch.no_grad()
def weight_magnitude(model: nn.Module, sub: SubNetwork) -> float:
    """Mean |w| over the decoder linear weights `sub` uses (slices, no copies)."""
    shape = shape_of(model)
    total, count = 0.0, 0
    for position, index in enumerate(sub.layers):
        layer = model.get_submodule(f"model.layers.{index}")
        for name, (rows, cols) in layer_slices(shape, sub, position).items():
            if name in LINEAR_MODULES:
                weight = cast(torch.Tensor, layer.get_submodule(name).weight)[:rows, :cols]
                total += float(weight.abs().sum())
                count += weight.numel()
    return total / count
