"""The pipeline (`python -m nas.pipeline`): one command from a pre-trained model to a Pareto report.

    [reorder] -> [train] -> search -> [baselines] -> confirm -> quantize -> analyze -> export

    python -m nas.pipeline experiments=quickstart            # make quickstart: SmolLM2, ~10 min on CPU
    python -m nas.pipeline stages.train=false search.n_trials=100

Each stage writes into its own folder of the run directory (`multirun_outputs/<name>/run/` by default:
no timestamp, so re-running the same command resumes) and records what it was run with in
`<stage>/stage.json`. A re-run skips every stage whose record matches (a finished pipeline does no
work again), resumes an interrupted search or training where it stopped, and refuses to mix a
finished stage with changed settings (use another `name`, or delete that stage's folder).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf, open_dict

from nas.errors import NASError
from nas.instantiate import instantiate
from nas.io.atomic import read_json, write_json
from nas.io.fingerprints import changed_settings, fingerprint, plain
from nas.io.locks import RunDirLock
from nas.models import model_config
from nas.search.context import check_search_config
from nas.stages import analyze as analyze_stage
from nas.stages import baselines as baselines_stage
from nas.stages import confirm as confirm_stage
from nas.stages import export as export_stage
from nas.stages import pick as pick_stage
from nas.stages import quantize as quantize_stage
from nas.stages import reorder as reorder_stage
from nas.stages import search as search_stage
from nas.stages import train as train_stage

log = logging.getLogger(__name__)

STAGES = ("reorder", "train", "search", "baselines", "confirm", "quantize", "analyze", "export")
# The config keys each stage depends on (besides the stages before it).
STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "reorder": ("model", "calibration", "dimensions"),
    # `reorder` and `calibration`: training reorders by itself with reorder=true or an importance_* sampler.
    "train": (
        "model",
        "search_space",
        "strategy",
        "sampler",
        "data",
        "optim",
        "finetune",
        "trainer",
        "epochs",
        "seed",
        "reorder",
        "calibration",
    ),
    "search": ("model", "search_space", "search", "objectives", "evaluator", "perplexity", "speed"),
    # The baselines prune the pre-trained model (`model` as configured), not the fine-tuned super-network.
    "baselines": (
        "model",
        "baseline",
        "ratio",
        "calibration",
        "recovery",
        "objectives",
        "evaluator",
        "perplexity",
        "speed",
    ),
    # The pre-trained model (`model`) is one of its references; the search's objectives name the tasks.
    "confirm": ("model", "objectives", "evaluator", "confirm"),
    "quantize": ("quantization", "pareto_speed"),
    "analyze": ("analysis",),
    "export": ("export",),
}


def _plain(cfg: DictConfig, key: str) -> Any:
    node = cfg.get(key)
    if isinstance(node, DictConfig) or OmegaConf.is_list(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


class StageRecord:
    """`<stage dir>/stage.json`: the settings a stage ran with (a fingerprint) and what it produced."""

    def __init__(self, folder: Path, settings: dict[str, Any]) -> None:
        self.folder = folder
        self.path = folder / "stage.json"
        self.settings = plain(settings)
        self.fingerprint = fingerprint(self.settings)

    def finished(self) -> dict[str, Any] | None:
        """The recorded result when the stage finished with these settings; None when it has not run."""
        if not self.path.is_file():
            return None
        stored = read_json(
            self.path, "stage record", f"delete {self.folder} to redo that stage (and the ones after it)"
        )
        if stored.get("fingerprint") != self.fingerprint:
            changed = changed_settings(stored.get("settings", {}), self.settings)
            raise NASError(
                f"{self.folder} was produced with other settings (changed: {'; '.join(changed) or 'upstream stages'}). "
                f"Run with another name=..., or delete {self.folder} to redo that stage and the ones after it."
            )
        return cast(dict[str, Any], stored["result"])

    def save(self, result: dict[str, Any], seconds: float) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"fingerprint": self.fingerprint, "settings": self.settings, "result": result, "seconds": seconds}
        write_json(record, self.path)


class Pipeline:
    """Runs the enabled stages in order, skipping those already finished with the same settings."""

    def __init__(self, cfg: DictConfig, output_dir: Path) -> None:
        self.cfg = cfg
        self.out = output_dir
        self.results: dict[str, Any] = {}
        self.fingerprints: list[str] = []
        self.timings: dict[str, float] = {}

    def enabled(self, stage: str) -> bool:
        return bool(self.cfg.stages.get(stage, False))

    def run_stage(self, stage: str, action: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        settings = {k: _plain(self.cfg, k) for k in STAGE_KEYS[stage]} | {"upstream": list(self.fingerprints)}
        record = StageRecord(self.out / stage, settings)
        done = record.finished()
        if done is not None:
            log.info("Stage %s: already done in %s, reusing it.", stage, record.folder)
            self.timings[stage] = 0.0
        else:
            log.info("Stage %s: running in %s", stage, record.folder)
            start = time.perf_counter()
            done = action(record.folder)
            self.timings[stage] = time.perf_counter() - start
            record.save(done, self.timings[stage])
            log.info("Stage %s: done in %.0f s", stage, self.timings[stage])
        self.fingerprints.append(record.fingerprint)
        self.results[stage] = done
        return done

    # --- stages ------------------------------------------------------------------------------

    def model_config(self) -> DictConfig:
        """The model every later stage starts from: trained > reordered > `model` as configured."""
        folder = self.results.get("train", {}).get("supernet") or self.results.get("reorder", {}).get("folder")
        if not folder:
            return cast(DictConfig, self.cfg.model)
        placement = {k: self.cfg.model[k] for k in ("device", "dtype") if k in self.cfg.model}
        return model_config(str(folder), **placement)  # the `pretrained` config, naming the folder

    def with_model(self, **extra: Any) -> DictConfig:
        cfg = cast(DictConfig, OmegaConf.create(OmegaConf.to_container(self.cfg, resolve=False)))
        with open_dict(cfg):
            cfg.model = self.model_config()
            for key, value in extra.items():
                OmegaConf.update(cfg, key, value, force_add=True)
        return cfg

    def reorder(self, folder: Path) -> dict[str, Any]:
        cfg = self.with_model(out_dir=str(folder / "reordered"))
        return {"folder": str(reorder_stage.run_reorder(cfg, folder))}

    def train(self, folder: Path) -> dict[str, Any]:
        # An interrupted training of this pipeline resumes from its last checkpoint.
        resume = "last" if any(folder.glob("checkpoints/last*.ckpt")) else None
        summary = train_stage.run_training(self.with_model(ckpt_path=resume, save_supernet=True), folder)
        return {"supernet": summary["supernet"], "steps": summary["steps"], "metrics": summary["metrics"]}

    def search(self, folder: Path) -> dict[str, Any]:
        summary = search_stage.run_search(self.with_model(), folder)
        return {k: summary[k] for k in ("study_name", "evaluations", "pareto_size", "hypervolume", "reference")}

    def baselines(self, folder: Path) -> dict[str, Any]:
        # The pre-trained model as configured (what the papers prune), scored like the searched sub-networks.
        summary = baselines_stage.run_baselines(self.cfg, folder)
        return {"baselines": [{k: e[k] for k in ("method", "ratio", "values", "folder")} for e in summary["baselines"]]}

    def confirm(self, folder: Path) -> dict[str, Any]:
        baselines = self.results.get("baselines", {}).get("baselines")
        trained = "train" in self.results
        return confirm_stage.run_confirm(self.cfg, self.model_config(), self.out / "search", folder, trained, baselines)

    def quantize(self, folder: Path) -> dict[str, Any]:
        return quantize_stage.quantize_pareto_set(self.with_model(), self.out / "search", folder)

    def analyze(self, folder: Path) -> dict[str, Any]:
        return analyze_stage.analyze_stage(self.cfg, self.out, folder)

    def export(self, folder: Path) -> dict[str, Any]:
        result = export_stage.export_selected(self.with_model(), self.out, folder, self.cfg.model)
        if self.cfg.export.get("budget"):
            result["deployed"] = pick_stage.deploy(
                pick_stage.pick_settings(self.cfg), self.out, folder / "deploy", self.model_config(), self.cfg.model
            )
        return result

    def run(self) -> dict[str, Any]:
        for stage in STAGES:
            if self.enabled(stage):
                self.run_stage(stage, getattr(self, stage))
            elif stage == "search":
                raise NASError("stages.search=false: the pipeline has nothing to do without a search.")
        summary = {"stages": self.results, "seconds": self.timings, "run_dir": str(self.out)}
        write_json(summary, self.out / "pipeline.json")
        return summary


def check_pipeline_config(cfg: DictConfig) -> None:
    """Everything that can be wrong with the input and is cheap to check, before any stage runs."""
    unknown = sorted(set(cfg.stages) - set(STAGES))
    if unknown:
        raise NASError(f"Unknown stages {unknown}; the pipeline's stages are {list(STAGES)}.")
    check_search_config(cfg)
    if cfg.stages.get("baselines"):
        baselines_stage.check_baselines_config(cfg)  # unknown methods, ratios out of range: before any stage
    if cfg.stages.get("confirm"):
        confirm_stage.confirm_selection(cfg)  # unknown confirm.* settings, confirm.items=search
    if cfg.stages.get("train"):
        instantiate(cfg.data).check_records()  # missing or malformed training data fails now
    if cfg.stages.get("quantize") and cfg.quantization.method not in ("none", "int8", "nf4"):
        raise NASError(f"quantization.method={cfg.quantization.method!r}: use none, int8 or nf4.")


def run_pipeline(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """The whole job; returns what it writes to `<output_dir>/pipeline.json`."""
    output_dir = Path(output_dir)
    check_pipeline_config(cfg)
    with RunDirLock(output_dir, "pipeline"):  # a second pipeline on this folder fails, naming this one
        summary = Pipeline(cfg, output_dir).run()
    log.info(
        "Pipeline finished: %s. Report: %s",
        ", ".join(f"{k} {v:.0f} s" for k, v in summary["seconds"].items()),
        output_dir / "analyze" / "report.html",
    )
    return summary
