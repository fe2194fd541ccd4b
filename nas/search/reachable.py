"""Refusing budgets nothing in the search space can meet, before any evaluation.

Analytic quantities (parameters, size, FLOPs) grow with every choice of the space, so the smallest
sub-network holds each one's minimum and the largest its maximum. Speed is measured once on the
smallest (or largest) sub-network, the fastest (or slowest) the space has. Accuracy and perplexity
bounds cannot be known before evaluating and are not checked here.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

from nas.errors import SearchConfigError
from nas.search.constraints import Constraint, analytic_feasible
from nas.search.objective_scorer import ObjectiveScorer
from nas.supernet.search_space import SearchSpace

log = logging.getLogger(__name__)

# Random sub-networks drawn to estimate the share that meets the analytic constraints together.
SHARE_DRAWS = 2000


def _unreachable(c: Constraint, best: float, which: str) -> SearchConfigError:
    bound = "at most" if c.upper else "at least"
    return SearchConfigError(
        f"Constraint {c.name}: no sub-network of this search space can meet it; the {which} sub-network has "
        f"{c.quantity.name}={best:.6g}, and that is the {'smallest' if c.upper else 'largest'} value the space reaches "
        f"(the constraint asks for {bound} {c.limit:g}). Loosen the bound, or search a space with smaller choices "
        "(search_space=...). Nothing was evaluated."
    )


def check_reachable(constraints: Sequence[Constraint], space: SearchSpace, scorer: ObjectiveScorer) -> None:
    """Raise `SearchConfigError` naming the achievable value when a constraint cannot be met; log the share of
    random sub-networks that meet the analytic ones together."""
    if not constraints:
        return
    smallest, largest = space.smallest(), space.largest()
    small, large = scorer.analytic(smallest), scorer.analytic(largest)
    for c in constraints:
        if c.analytic:
            extreme, which = (small, "smallest") if c.upper else (large, "largest")
            if not c.met_by(extreme[c.quantity.name]):
                raise _unreachable(c, extreme[c.quantity.name], which)
    speed = [c for c in constraints if c.quantity.is_speed]
    if speed:
        for c in speed:
            # Latency falls and throughput rises as the sub-network shrinks: its best is at the smallest one.
            fastest = c.upper == (c.quantity.kind == "latency")
            sub, which = (smallest, "smallest") if fastest else (largest, "largest")
            value = scorer.speed_values(sub, [c.quantity])[c.quantity.name]
            if not c.met_by(value):
                raise _unreachable(c, value, which + " (fastest)" if fastest else which)
            log.info("Constraint %s: the %s sub-network measures %.4g here.", c.name, which, value)
    analytic = [c for c in constraints if c.analytic]
    if analytic:
        rng = random.Random(0)
        met = sum(analytic_feasible(analytic, scorer.analytic(space.sample(rng))) for _ in range(SHARE_DRAWS))
        if met == 0 and not analytic_feasible(analytic, small) and not analytic_feasible(analytic, large):
            raise SearchConfigError(
                f"Constraints {[c.name for c in analytic]}: each can be met, but none of {SHARE_DRAWS} random "
                "sub-networks, nor the smallest or the largest, meets them together. Loosen one of them. Nothing was "
                "evaluated."
            )
        log.info(
            "Constraints %s: %.1f%% of %d random sub-networks meet them; proposals that do not are redrawn.",
            ", ".join(c.name for c in analytic),
            100.0 * met / SHARE_DRAWS,
            SHARE_DRAWS,
        )
