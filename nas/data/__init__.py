"""Data the pipeline reads: plain-text calibration sets for importance scoring."""

from __future__ import annotations

from nas.data.calibration import CalibrationError, CalibrationSet

__all__ = ["CalibrationError", "CalibrationSet"]
