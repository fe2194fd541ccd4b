"""One-shot neural architecture search that compresses pre-trained LLMs into smaller Hugging Face models.

The public API, loaded on first use: `import nas` (which every `python -m nas.<job>` does) stays light,
so command lines answer `--help` without importing torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Name -> the module that defines it.
_API = {
    "Evaluator": "nas.evaluation.evaluator",
    "load_task": "nas.evaluation.registry",
    "export_sub_network": "nas.export.standalone",
    "load_model": "nas.models",
    "sub_network_cost": "nas.supernet.metrics",
    "SearchSpace": "nas.supernet.search_space",
    "ModelShape": "nas.supernet.subnetwork",
    "SubNetwork": "nas.supernet.subnetwork",
}

if TYPE_CHECKING:
    from nas.evaluation.evaluator import Evaluator
    from nas.evaluation.registry import load_task
    from nas.export.standalone import export_sub_network
    from nas.models import load_model
    from nas.supernet.metrics import sub_network_cost
    from nas.supernet.search_space import SearchSpace
    from nas.supernet.subnetwork import ModelShape, SubNetwork


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'nas' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


__all__ = [
    "Evaluator",
    "ModelShape",
    "SearchSpace",
    "SubNetwork",
    "export_sub_network",
    "load_model",
    "load_task",
    "sub_network_cost",
]
