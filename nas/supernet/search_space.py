"""`SearchSpace`: the one declarative description of which sub-networks exist.

Built from `conf/search_space/*.yaml` and the model's shape, it drives training samplers, the
search's distributions (through the flat `parameters()` / `decode()` encoding), validation, counting,
export and analysis. Choices may be relative to the model (fractions of its layers or widths) so that
one space fits SmolLM2-135M and LLaMA2-7B alike.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nas.errors import InvalidSubNetworkError, SearchSpaceError
from nas.supernet.subnetwork import ModelShape, SubNetwork

DIMENSIONS = ("num_layers", "mlp", "heads", "hidden")


@dataclass(frozen=True)
class Dimension:
    """One searchable dimension as written in the config.

    Attributes:
        choices: fractions of the model's size when `relative`, absolute sizes otherwise. For `heads`
            an absolute choice counts query heads and is rounded to whole KV groups.
        relative: whether choices are fractions (0, 1] of the full model.
        per_layer: one independent choice per layer (e.g. LLaMA-NAS's MLP sizes) or one for all layers.
        multiple_of: round resolved widths to a multiple of this (hardware-friendly shapes).
    """

    choices: tuple[float, ...]
    relative: bool = True
    per_layer: bool = False
    multiple_of: int = 1

    @classmethod
    def parse(cls, name: str, spec: Any) -> Dimension | None:
        if spec is None:
            return None
        if not isinstance(spec, Mapping):
            raise SearchSpaceError(
                f"search_space.{name} must be a mapping with 'choices' (and optionally 'relative', "
                f"'per_layer', 'multiple_of'), or null to keep it fixed; got {spec!r}."
            )
        unknown = set(spec) - {"choices", "relative", "per_layer", "multiple_of"}
        if unknown:
            raise SearchSpaceError(f"search_space.{name} has unknown keys {sorted(unknown)}.")
        choices = tuple(float(c) for c in spec.get("choices") or ())
        if not choices:
            raise SearchSpaceError(f"search_space.{name}.choices is empty; list at least one choice.")
        dim = cls(
            choices=choices,
            relative=bool(spec.get("relative", True)),
            per_layer=bool(spec.get("per_layer", False)),
            multiple_of=int(spec.get("multiple_of", 1)),
        )
        if name == "num_layers" and dim.per_layer:
            raise SearchSpaceError("search_space.num_layers cannot be per_layer.")
        if dim.relative and any(not 0 < c <= 1 for c in choices):
            raise SearchSpaceError(
                f"search_space.{name}.choices {list(choices)} are relative, so each must be in (0, 1]; "
                f"set search_space.{name}.relative=false for absolute sizes."
            )
        if dim.multiple_of < 1:
            raise SearchSpaceError(f"search_space.{name}.multiple_of must be >= 1.")
        return dim


def _fields(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """The keys of a search-space mapping, checked against the known ones."""
    mapping = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    if not isinstance(mapping, Mapping):
        raise SearchSpaceError(f"search_space must be a mapping (conf/search_space/*.yaml); got {mapping!r}.")
    fields = {str(k): v for k, v in mapping.items() if k != "_target_"}
    known = {"name", *DIMENSIONS}
    unknown = set(fields) - known
    if unknown:
        raise SearchSpaceError(f"Unknown search_space keys {sorted(unknown)}; allowed: {sorted(known)}.")
    return fields


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


class SearchSpace:
    """The sub-networks reachable from one model under one configuration.

    Args:
        shape: the full model's dimensions.
        name: a label for logs and reports.
        num_layers, mlp, heads, hidden: dimension specs (mappings as in the YAML files) or None to
            keep that dimension at the full model's size.
        layer_order: layer indices from most to least important; a sub-network with k layers keeps
            the first k of them (run in ascending order). Defaults to the model's own order.
    """

    def __init__(
        self,
        shape: ModelShape,
        name: str = "custom",
        num_layers: Mapping[str, Any] | None = None,
        mlp: Mapping[str, Any] | None = None,
        heads: Mapping[str, Any] | None = None,
        hidden: Mapping[str, Any] | None = None,
        layer_order: Sequence[int] | None = None,
    ) -> None:
        self.shape = shape
        self.name = name
        self.layer_order = tuple(range(shape.num_layers)) if layer_order is None else tuple(int(i) for i in layer_order)
        if sorted(self.layer_order) != list(range(shape.num_layers)):
            raise SearchSpaceError(
                f"layer_order must be a permutation of 0..{shape.num_layers - 1}; got {list(self.layer_order)}."
            )
        self.dimensions = {
            "num_layers": Dimension.parse("num_layers", num_layers),
            "mlp": Dimension.parse("mlp", mlp),
            "heads": Dimension.parse("heads", heads),
            "hidden": Dimension.parse("hidden", hidden),
        }
        self.choices: dict[str, tuple[int, ...]] = {d: self._resolve(d) for d in DIMENSIONS}

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | DictConfig, config_or_shape: Any, **overrides: Any) -> SearchSpace:
        """Build from a search-space mapping (e.g. Hydra's `cfg.search_space`) and a Hugging Face config
        (or a `ModelShape`).

        The model's importance-based layer order, when it has one (`config.nas_layer_order`), is used.
        """
        shape = config_or_shape if isinstance(config_or_shape, ModelShape) else ModelShape.from_config(config_or_shape)
        layer_order = overrides.pop("layer_order", None) or getattr(config_or_shape, "nas_layer_order", None)
        return cls(shape, layer_order=layer_order, **_fields(cfg), **overrides)

    @staticmethod
    def check_config(cfg: Mapping[str, Any] | DictConfig) -> None:
        """Check a search-space mapping without a model (before one loads): its keys, its dimensions, and
        that something is searchable (a dimension with two or more choices).

        Raises:
            SearchSpaceError: naming the key to fix.
        """
        fields = _fields(cfg)
        dims = {d: Dimension.parse(d, fields.get(d)) for d in DIMENSIONS}
        if all(dim is None or len(set(dim.choices)) < 2 for dim in dims.values()):
            raise SearchSpaceError(
                f"search_space {fields.get('name', '')!r} has nothing to search: every dimension is fixed (null or a "
                "single choice). Give one dimension two or more choices, e.g. search_space.mlp.choices=[0.5,1.0], or "
                "pick another search_space (llama_nas, klein, mlp_only, layers_only)."
            )

    # --- resolution ----------------------------------------------------------------------------

    def _full_size(self, dim: str) -> int:
        s = self.shape
        return {"num_layers": s.num_layers, "mlp": s.intermediate_size, "heads": s.num_heads, "hidden": s.hidden_size}[
            dim
        ]

    def _resolve(self, dim: str) -> tuple[int, ...]:
        """Absolute, distinct, ascending sizes for one dimension."""
        spec = self.dimensions[dim]
        full = self._full_size(dim)
        if spec is None:
            return (full,)
        values = set()
        for c in spec.choices:
            raw = c * full if spec.relative else c
            if dim == "heads":
                # Whole KV groups only, so grouped-query attention stays valid.
                groups = max(1, _round_half_up(raw / self.shape.group_size))
                value = groups * self.shape.group_size
            else:
                value = max(spec.multiple_of, _round_half_up(raw / spec.multiple_of) * spec.multiple_of)
            if value > full:
                raise SearchSpaceError(
                    f"search_space.{dim} choice {c:g} resolves to {value}, above the model's {full}."
                )
            values.add(value)
        return tuple(sorted(values))

    # --- the flat encoding shared by samplers, Optuna and predictors ---------------------------

    def _is_per_layer(self, dim: str) -> bool:
        spec = self.dimensions[dim]
        return spec is not None and spec.per_layer

    def parameters(self) -> dict[str, tuple[int, ...]]:
        """Every searchable parameter name with its choices (absolute sizes).

        Per-layer dimensions get one parameter per layer index (`mlp_7`); fixed dimensions are left out.
        """
        params: dict[str, tuple[int, ...]] = {}
        for dim in DIMENSIONS:
            if len(self.choices[dim]) < 2:
                continue
            if self._is_per_layer(dim):
                for layer in range(self.shape.num_layers):
                    params[f"{dim}_{layer}"] = self.choices[dim]
            else:
                params[dim] = self.choices[dim]
        return params

    def _value(self, params: Mapping[str, int], dim: str, layer: int | None = None) -> int:
        choices = self.choices[dim]
        if len(choices) == 1:
            return choices[0]
        key = f"{dim}_{layer}" if self._is_per_layer(dim) else dim
        if key not in params:
            raise InvalidSubNetworkError(f"Encoding misses parameter {key!r}; expected {sorted(self.parameters())}.")
        value = int(params[key])
        if value not in choices:
            raise InvalidSubNetworkError(f"Parameter {key}={value} is not one of the choices {list(choices)}.")
        return value

    def decode(self, params: Mapping[str, int]) -> SubNetwork:
        """Parameters (name -> chosen size, as in `parameters()`) to a `SubNetwork`."""
        k = self._value(params, "num_layers")
        kept = tuple(sorted(self.layer_order[:k]))
        return SubNetwork(
            layers=kept,
            mlp_sizes=tuple(self._value(params, "mlp", i) for i in kept),
            num_heads=tuple(self._value(params, "heads", i) for i in kept),
            hidden_size=self._value(params, "hidden"),
        )

    def encode(self, sub: SubNetwork) -> dict[str, int]:
        """The inverse of `decode`; parameters of dropped layers take the largest choice."""
        self.validate(sub)
        params: dict[str, int] = {}
        if len(self.choices["num_layers"]) > 1:
            params["num_layers"] = sub.num_layers
        for dim, values in (("mlp", sub.mlp_sizes), ("heads", sub.num_heads)):
            if len(self.choices[dim]) < 2:
                continue
            if self._is_per_layer(dim):
                kept = dict(zip(sub.layers, values))
                for layer in range(self.shape.num_layers):
                    params[f"{dim}_{layer}"] = kept.get(layer, self.choices[dim][-1])
            else:
                params[dim] = values[0]
        if len(self.choices["hidden"]) > 1:
            params["hidden"] = sub.hidden_size
        return params

    # --- membership ----------------------------------------------------------------------------

    def validate(self, sub: SubNetwork) -> SubNetwork:
        """Raise `InvalidSubNetworkError` naming the field if `sub` is not in this space."""
        sub.validate(self.shape)
        if sub.num_layers not in self.choices["num_layers"]:
            raise InvalidSubNetworkError(
                f"SubNetwork keeps {sub.num_layers} layers; search space {self.name!r} allows {list(self.choices['num_layers'])}."
            )
        expected_layers = tuple(sorted(self.layer_order[: sub.num_layers]))
        if sub.layers != expected_layers:
            raise InvalidSubNetworkError(
                f"SubNetwork keeps layers {list(sub.layers)}; with {sub.num_layers} layers search space "
                f"{self.name!r} keeps {list(expected_layers)} (the first k in its layer order)."
            )
        for dim, values in (("mlp", sub.mlp_sizes), ("heads", sub.num_heads)):
            allowed = self.choices[dim]
            bad = sorted({v for v in values if v not in allowed})
            if bad:
                raise InvalidSubNetworkError(
                    f"SubNetwork {dim} sizes {bad} are not in search space {self.name!r}'s {list(allowed)}."
                )
            if not self._is_per_layer(dim) and len(set(values)) > 1:
                raise InvalidSubNetworkError(
                    f"Search space {self.name!r} uses one {dim} size for all layers; got {sorted(set(values))}."
                )
        if sub.hidden_size not in self.choices["hidden"]:
            raise InvalidSubNetworkError(
                f"SubNetwork hidden_size {sub.hidden_size} is not in search space {self.name!r}'s {list(self.choices['hidden'])}."
            )
        return sub

    def contains(self, sub: SubNetwork) -> bool:
        try:
            self.validate(sub)
        except InvalidSubNetworkError:
            return False
        return True

    # --- canonical members and sampling --------------------------------------------------------

    def largest(self) -> SubNetwork:
        return self.decode({name: choices[-1] for name, choices in self.parameters().items()})

    def smallest(self) -> SubNetwork:
        return self.decode({name: choices[0] for name, choices in self.parameters().items()})

    def sample(self, rng: random.Random | int | None = None) -> SubNetwork:
        """A uniformly random encoding (seeded by `rng` when it is an int)."""
        r = rng if isinstance(rng, random.Random) else random.Random(rng)
        return self.decode({name: r.choice(choices) for name, choices in self.parameters().items()})

    # --- counting and reporting ----------------------------------------------------------------

    def size(self) -> dict[str, int]:
        """Number of encodings, and of distinct sub-networks (choices of dropped layers do not matter)."""
        encodings = math.prod(len(c) for c in self.parameters().values())
        per_layer = math.prod(len(self.choices[d]) for d in ("mlp", "heads") if self._is_per_layer(d))
        shared = math.prod(len(self.choices[d]) for d in ("mlp", "heads", "hidden") if not self._is_per_layer(d))
        distinct = shared * sum(per_layer**k for k in self.choices["num_layers"])
        return {"encodings": encodings, "distinct": distinct}

    def summary(self) -> str:
        """A table of the resolved dimensions and the size of the space."""
        lines = [f"Search space {self.name!r} on a {self.shape.num_layers}-layer model:"]
        for dim in DIMENSIONS:
            spec = self.dimensions[dim]
            kind = "fixed" if spec is None else ("per layer" if spec.per_layer else "shared")
            lines.append(f"  {dim:<10} {kind:<9} {list(self.choices[dim])}")
        size = self.size()
        lines.append(f"  encodings: {size['encodings']:.4g}   distinct sub-networks: {size['distinct']:.4g}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"SearchSpace(name={self.name!r}, choices={self.choices})"
