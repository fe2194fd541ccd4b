"""Settings of an analysis (the `analysis` block of conf/analyze.yaml), checked when built."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from nas.errors import NASError


class AnalysisConfigError(NASError, ValueError):
    """An analysis setting that cannot be used as given."""


def _floats(name: str, values: Any) -> tuple[float, ...]:
    if isinstance(values, int | float):
        values = [values]
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise AnalysisConfigError(f"analysis.{name}={values!r}: expected a list of numbers.") from exc


@dataclass(frozen=True)
class AnalysisOptions:
    """How the report selects and ranks sub-networks.

    Attributes:
        accuracy_tolerance: "same accuracy" means at most this many points (percent) below the reference.
        perplexity_tolerance: for perplexity objectives, at most this fraction above the reference.
        size_fractions: "same size, most accurate" picks, one per fraction of the reference's cost.
        layer_percentiles: top percentiles of the layer-count (and other shared choices) analysis.
        mlp_percentiles: top percentiles of the per-layer (smaller MLP) analysis.
        study_name: the study to read (default: the one summary.json names, or the database's only one).
        storage: the study's database URL when it is not <run dir>/study.db.
        quantized_file: the pipeline's quantized.json when it is not beside the study.
        dpi: resolution of the PNG figures.
    """

    accuracy_tolerance: float = 1.0
    perplexity_tolerance: float = 0.05
    size_fractions: tuple[float, ...] = (0.8, 0.6)
    layer_percentiles: tuple[float, ...] = (60.0, 40.0, 20.0)
    mlp_percentiles: tuple[float, ...] = (20.0, 15.0, 10.0)
    study_name: str | None = None
    storage: str | None = None
    quantized_file: str | None = None
    dpi: int = 110

    def __post_init__(self) -> None:
        for name in ("size_fractions", "layer_percentiles", "mlp_percentiles"):
            object.__setattr__(self, name, _floats(name, getattr(self, name)))
        if self.accuracy_tolerance < 0 or self.perplexity_tolerance < 0:
            raise AnalysisConfigError(
                f"analysis.accuracy_tolerance={self.accuracy_tolerance} and analysis.perplexity_tolerance="
                f"{self.perplexity_tolerance} must be >= 0."
            )
        if any(not 0 < f <= 1 for f in self.size_fractions):
            raise AnalysisConfigError(
                f"analysis.size_fractions={list(self.size_fractions)}: each must be in (0, 1], e.g. [0.8, 0.6]."
            )
        for name in ("layer_percentiles", "mlp_percentiles"):
            values = getattr(self, name)
            if not values or any(not 0 < p <= 100 for p in values):
                raise AnalysisConfigError(
                    f"analysis.{name}={list(values)}: give percentages in (0, 100], e.g. [60, 40, 20]."
                )
        if int(self.dpi) < 30:
            raise AnalysisConfigError(f"analysis.dpi={self.dpi}: use 30 or more.")

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> AnalysisOptions:
        """From keyword options; unknown names are refused, listing the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise AnalysisConfigError(f"Unknown analysis options {unknown}; known: {sorted(known)}.")
        values: dict[str, Any] = {
            k: (tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v) for k, v in options.items()
        }
        return cls(**values)
