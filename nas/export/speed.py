"""Timing a sub-network as the standalone model its export is, next to the live one (`nas.evaluate speed_exported=true`)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from transformers import AutoModelForCausalLM

from nas.evaluation.speed import SpeedResult, ThroughputMeter
from nas.export.standalone import export_sub_network


def measure_exported(meter: ThroughputMeter, model: Any, sub: Any) -> SpeedResult:
    """The same measurement on `sub` exported as a standalone model (written to a temporary folder).

    Per-layer (heterogeneous) sub-networks load through the modeling file the export writes beside the
    weights (`trust_remote_code=True` on code this project generated); uniform ones need no remote code.
    """
    param = next(model.parameters())
    with tempfile.TemporaryDirectory(prefix="nas-speed-") as tmp:
        folder = export_sub_network(model, sub, Path(tmp) / "export")
        remote = "auto_map" in json.loads((Path(folder) / "config.json").read_text())
        exported = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=remote, dtype=param.dtype)
        return meter.measure(exported.to(param.device).eval())
