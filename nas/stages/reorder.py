"""`python -m nas.reorder model=... calibration=c4|wikitext2 calibration.num_samples=... out_dir=...`

Scores the model's neurons, KV groups, embedding channels and layers on calibration text, permutes its
weights so the most important come first, and saves it as a model folder (weights, tokenizer,
`importance.json`) that `load_model(<folder>)` or `model=pretrained model.name_or_path=<folder>` reuses.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nas.data.calibration import CalibrationSet
from nas.errors import NASError
from nas.instantiate import instantiate
from nas.io.atomic import write_json
from nas.supernet.importance import ImportanceScores, compute_importance
from nas.supernet.permutation import Permutations, reorder_by_importance

log = logging.getLogger(__name__)

IMPORTANCE_FILE = "importance.json"
_DIMENSIONS = ("mlp", "heads", "hidden", "layers")


class ReorderConfigError(NASError, ValueError):
    """A `dimensions` setting of `python -m nas.reorder` that is not understood."""


def _dimensions(cfg: Any) -> dict[str, bool]:
    given = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg or {})
    assert isinstance(given, dict)
    unknown = set(given) - set(_DIMENSIONS)
    if unknown:
        raise ReorderConfigError(
            f"Unknown dimensions {sorted(unknown)}; use dimensions.<{'|'.join(_DIMENSIONS)}>=true|false."
        )
    return {name: bool(given.get(name, True)) for name in _DIMENSIONS}


def save_reordered(
    model: Any,
    tokenizer: Any,
    folder: str | Path,
    scores: ImportanceScores,
    permutations: Permutations,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write the reordered model, its tokenizer and `importance.json` to `folder`.

    `importance.json` holds the scores indexed like the saved weights (so they descend along every
    reordered dimension), the original index of each position (`source_indices`) and `metadata`.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    record = {
        "scores": scores.to_dict(),
        "layer_order": getattr(model.config, "nas_layer_order", None),
        "source_indices": permutations.to_dict(),
        **(metadata or {}),
    }
    write_json(record, out / IMPORTANCE_FILE)
    return out


def reorder_model(
    model: Any,
    tokenizer: Any,
    calibration: CalibrationSet,
    dimensions: dict[str, bool] | None = None,
    progress: bool = True,
) -> tuple[ImportanceScores, Permutations]:
    """Score `model` on `calibration` and reorder it in place (also the `reorder` step before training).

    Returns the scores indexed like the reordered weights and the permutations applied, as
    `save_reordered` writes them.
    """
    dims = _dimensions(dimensions)
    start = time.perf_counter()
    scores = compute_importance(model, calibration.batches(tokenizer), progress=progress)
    reordered, permutations = reorder_by_importance(model, scores, **dims)
    log.info(
        "Scored %d tokens of %s in %.1f s; layers most to least important: %s%s",
        scores.num_tokens,
        calibration.name,
        time.perf_counter() - start,
        scores.layer_order(),
        "" if dims["layers"] else " (not stored: dimensions.layers=false)",
    )
    return reordered, permutations


def reorder_and_save(
    model: Any,
    tokenizer: Any,
    calibration: CalibrationSet,
    folder: str | Path,
    dimensions: Any = None,
    progress: bool = True,
    save: bool = True,
) -> Path:
    """Score and reorder `model` in place on `calibration`, then (when `save`) write it, its tokenizer and
    `importance.json` to `folder`; returns the folder. `save=False` lets one of several processes write."""
    dimensions = _dimensions(dimensions)
    start = time.perf_counter()
    reordered, permutations = reorder_model(model, tokenizer, calibration, dimensions, progress)
    if not save:
        return Path(folder)
    metadata = {
        "dimensions": dimensions,
        "calibration": {
            "name": calibration.name,
            "file": str(calibration.path),
            "num_samples": calibration.num_samples,
            "seq_len": calibration.seq_len,
            "seed": calibration.seed,
        },
        "seconds": round(time.perf_counter() - start, 3),
    }
    saved = save_reordered(model, tokenizer, Path(folder), reordered, permutations, metadata)
    log.info("Saved the reordered model to %s (load it with model=pretrained model.name_or_path=%s)", saved, saved)
    return saved


def run_reorder(cfg: DictConfig, output_dir: str | Path) -> Path:
    """Score, reorder and save `cfg.model` on `cfg.calibration`; returns the folder written."""
    dimensions = _dimensions(cfg.get("dimensions"))
    calibration: CalibrationSet = instantiate(cfg.calibration)  # a missing text file fails before the model loads
    model, tokenizer = instantiate(cfg.model)
    out = Path(cfg.out_dir) if cfg.get("out_dir") else Path(output_dir) / "reordered"
    return reorder_and_save(model, tokenizer, calibration, out, dimensions, bool(cfg.get("progress", True)))
