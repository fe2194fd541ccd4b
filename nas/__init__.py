"""One-shot neural architecture search that compresses pre-trained LLMs into smaller Hugging Face models."""

from __future__ import annotations

from nas.evaluation import Evaluator, load_task
from nas.export.standalone import export_sub_network
from nas.models import load_model
from nas.supernet.metrics import sub_network_cost
from nas.supernet.search_space import SearchSpace
from nas.supernet.subnetwork import ModelShape, SubNetwork

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
