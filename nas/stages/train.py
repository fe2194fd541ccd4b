"""`python -m nas.train`: fine-tune a pre-trained LLM once as a weight-sharing super-network.

Stage one of both papers: each step trains the full network and/or sampled sub-networks (the
`strategy`), drawn by a `sampler` from the `search_space`, on instruction data. Checkpoints go to
`<run dir>/checkpoints` (`ckpt_path=last` resumes the newest one of this run name with the same settings); the trained
super-network is saved as a Hugging Face folder, `<run dir>/supernet`, for search and export. With
`reorder=true` (or an `importance_*` sampler) the model is first reordered by importance on the
calibration set and saved to `<run dir>/reordered`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from nas.data.calibration import CalibrationSet
from nas.errors import NASError
from nas.instantiate import instantiate
from nas.io.atomic import write_json
from nas.stages.reorder import reorder_and_save
from nas.supernet.search_space import SearchSpace
from nas.training.checkpoints import record_run, resolve_ckpt_path, run_identity
from nas.training.lora import has_lora, merge_lora
from nas.training.module import SuperNetModule

log = logging.getLogger(__name__)

REORDERED_DIR = "reordered"  # <run dir>/reordered/: the importance-reordered model the run trains from


def training_steps(cfg: DictConfig, datamodule: Any, accumulate: int, world_size: int = 1) -> int:
    """Optimizer steps to run: `epochs` over the training split when set, capped by `trainer.max_steps`
    when that is positive (as in Lightning, whichever ends first), so `trainer.max_steps=2` shortens any run."""
    cap = int(cfg.trainer.max_steps)
    if not cfg.epochs:
        return cap
    steps = int(datamodule.steps_for_epochs(cfg.epochs, accumulate, world_size))
    return min(steps, cap) if cap > 0 else steps


def reorder_before_training(
    model: Any, tokenizer: Any, calibration: CalibrationSet, folder: Path, dimensions: Any = None
) -> None:
    """The `reorder` step (`reorder=true`, or a sampler that `requires_reordering`): reorder `model` in place
    by importance on `calibration` and save it to `folder`, as `python -m nas.reorder` does (`dimensions`
    as there; None: all).

    A model reordered already (it has `config.nas_layer_order`) is left as it is. Reordering is
    deterministic, so a run resumed in another folder recomputes the layer order its checkpoint's weights
    were trained with.
    """
    if getattr(model.config, "nas_layer_order", None):
        log.info("The model is reordered already (config.nas_layer_order); training it as it is.")
        return
    # One writer when several processes train.
    reorder_and_save(model, tokenizer, calibration, folder, dimensions, save=getattr(rank_zero_only, "rank", 0) == 0)


def quiet_console() -> None:
    """On ranks other than 0: warnings and errors only on the console (rank 0 alone tells the story); each
    rank's full log stays in its own file (`train_ddp_process_<rank>.log`)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)


def accumulation_steps(optim: DictConfig, batch_size: int, world_size: int) -> int:
    """Micro-batches per optimizer step: `optim.accumulate`, or what `optim.global_batch_size` implies
    for `data.batch_size` per process and this many processes."""
    global_batch = optim.get("global_batch_size")
    if global_batch is None:
        return int(optim.accumulate)
    per_step = batch_size * world_size
    if global_batch < per_step or global_batch % per_step:
        raise NASError(
            f"optim.global_batch_size={global_batch} is not a whole multiple of data.batch_size={batch_size} x "
            f"{world_size} process(es) = {per_step}; change one of them (or set optim.global_batch_size=null and "
            "optim.accumulate=N)."
        )
    return global_batch // per_step


def training_placement(trainer: L.Trainer) -> dict[str, str]:
    """How the model must load for this trainer, overriding `model.device` / `model.dtype`."""
    placement = {}
    if trainer.world_size > 1:
        # Each process loads on the CPU and the strategy places (or shards) it on its own device;
        # loading straight onto "the" GPU would put every process's copy on the first one.
        placement["device"] = "cpu"
    if "mixed" in str(trainer.precision):
        # Mixed precision computes in 16 bits over fp32 master weights: AdamW steps at lr 1e-5 are
        # below bf16's resolution and would be lost on 16-bit weights.
        placement["dtype"] = "float32"
    return placement


def run_training(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """The whole job; returns the summary it writes to `<output_dir>/training.json`."""
    output_dir = Path(output_dir)
    L.seed_everything(cfg.seed, workers=True)
    # Everything that can be wrong with the input fails here, before the model loads.
    strategy = instantiate(cfg.strategy)
    datamodule = instantiate(cfg.data)
    datamodule.check_records()
    identity = run_identity(cfg)
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, output_dir, identity)
    reorder = bool(cfg.get("reorder")) or bool(cfg.sampler.get("requires_reordering"))
    calibration = instantiate(cfg.calibration) if reorder else None  # a missing text file fails now

    logger = instantiate(cfg.logger) if cfg.logger else False
    checkpoints = ModelCheckpoint(
        dirpath=output_dir / "checkpoints",
        every_n_train_steps=cfg.checkpoint_every_n_steps,
        save_top_k=1,
        save_last="link",
        filename="step={step}",
        auto_insert_metric_name=False,
    )
    # The epochs-based length is set once the data is bound; the trainer tells how many processes share it.
    trainer = instantiate(cfg.trainer, callbacks=[checkpoints], logger=logger, default_root_dir=str(output_dir))
    if not trainer.is_global_zero:
        quiet_console()
    accumulate = accumulation_steps(cfg.optim, int(cfg.data.batch_size), trainer.world_size)

    model, tokenizer = instantiate(cfg.model, **training_placement(trainer))
    if calibration is not None:
        reorder_before_training(model, tokenizer, calibration, output_dir / REORDERED_DIR, cfg.get("dimensions"))
    model = instantiate(cfg.finetune, model=model)
    space = SearchSpace.from_config(cfg.search_space, model.config)
    sampler = instantiate(cfg.sampler, space=space, model=model)
    optim = cast(dict[str, Any], OmegaConf.to_container(cfg.optim, resolve=True))
    optim.pop("global_batch_size", None)
    module = SuperNetModule(model, strategy, sampler, **{**optim, "accumulate": accumulate})
    datamodule.bind(tokenizer)
    max_steps = training_steps(cfg, datamodule, accumulate, trainer.world_size)
    trainer.fit_loop.epoch_loop.max_steps = max_steps  # what trainer.max_steps reads
    log.info(
        "Training %s with %s, %s on %s for %d steps of %d x %d micro-batch(es) x %d process(es)",
        type(model).__name__,
        type(strategy).__name__,
        type(sampler).__name__,
        space.name,
        max_steps,
        accumulate,
        cfg.data.batch_size,
        trainer.world_size,
    )
    if trainer.is_global_zero:
        record_run(output_dir, identity)  # which settings the checkpoints below belong to
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)

    summary: dict[str, Any] = {
        "steps": trainer.global_step,
        "resumed_from": ckpt_path,
        "processes": trainer.world_size,
        "accumulate": accumulate,
        "global_batch_size": accumulate * int(cfg.data.batch_size) * trainer.world_size,
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
    }
    if cfg.save_supernet and trainer.is_global_zero:
        model.reset_super_network()
        if has_lora(model):
            merge_lora(model)
        model.save_pretrained(output_dir / "supernet")
        tokenizer.save_pretrained(output_dir / "supernet")
        summary["supernet"] = str(output_dir / "supernet")
    if trainer.is_global_zero:
        write_json(summary, output_dir / "training.json")
    log.info("Done: %s", summary)
    return summary
