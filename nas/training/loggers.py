"""Loggers of `conf/logger/` that need more than their class: W&B set up to stay offline."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.loggers import WandbLogger

from nas.io.wandb_env import prepare_wandb


def wandb_logger(offline: bool = True, **kwargs: Any) -> WandbLogger:
    """Lightning's `WandbLogger`; offline (the default) it makes no network call (see `nas.io.wandb_env`)."""
    prepare_wandb("offline" if offline else "online")
    return WandbLogger(offline=offline, **kwargs)
