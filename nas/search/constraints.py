"""Budgets a search must respect: constraints on any objective kind, parsed from config.

    constraints:
      - {kind: size_gb, dtype: int8, max: 0.2}        # at most 200 MB in INT8
      - {kind: latency, mode: decode, max_ms: 30}      # at most 30 ms per decode step (speed config)
      - {kind: params, max: 1e8}
      - {kind: accuracy, task: arc_easy, min: 0.5}

A constraint measures the same quantity an objective of its kind would (same keys: task, metric, dtype,
mode) and bounds it with `max` or `min` (`max_ms`/`min_ms` are latency's spelling). Its violation is relative
to its bound, `value / max - 1` (or `1 - value / min`), so constraints of different units add up; <= 0 is
feasible, as Optuna's `Trial.set_constraint` expects. Analytic constraints (params, size_gb, flops) are known
before an evaluation: sampled sub-networks that break them are never evaluated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from nas.errors import SearchConfigError
from nas.search.objectives import Objective, parse_objective

# A trial's measured constraint quantities ({constraint name: value}); whether it met all of them: FEASIBLE_ATTR.
CONSTRAINT_VALUES_ATTR = "constraint_values"


@dataclass(frozen=True)
class Constraint:
    """One bound on one measured quantity.

    Attributes:
        quantity: what is measured, as an objective of that kind would measure it.
        limit: the bound.
        upper: True for `max` (the value must stay at or below `limit`), False for `min`.
    """

    quantity: Objective
    limit: float
    upper: bool

    @property
    def name(self) -> str:
        """`size_gb_int8<=0.2`, `latency_decode<=30`, `arc_easy>=0.5`."""
        return f"{self.quantity.name}{'<=' if self.upper else '>='}{self.limit:g}"

    @property
    def analytic(self) -> bool:
        return self.quantity.analytic

    def violation(self, value: float) -> float:
        """How far `value` is beyond the bound, relative to it (<= 0: met)."""
        scale = abs(self.limit) or 1.0
        return (value - self.limit) / scale if self.upper else (self.limit - value) / scale

    def met_by(self, value: float) -> bool:
        return self.violation(value) <= 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "quantity": self.quantity.name, "limit": self.limit, "upper": self.upper}


_BOUND_KEYS = {"max": True, "min": False, "max_ms": True, "min_ms": False}


def _fail(index: int, message: str) -> SearchConfigError:
    return SearchConfigError(f"constraints[{index}]: {message}")


def parse_constraint(index: int, spec: Any) -> Constraint:
    """One entry of `constraints`: an objective spec with exactly one of max / min (max_ms / min_ms for latency)."""
    if not isinstance(spec, Mapping):
        raise _fail(index, f"expected a mapping like {{kind: size_gb, dtype: int8, max: 0.2}}, got {spec!r}.")
    bounds = [k for k in _BOUND_KEYS if k in spec]
    if len(bounds) != 1:
        raise _fail(
            index,
            f"give exactly one bound (max or min; max_ms / min_ms for latency), got {bounds or 'none'} in {dict(spec)}.",
        )
    key = bounds[0]
    try:
        quantity = parse_objective(index, {k: v for k, v in spec.items() if k not in _BOUND_KEYS})
    except SearchConfigError as exc:
        raise _fail(index, str(exc).split(": ", 1)[-1]) from None
    if key.endswith("_ms") and quantity.kind != "latency":
        raise _fail(index, f"{key} bounds a latency; write max/min for {quantity.kind}.")
    try:
        limit = float(spec[key])
    except (TypeError, ValueError):
        raise _fail(index, f"{key}={spec[key]!r} is not a number.") from None
    return Constraint(quantity, limit, _BOUND_KEYS[key])


def parse_constraints(cfg: Sequence[Any] | ListConfig | DictConfig | None) -> list[Constraint]:
    """The study's constraints (none when unset), checked: at most one per quantity and direction."""
    if cfg is None:
        return []
    if isinstance(cfg, DictConfig | ListConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    if isinstance(cfg, Mapping):  # {name: spec}, so single entries can be overridden
        cfg = list(cfg.values())
    if not isinstance(cfg, Sequence) or isinstance(cfg, str):
        raise SearchConfigError(
            f"constraints must be a list like '[{{kind: size_gb, dtype: int8, max: 0.2}}]', got {cfg!r}."
        )
    constraints = [parse_constraint(i, spec) for i, spec in enumerate(cfg)]
    names = [(c.quantity.name, c.upper) for c in constraints]
    if len(set(names)) != len(names):
        raise SearchConfigError(
            f"Two constraints bound the same quantity the same way: {[c.name for c in constraints]}."
        )
    return constraints


def quantities(objectives: Sequence[Objective], constraints: Sequence[Constraint]) -> list[Objective]:
    """Everything a trial measures: the objectives, then the constraints' quantities that are not objectives."""
    out = list(objectives)
    names = {o.name for o in out}
    for c in constraints:
        if c.quantity.name not in names:
            out.append(c.quantity)
            names.add(c.quantity.name)
    return out


def constraint_values(constraints: Sequence[Constraint], values: Mapping[str, float]) -> dict[str, float]:
    """{constraint name: measured value} from a trial's measured quantities."""
    return {c.name: float(values[c.quantity.name]) for c in constraints}


def violations(constraints: Sequence[Constraint], values: Mapping[str, float]) -> list[float]:
    """Each constraint's violation (<= 0 met), from `constraint_values`' mapping."""
    return [c.violation(float(values[c.name])) for c in constraints]


def is_feasible(constraints: Sequence[Constraint], values: Mapping[str, float]) -> bool:
    return all(v <= 0.0 for v in violations(constraints, values))


def analytic_feasible(constraints: Sequence[Constraint], analytic_values: Mapping[str, float]) -> bool:
    """Whether the analytic constraints hold, from the analytic quantities ({quantity name: value})."""
    return all(c.met_by(float(analytic_values[c.quantity.name])) for c in constraints if c.analytic)
