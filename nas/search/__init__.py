"""Multi-objective sub-network search: objectives, Optuna samplers (NSGA-II, LINAS, random), studies
in a database, Pareto fronts and hypervolume. `python -m nas.search` runs it."""

from nas.search.objectives import Objective, parse_objectives
from nas.search.pareto import hypervolume, pareto_mask

__all__ = ["Objective", "hypervolume", "parse_objectives", "pareto_mask"]
