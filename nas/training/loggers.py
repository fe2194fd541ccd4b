"""Loggers of `conf/logger/` that need more than their class: W&B set up to stay offline."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.loggers import WandbLogger

from nas.io.wandb_env import prepare_wandb


def wandb_logger(mode: str = "offline", **kwargs: Any) -> WandbLogger:
    """Lightning's `WandbLogger` in W&B's `mode` (offline, online or disabled: `wandb.mode`, the switch the
    search and the report share); offline it makes no network call (see `nas.io.wandb_env`)."""
    mode = prepare_wandb(mode)
    extra: dict[str, Any] = {"mode": "disabled"} if mode == "disabled" else {}
    return WandbLogger(offline=mode == "offline", **extra, **kwargs)
